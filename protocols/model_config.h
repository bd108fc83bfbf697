// ModelConfig: the model hyper-parameters, read from a checkpoint's config.json.
//
// Accepts both dialects (spec §1, §14):
//  - official MiniMax-Text-01 (`model_type` "minimax_text_01"): `attn_type_list` (0 lightning,
//    1 softmax), `layernorm_{full_attention,linear_attention,mlp}_{alpha,beta}`, `rotary_dim`,
//    `postnorm`, ...
//  - transformers `minimax`: `layer_types` ("linear_attention" / "full_attention"),
//    `{full_attn,linear_attn,mlp}_{alpha,beta}_factor`, `partial_rotary_factor`,
//    `rope_parameters` {rope_theta, ...} (or a top-level `rope_theta`), `block_size`.
// A missing or contradictory field is an Errc::invalid_config naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "devices/status.h"

namespace fulgur {

enum class LayerKind : uint8_t { lightning, softmax };

struct ModelConfig {
  std::string model_type;          // "minimax_text_01" | "minimax" (as read)
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;  // both layer kinds
  int64_t num_key_value_heads = 0;  // softmax layers (GQA)
  int64_t head_dim = 0;
  int64_t rotary_dim = 0;           // NeoX partial RoPE on dims [0, rotary_dim)
  double rope_theta = 10000.0;
  int64_t vocab_size = 0;
  int64_t num_local_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t intermediate_size = 0;    // per-expert FFN width
  double rms_norm_eps = 1e-5;       // decoder norms and the final norm
  double lightning_norm_eps = 1e-6; // lightning output norm over H*D (spec §3.1)
  int64_t block_size = 256;         // lightning prefill tiling; mathematically irrelevant
  int64_t max_position_embeddings = 0;
  bool postnorm = true;
  bool tie_word_embeddings = false;
  std::vector<LayerKind> layer_types;  // [num_hidden_layers]
  // DeepNorm: x' = alpha * residual + beta * sublayer(...)
  double full_attn_alpha = 1.0, full_attn_beta = 1.0;
  double linear_attn_alpha = 1.0, linear_attn_beta = 1.0;
  double mlp_alpha = 1.0, mlp_beta = 1.0;
  int64_t eos_token_id = -1;        // -1: none given
  int64_t bos_token_id = -1;

  int64_t q_size() const { return num_attention_heads * head_dim; }
  int64_t kv_size() const { return num_key_value_heads * head_dim; }
  double attn_alpha(LayerKind k) const { return k == LayerKind::lightning ? linear_attn_alpha : full_attn_alpha; }
  double attn_beta(LayerKind k) const { return k == LayerKind::lightning ? linear_attn_beta : full_attn_beta; }

  // Checks ranges and cross-field consistency (head counts divide, rotary_dim even and
  // <= head_dim, layer_types length, experts_per_tok <= experts, ...).
  Status validate() const;
};

Expected<ModelConfig> parse_model_config(std::string_view json_text, std::string_view origin = "config.json");
Expected<ModelConfig> load_model_config(const std::string& path);
// Writes the official MiniMax-Text-01 dialect (plus `layer_types` etc. so transformers can read it).
std::string model_config_to_json(const ModelConfig& cfg);

// Per-head decay rate s_{l,h} of lightning layer `layer_idx` (global index; spec §3.2).
// Returns [num_attention_heads] values, computed in double and rounded to float.
std::vector<float> lightning_slopes(const ModelConfig& cfg, int64_t layer_idx);

}  // namespace fulgur
