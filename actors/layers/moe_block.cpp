#include <algorithm>
#include <string>

#include "actors/layers/layers.h"
#include "kernels/activations.h"
#include "kernels/gemm.h"
#include "kernels/moe_router.h"

namespace fulgur {

MoeBlock::MoeBlock(const ModelConfig& cfg, int64_t layer_idx, const MoeWeights& w)
    : cfg_(cfg), layer_idx_(layer_idx), w_(w) {}

Expected<MoeBlock::Routing> MoeBlock::route(const Tensor& h) const {
  const int64_t T = h.size(0), E = cfg_.num_local_experts, K = cfg_.num_experts_per_tok;
  Tensor logits = Tensor::empty(DType::f32, {T, E});
  FULGUR_TRY(linear(h, w_.gate, logits, "block_sparse_moe.gate"));
  Routing r;
  r.topk_idx.resize(T * K);
  r.topk_weight.resize(T * K);
  kernels::MoeRouterParams p;
  p.logits = logits.data<float>(), p.topk_idx = r.topk_idx.data(), p.topk_weight = r.topk_weight.data();
  p.num_tokens = T, p.num_experts = E, p.k = K;
  if (auto ks = kernels::moe_router_cpu(p); !ks.ok()) {
    return Status(Errc::internal, "layer " + std::to_string(layer_idx_) + " router: " + ks.error);
  }
  return r;
}

Status MoeBlock::expert_forward(int64_t expert_idx, const float* x, int64_t n, float* y) const {
  const ExpertWeights& e = w_.experts[expert_idx];
  const int64_t I = cfg_.intermediate_size, hidden = cfg_.hidden_size;
  Tensor gate = Tensor::empty(DType::f32, {n, I});
  Tensor up = Tensor::empty(DType::f32, {n, I});
  kernels::GemmParams g{.a = x, .b = e.w1.data<float>(), .c = gate.data<float>(), .m = n, .n = I, .k = hidden};
  kernels::GemmParams u{.a = x, .b = e.w3.data<float>(), .c = up.data<float>(), .m = n, .n = I, .k = hidden};
  for (auto* p : {&g, &u}) {
    if (auto ks = kernels::gemm_nt_cpu(*p); !ks.ok()) return Status(Errc::internal, ks.error);
  }
  kernels::silu_mul_cpu(gate.data<float>(), up.data<float>(), gate.data<float>(), n * I);
  kernels::GemmParams d{.a = gate.data<float>(), .b = e.w2.data<float>(), .c = y, .m = n, .n = hidden, .k = I};
  if (auto ks = kernels::gemm_nt_cpu(d); !ks.ok()) return Status(Errc::internal, ks.error);
  return Status::ok();
}

Status MoeBlock::forward(const Tensor& h, Tensor& out) const {
  const int64_t T = h.size(0), E = cfg_.num_local_experts, K = cfg_.num_experts_per_tok, hidden = cfg_.hidden_size;
  FULGUR_ASSIGN_OR_RETURN(Routing r, route(h));
  // Group tokens by expert (ascending expert id, tokens in order), run each expert once on its
  // group, and accumulate the weighted outputs.
  std::vector<std::vector<int64_t>> assignments(E);  // [E] -> positions t*K + slot
  for (int64_t a = 0; a < T * K; ++a) assignments[r.topk_idx[a]].push_back(a);
  std::fill_n(out.data<float>(), T * hidden, 0.f);
  for (int64_t e = 0; e < E; ++e) {
    const auto& group = assignments[e];
    if (group.empty()) continue;
    const int64_t n = static_cast<int64_t>(group.size());
    Tensor xg = Tensor::empty(DType::f32, {n, hidden});
    Tensor yg = Tensor::empty(DType::f32, {n, hidden});
    for (int64_t i = 0; i < n; ++i) {
      std::copy_n(h.data<float>() + (group[i] / K) * hidden, hidden, xg.data<float>() + i * hidden);
    }
    FULGUR_TRY(expert_forward(e, xg.data<float>(), n, yg.data<float>()));
    for (int64_t i = 0; i < n; ++i) {
      const float w = r.topk_weight[group[i]];
      float* dst = out.data<float>() + (group[i] / K) * hidden;
      const float* src = yg.data<float>() + i * hidden;
      for (int64_t c = 0; c < hidden; ++c) dst[c] += w * src[c];
    }
  }
  return Status::ok();
}

}  // namespace fulgur
