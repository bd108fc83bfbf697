// ModelWeights: every tensor of one MiniMax model, named after the official checkpoint
// (spec §7). The checkpoint loader fills it from either naming dialect; the layer code reads it.
// Linear weights are [out, in] row-major, like the checkpoint. On the CPU device every tensor is
// f32 (the loader converts bf16/f16 once; f32 files are mapped without a copy).
#pragma once

#include <vector>

#include "devices/tensor.h"
#include "protocols/model_config.h"

namespace fulgur {

struct LightningWeights {
  Tensor qkv;          // [3*H*D, hidden]; head-major, per head rows q | k | v (spec §3.1)
  Tensor output_gate;  // [H*D, hidden]
  Tensor out_proj;     // [hidden, H*D]
  Tensor norm;         // [H*D]
};

struct SoftmaxWeights {
  Tensor q_proj;  // [H*D, hidden]
  Tensor k_proj;  // [KV*D, hidden]
  Tensor v_proj;  // [KV*D, hidden]
  Tensor o_proj;  // [hidden, H*D]
};

struct ExpertWeights {
  Tensor w1;  // gate [I, hidden]
  Tensor w3;  // up   [I, hidden]
  Tensor w2;  // down [hidden, I]
};

struct MoeWeights {
  Tensor gate;                       // router [E, hidden]
  std::vector<ExpertWeights> experts;  // [E]
};

struct LayerWeights {
  LayerKind kind = LayerKind::lightning;
  Tensor input_norm;  // [hidden]
  Tensor post_norm;   // [hidden]
  LightningWeights lightning;  // when kind == lightning
  SoftmaxWeights softmax;      // when kind == softmax
  MoeWeights moe;
};

struct ModelWeights {
  Tensor embed;       // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [hidden]
  Tensor lm_head;     // [vocab, hidden]
};

}  // namespace fulgur
