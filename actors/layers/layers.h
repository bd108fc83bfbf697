// The three sub-blocks of a MiniMax decoder layer and the layer itself, as plain C++ over
// host tensors (f32 compute). `fulgur forward`, the tests and the actors all call these.
//
// Every forward takes h [num_tokens, hidden] (the normalised input, spec §2) and writes
// out [num_tokens, hidden]; per-sequence state comes from StatePools through the BatchLayout.
#pragma once

#include <memory>
#include <vector>

#include "actors/layers/batch.h"
#include "actors/layers/weights.h"

namespace fulgur {

// Lightning attention layer (spec §3): qkv -> SiLU -> lightning -> RMSNorm(H*D) -> gate -> out_proj.
class LightningAttention {
 public:
  LightningAttention(const ModelConfig& cfg, int64_t layer_idx, const LightningWeights& w);
  Status forward(const Tensor& h, const BatchLayout& batch, Tensor& state_pool, Tensor& out) const;
  const std::vector<float>& slopes() const { return slopes_; }

 private:
  const ModelConfig& cfg_;
  int64_t layer_idx_;
  const LightningWeights& w_;
  std::vector<float> slopes_;  // [H]
};

// Softmax attention layer (spec §4): q/k/v -> partial NeoX RoPE -> causal GQA over the paged
// KV cache -> o_proj.
class SoftmaxAttention {
 public:
  SoftmaxAttention(const ModelConfig& cfg, int64_t layer_idx, const SoftmaxWeights& w);
  Status forward(const Tensor& h, const BatchLayout& batch, Tensor& k_cache, Tensor& v_cache, int64_t page_size,
                 Tensor& out) const;

 private:
  const ModelConfig& cfg_;
  int64_t layer_idx_;
  const SoftmaxWeights& w_;
};

// Top-k MoE with SwiGLU experts (spec §5).
class MoeBlock {
 public:
  MoeBlock(const ModelConfig& cfg, int64_t layer_idx, const MoeWeights& w);
  Status forward(const Tensor& h, Tensor& out) const;

  // The pieces, for the router/expert actors: routing, then one expert over a token group.
  struct Routing {
    std::vector<int32_t> topk_idx;    // [num_tokens, k]
    std::vector<float> topk_weight;   // [num_tokens, k]
  };
  Expected<Routing> route(const Tensor& h) const;
  // y [n, hidden] = W2 (silu(W1 x) * (W3 x)) for x [n, hidden].
  Status expert_forward(int64_t expert_idx, const float* x, int64_t n, float* y) const;

 private:
  const ModelConfig& cfg_;
  int64_t layer_idx_;
  const MoeWeights& w_;
};

// One decoder layer with DeepNorm post-norm residuals (spec §6), updating x in place:
//   h = norm_in(x); x = a_alpha h + a_beta Attn(h); h2 = norm_post(x); x = m_alpha h2 + m_beta MoE(h2)
class DecoderLayer {
 public:
  DecoderLayer(const ModelConfig& cfg, int64_t layer_idx, const LayerWeights& w);
  Status forward(Tensor& x, const BatchLayout& batch, StatePools& pools) const;

  // The halves, for actors that split attention and MoE: x -> (x', h2), then (h2, moe) -> x''.
  Status attention_half(Tensor& x, const BatchLayout& batch, StatePools& pools, Tensor& h2) const;
  Status moe_half(const Tensor& h2, Tensor& x) const;

 private:
  const ModelConfig& cfg_;
  int64_t layer_idx_;
  const LayerWeights& w_;
  std::unique_ptr<LightningAttention> lightning_;  // exactly one of these two is set
  std::unique_ptr<SoftmaxAttention> softmax_;
  MoeBlock moe_;
};

// y = x W^T for x [rows, in] and W [out, in]; out must be [rows, out].
Status linear(const Tensor& x, const Tensor& w, Tensor& out, const char* what);
// y = weight * RMSNorm(x); y may be x.
Status rms_norm(const Tensor& x, const Tensor& weight, double eps, Tensor& y, const char* what);

}  // namespace fulgur
