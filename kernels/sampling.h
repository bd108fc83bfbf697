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
  uint64_t step = 0;        // the draw's index; (seed, step) fixes the random bits used (splitmix64)
};

// The parameter checks every sampler makes (temperature finite and >= 0, top_p in (0, 1], top_k >= 0).
KernelStatus check_sampling_params(const SamplingParams& params);

// logits: [vocab], vocab <= 2^26. workspace: sample_workspace_bytes(vocab) bytes, 8-byte aligned.
// Non-finite logits are an error (a NaN would silently sample garbage). The probabilities are the
// fixed-point weights of kernels/sampling_math.h, so the GPU sampler (kernels/cuda/sampling.h) draws the
// same token from the same logits and (seed, step).
KernelStatus sample_cpu(const float* logits, int64_t vocab, const SamplingParams& params,
                        void* workspace, int32_t* out_token);
int64_t sample_workspace_bytes(int64_t vocab);

}  // namespace fulgur::kernels
