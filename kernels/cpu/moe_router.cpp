#include <algorithm>
#include <cmath>

#include "kernels/moe_router.h"

namespace fulgur::kernels {

KernelStatus moe_router_cpu(const MoeRouterParams& p) {
  if (p.num_experts <= 0 || p.k <= 0 || p.k > p.num_experts) return kernel_error("moe router: need 0 < k <= num_experts");
  if (p.k > 64) return kernel_error("moe router: k > 64 is not supported");
  const int64_t E = p.num_experts;
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const float* z = p.logits + t * E;
    float max_z = -INFINITY;
    for (int64_t e = 0; e < E; ++e) {
      if (!std::isfinite(z[e])) return kernel_error("moe router: non-finite router logits");
      max_z = std::max(max_z, z[e]);
    }
    double denom = 0.0;
    for (int64_t e = 0; e < E; ++e) denom += std::exp(static_cast<double>(z[e] - max_z));
    auto prob = [&](int64_t e) { return static_cast<float>(std::exp(static_cast<double>(z[e] - max_z)) / denom); };
    if (p.probs != nullptr) {
      for (int64_t e = 0; e < E; ++e) p.probs[t * E + e] = prob(e);
    }
    // Selection: k passes of argmax over the remaining experts (k is tiny).
    int32_t* idx = p.topk_idx + t * p.k;
    float* w = p.topk_weight + t * p.k;
    float sum = 0.f;
    for (int64_t r = 0; r < p.k; ++r) {
      int32_t best = -1;
      float best_p = -1.f;
      for (int64_t e = 0; e < E; ++e) {
        if (std::find(idx, idx + r, static_cast<int32_t>(e)) != idx + r) continue;
        const float pe = prob(e);
        if (pe > best_p) {
          best_p = pe;
          best = static_cast<int32_t>(e);
        }
      }
      idx[r] = best;
      w[r] = best_p;
      sum += best_p;
    }
    for (int64_t r = 0; r < p.k; ++r) w[r] /= sum;
  }
  return kernel_ok();
}

}  // namespace fulgur::kernels
