#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/sampling.h"

namespace fulgur::kernels {

double uniform_from_counter(uint64_t seed, uint64_t step) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (step + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int64_t sample_workspace_bytes(int64_t vocab) { return vocab * static_cast<int64_t>(sizeof(int32_t) + sizeof(float)); }

KernelStatus sample_cpu(const float* logits, int64_t vocab, const SamplingParams& params, void* workspace,
                        int32_t* out_token) {
  if (vocab <= 0) return kernel_error("sampling: empty vocabulary");
  if (!(params.temperature >= 0.f) || !std::isfinite(params.temperature)) {
    return kernel_error("sampling: temperature must be a finite value >= 0");
  }
  if (!(params.top_p > 0.f && params.top_p <= 1.f)) return kernel_error("sampling: top_p must be in (0, 1]");
  if (params.top_k < 0) return kernel_error("sampling: top_k must be >= 0");
  for (int64_t i = 0; i < vocab; ++i) {
    if (!std::isfinite(logits[i])) return kernel_error("sampling: non-finite logit");
  }
  if (params.temperature == 0.f) {
    *out_token = static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
    return kernel_ok();
  }
  auto* order = static_cast<int32_t*>(workspace);
  auto* probs = reinterpret_cast<float*>(order + vocab);
  std::iota(order, order + vocab, 0);
  const int64_t keep_k = params.top_k > 0 ? std::min(params.top_k, vocab) : vocab;
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  if (keep_k < vocab) {
    std::partial_sort(order, order + keep_k, order + vocab, by_logit);
  } else {
    std::sort(order, order + vocab, by_logit);
  }
  const double inv_t = 1.0 / params.temperature;
  const double top = logits[order[0]];
  double total = 0.0;
  for (int64_t r = 0; r < keep_k; ++r) {
    probs[r] = static_cast<float>(std::exp((logits[order[r]] - top) * inv_t));
    total += probs[r];
  }
  // top-p: the shortest prefix whose mass reaches top_p.
  int64_t keep = keep_k;
  if (params.top_p < 1.f) {
    double mass = 0.0;
    for (int64_t r = 0; r < keep_k; ++r) {
      mass += probs[r] / total;
      if (mass >= params.top_p) {
        keep = r + 1;
        break;
      }
    }
  }
  double kept_total = 0.0;
  for (int64_t r = 0; r < keep; ++r) kept_total += probs[r];
  const double u = uniform_from_counter(params.seed, params.step) * kept_total;
  double acc = 0.0;
  for (int64_t r = 0; r < keep; ++r) {
    acc += probs[r];
    if (u < acc) {
      *out_token = order[r];
      return kernel_ok();
    }
  }
  *out_token = order[keep - 1];
  return kernel_ok();
}

}  // namespace fulgur::kernels
