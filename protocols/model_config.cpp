// config.json parsing for both MiniMax dialects (spec §1, §14).
//
// Sources the field names and defaults were checked against:
//  - official remote code `configuration_minimax_text_01.py` / `modeling_minimax_text_01.py`
//    (ORIG, via the verbatim copy in GitHub zzp1012/nanoGPT): rope_theta default 1e6,
//    max_position_embeddings default 4096*32, bos/eos default null, `postnorm` read with
//    getattr(config, "postnorm", False), alphas/betas default 1, head_dim default
//    hidden_size // num_attention_heads.
//  - transformers `models/minimax/configuration_minimax.py` (MiniMaxConfig, 5.x): layer_types,
//    {full_attn,linear_attn,mlp}_{alpha,beta}_factor (default 1), block_size (256), head_dim
//    (None -> hidden_size // num_attention_heads), rope_parameters (default_theta 1e6).
//  - transformers `models/minimax_vl_01/configuration_minimax_vl_01.py`
//    (_migrate_legacy_text_config): the official -> transformers mapping, including
//    rope_parameters {"rope_type": "default", "rope_theta": t, "partial_rotary_factor":
//    rotary_dim / head_dim} and `shared_intermediate_size` given as a one-element list.
//
// Nothing here throws: nlohmann exceptions are caught at the entry points, and the accessors
// below check types before converting.
#include "protocols/model_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

namespace fulgur {
namespace {

using nlohmann::json;

// Shortest text that reads back as the same double ("0.3", "38.4", "3.5565588200778455").
std::string num(double v) { return json(v).dump(); }
std::string fmt_int(int64_t v) { return std::to_string(v); }

// Every integer dimension is capped (2^24, far above any real one: vocab 200064) so that the
// shape arithmetic downstream (3 * heads * head_dim, experts * 2 * intermediate, ...) stays far
// inside int64 for any config that validates.
constexpr int64_t kMaxDim = int64_t{1} << 24;

enum class Dialect { official, transformers };

bool is_official_model_type(const std::string& t) {
  return t == "minimax_text_01" || t == "MiniMaxText01" || t == "minimax_m1" || t == "MiniMaxM1";
}
bool is_transformers_model_type(const std::string& t) {
  return t == "minimax" || t == "minimax_vl_01_text";
}

// A short description of a JSON value for error messages. Only scalars are dumped (dumping a
// hostile, deeply nested value would recurse).
std::string describe_value(const json& v) {
  if (v.is_structured()) return v.type_name();
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return std::string(v.type_name()) + " " + s;
}

// Typed accessors over the top-level object of one config.json, with errors that name the file
// and the field. "Absent" means missing or null for optional fields.
class Fields {
 public:
  Fields(const json& obj, std::string origin) : obj_(obj), origin_(std::move(origin)) {}

  const std::string& origin() const { return origin_; }
  const json* raw(const char* name) const {
    auto it = obj_.find(name);
    return it == obj_.end() ? nullptr : &*it;
  }
  bool present(const char* name) const {
    const json* v = raw(name);
    return v != nullptr && !v->is_null();
  }

  Status missing(const char* name) const {
    return Status(Errc::invalid_config, origin_ + ": missing field '" + name + "'");
  }
  Status wrong_type(const std::string& name, const char* expected, const json& got) const {
    return Status(Errc::invalid_config, origin_ + ": field '" + name + "' must be " + expected +
                                            ", got " + describe_value(got));
  }
  Status invalid(const std::string& message) const {
    return Status(Errc::invalid_config, origin_ + ": " + message);
  }
  Status unsupported(const std::string& message) const {
    return Status(Errc::unsupported, origin_ + ": " + message);
  }

  Expected<std::optional<int64_t>> opt_int(const char* name) const { return int_of(raw(name), name); }
  Expected<int64_t> req_int(const char* name) const {
    if (raw(name) == nullptr) return missing(name);
    FULGUR_ASSIGN_OR_RETURN(auto v, opt_int(name));
    if (!v) return wrong_type(name, "an integer", *raw(name));
    return *v;
  }
  Expected<std::optional<double>> opt_double(const char* name) const {
    return double_of(raw(name), name);
  }
  Expected<std::optional<bool>> opt_bool(const char* name) const {
    const json* v = raw(name);
    if (v == nullptr || v->is_null()) return std::optional<bool>{};
    if (!v->is_boolean()) return wrong_type(name, "a boolean", *v);
    return std::optional<bool>(v->get<bool>());
  }
  Expected<std::optional<std::string>> opt_string(const char* name) const {
    const json* v = raw(name);
    if (v == nullptr || v->is_null()) return std::optional<std::string>{};
    if (!v->is_string()) return wrong_type(name, "a string", *v);
    return std::optional<std::string>(v->get<std::string>());
  }

  // Shared by top-level and nested fields (`name` is the dotted name used in messages).
  Expected<std::optional<int64_t>> int_of(const json* v, const std::string& name) const {
    if (v == nullptr || v->is_null()) return std::optional<int64_t>{};
    if (v->is_number_unsigned()) {
      auto u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return wrong_type(name, "an integer that fits in int64", *v);
      }
      return std::optional<int64_t>(static_cast<int64_t>(u));
    }
    if (v->is_number_integer()) return std::optional<int64_t>(v->get<int64_t>());
    return wrong_type(name, "an integer", *v);
  }
  Expected<std::optional<double>> double_of(const json* v, const std::string& name) const {
    if (v == nullptr || v->is_null()) return std::optional<double>{};
    if (!v->is_number()) return wrong_type(name, "a number", *v);
    double d = v->get<double>();
    if (!std::isfinite(d)) return wrong_type(name, "a finite number", *v);
    return std::optional<double>(d);
  }

 private:
  const json& obj_;
  std::string origin_;
};

Expected<Dialect> detect_dialect(const Fields& f, ModelConfig& cfg) {
  FULGUR_ASSIGN_OR_RETURN(auto model_type, f.opt_string("model_type"));
  if (model_type) {
    cfg.model_type = *model_type;
    if (is_official_model_type(*model_type)) return Dialect::official;
    if (is_transformers_model_type(*model_type)) return Dialect::transformers;
    return f.unsupported("model_type '" + *model_type +
                         "' is not a MiniMax text model (expected 'minimax_text_01' or 'minimax')");
  }
  // No model_type: infer from the fields only the official dialect has.
  bool official = f.present("attn_type_list") || f.present("postnorm") || f.present("rotary_dim") ||
                  f.present("layernorm_mlp_alpha");
  cfg.model_type = official ? "minimax_text_01" : "minimax";
  return official ? Dialect::official : Dialect::transformers;
}

// Positive integer within kMaxDim; `field` names it in the message.
Status check_dim(const Fields& f, const char* field, int64_t v) {
  if (v <= 0 || v > kMaxDim) {
    return f.invalid("field '" + std::string(field) + "' must be in [1, " + std::to_string(kMaxDim) +
                     "], got " + std::to_string(v));
  }
  return Status::ok();
}

Status read_dims(const Fields& f, ModelConfig& cfg) {
  struct Req {
    const char* name;
    int64_t ModelConfig::*member;
  };
  const Req required[] = {
      {"hidden_size", &ModelConfig::hidden_size},
      {"num_hidden_layers", &ModelConfig::num_hidden_layers},
      {"num_attention_heads", &ModelConfig::num_attention_heads},
      {"vocab_size", &ModelConfig::vocab_size},
      {"intermediate_size", &ModelConfig::intermediate_size},
      {"num_local_experts", &ModelConfig::num_local_experts},
      {"num_experts_per_tok", &ModelConfig::num_experts_per_tok},
  };
  for (const Req& r : required) {
    FULGUR_ASSIGN_OR_RETURN(cfg.*r.member, f.req_int(r.name));
    FULGUR_TRY(check_dim(f, r.name, cfg.*r.member));
  }
  // Both references: None -> num_attention_heads. Absent is an error (their default of 8 is a
  // Mixtral leftover we do not want to apply silently).
  if (f.raw("num_key_value_heads") == nullptr) return f.missing("num_key_value_heads");
  FULGUR_ASSIGN_OR_RETURN(auto kv, f.opt_int("num_key_value_heads"));
  cfg.num_key_value_heads = kv.value_or(cfg.num_attention_heads);
  FULGUR_TRY(check_dim(f, "num_key_value_heads", cfg.num_key_value_heads));

  FULGUR_ASSIGN_OR_RETURN(auto head_dim, f.opt_int("head_dim"));
  if (head_dim) {
    cfg.head_dim = *head_dim;
    FULGUR_TRY(check_dim(f, "head_dim", cfg.head_dim));
  } else {
    if (cfg.hidden_size % cfg.num_attention_heads != 0) {
      return f.invalid("head_dim is absent and hidden_size (" + std::to_string(cfg.hidden_size) +
                       ") is not divisible by num_attention_heads (" +
                       std::to_string(cfg.num_attention_heads) + ")");
    }
    cfg.head_dim = cfg.hidden_size / cfg.num_attention_heads;
  }
  return Status::ok();
}

// attn_type_list (official, ints 0/1) and/or layer_types (transformers, strings).
Expected<std::optional<std::vector<LayerKind>>> read_attn_type_list(const Fields& f) {
  const json* v = f.raw("attn_type_list");
  if (v == nullptr || v->is_null()) return std::optional<std::vector<LayerKind>>{};
  if (!v->is_array()) return f.wrong_type("attn_type_list", "an array of 0/1 integers", *v);
  std::vector<LayerKind> kinds;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& e = (*v)[i];
    std::string name = "attn_type_list[" + std::to_string(i) + "]";
    if (!e.is_number_integer() || (e.get<int64_t>() != 0 && e.get<int64_t>() != 1)) {
      return f.wrong_type(name, "0 (lightning) or 1 (softmax)", e);
    }
    kinds.push_back(e.get<int64_t>() == 0 ? LayerKind::lightning : LayerKind::softmax);
  }
  return std::optional<std::vector<LayerKind>>(std::move(kinds));
}

Expected<std::optional<std::vector<LayerKind>>> read_layer_types(const Fields& f) {
  const json* v = f.raw("layer_types");
  if (v == nullptr || v->is_null()) return std::optional<std::vector<LayerKind>>{};
  if (!v->is_array()) return f.wrong_type("layer_types", "an array of strings", *v);
  std::vector<LayerKind> kinds;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& e = (*v)[i];
    std::string name = "layer_types[" + std::to_string(i) + "]";
    if (e.is_string() && e.get<std::string>() == "linear_attention") {
      kinds.push_back(LayerKind::lightning);
    } else if (e.is_string() && e.get<std::string>() == "full_attention") {
      kinds.push_back(LayerKind::softmax);
    } else {
      return f.wrong_type(name, "\"linear_attention\" or \"full_attention\"", e);
    }
  }
  return std::optional<std::vector<LayerKind>>(std::move(kinds));
}

Status read_layer_kinds(const Fields& f, Dialect dialect, ModelConfig& cfg) {
  FULGUR_ASSIGN_OR_RETURN(auto official, read_attn_type_list(f));
  FULGUR_ASSIGN_OR_RETURN(auto hf, read_layer_types(f));
  if (official && hf) {
    if (official->size() != hf->size()) {
      return f.invalid("'attn_type_list' (" + std::to_string(official->size()) +
                       " entries) and 'layer_types' (" + std::to_string(hf->size()) +
                       " entries) disagree");
    }
    for (size_t i = 0; i < official->size(); ++i) {
      if ((*official)[i] != (*hf)[i]) {
        return f.invalid("'attn_type_list' and 'layer_types' disagree at layer " + std::to_string(i));
      }
    }
  }
  if (!official && !hf) {
    // transformers would fill in an alternating pattern; no MiniMax checkpoint relies on it.
    return f.missing(dialect == Dialect::official ? "attn_type_list" : "layer_types");
  }
  cfg.layer_types = official ? std::move(*official) : std::move(*hf);
  if (static_cast<int64_t>(cfg.layer_types.size()) != cfg.num_hidden_layers) {
    return f.invalid(std::string(official ? "'attn_type_list'" : "'layer_types'") + " has " +
                     std::to_string(cfg.layer_types.size()) + " entries but num_hidden_layers is " +
                     std::to_string(cfg.num_hidden_layers));
  }
  return Status::ok();
}

// One DeepNorm coefficient given under its official and/or transformers name.
Status read_coefficient(const Fields& f, const char* official, const char* hf, double& out) {
  FULGUR_ASSIGN_OR_RETURN(auto a, f.opt_double(official));
  FULGUR_ASSIGN_OR_RETURN(auto b, f.opt_double(hf));
  if (a && b && *a != *b) {
    return f.invalid("'" + std::string(official) + "' (" + num(*a) + ") and '" + hf + "' (" + num(*b) + ") disagree");
  }
  out = a ? *a : b ? *b : 1.0;  // both references default to 1
  return Status::ok();
}

Status read_coefficients(const Fields& f, ModelConfig& cfg) {
  FULGUR_TRY(read_coefficient(f, "layernorm_full_attention_alpha", "full_attn_alpha_factor", cfg.full_attn_alpha));
  FULGUR_TRY(read_coefficient(f, "layernorm_full_attention_beta", "full_attn_beta_factor", cfg.full_attn_beta));
  FULGUR_TRY(read_coefficient(f, "layernorm_linear_attention_alpha", "linear_attn_alpha_factor", cfg.linear_attn_alpha));
  FULGUR_TRY(read_coefficient(f, "layernorm_linear_attention_beta", "linear_attn_beta_factor", cfg.linear_attn_beta));
  FULGUR_TRY(read_coefficient(f, "layernorm_mlp_alpha", "mlp_alpha_factor", cfg.mlp_alpha));
  FULGUR_TRY(read_coefficient(f, "layernorm_mlp_beta", "mlp_beta_factor", cfg.mlp_beta));
  return Status::ok();
}

// The RoPE fields of transformers 5.x live in `rope_parameters`; 4.x had them top-level.
struct RopeFields {
  std::optional<double> theta;
  std::optional<double> partial_rotary_factor;
};

Expected<RopeFields> read_rope_parameters(const Fields& f) {
  RopeFields r;
  const json* rp = f.raw("rope_parameters");
  if (rp == nullptr || rp->is_null()) return r;
  if (!rp->is_object()) return f.wrong_type("rope_parameters", "an object", *rp);
  if (auto it = rp->find("rope_type"); it != rp->end() && !it->is_null()) {
    if (!it->is_string()) return f.wrong_type("rope_parameters.rope_type", "a string", *it);
    if (it->get<std::string>() != "default") {
      return f.unsupported("rope_parameters.rope_type '" + it->get<std::string>() +
                           "' is not supported (only 'default')");
    }
  }
  auto member = [&](const char* key) -> const json* {
    auto it = rp->find(key);
    return it == rp->end() ? nullptr : &*it;
  };
  FULGUR_ASSIGN_OR_RETURN(r.theta, f.double_of(member("rope_theta"), "rope_parameters.rope_theta"));
  FULGUR_ASSIGN_OR_RETURN(r.partial_rotary_factor,
                          f.double_of(member("partial_rotary_factor"), "rope_parameters.partial_rotary_factor"));
  return r;
}

// Two spellings of one value: both present must agree; returns whichever is present.
Expected<std::optional<double>> merge_same(const Fields& f, std::optional<double> a, const char* a_name,
                                           std::optional<double> b, const char* b_name) {
  if (a && b && *a != *b) {
    return f.invalid("'" + std::string(a_name) + "' (" + num(*a) + ") and '" + b_name + "' (" + num(*b) + ") disagree");
  }
  return a ? a : b;
}

Expected<int64_t> rotary_dim_from_factor(const Fields& f, double factor, const char* name, int64_t head_dim) {
  double r = factor * static_cast<double>(head_dim);
  double rounded = std::round(r);
  // Relative tolerance: rotary_dim / head_dim * head_dim can be one ulp off the integer.
  if (!(factor > 0.0) || factor > 1.0 || std::fabs(r - rounded) > 1e-9 * std::max(1.0, r) ||
      static_cast<int64_t>(rounded) % 2 != 0) {
    return f.invalid("'" + std::string(name) + "' " + num(factor) + " gives a rotary dim of " + num(r) +
                     " for head_dim " + fmt_int(head_dim) + "; it must be a positive even integer no larger than head_dim");
  }
  return static_cast<int64_t>(rounded);
}

Status read_rope(const Fields& f, ModelConfig& cfg) {
  if (f.present("rope_scaling")) return f.unsupported("'rope_scaling' is not supported");
  FULGUR_ASSIGN_OR_RETURN(auto rp, read_rope_parameters(f));
  FULGUR_ASSIGN_OR_RETURN(auto top_theta, f.opt_double("rope_theta"));
  FULGUR_ASSIGN_OR_RETURN(auto theta, merge_same(f, top_theta, "rope_theta", rp.theta, "rope_parameters.rope_theta"));
  cfg.rope_theta = theta.value_or(1e6);  // ORIG and transformers both default to 1e6

  FULGUR_ASSIGN_OR_RETURN(auto top_prf, f.opt_double("partial_rotary_factor"));
  FULGUR_ASSIGN_OR_RETURN(auto prf, merge_same(f, top_prf, "partial_rotary_factor", rp.partial_rotary_factor,
                                               "rope_parameters.partial_rotary_factor"));
  FULGUR_ASSIGN_OR_RETURN(auto rotary_dim, f.opt_int("rotary_dim"));
  std::optional<int64_t> from_factor;
  if (prf) {
    const char* name = top_prf ? "partial_rotary_factor" : "rope_parameters.partial_rotary_factor";
    FULGUR_ASSIGN_OR_RETURN(from_factor, rotary_dim_from_factor(f, *prf, name, cfg.head_dim));
  }
  if (rotary_dim && from_factor && *rotary_dim != *from_factor) {
    return f.invalid("'rotary_dim' (" + fmt_int(*rotary_dim) + ") and 'partial_rotary_factor' (" + num(*prf) +
                     " * head_dim " + fmt_int(cfg.head_dim) + " = " + fmt_int(*from_factor) + ") disagree");
  }
  cfg.rotary_dim = rotary_dim ? *rotary_dim : from_factor ? *from_factor : cfg.head_dim;
  return Status::ok();
}

// eos/bos: null, an integer, or (transformers) a list of integers; a list gives its first entry.
Expected<int64_t> read_token_id(const Fields& f, const char* name) {
  const json* v = f.raw(name);
  if (v == nullptr || v->is_null()) return int64_t{-1};
  if (v->is_array()) {
    if (v->empty()) return int64_t{-1};
    FULGUR_ASSIGN_OR_RETURN(auto first, f.int_of(&(*v)[0], std::string(name) + "[0]"));
    if (!first) return f.wrong_type(std::string(name) + "[0]", "an integer", (*v)[0]);
    return *first;
  }
  FULGUR_ASSIGN_OR_RETURN(auto id, f.int_of(v, name));
  return *id;
}

// shared_intermediate_size: 0, or a list of zeros (ORIG indexes it per layer; transformers'
// VL-01 migration accepts a one-element list). Anything non-zero is a shared expert.
Status check_no_shared_expert(const Fields& f) {
  const json* v = f.raw("shared_intermediate_size");
  if (v == nullptr || v->is_null()) return Status::ok();
  auto check_one = [&](const json& e, const std::string& name) -> Status {
    FULGUR_ASSIGN_OR_RETURN(auto n, f.int_of(&e, name));
    if (n && *n != 0) {
      return f.unsupported("'" + name + "' is " + std::to_string(*n) +
                           ": shared experts are not supported (every MiniMax-Text-01 release has 0)");
    }
    return Status::ok();
  };
  if (!v->is_array()) return check_one(*v, "shared_intermediate_size");
  for (size_t i = 0; i < v->size(); ++i) {
    FULGUR_TRY(check_one((*v)[i], "shared_intermediate_size[" + std::to_string(i) + "]"));
  }
  return Status::ok();
}

Status read_misc(const Fields& f, Dialect dialect, ModelConfig& cfg) {
  FULGUR_ASSIGN_OR_RETURN(auto postnorm, f.opt_bool("postnorm"));
  // ORIG reads getattr(config, "postnorm", False); transformers hard-codes the postnorm form.
  cfg.postnorm = postnorm.value_or(dialect == Dialect::transformers);
  if (!cfg.postnorm) {
    return f.unsupported(postnorm ? "'postnorm' is false: only the postnorm residual is supported (spec §6)"
                                  : "'postnorm' is absent, which the official code reads as false: only "
                                    "the postnorm residual is supported (spec §6)");
  }
  FULGUR_TRY(check_no_shared_expert(f));
  FULGUR_ASSIGN_OR_RETURN(auto act, f.opt_string("hidden_act"));
  if (act && *act != "silu") return f.unsupported("hidden_act '" + *act + "' is not supported (only 'silu')");
  if (f.present("sliding_window")) return f.unsupported("'sliding_window' must be null (not supported)");

  FULGUR_ASSIGN_OR_RETURN(auto eps, f.opt_double("rms_norm_eps"));
  cfg.rms_norm_eps = eps.value_or(1e-5);
  // Not a MiniMax field: fulgur writes it so a non-default value round-trips.
  FULGUR_ASSIGN_OR_RETURN(auto lightning_eps, f.opt_double("lightning_norm_eps"));
  cfg.lightning_norm_eps = lightning_eps.value_or(1e-6);
  FULGUR_ASSIGN_OR_RETURN(auto block, f.opt_int("block_size"));
  cfg.block_size = block.value_or(256);
  FULGUR_ASSIGN_OR_RETURN(auto max_pos, f.opt_int("max_position_embeddings"));
  cfg.max_position_embeddings = max_pos.value_or(4096 * 32);  // both references' default
  FULGUR_ASSIGN_OR_RETURN(auto tie, f.opt_bool("tie_word_embeddings"));
  cfg.tie_word_embeddings = tie.value_or(false);
  FULGUR_ASSIGN_OR_RETURN(cfg.eos_token_id, read_token_id(f, "eos_token_id"));
  FULGUR_ASSIGN_OR_RETURN(cfg.bos_token_id, read_token_id(f, "bos_token_id"));
  return Status::ok();
}

Expected<ModelConfig> parse_object(const json& root, const std::string& origin) {
  if (!root.is_object()) {
    return Status(Errc::invalid_config, origin + ": expected a JSON object, got " + describe_value(root));
  }
  Fields f(root, origin);
  ModelConfig cfg;
  FULGUR_ASSIGN_OR_RETURN(Dialect dialect, detect_dialect(f, cfg));
  FULGUR_TRY(read_dims(f, cfg));
  FULGUR_TRY(read_layer_kinds(f, dialect, cfg));
  FULGUR_TRY(read_coefficients(f, cfg));
  FULGUR_TRY(read_rope(f, cfg));
  FULGUR_TRY(read_misc(f, dialect, cfg));
  if (Status st = cfg.validate(); !st.is_ok()) return Status(st.code(), origin + ": " + st.message());
  return cfg;
}

}  // namespace

Status ModelConfig::validate() const {
  auto bad = [](const std::string& m) { return Status(Errc::invalid_config, m); };
  const std::pair<const char*, int64_t> dims[] = {
      {"hidden_size", hidden_size},         {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads}, {"num_key_value_heads", num_key_value_heads},
      {"head_dim", head_dim},               {"vocab_size", vocab_size},
      {"num_local_experts", num_local_experts}, {"num_experts_per_tok", num_experts_per_tok},
      {"intermediate_size", intermediate_size}, {"block_size", block_size},
  };
  for (const auto& [name, v] : dims) {
    if (v <= 0 || v > kMaxDim) {
      return bad(std::string(name) + " must be in [1, " + fmt_int(kMaxDim) + "], got " + fmt_int(v));
    }
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return bad("num_attention_heads (" + fmt_int(num_attention_heads) +
               ") is not a multiple of num_key_value_heads (" + fmt_int(num_key_value_heads) + ")");
  }
  if (rotary_dim <= 0 || rotary_dim > head_dim || rotary_dim % 2 != 0) {
    return bad("rotary_dim (" + fmt_int(rotary_dim) + ") must be even and in [2, head_dim = " +
               fmt_int(head_dim) + "]");
  }
  if (num_experts_per_tok > num_local_experts) {
    return bad("num_experts_per_tok (" + fmt_int(num_experts_per_tok) + ") exceeds num_local_experts (" +
               fmt_int(num_local_experts) + ")");
  }
  if (static_cast<int64_t>(layer_types.size()) != num_hidden_layers) {
    return bad("layer_types has " + fmt_int(static_cast<int64_t>(layer_types.size())) +
               " entries but num_hidden_layers is " + fmt_int(num_hidden_layers));
  }
  if (max_position_embeddings < 0) return bad("max_position_embeddings must be >= 0");
  const std::pair<const char*, double> positive[] = {
      {"rms_norm_eps", rms_norm_eps}, {"lightning_norm_eps", lightning_norm_eps}, {"rope_theta", rope_theta}};
  for (const auto& [name, v] : positive) {
    if (!(v > 0.0) || !std::isfinite(v)) return bad(std::string(name) + " must be a positive finite number");
  }
  for (double c : {full_attn_alpha, full_attn_beta, linear_attn_alpha, linear_attn_beta, mlp_alpha, mlp_beta}) {
    if (!std::isfinite(c)) return bad("DeepNorm alpha/beta factors must be finite");
  }
  for (const auto& [name, id] : {std::pair{"eos_token_id", eos_token_id}, std::pair{"bos_token_id", bos_token_id}}) {
    if (id < -1 || id >= vocab_size) {
      return bad(std::string(name) + " (" + fmt_int(id) + ") is outside [0, vocab_size = " + fmt_int(vocab_size) + ")");
    }
  }
  if (!postnorm) return Status(Errc::unsupported, "postnorm false is not supported (spec §6)");
  return Status::ok();
}

Expected<ModelConfig> parse_model_config(std::string_view json_text, std::string_view origin_view) {
  const std::string origin(origin_view);
  try {
    json root;
    try {
      root = json::parse(json_text.begin(), json_text.end());
    } catch (const json::parse_error& e) {
      return Status(Errc::parse_error, origin + ": not valid JSON: " + e.what());
    }
    return parse_object(root, origin);
  } catch (const std::bad_alloc&) {
    return Status(Errc::out_of_memory, origin + ": out of memory while parsing");
  } catch (const std::exception& e) {
    return Status(Errc::internal, origin + ": unexpected error while parsing: " + e.what());
  }
}

Expected<ModelConfig> load_model_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(Errc::not_found, path + ": cannot open config file");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status(Errc::io_error, path + ": read failed");
  return parse_model_config(text.str(), path);
}

std::string model_config_to_json(const ModelConfig& cfg) {
  nlohmann::ordered_json j;
  auto id_or_null = [](int64_t id) { return id < 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(id); };
  j["architectures"] = {"MiniMaxText01ForCausalLM"};
  j["model_type"] = "minimax_text_01";
  j["hidden_size"] = cfg.hidden_size;
  j["num_hidden_layers"] = cfg.num_hidden_layers;
  j["num_attention_heads"] = cfg.num_attention_heads;
  j["num_key_value_heads"] = cfg.num_key_value_heads;
  j["head_dim"] = cfg.head_dim;
  j["vocab_size"] = cfg.vocab_size;
  j["intermediate_size"] = cfg.intermediate_size;
  j["num_local_experts"] = cfg.num_local_experts;
  j["num_experts_per_tok"] = cfg.num_experts_per_tok;
  j["shared_intermediate_size"] = 0;
  j["max_position_embeddings"] = cfg.max_position_embeddings;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = cfg.rms_norm_eps;
  j["lightning_norm_eps"] = cfg.lightning_norm_eps;  // fulgur extension, ignored by the others
  j["block_size"] = cfg.block_size;
  j["postnorm"] = cfg.postnorm;
  j["tie_word_embeddings"] = cfg.tie_word_embeddings;
  j["bos_token_id"] = id_or_null(cfg.bos_token_id);
  j["eos_token_id"] = id_or_null(cfg.eos_token_id);
  // Official dialect.
  auto& attn = j["attn_type_list"] = nlohmann::ordered_json::array();
  for (LayerKind k : cfg.layer_types) attn.push_back(k == LayerKind::lightning ? 0 : 1);
  j["layernorm_full_attention_alpha"] = cfg.full_attn_alpha;
  j["layernorm_full_attention_beta"] = cfg.full_attn_beta;
  j["layernorm_linear_attention_alpha"] = cfg.linear_attn_alpha;
  j["layernorm_linear_attention_beta"] = cfg.linear_attn_beta;
  j["layernorm_mlp_alpha"] = cfg.mlp_alpha;
  j["layernorm_mlp_beta"] = cfg.mlp_beta;
  j["rotary_dim"] = cfg.rotary_dim;
  j["rope_theta"] = cfg.rope_theta;
  // transformers dialect (same values).
  auto& types = j["layer_types"] = nlohmann::ordered_json::array();
  for (LayerKind k : cfg.layer_types) types.push_back(k == LayerKind::lightning ? "linear_attention" : "full_attention");
  j["full_attn_alpha_factor"] = cfg.full_attn_alpha;
  j["full_attn_beta_factor"] = cfg.full_attn_beta;
  j["linear_attn_alpha_factor"] = cfg.linear_attn_alpha;
  j["linear_attn_beta_factor"] = cfg.linear_attn_beta;
  j["mlp_alpha_factor"] = cfg.mlp_alpha;
  j["mlp_beta_factor"] = cfg.mlp_beta;
  // rotary_dim / head_dim reads back as rotary_dim: the parse multiplies by head_dim and rounds
  // (within a relative 1e-9).
  const double factor = cfg.head_dim > 0 ? static_cast<double>(cfg.rotary_dim) / static_cast<double>(cfg.head_dim) : 1.0;
  j["partial_rotary_factor"] = factor;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", cfg.rope_theta}, {"partial_rotary_factor", factor}};
  return j.dump(2) + "\n";
}

std::vector<float> lightning_slopes(const ModelConfig& cfg, int64_t layer_idx) {
  // ALiBi get_slopes (ORIG `_build_slope_tensor`), written in the same operation order as the
  // Python so the doubles match bit for bit (same libm pow/log2).
  auto power_of_two_slopes = [](int64_t n) {
    const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(n)) - 3.0)));
    std::vector<double> s(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) s[static_cast<size_t>(i)] = start * std::pow(start, static_cast<double>(i));
    return s;
  };
  const int64_t n = cfg.num_attention_heads;
  if (n <= 0) return {};
  std::vector<double> base;
  if ((n & (n - 1)) == 0) {
    base = power_of_two_slopes(n);
  } else {
    // Non-power-of-two: slopes of the closest lower power of two, then every other slope of
    // the next power of two (get_slopes(2*c)[0::2][:n-c]; 2*c is a power of two).
    int64_t closest = 1;
    while (closest * 2 <= n) closest *= 2;
    base = power_of_two_slopes(closest);
    std::vector<double> extra = power_of_two_slopes(2 * closest);
    for (int64_t i = 0; i < n - closest; ++i) base.push_back(extra[static_cast<size_t>(2 * i)]);
  }
  // ORIG (MiniMaxText01Model.forward): slope * (1 - l / (L - 1) + 1e-5), global layer index.
  // ORIG divides by zero for L == 1; we follow vLLM's guard (`num_hidden_layer <= 1`:
  // factor 1 + 1e-5), which is also ORIG's value for layer 0. transformers' variant
  // (denominator L - 1 + 1e-5) is deliberately not used (spec §3.2, §11).
  const int64_t num_layers = cfg.num_hidden_layers;
  const double factor =
      num_layers <= 1 ? 1.0 + 1e-5
                      : 1.0 - static_cast<double>(layer_idx) / static_cast<double>(num_layers - 1) + 1e-5;
  std::vector<float> out(base.size());
  for (size_t h = 0; h < base.size(); ++h) out[h] = static_cast<float>(base[h] * factor);
  return out;
}

}  // namespace fulgur
