// MiniMax-Text-01's config at full size with a chosen slice of its layers (the GPU benchmarks):
// hidden 6144, 64 heads x 128 (GQA 8 kv heads, rotary 64), 32 experts x 9216 top-2, vocab 200064,
// DeepNorm alpha 3.5566. `layers`: attn_type_list entries, "0" lightning, "1" softmax, comma separated.
#pragma once

#include <string>

inline std::string minimax_config_json(const std::string& layers) {
  return R"({"model_type": "minimax_text_01", "hidden_size": 6144, "num_hidden_layers": )" +
         std::to_string((layers.size() + 1) / 2) + R"(,
    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128, "rotary_dim": 64,
    "rope_theta": 10000000.0, "vocab_size": 200064, "num_local_experts": 32, "num_experts_per_tok": 2,
    "intermediate_size": 9216, "attn_type_list": [)" + layers + R"(], "postnorm": true, "rms_norm_eps": 1e-5,
    "layernorm_full_attention_alpha": 3.5565588200778455, "layernorm_full_attention_beta": 1.0,
    "layernorm_linear_attention_alpha": 3.5565588200778455, "layernorm_linear_attention_beta": 1.0,
    "layernorm_mlp_alpha": 3.5565588200778455, "layernorm_mlp_beta": 1.0, "max_position_embeddings": 1048576,
    "block_size": 256, "tie_word_embeddings": false, "shared_intermediate_size": 0})";
}
