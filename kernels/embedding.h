// Embedding lookup: out[t, :] = table[ids[t], :]. No scaling (spec §2).
#pragma once

#include <cstdint>

#include "kernels/kernel_status.h"

namespace fulgur::kernels {

struct EmbeddingParams {
  const float* table = nullptr;  // [vocab, hidden], row-major
  const int32_t* ids = nullptr;  // [num_tokens]
  float* out = nullptr;          // [num_tokens, hidden], row-major
  int64_t num_tokens = 0;
  int64_t hidden = 0;
  int64_t vocab = 0;
};

// Fails (writing nothing) when an id is outside [0, vocab).
KernelStatus embedding_cpu(const EmbeddingParams& p);

}  // namespace fulgur::kernels
