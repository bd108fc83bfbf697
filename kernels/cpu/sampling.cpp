#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>

#include "kernels/sampling.h"
#include "kernels/sampling_math.h"

namespace fulgur::kernels {

int64_t sample_workspace_bytes(int64_t vocab) {
  return vocab * static_cast<int64_t>(sizeof(uint64_t) + sizeof(int32_t));
}

KernelStatus check_sampling_params(const SamplingParams& params) {
  if (!(params.temperature >= 0.f) || !std::isfinite(params.temperature)) {
    return kernel_error("sampling: temperature must be a finite value >= 0");
  }
  if (!(params.top_p > 0.f && params.top_p <= 1.f)) return kernel_error("sampling: top_p must be in (0, 1]");
  if (params.top_k < 0) return kernel_error("sampling: top_k must be >= 0");
  return kernel_ok();
}

// The plain reference: sort the vocabulary, then walk it. The GPU sampler finds the same cut points
// by radix selection without sorting (kernels/cuda/sampling.cu); sampling_math.h makes them agree.
KernelStatus sample_cpu(const float* logits, int64_t vocab, const SamplingParams& params, void* workspace,
                        int32_t* out_token) {
  if (vocab <= 0 || vocab > sampling::kMaxVocab) return kernel_error("sampling: vocabulary size must be in [1, 2^26]");
  if (auto st = check_sampling_params(params); !st.ok()) return st;
  if (reinterpret_cast<uintptr_t>(workspace) % alignof(uint64_t) != 0) {
    return kernel_error("sampling: workspace must be 8-byte aligned");
  }
  for (int64_t i = 0; i < vocab; ++i) {
    if (!std::isfinite(logits[i])) return kernel_error("sampling: non-finite logit");
  }
  if (params.temperature == 0.f) {
    *out_token = static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);  // first of equal maxima
    return kernel_ok();
  }
  // Workspace: uint64 weights [vocab], then int32 token ids [vocab] in key order.
  auto* weights = static_cast<uint64_t*>(workspace);
  auto* order = reinterpret_cast<int32_t*>(weights + vocab);
  std::iota(order, order + vocab, 0);
  const int64_t keep_k = params.top_k > 0 ? std::min(params.top_k, vocab) : vocab;
  auto first = [&](int32_t a, int32_t b) {
    return sampling::order_key(logits[a], static_cast<uint32_t>(a)) >
           sampling::order_key(logits[b], static_cast<uint32_t>(b));
  };
  if (keep_k < vocab) {
    std::partial_sort(order, order + keep_k, order + vocab, first);
  } else {
    std::sort(order, order + vocab, first);
  }
  const float inv_t = sampling::inverse_temperature(params.temperature);
  const float top = logits[order[0]];
  uint64_t total = 0;
  for (int64_t r = 0; r < keep_k; ++r) {
    weights[r] = sampling::weight(logits[order[r]], top, inv_t);
    total += weights[r];
  }
  // top-p: the shortest prefix whose weight reaches ceil(total * top_p).
  int64_t keep = keep_k;
  uint64_t kept_total = total;
  if (params.top_p < 1.f) {
    const uint64_t need = sampling::top_p_mass(total, params.top_p);
    uint64_t mass = 0;
    for (int64_t r = 0; r < keep_k; ++r) {
      mass += weights[r];
      if (mass >= need) {
        keep = r + 1;
        kept_total = mass;
        break;
      }
    }
  }
  const uint64_t point = sampling::draw_point(sampling::random_bits(params.seed, params.step), kept_total);
  uint64_t acc = 0;
  for (int64_t r = 0; r < keep; ++r) {
    acc += weights[r];
    if (acc > point) {
      *out_token = order[r];
      return kernel_ok();
    }
  }
  return kernel_error("sampling: internal error: the draw fell past the kept tokens");  // point < kept_total
}

}  // namespace fulgur::kernels
