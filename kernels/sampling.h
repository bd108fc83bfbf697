// Token sampling from one row of logits: greedy, temperature, top-k, top-p, reproducible by seed.
#pragma once

#include <cstdint>

#include "kernels/kernel_status.h"

namespace fulgur::kernels {

struct SamplingParams {
  float temperature = 0.f;  // 0: greedy (argmax, lowest index on ties)
  int64_t top_k = 0;        // 0: off
  float top_p = 1.f;        // 1: off; keeps the smallest prefix of sorted probs with mass >= top_p
  uint64_t seed = 0;
  uint64_t step = 0;        // the draw's index; (seed, step) fixes the uniform number used
};

// Counter-based uniform in [0, 1) from (seed, step): splitmix64, no hidden state.
double uniform_from_counter(uint64_t seed, uint64_t step);

// logits: [vocab]. workspace: >= 2 * vocab floats' worth (sorted probabilities and indices).
// Non-finite logits are an error (a NaN would silently sample garbage).
KernelStatus sample_cpu(const float* logits, int64_t vocab, const SamplingParams& params,
                        void* workspace, int32_t* out_token);
int64_t sample_workspace_bytes(int64_t vocab);

}  // namespace fulgur::kernels
