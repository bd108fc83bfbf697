#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "kernels/half.h"
#include "kernels/moe_permute.h"

namespace fulgur::kernels {

KernelStatus moe_permute_cpu(const MoePermuteParams& p) {
  if (p.num_tokens < 0 || p.k <= 0 || p.num_experts <= 0) return kernel_error("moe permute: bad sizes");
  if ((p.h == nullptr) != (p.permuted == nullptr)) return kernel_error("moe permute: h and permuted go together");
  if (p.h != nullptr && p.hidden <= 0) return kernel_error("moe permute: hidden must be > 0");
  const int64_t n = p.num_tokens * p.k, E = p.num_experts;
  const int64_t hs = p.h_stride ? p.h_stride : p.hidden;
  std::vector<int32_t> count(E, 0);
  for (int64_t a = 0; a < n; ++a) {
    if (p.topk_idx[a] >= 0 && p.topk_idx[a] < E) ++count[p.topk_idx[a]];
  }
  p.expert_offsets[0] = 0;
  for (int64_t e = 0; e < E; ++e) p.expert_offsets[e + 1] = p.expert_offsets[e] + count[e];
  std::vector<int32_t> next(p.expert_offsets, p.expert_offsets + E);
  for (int64_t a = 0; a < n; ++a) {
    const int32_t e = p.topk_idx[a];
    if (e < 0 || e >= E) {
      p.inverse[a] = -1;
      continue;
    }
    const int32_t row = next[e]++;
    p.inverse[a] = row;
    if (p.permuted_token != nullptr) p.permuted_token[row] = static_cast<int32_t>(a / p.k);
    if (p.h != nullptr) std::memcpy(p.permuted + row * p.hidden, p.h + (a / p.k) * hs, sizeof(uint16_t) * p.hidden);
  }
  return kernel_ok();
}

KernelStatus moe_unpermute_cpu(const MoeUnpermuteParams& p) {
  if (p.num_tokens < 0 || p.k <= 0 || p.hidden <= 0) return kernel_error("moe unpermute: bad sizes");
  const int64_t ys = p.expert_out_stride ? p.expert_out_stride : p.hidden;
  const int64_t os = p.out_stride ? p.out_stride : p.hidden;
  std::vector<int64_t> order(p.k);
  std::vector<float> acc(p.hidden);
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const int32_t* ids = p.topk_idx + t * p.k;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ids[a] < ids[b]; });
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t s : order) {
      const int32_t row = p.inverse[t * p.k + s];
      if (row < 0) continue;
      const float w = p.topk_weight[t * p.k + s];
      const uint16_t* y = p.expert_out + row * ys;
      for (int64_t c = 0; c < p.hidden; ++c) {
        acc[c] += w * bf16_to_f32(y[c]);  // product rounded, then added (x86-64 baseline has no FMA)
      }
    }
    for (int64_t c = 0; c < p.hidden; ++c) p.out[t * os + c] = f32_to_bf16(acc[c]);
  }
  return kernel_ok();
}

}  // namespace fulgur::kernels
