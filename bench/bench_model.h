// The benchmark model shape shared by the CPU benchmarks: MiniMax-Text-01's structure (7
// lightning : 1 softmax, partial RoPE, GQA to 2 kv heads, top-2 MoE) at a configurable size.
#pragma once

#include "orchestration/init_model.h"

namespace fulgur::bench {

struct ModelShape {
  int64_t hidden = 512, layers = 8, experts = 8, intermediate = 1024, vocab = 32000, heads = 8, head_dim = 64;
};

inline ModelConfig bench_model_config(const ModelShape& s) {
  ModelConfig c = demo_model_config();
  c.hidden_size = s.hidden;
  c.num_hidden_layers = s.layers;
  c.layer_types.clear();
  for (int64_t l = 0; l < s.layers; ++l) c.layer_types.push_back(l % 8 == 7 ? LayerKind::softmax : LayerKind::lightning);
  c.num_attention_heads = s.heads;
  c.num_key_value_heads = 2;
  c.head_dim = s.head_dim;
  c.rotary_dim = s.head_dim / 2;
  c.num_local_experts = s.experts;
  c.intermediate_size = s.intermediate;
  c.vocab_size = s.vocab;
  c.max_position_embeddings = 1 << 20;
  return c;
}

}  // namespace fulgur::bench
