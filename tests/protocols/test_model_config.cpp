// ModelConfig: both config.json dialects, contradictions, missing/mistyped fields, round trip,
// lightning slopes (spec §1, §3.2), and a bounded fuzz of the parser.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "protocols/model_config.h"

namespace fulgur {
namespace {

using nlohmann::json;

// MiniMax-Text-01 / M1 config.json values of spec §1 (official dialect), as the file spells them.
const char* kOfficialConfig = R"({
  "architectures": ["MiniMaxText01ForCausalLM"],
  "attn_type_list": [0,0,0,0,0,0,0,1, 0,0,0,0,0,0,0,1, 0,0,0,0,0,0,0,1, 0,0,0,0,0,0,0,1,
                     0,0,0,0,0,0,0,1, 0,0,0,0,0,0,0,1, 0,0,0,0,0,0,0,1, 0,0,0,0,0,0,0,1,
                     0,0,0,0,0,0,0,1, 0,0,0,0,0,0,0,1],
  "auto_map": {"AutoConfig": "configuration_minimax_text_01.MiniMaxText01Config",
               "AutoModelForCausalLM": "modeling_minimax_text_01.MiniMaxText01ForCausalLM"},
  "bos_token_id": null,
  "eos_token_id": null,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 6144,
  "initializer_range": 0.02,
  "intermediate_size": 9216,
  "layernorm_full_attention_alpha": 3.5565588200778455,
  "layernorm_full_attention_beta": 1.0,
  "layernorm_linear_attention_alpha": 3.5565588200778455,
  "layernorm_linear_attention_beta": 1.0,
  "layernorm_mlp_alpha": 3.5565588200778455,
  "layernorm_mlp_beta": 1.0,
  "max_position_embeddings": 10240000,
  "model_type": "minimax_text_01",
  "num_attention_heads": 64,
  "num_experts_per_tok": 2,
  "num_hidden_layers": 80,
  "num_key_value_heads": 8,
  "num_local_experts": 32,
  "output_router_logits": false,
  "postnorm": true,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000000,
  "rotary_dim": 64,
  "router_aux_loss_coef": 0.001,
  "router_jitter_noise": 0.0,
  "shared_intermediate_size": 0,
  "shared_moe_mode": "sigmoid",
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.2",
  "use_cache": true,
  "vocab_size": 200064
})";

constexpr double kAlpha = 3.5565588200778455;

json official_json() { return json::parse(kOfficialConfig); }

// The same model in the transformers 5.x dialect (what _migrate_legacy_text_config produces).
json transformers_json() {
  json o = official_json();
  json j;
  for (const char* k : {"hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                        "vocab_size", "intermediate_size", "num_local_experts", "num_experts_per_tok",
                        "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "bos_token_id",
                        "eos_token_id", "hidden_act"}) {
    j[k] = o[k];
  }
  j["model_type"] = "minimax";
  j["architectures"] = {"MiniMaxForCausalLM"};
  json types = json::array();
  for (int v : o["attn_type_list"]) types.push_back(v == 0 ? "linear_attention" : "full_attention");
  j["layer_types"] = types;
  for (const char* k : {"full_attn_alpha_factor", "linear_attn_alpha_factor", "mlp_alpha_factor"}) j[k] = kAlpha;
  for (const char* k : {"full_attn_beta_factor", "linear_attn_beta_factor", "mlp_beta_factor"}) j[k] = 1.0;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000000.0}, {"partial_rotary_factor", 0.5}};
  j["block_size"] = 256;
  return j;
}

// A small, valid config with non-default values everywhere (round-trip coverage).
json tiny_json() {
  return json{{"model_type", "minimax_text_01"},
              {"hidden_size", 16},
              {"num_hidden_layers", 3},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"head_dim", 6},
              {"rotary_dim", 4},
              {"rope_theta", 12345.5},
              {"vocab_size", 50},
              {"num_local_experts", 4},
              {"num_experts_per_tok", 2},
              {"intermediate_size", 12},
              {"rms_norm_eps", 1e-6},
              {"block_size", 7},
              {"max_position_embeddings", 4096},
              {"postnorm", true},
              {"tie_word_embeddings", true},
              {"attn_type_list", {0, 1, 0}},
              {"layernorm_full_attention_alpha", 1.25},
              {"layernorm_full_attention_beta", 0.5},
              {"layernorm_linear_attention_alpha", 2.5},
              {"layernorm_linear_attention_beta", 0.75},
              {"layernorm_mlp_alpha", 3.0},
              {"layernorm_mlp_beta", 0.25},
              {"eos_token_id", 49},
              {"bos_token_id", 0}};
}

Expected<ModelConfig> parse(const json& j) { return parse_model_config(j.dump()); }

ModelConfig parse_ok(const json& j) {
  auto r = parse(j);
  EXPECT_TRUE(r.has_value()) << r.error().to_string();
  return r.has_value() ? *r : ModelConfig{};
}

void expect_error(const json& j, Errc code, std::initializer_list<std::string> needles) {
  auto r = parse(j);
  ASSERT_FALSE(r.has_value()) << "expected an error for " << j.dump().substr(0, 200);
  EXPECT_EQ(r.error().code(), code) << r.error().to_string();
  for (const std::string& n : needles) {
    EXPECT_NE(r.error().message().find(n), std::string::npos) << "'" << n << "' not in: " << r.error().message();
  }
}

void expect_same_model(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.rotary_dim, b.rotary_dim);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.num_local_experts, b.num_local_experts);
  EXPECT_EQ(a.num_experts_per_tok, b.num_experts_per_tok);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.lightning_norm_eps, b.lightning_norm_eps);
  EXPECT_EQ(a.block_size, b.block_size);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.postnorm, b.postnorm);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.layer_types, b.layer_types);
  EXPECT_EQ(a.full_attn_alpha, b.full_attn_alpha);
  EXPECT_EQ(a.full_attn_beta, b.full_attn_beta);
  EXPECT_EQ(a.linear_attn_alpha, b.linear_attn_alpha);
  EXPECT_EQ(a.linear_attn_beta, b.linear_attn_beta);
  EXPECT_EQ(a.mlp_alpha, b.mlp_alpha);
  EXPECT_EQ(a.mlp_beta, b.mlp_beta);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
}

// ---- dialects -------------------------------------------------------------------------------

TEST(ModelConfig, OfficialMiniMaxText01) {
  auto r = parse_model_config(kOfficialConfig);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  const ModelConfig& c = *r;
  EXPECT_EQ(c.model_type, "minimax_text_01");
  EXPECT_EQ(c.hidden_size, 6144);
  EXPECT_EQ(c.num_hidden_layers, 80);
  EXPECT_EQ(c.num_attention_heads, 64);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.q_size(), 8192);
  EXPECT_EQ(c.kv_size(), 1024);
  EXPECT_EQ(c.rotary_dim, 64);
  EXPECT_EQ(c.rope_theta, 1e7);
  EXPECT_EQ(c.vocab_size, 200064);
  EXPECT_EQ(c.num_local_experts, 32);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.intermediate_size, 9216);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.lightning_norm_eps, 1e-6);
  EXPECT_EQ(c.block_size, 256);
  EXPECT_EQ(c.max_position_embeddings, 10240000);
  EXPECT_TRUE(c.postnorm);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_id, -1);
  EXPECT_EQ(c.bos_token_id, -1);
  for (double v : {c.full_attn_alpha, c.linear_attn_alpha, c.mlp_alpha}) EXPECT_EQ(v, kAlpha);
  for (double v : {c.full_attn_beta, c.linear_attn_beta, c.mlp_beta}) EXPECT_EQ(v, 1.0);
  ASSERT_EQ(c.layer_types.size(), 80u);
  int softmax = 0;
  for (size_t l = 0; l < 80; ++l) {
    const bool is_softmax = (l % 8) == 7;  // 7, 15, ..., 79
    EXPECT_EQ(c.layer_types[l], is_softmax ? LayerKind::softmax : LayerKind::lightning) << "layer " << l;
    softmax += is_softmax;
  }
  EXPECT_EQ(softmax, 10);
  EXPECT_EQ(c.attn_alpha(LayerKind::lightning), kAlpha);
  EXPECT_TRUE(c.validate().is_ok());
}

TEST(ModelConfig, TransformersDialectMatchesOfficial) {
  ModelConfig official = parse_ok(official_json());
  ModelConfig hf = parse_ok(transformers_json());
  EXPECT_EQ(hf.model_type, "minimax");
  expect_same_model(official, hf);
}

TEST(ModelConfig, TransformersV4TopLevelRopeFields) {
  json j = transformers_json();
  j.erase("rope_parameters");
  j["rope_theta"] = 10000000.0;
  j["partial_rotary_factor"] = 0.5;
  expect_same_model(parse_ok(official_json()), parse_ok(j));
}

TEST(ModelConfig, TransformersDefaults) {
  json j = transformers_json();
  for (const char* k : {"rope_parameters", "block_size", "full_attn_alpha_factor", "mlp_beta_factor", "head_dim",
                        "max_position_embeddings", "rms_norm_eps"}) {
    j.erase(k);
  }
  ModelConfig c = parse_ok(j);
  EXPECT_EQ(c.head_dim, 6144 / 64);  // hidden_size / num_attention_heads
  EXPECT_EQ(c.rotary_dim, c.head_dim);
  EXPECT_EQ(c.rope_theta, 1e6);      // transformers' default_theta
  EXPECT_EQ(c.block_size, 256);
  EXPECT_EQ(c.full_attn_alpha, 1.0);
  EXPECT_EQ(c.mlp_beta, 1.0);
  EXPECT_EQ(c.max_position_embeddings, 4096 * 32);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.postnorm);  // transformers hard-codes the postnorm residual
}

TEST(ModelConfig, DialectInferredWithoutModelType) {
  json o = official_json();
  o.erase("model_type");
  EXPECT_EQ(parse_ok(o).model_type, "minimax_text_01");
  json t = transformers_json();
  t.erase("model_type");
  EXPECT_EQ(parse_ok(t).model_type, "minimax");
}

TEST(ModelConfig, BothDialectsTogetherWhenTheyAgree) {
  json j = official_json();
  const json hf = transformers_json();
  for (auto& [k, v] : hf.items()) {
    if (k != "model_type" && k != "architectures") j[k] = v;
  }
  expect_same_model(parse_ok(official_json()), parse_ok(j));
}

TEST(ModelConfig, HeadDimNullOrAbsentDefaults) {
  json j = official_json();
  j["head_dim"] = nullptr;
  j["rotary_dim"] = 48;
  EXPECT_EQ(parse_ok(j).head_dim, 96);
  j["num_attention_heads"] = 60;  // 6144 / 60 is not an integer
  j["num_key_value_heads"] = 6;
  expect_error(j, Errc::invalid_config, {"head_dim", "not divisible"});
}

TEST(ModelConfig, NumKeyValueHeadsNullMeansHeads) {
  json j = official_json();
  j["num_key_value_heads"] = nullptr;
  EXPECT_EQ(parse_ok(j).num_key_value_heads, 64);
}

TEST(ModelConfig, TokenIds) {
  json j = transformers_json();
  j["eos_token_id"] = {200020, 200021};
  j["bos_token_id"] = 199999;
  ModelConfig c = parse_ok(j);
  EXPECT_EQ(c.eos_token_id, 200020);  // a list gives its first id
  EXPECT_EQ(c.bos_token_id, 199999);
  j["eos_token_id"] = 200064;  // == vocab_size
  expect_error(j, Errc::invalid_config, {"eos_token_id"});
}

TEST(ModelConfig, SharedIntermediateSize) {
  json j = official_json();
  j["shared_intermediate_size"] = {0};
  EXPECT_TRUE(parse(j).has_value());
  j["shared_intermediate_size"] = 1024;
  expect_error(j, Errc::unsupported, {"shared_intermediate_size", "1024"});
  j["shared_intermediate_size"] = {0, 8};
  expect_error(j, Errc::unsupported, {"shared_intermediate_size[1]"});
}

TEST(ModelConfig, Postnorm) {
  json j = official_json();
  j["postnorm"] = false;
  expect_error(j, Errc::unsupported, {"postnorm"});
  j.erase("postnorm");  // ORIG reads an absent postnorm as false
  expect_error(j, Errc::unsupported, {"postnorm", "absent"});
  json t = transformers_json();
  t["postnorm"] = false;
  expect_error(t, Errc::unsupported, {"postnorm"});
}

TEST(ModelConfig, UnsupportedFeatures) {
  json j = official_json();
  j["model_type"] = "llama";
  expect_error(j, Errc::unsupported, {"model_type", "llama"});
  j = official_json();
  j["hidden_act"] = "gelu";
  expect_error(j, Errc::unsupported, {"hidden_act"});
  j = official_json();
  j["sliding_window"] = 4096;
  expect_error(j, Errc::unsupported, {"sliding_window"});
  j = transformers_json();
  j["rope_parameters"]["rope_type"] = "yarn";
  expect_error(j, Errc::unsupported, {"rope_type", "yarn"});
  j = official_json();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect_error(j, Errc::unsupported, {"rope_scaling"});
}

TEST(ModelConfig, UnknownFieldsIgnored) {
  json j = official_json();
  j["some_future_field"] = {{"nested", {1, 2, 3}}};
  j["quantization_config"] = {{"bits", 8}};
  EXPECT_TRUE(parse(j).has_value());
}

// ---- contradictions -------------------------------------------------------------------------

TEST(ModelConfig, ContradictoryLayerTypes) {
  json j = official_json();
  j["layer_types"] = transformers_json()["layer_types"];
  j["layer_types"][3] = "full_attention";
  expect_error(j, Errc::invalid_config, {"attn_type_list", "layer_types", "layer 3"});
  j["layer_types"].erase(0);
  expect_error(j, Errc::invalid_config, {"attn_type_list", "layer_types"});
}

TEST(ModelConfig, ContradictoryCoefficients) {
  const std::pair<const char*, const char*> pairs[] = {
      {"layernorm_full_attention_alpha", "full_attn_alpha_factor"},
      {"layernorm_full_attention_beta", "full_attn_beta_factor"},
      {"layernorm_linear_attention_alpha", "linear_attn_alpha_factor"},
      {"layernorm_linear_attention_beta", "linear_attn_beta_factor"},
      {"layernorm_mlp_alpha", "mlp_alpha_factor"},
      {"layernorm_mlp_beta", "mlp_beta_factor"},
  };
  for (const auto& [official, hf] : pairs) {
    json j = official_json();
    j[hf] = 2.0;
    expect_error(j, Errc::invalid_config, {official, hf});
    j[hf] = j[official];  // equal values are fine
    EXPECT_TRUE(parse(j).has_value()) << hf;
  }
}

TEST(ModelConfig, ContradictoryRope) {
  json j = official_json();
  j["partial_rotary_factor"] = 1.0;  // 128 != rotary_dim 64
  expect_error(j, Errc::invalid_config, {"rotary_dim", "partial_rotary_factor"});
  j = official_json();
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  expect_error(j, Errc::invalid_config, {"rope_theta", "rope_parameters.rope_theta"});
  j = transformers_json();
  j["partial_rotary_factor"] = 0.25;
  expect_error(j, Errc::invalid_config, {"partial_rotary_factor", "rope_parameters.partial_rotary_factor"});
}

TEST(ModelConfig, PartialRotaryFactorMustGiveEvenInteger) {
  json j = transformers_json();
  j["rope_parameters"]["partial_rotary_factor"] = 0.3;  // 38.4
  expect_error(j, Errc::invalid_config, {"partial_rotary_factor", "38.4"});
  j["rope_parameters"]["partial_rotary_factor"] = 3.0 / 128.0;  // 3: odd
  expect_error(j, Errc::invalid_config, {"partial_rotary_factor"});
  j["rope_parameters"]["partial_rotary_factor"] = 0.25;
  EXPECT_EQ(parse_ok(j).rotary_dim, 32);
}

// ---- missing and mistyped fields ------------------------------------------------------------

TEST(ModelConfig, EveryMissingRequiredFieldIsNamed) {
  const char* required[] = {"hidden_size",       "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                            "vocab_size",        "intermediate_size", "num_local_experts",   "num_experts_per_tok",
                            "attn_type_list"};
  for (const char* field : required) {
    json j = official_json();
    j.erase(field);
    expect_error(j, Errc::invalid_config, {std::string("config.json: missing field '") + field + "'"});
  }
  for (const char* field : {"hidden_size", "vocab_size", "layer_types", "num_key_value_heads"}) {
    json j = transformers_json();
    j.erase(field);
    expect_error(j, Errc::invalid_config, {std::string("missing field '") + field + "'"});
  }
}

TEST(ModelConfig, WrongTypesNameFieldAndExpectedType) {
  struct Case {
    const char* field;
    json value;
    const char* expected;
  };
  const Case cases[] = {
      {"hidden_size", "6144", "an integer"},
      {"hidden_size", 6144.5, "an integer"},
      {"num_hidden_layers", nullptr, "an integer"},
      {"rms_norm_eps", "1e-5", "a number"},
      {"postnorm", "yes", "a boolean"},
      {"tie_word_embeddings", 0, "a boolean"},
      {"model_type", 7, "a string"},
      {"attn_type_list", "0,1", "an array"},
      {"rope_parameters", 1e7, "an object"},
      {"vocab_size", json::array(), "an integer"},
      {"vocab_size", 18446744073709551615ull, "fits in int64"},
  };
  for (const Case& c : cases) {
    json j = official_json();
    j[c.field] = c.value;
    expect_error(j, Errc::invalid_config, {std::string("'") + c.field + "'", c.expected});
  }
  json j = official_json();
  j["attn_type_list"][5] = 2;
  expect_error(j, Errc::invalid_config, {"attn_type_list[5]"});
  j = transformers_json();
  j["layer_types"][2] = "mamba";
  expect_error(j, Errc::invalid_config, {"layer_types[2]", "mamba"});
}

TEST(ModelConfig, RangeChecks) {
  json j = official_json();
  j["num_key_value_heads"] = 7;
  expect_error(j, Errc::invalid_config, {"num_key_value_heads"});
  j = official_json();
  j["num_experts_per_tok"] = 33;
  expect_error(j, Errc::invalid_config, {"num_experts_per_tok"});
  j = official_json();
  j["rotary_dim"] = 63;
  expect_error(j, Errc::invalid_config, {"rotary_dim"});
  j = official_json();
  j["rotary_dim"] = 130;
  expect_error(j, Errc::invalid_config, {"rotary_dim"});
  j = official_json();
  j["hidden_size"] = 0;
  expect_error(j, Errc::invalid_config, {"hidden_size"});
  j = official_json();
  j["num_hidden_layers"] = 79;
  expect_error(j, Errc::invalid_config, {"attn_type_list", "80 entries", "79"});
  j = official_json();
  j["rms_norm_eps"] = -1.0;
  expect_error(j, Errc::invalid_config, {"rms_norm_eps"});
  j = official_json();
  j["block_size"] = 0;
  expect_error(j, Errc::invalid_config, {"block_size"});
}

TEST(ModelConfig, NotJsonOrNotAnObject) {
  auto r = parse_model_config("{\"hidden_size\": 6144,", "some/dir/config.json");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::parse_error);
  EXPECT_NE(r.error().message().find("some/dir/config.json"), std::string::npos);
  r = parse_model_config("[1, 2, 3]");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::invalid_config);
  r = parse_model_config("");
  ASSERT_FALSE(r.has_value());
}

TEST(ModelConfig, ValidateDirectly) {
  ModelConfig c = parse_ok(tiny_json());
  EXPECT_TRUE(c.validate().is_ok());
  ModelConfig bad = c;
  bad.layer_types.pop_back();
  EXPECT_EQ(bad.validate().code(), Errc::invalid_config);
  bad = c;
  bad.postnorm = false;
  EXPECT_EQ(bad.validate().code(), Errc::unsupported);
  bad = c;
  bad.rotary_dim = 0;
  EXPECT_EQ(bad.validate().code(), Errc::invalid_config);
}

// ---- round trip and files -------------------------------------------------------------------

TEST(ModelConfig, RoundTripOfficial) {
  ModelConfig c = parse_ok(official_json());
  std::string text = model_config_to_json(c);
  ModelConfig back = parse_ok(json::parse(text));
  expect_same_model(c, back);
  json j = json::parse(text);
  for (const char* k : {"attn_type_list", "layer_types", "layernorm_mlp_alpha", "mlp_alpha_factor", "rotary_dim",
                        "partial_rotary_factor", "rope_parameters", "full_attn_beta_factor", "postnorm"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  EXPECT_EQ(j["rope_parameters"]["partial_rotary_factor"], 0.5);
  EXPECT_TRUE(j["eos_token_id"].is_null());
}

TEST(ModelConfig, RoundTripNonDefaultsAndEachDialectAlone) {
  ModelConfig c = parse_ok(tiny_json());
  c.lightning_norm_eps = 1e-5;
  json j = json::parse(model_config_to_json(c));
  expect_same_model(c, parse_ok(j));
  // The transformers fields alone describe the same model ...
  json hf = j;
  for (const char* k : {"attn_type_list", "layernorm_full_attention_alpha", "layernorm_full_attention_beta",
                        "layernorm_linear_attention_alpha", "layernorm_linear_attention_beta", "layernorm_mlp_alpha",
                        "layernorm_mlp_beta", "rotary_dim", "rope_theta", "partial_rotary_factor", "postnorm",
                        "shared_intermediate_size"}) {
    hf.erase(k);
  }
  hf["model_type"] = "minimax";
  ModelConfig from_hf = parse_ok(hf);
  from_hf.model_type = c.model_type;
  expect_same_model(c, from_hf);
  // ... and so do the official ones.
  json official = j;
  for (const char* k : {"layer_types", "full_attn_alpha_factor", "full_attn_beta_factor", "linear_attn_alpha_factor",
                        "linear_attn_beta_factor", "mlp_alpha_factor", "mlp_beta_factor", "partial_rotary_factor",
                        "rope_parameters"}) {
    official.erase(k);
  }
  expect_same_model(c, parse_ok(official));
}

TEST(ModelConfig, RoundTripRotaryDimThroughFactor) {
  // model_config_to_json writes partial_rotary_factor = rotary_dim / head_dim; reading the
  // transformers fields alone must give rotary_dim back exactly, up to the 2^24 dimension cap.
  for (int64_t head_dim : {6, 96, 100, 255, 1000003, 16777213, 16777216}) {
    for (int64_t rotary : {int64_t{2}, head_dim / 3 * 2, (head_dim / 2) * 2}) {
      ModelConfig c = parse_ok(tiny_json());
      c.head_dim = head_dim;
      c.rotary_dim = rotary;
      json j = json::parse(model_config_to_json(c));
      j.erase("rotary_dim");
      j.erase("rope_parameters");  // top-level partial_rotary_factor only
      auto back = parse(j);
      ASSERT_TRUE(back.has_value()) << head_dim << "/" << rotary << ": " << back.error().to_string();
      EXPECT_EQ(back->rotary_dim, rotary) << "head_dim " << head_dim;
    }
  }
}

TEST(ModelConfig, LoadFromFile) {
  char dir_template[] = "/tmp/fulgur_cfg_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string path = std::string(dir_template) + "/config.json";
  {
    std::ofstream out(path);
    out << kOfficialConfig;
  }
  auto r = load_model_config(path);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_EQ(r->hidden_size, 6144);
  {
    std::ofstream out(path);
    out << "{\"model_type\": \"minimax\"}";
  }
  r = load_model_config(path);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find(path), std::string::npos) << r.error().message();
  std::remove(path.c_str());
  rmdir(dir_template);
  r = load_model_config(path);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::not_found);
}

// ---- lightning slopes (spec §3.2) -----------------------------------------------------------

// Within one float rounding of the exact value (the slopes are computed in double, then rounded).
void expect_float_close(float got, long double exact, int head) {
  EXPECT_NEAR(got, static_cast<double>(exact), std::fabs(static_cast<double>(exact)) * 1.2e-7) << "head " << head;
}

TEST(LightningSlopes, MiniMaxText01Layer0And78) {
  ModelConfig c = parse_ok(official_json());
  std::vector<float> s0 = lightning_slopes(c, 0);
  std::vector<float> s78 = lightning_slopes(c, 78);
  ASSERT_EQ(s0.size(), 64u);
  ASSERT_EQ(s78.size(), 64u);
  // Spec §3.2: l=0: s in [0.0039063, 0.91701]; l=78: s in [4.95e-5, 0.011617].
  EXPECT_NEAR(s0[0], 0.91701, 0.5e-5);
  EXPECT_NEAR(s0[63], 0.0039063, 0.5e-7);
  EXPECT_NEAR(s78[0], 0.011617, 0.5e-6);
  EXPECT_NEAR(s78[63], 4.95e-5, 0.005e-5);
  for (int h = 0; h < 64; ++h) {
    // base_h = 2^(-(h+1)/8), factor = 1 - l/79 + 1e-5, in long double as an independent check.
    const long double base = std::pow(2.0L, -(h + 1) / 8.0L);
    expect_float_close(s0[h], base * (1.0L + 1e-5L), h);
    expect_float_close(s78[h], base * (1.0L - 78.0L / 79.0L + 1e-5L), h);
    if (h > 0) {
      EXPECT_LT(s0[h], s0[h - 1]);
      EXPECT_LT(s78[h], s78[h - 1]);
    }
  }
}

TEST(LightningSlopes, NonPowerOfTwoHeadsUseAlibiInterleave) {
  json j = tiny_json();
  j["num_hidden_layers"] = 2;
  j["attn_type_list"] = {0, 1};
  j["num_key_value_heads"] = 2;
  j["num_attention_heads"] = 12;
  ModelConfig c = parse_ok(j);
  // get_slopes(12) = slopes of 8 heads (2^-1 .. 2^-8) + get_slopes(16)[0::2][:4]
  // (16 heads: 2^(-(i+1)/2) -> i = 0, 2, 4, 6).
  const double expected[] = {0.5,         0.25,        0.125,       0.0625,      0.03125,     0.015625,
                             0.0078125,   0.00390625,  std::pow(2.0, -0.5), std::pow(2.0, -1.5),
                             std::pow(2.0, -2.5), std::pow(2.0, -3.5)};
  std::vector<float> s = lightning_slopes(c, 0);
  ASSERT_EQ(s.size(), 12u);
  for (size_t h = 0; h < 12; ++h) expect_float_close(s[h], expected[h] * (1 + 1e-5L), static_cast<int>(h));
  // Last layer of two: factor 1 - 1/1 + 1e-5.
  std::vector<float> last = lightning_slopes(c, 1);
  for (size_t h = 0; h < 12; ++h) expect_float_close(last[h], expected[h] * 1e-5L, static_cast<int>(h));

  c.num_attention_heads = 6;  // 4 heads (2^-2 .. 2^-8 step 2^-2) + get_slopes(8)[0::2][:2] = 2^-1, 2^-3
  const double six[] = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  s = lightning_slopes(c, 0);
  ASSERT_EQ(s.size(), 6u);
  for (size_t h = 0; h < 6; ++h) expect_float_close(s[h], six[h] * (1 + 1e-5L), static_cast<int>(h));
}

TEST(LightningSlopes, SingleLayerModel) {
  json j = tiny_json();
  j["num_hidden_layers"] = 1;
  j["attn_type_list"] = {0};
  ModelConfig c = parse_ok(j);
  std::vector<float> s = lightning_slopes(c, 0);
  ASSERT_EQ(s.size(), 4u);  // 4 heads: start 2^-2
  EXPECT_EQ(s[0], static_cast<float>(0.25 * (1 + 1e-5)));  // vLLM's L <= 1 guard: factor 1 + 1e-5
  EXPECT_FALSE(std::isnan(s[3]));
}

// ---- fuzz -----------------------------------------------------------------------------------

// Byte-level mutations of a valid config.json: the parser must return (value or error), never
// crash or throw. Fixed seed, bounded iterations.
TEST(ModelConfigFuzz, MutatedJsonNeverCrashes) {
  const std::string base = official_json().dump();
  std::mt19937 rng(20250117);
  const char alphabet[] = "{}[],:\"0123456789.eE+-nulltruefalse \\abc";
  int accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const size_t pos = rng() % s.size();
      switch (rng() % 5) {
        case 0: s[pos] = alphabet[rng() % (sizeof alphabet - 1)]; break;
        case 1: s.erase(pos, 1 + rng() % 8); break;
        case 2: s.insert(pos, 1, alphabet[rng() % (sizeof alphabet - 1)]); break;
        case 3: s.resize(pos); break;
        default: s[pos] = static_cast<char>(rng() & 0xff); break;
      }
    }
    auto r = parse_model_config(s);
    if (r.has_value()) {
      ++accepted;
      EXPECT_TRUE(r->validate().is_ok());
    } else {
      EXPECT_FALSE(r.error().message().empty());
    }
  }
  EXPECT_GT(accepted, 0);  // some mutations land in ignored fields or keep the value valid
}

// Value-level mutations: every field replaced by values of every JSON type.
TEST(ModelConfigFuzz, MutatedValuesNeverCrash) {
  const json base = transformers_json();
  std::mt19937 rng(7);
  const json values[] = {nullptr, true, false, 0, -1, 1, 3, 64, 1e300, -1e-300, 0.5, 2.5, "x", "", json::array(),
                         json::array({1, 2}), json::object(), json::object({{"rope_theta", "a"}}),
                         9223372036854775807LL, 18446744073709551615ull};
  std::vector<std::string> keys;
  for (auto& [k, v] : base.items()) keys.push_back(k);
  for (int iter = 0; iter < 2000; ++iter) {
    json j = base;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const std::string& k = keys[rng() % keys.size()];
      j[k] = values[rng() % std::size(values)];
      if (rng() % 4 == 0) j.erase(keys[rng() % keys.size()]);
      if (rng() % 8 == 0) j["rope_parameters"] = {{"partial_rotary_factor", values[rng() % std::size(values)]}};
    }
    auto r = parse(j);
    if (r.has_value()) {
      EXPECT_TRUE(r->validate().is_ok());
    }
  }
}

TEST(ModelConfigFuzz, DeeplyNestedJson) {
  std::string deep = "{\"hidden_size\": " + std::string(200000, '[') + std::string(200000, ']') + "}";
  auto r = parse_model_config(deep);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::invalid_config);
  std::string unbalanced(100000, '{');
  EXPECT_FALSE(parse_model_config(unbalanced).has_value());
}

}  // namespace
}  // namespace fulgur
