#include "orchestration/checkpoint/checkpoint.h"

#include <array>
#include <cstring>
#include <new>
#include <unordered_set>
#include <vector>

namespace fulgur {
namespace {

using Shape = std::vector<int64_t>;

// ---- names ----------------------------------------------------------------------------------

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

std::string expert_name(int64_t layer, int64_t expert, const char* w) {
  return layer_prefix(layer) + "block_sparse_moe.experts." + std::to_string(expert) + "." + w + ".weight";
}

const char* kind_name(LayerKind k) { return k == LayerKind::lightning ? "lightning" : "softmax"; }

// ---- expected shapes (weights.h contracts) ---------------------------------------------------

struct Shapes {
  const ModelConfig& c;
  Shape vocab_by_hidden() const { return {c.vocab_size, c.hidden_size}; }
  Shape hidden() const { return {c.hidden_size}; }
  Shape qkv() const { return {3 * c.q_size(), c.hidden_size}; }
  Shape q_by_hidden() const { return {c.q_size(), c.hidden_size}; }
  Shape hidden_by_q() const { return {c.hidden_size, c.q_size()}; }
  Shape q() const { return {c.q_size()}; }
  Shape kv_by_hidden() const { return {c.kv_size(), c.hidden_size}; }
  Shape router() const { return {c.num_local_experts, c.hidden_size}; }
  Shape inter_by_hidden() const { return {c.intermediate_size, c.hidden_size}; }
  Shape hidden_by_inter() const { return {c.hidden_size, c.intermediate_size}; }
  Shape fused_gate_up() const { return {c.num_local_experts, 2 * c.intermediate_size, c.hidden_size}; }
  Shape fused_down() const { return {c.num_local_experts, c.hidden_size, c.intermediate_size}; }
};

bool is_float(DType dt) { return dt == DType::f32 || dt == DType::bf16 || dt == DType::f16; }

// A contiguous copy in `dtype`, or `t` itself when it already is one.
Expected<Tensor> convert(const Tensor& t, DType dtype, const std::string& name) {
  if (t.dtype() == dtype && t.is_contiguous()) return t;
  try {
    auto out = t.cast(dtype);
    if (!out) return Status(out.error().code(), name + ": " + out.error().message());
    return out;
  } catch (const std::bad_alloc&) {
    return Status(Errc::out_of_memory, name + ": out of memory converting " + t.describe() + " to " + dtype_name(dtype));
  }
}

// ---- loading --------------------------------------------------------------------------------

class Loader {
 public:
  Loader(const CheckpointFiles& files, const ModelConfig& cfg) : files_(files), cfg_(cfg), shapes_{cfg} {}

  Expected<ModelWeights> run() {
    detect_naming();
    ModelWeights w;
    FULGUR_ASSIGN_OR_RETURN(w.embed, weight("model.embed_tokens.weight", shapes_.vocab_by_hidden()));
    w.layers.resize(static_cast<size_t>(cfg_.num_hidden_layers));
    for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) FULGUR_TRY(load_layer(l, w.layers[static_cast<size_t>(l)]));
    FULGUR_ASSIGN_OR_RETURN(w.final_norm, weight("model.norm.weight", shapes_.hidden()));
    if (has("lm_head.weight") || !cfg_.tie_word_embeddings) {
      FULGUR_ASSIGN_OR_RETURN(w.lm_head, weight("lm_head.weight", shapes_.vocab_by_hidden()));
    } else {
      w.lm_head = w.embed;  // tied and not stored
    }
    FULGUR_TRY(check_nothing_left());
    return w;
  }

 private:
  bool has(const std::string& name) const { return files_.find(name).file != nullptr; }

  void detect_naming() {
    for (const std::string& name : files_.tensor_names()) {
      if (name.find(".mlp.experts.gate_up_proj") != std::string::npos ||
          name.find(".mlp.gate.weight") != std::string::npos) {
        naming_ = WeightNaming::transformers;
        return;
      }
    }
  }

  // Where a missing tensor should have been, for the message.
  std::string missing_message(const std::string& name) const {
    if (!files_.sharded()) return "tensor '" + name + "' is missing from " + files_.file_for(name);
    std::string msg = "tensor '" + name + "' is missing: " + kSafetensorsIndexFile + " does not list it";
    // Point at the shard holding its layer's other tensors, where it would be expected.
    const std::string prefix = name.rfind("model.layers.", 0) == 0
                                   ? name.substr(0, name.find('.', std::string("model.layers.").size()) + 1)
                                   : std::string();
    if (!prefix.empty()) {
      for (const std::string& other : files_.tensor_names()) {
        if (other.rfind(prefix, 0) == 0) {
          return msg + " (the other '" + prefix + "' tensors are in " + files_.file_for(other) + ")";
        }
      }
    }
    return msg;
  }

  // For attention weights: explains a layer-kind mismatch between config.json and the files.
  std::string kind_hint(int64_t layer) const {
    const LayerKind kind = cfg_.layer_types[static_cast<size_t>(layer)];
    const std::string other = layer_prefix(layer) + (kind == LayerKind::lightning ? "self_attn.q_proj.weight"
                                                                                   : "self_attn.qkv_proj.weight");
    if (!has(other)) return "";
    return std::string(" (config.json says layer ") + std::to_string(layer) + " is " + kind_name(kind) +
           " attention, but the checkpoint has " +
           kind_name(kind == LayerKind::lightning ? LayerKind::softmax : LayerKind::lightning) +
           "-attention weights for it)";
  }

  // Shape- and dtype-checked view of a stored tensor; marks it used.
  Expected<Tensor> view(const std::string& name, const Shape& shape, const std::string& hint = "") {
    CheckpointFiles::Located at = files_.find(name);
    if (at.file == nullptr) return Status(Errc::not_found, missing_message(name) + hint);
    used_.insert(name);
    const SafetensorsEntry& e = *at.entry;
    if (e.shape != shape) {
      return Status(Errc::invalid_checkpoint, name + ": expected " + shape_string(shape) + ", got " +
                                                  shape_string(e.shape) + " in " + at.file->file_name() + hint);
    }
    if (!is_float(e.dtype)) {
      return Status(Errc::invalid_checkpoint, name + ": expected a float dtype (F32, BF16, F16), got " +
                                                  std::string(dtype_safetensors_name(e.dtype)) + " in " +
                                                  at.file->file_name());
    }
    return at.file->tensor(e);
  }

  // view() converted to contiguous f32 (a no-op for aligned f32 data).
  Expected<Tensor> weight(const std::string& name, const Shape& shape, const std::string& hint = "") {
    FULGUR_ASSIGN_OR_RETURN(Tensor t, view(name, shape, hint));
    return convert(t, DType::f32, name);
  }

  Status load_layer(int64_t l, LayerWeights& out) {
    const std::string p = layer_prefix(l);
    out.kind = cfg_.layer_types[static_cast<size_t>(l)];
    FULGUR_ASSIGN_OR_RETURN(out.input_norm, weight(p + "input_layernorm.weight", shapes_.hidden()));
    FULGUR_ASSIGN_OR_RETURN(out.post_norm, weight(p + "post_attention_layernorm.weight", shapes_.hidden()));
    FULGUR_TRY(out.kind == LayerKind::lightning ? load_lightning(l, out.lightning) : load_softmax(l, out.softmax));
    return load_moe(l, out.moe);
  }

  Status load_lightning(int64_t l, LightningWeights& out) {
    const std::string p = layer_prefix(l) + "self_attn.";
    const std::string hint = kind_hint(l);
    FULGUR_ASSIGN_OR_RETURN(out.qkv, weight(p + "qkv_proj.weight", shapes_.qkv(), hint));
    FULGUR_ASSIGN_OR_RETURN(out.output_gate, weight(p + "output_gate.weight", shapes_.q_by_hidden(), hint));
    FULGUR_ASSIGN_OR_RETURN(out.out_proj, weight(p + "out_proj.weight", shapes_.hidden_by_q(), hint));
    FULGUR_ASSIGN_OR_RETURN(out.norm, weight(p + "norm.weight", shapes_.q(), hint));
    return Status::ok();
  }

  Status load_softmax(int64_t l, SoftmaxWeights& out) {
    const std::string p = layer_prefix(l) + "self_attn.";
    const std::string hint = kind_hint(l);
    FULGUR_ASSIGN_OR_RETURN(out.q_proj, weight(p + "q_proj.weight", shapes_.q_by_hidden(), hint));
    FULGUR_ASSIGN_OR_RETURN(out.k_proj, weight(p + "k_proj.weight", shapes_.kv_by_hidden(), hint));
    FULGUR_ASSIGN_OR_RETURN(out.v_proj, weight(p + "v_proj.weight", shapes_.kv_by_hidden(), hint));
    FULGUR_ASSIGN_OR_RETURN(out.o_proj, weight(p + "o_proj.weight", shapes_.hidden_by_q(), hint));
    return Status::ok();
  }

  Status load_moe(int64_t l, MoeWeights& out) {
    const std::string p = layer_prefix(l);
    const std::string official_router = p + "block_sparse_moe.gate.weight";
    const std::string hf_router = p + "mlp.gate.weight";
    const bool use_hf_router =
        has(hf_router) || (!has(official_router) && naming_ == WeightNaming::transformers);
    FULGUR_ASSIGN_OR_RETURN(out.gate, weight(use_hf_router ? hf_router : official_router, shapes_.router()));
    out.experts.resize(static_cast<size_t>(cfg_.num_local_experts));
    const bool fused = has(p + "mlp.experts.gate_up_proj") || has(p + "mlp.experts.down_proj") ||
                       (naming_ == WeightNaming::transformers && !has(expert_name(l, 0, "w1")));
    return fused ? load_fused_experts(l, out) : load_expert_list(l, out);
  }

  Status load_expert_list(int64_t l, MoeWeights& out) {
    for (int64_t e = 0; e < cfg_.num_local_experts; ++e) {
      ExpertWeights& x = out.experts[static_cast<size_t>(e)];
      FULGUR_ASSIGN_OR_RETURN(x.w1, weight(expert_name(l, e, "w1"), shapes_.inter_by_hidden()));
      FULGUR_ASSIGN_OR_RETURN(x.w3, weight(expert_name(l, e, "w3"), shapes_.inter_by_hidden()));
      FULGUR_ASSIGN_OR_RETURN(x.w2, weight(expert_name(l, e, "w2"), shapes_.hidden_by_inter()));
    }
    return Status::ok();
  }

  // gate_up_proj [E, 2I, H] (rows [0, I) gate = w1, [I, 2I) up = w3) and down_proj [E, H, I],
  // converted once; each expert's matrices are row views of the converted tensor.
  Status load_fused_experts(int64_t l, MoeWeights& out) {
    const std::string p = layer_prefix(l) + "mlp.experts.";
    const int64_t E = cfg_.num_local_experts, I = cfg_.intermediate_size, H = cfg_.hidden_size;
    FULGUR_ASSIGN_OR_RETURN(Tensor gate_up, weight(p + "gate_up_proj", shapes_.fused_gate_up()));
    FULGUR_ASSIGN_OR_RETURN(Tensor down, weight(p + "down_proj", shapes_.fused_down()));
    const Tensor gate_up_rows = gate_up.reshape({E * 2 * I, H});  // [E*2I, H]
    const Tensor down_rows = down.reshape({E * H, I});            // [E*H, I]
    for (int64_t e = 0; e < E; ++e) {
      ExpertWeights& x = out.experts[static_cast<size_t>(e)];
      x.w1 = gate_up_rows.rows(e * 2 * I, I);
      x.w3 = gate_up_rows.rows(e * 2 * I + I, I);
      x.w2 = down_rows.rows(e * H, H);
    }
    return Status::ok();
  }

  Status check_nothing_left() const {
    std::vector<std::string> unexpected;
    for (const std::string& name : files_.tensor_names()) {
      if (used_.count(name) == 0 && !is_derived_buffer(name)) unexpected.push_back(name);
    }
    if (unexpected.empty()) return Status::ok();
    std::string msg = "unexpected tensor '" + unexpected.front() + "' in " + files_.file_for(unexpected.front()) +
                      ": not a weight of this model (config.json: " + std::to_string(cfg_.num_hidden_layers) +
                      " layers, " + std::to_string(cfg_.num_local_experts) + " experts)";
    if (unexpected.size() > 1) msg += "; " + std::to_string(unexpected.size() - 1) + " more unexpected tensors";
    return Status(Errc::invalid_checkpoint, msg);
  }

  const CheckpointFiles& files_;
  const ModelConfig& cfg_;
  Shapes shapes_;
  WeightNaming naming_ = WeightNaming::official;
  std::unordered_set<std::string> used_;
};

// ---- writing --------------------------------------------------------------------------------

// Collects named tensors in `dtype`, checking each against its expected shape.
class TensorList {
 public:
  explicit TensorList(DType dtype) : dtype_(dtype) {}

  Status add(const std::string& name, const Tensor& t, const Shape& shape) {
    FULGUR_TRY(check(name, t, shape));
    FULGUR_ASSIGN_OR_RETURN(Tensor c, convert(t, dtype_, name));
    out_.emplace_back(name, std::move(c));
    return Status::ok();
  }

  // Concatenates `parts` (each checked against `part_shape`) along dim 0 into one `shape` tensor.
  Status add_concat(const std::string& name, const std::vector<const Tensor*>& parts, const Shape& part_shape,
                    const Shape& shape) {
    Tensor whole;
    try {
      whole = Tensor::empty(dtype_, shape);
    } catch (const std::bad_alloc&) {
      return Status(Errc::out_of_memory, name + ": out of memory allocating " + shape_string(shape));
    }
    char* dst = static_cast<char*>(whole.raw());
    for (const Tensor* part : parts) {
      FULGUR_TRY(check(name, *part, part_shape));
      FULGUR_ASSIGN_OR_RETURN(Tensor c, convert(*part, dtype_, name));
      std::memcpy(dst, c.raw(), c.nbytes());
      dst += c.nbytes();
    }
    out_.emplace_back(name, std::move(whole));
    return Status::ok();
  }

  NamedTensors take() { return std::move(out_); }

 private:
  static Status check(const std::string& name, const Tensor& t, const Shape& shape) {
    if (!t.defined() || t.shape() != shape || !is_float(t.dtype()) || t.device().kind != DeviceKind::cpu) {
      return Status(Errc::invalid_argument, "weights for '" + name + "': expected a host float tensor " +
                                                shape_string(shape) + ", got " + t.describe() + " on " +
                                                device_name(t.device()));
    }
    return Status::ok();
  }

  DType dtype_;
  NamedTensors out_;
};

Status check_weights_match(const ModelWeights& w, const ModelConfig& cfg) {
  if (static_cast<int64_t>(w.layers.size()) != cfg.num_hidden_layers) {
    return Status(Errc::invalid_argument, "weights have " + std::to_string(w.layers.size()) +
                                              " layers but the config has " + std::to_string(cfg.num_hidden_layers));
  }
  for (size_t l = 0; l < w.layers.size(); ++l) {
    if (w.layers[l].kind != cfg.layer_types[l]) {
      return Status(Errc::invalid_argument, "weights of layer " + std::to_string(l) + " are " +
                                                kind_name(w.layers[l].kind) + " but the config says " +
                                                kind_name(cfg.layer_types[l]));
    }
    if (static_cast<int64_t>(w.layers[l].moe.experts.size()) != cfg.num_local_experts) {
      return Status(Errc::invalid_argument, "layer " + std::to_string(l) + " has " +
                                                std::to_string(w.layers[l].moe.experts.size()) + " experts, the config " +
                                                std::to_string(cfg.num_local_experts));
    }
  }
  return Status::ok();
}

Status add_attention(TensorList& out, const LayerWeights& lw, const std::string& p, const Shapes& s) {
  if (lw.kind == LayerKind::lightning) {
    FULGUR_TRY(out.add(p + "self_attn.qkv_proj.weight", lw.lightning.qkv, s.qkv()));
    FULGUR_TRY(out.add(p + "self_attn.output_gate.weight", lw.lightning.output_gate, s.q_by_hidden()));
    FULGUR_TRY(out.add(p + "self_attn.out_proj.weight", lw.lightning.out_proj, s.hidden_by_q()));
    return out.add(p + "self_attn.norm.weight", lw.lightning.norm, s.q());
  }
  FULGUR_TRY(out.add(p + "self_attn.q_proj.weight", lw.softmax.q_proj, s.q_by_hidden()));
  FULGUR_TRY(out.add(p + "self_attn.k_proj.weight", lw.softmax.k_proj, s.kv_by_hidden()));
  FULGUR_TRY(out.add(p + "self_attn.v_proj.weight", lw.softmax.v_proj, s.kv_by_hidden()));
  return out.add(p + "self_attn.o_proj.weight", lw.softmax.o_proj, s.hidden_by_q());
}

Status add_moe(TensorList& out, const MoeWeights& moe, int64_t l, WeightNaming naming, const Shapes& s) {
  const std::string p = layer_prefix(l);
  if (naming == WeightNaming::official) {
    FULGUR_TRY(out.add(p + "block_sparse_moe.gate.weight", moe.gate, s.router()));
    for (size_t e = 0; e < moe.experts.size(); ++e) {
      const auto ei = static_cast<int64_t>(e);
      FULGUR_TRY(out.add(expert_name(l, ei, "w1"), moe.experts[e].w1, s.inter_by_hidden()));
      FULGUR_TRY(out.add(expert_name(l, ei, "w3"), moe.experts[e].w3, s.inter_by_hidden()));
      FULGUR_TRY(out.add(expert_name(l, ei, "w2"), moe.experts[e].w2, s.hidden_by_inter()));
    }
    return Status::ok();
  }
  FULGUR_TRY(out.add(p + "mlp.gate.weight", moe.gate, s.router()));
  std::vector<const Tensor*> gate_up, down;
  for (const ExpertWeights& x : moe.experts) {
    gate_up.push_back(&x.w1);
    gate_up.push_back(&x.w3);
    down.push_back(&x.w2);
  }
  FULGUR_TRY(out.add_concat(p + "mlp.experts.gate_up_proj", gate_up, s.inter_by_hidden(), s.fused_gate_up()));
  return out.add_concat(p + "mlp.experts.down_proj", down, s.hidden_by_inter(), s.fused_down());
}

}  // namespace

bool is_derived_buffer(std::string_view name) {
  static constexpr std::array<std::string_view, 5> kSuffixes = {".slope_rate", ".query_decay", ".key_decay",
                                                                 ".diagonal_decay", ".inv_freq"};
  for (std::string_view s : kSuffixes) {
    if (name.size() >= s.size() && name.substr(name.size() - s.size()) == s) return true;
  }
  return false;
}

Expected<ModelWeights> load_model_weights(const CheckpointFiles& files, const ModelConfig& cfg,
                                          const LoadOptions& options) {
  if (options.device.kind != DeviceKind::cpu) {
    return Status(Errc::unsupported, "load_model_weights: device " + device_name(options.device) +
                                         " is not supported yet (cpu only)");
  }
  FULGUR_TRY(cfg.validate());
  try {
    return Loader(files, cfg).run();
  } catch (const std::bad_alloc&) {
    return Status(Errc::out_of_memory, files.dir() + ": out of memory while loading weights");
  } catch (const std::exception& e) {
    return Status(Errc::internal, files.dir() + ": unexpected error while loading weights: " + e.what());
  }
}

Expected<ModelWeights> load_model_weights(const std::string& dir, const ModelConfig& cfg, const LoadOptions& options,
                                          const ProgressCallback& progress) {
  FULGUR_ASSIGN_OR_RETURN(CheckpointFiles files, CheckpointFiles::open(dir, progress));
  return load_model_weights(files, cfg, options);
}

Expected<NamedTensors> model_weights_to_tensors(const ModelWeights& w, const ModelConfig& cfg, WeightNaming naming,
                                                DType dtype) {
  if (!is_float(dtype)) {
    return Status(Errc::invalid_argument, std::string("checkpoint dtype must be f32, bf16 or f16, got ") + dtype_name(dtype));
  }
  FULGUR_TRY(cfg.validate());
  FULGUR_TRY(check_weights_match(w, cfg));
  const Shapes s{cfg};
  TensorList out(dtype);
  try {
    FULGUR_TRY(out.add("model.embed_tokens.weight", w.embed, s.vocab_by_hidden()));
    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
      const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
      const std::string p = layer_prefix(l);
      FULGUR_TRY(out.add(p + "input_layernorm.weight", lw.input_norm, s.hidden()));
      FULGUR_TRY(out.add(p + "post_attention_layernorm.weight", lw.post_norm, s.hidden()));
      FULGUR_TRY(add_attention(out, lw, p, s));
      FULGUR_TRY(add_moe(out, lw.moe, l, naming, s));
    }
    FULGUR_TRY(out.add("model.norm.weight", w.final_norm, s.hidden()));
    const bool tied_and_shared = cfg.tie_word_embeddings && w.lm_head.raw() == w.embed.raw();
    if (!tied_and_shared) FULGUR_TRY(out.add("lm_head.weight", w.lm_head, s.vocab_by_hidden()));
  } catch (const std::bad_alloc&) {
    return Status(Errc::out_of_memory, "out of memory while preparing checkpoint tensors");
  }
  return out.take();
}

Status save_checkpoint(const std::string& dir, const ModelWeights& weights, const ModelConfig& cfg,
                       const SaveOptions& options) {
  FULGUR_ASSIGN_OR_RETURN(NamedTensors tensors, model_weights_to_tensors(weights, cfg, options.naming, options.dtype));
  const std::string base = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  FULGUR_TRY(write_file_atomically(base + "config.json", model_config_to_json(cfg)));
  const SafetensorsMetadata metadata = {{"format", "pt"}};  // what transformers expects
  if (options.max_shard_bytes == 0) return write_safetensors(base + kSafetensorsSingleFile, tensors, metadata);
  auto shards = write_sharded_safetensors(dir, tensors, options.max_shard_bytes, metadata);
  return shards ? Status::ok() : shards.error();
}

}  // namespace fulgur
