// Embedding gather on the GPU: out[t, :] = table[ids[t], :] (spec §2, no scaling), bf16 table and
// output, int32 ids. The contract of embedding_cpu (kernels/embedding.h) with bf16 storage.
//
// Out-of-range ids: the host cannot see device memory before the launch, so the entry checks the
// host copy of the ids when the caller has one (ids_host: the prompt tokens come from the host) and
// fails, launching nothing, on the first id outside [0, vocab). Ids produced on the device (the
// GPU sampler's tokens, in range by construction) may pass ids_host = nullptr; the kernel checks
// every id again and writes a zero row for one out of range, so it never reads outside the table.
#pragma once

#include <cstdint>

#include "kernels/cuda/runtime.h"

namespace fulgur::kernels::cuda {

struct EmbeddingCudaParams {
  const uint16_t* table = nullptr;    // [vocab, hidden] bf16 bits, row-major, device
  const int32_t* ids = nullptr;       // [num_tokens], device
  const int32_t* ids_host = nullptr;  // optional [num_tokens], host: the same ids, checked before the launch
  uint16_t* out = nullptr;            // [num_tokens, hidden] bf16 bits, row stride out_stride, device
  int64_t num_tokens = 0;
  int64_t hidden = 0;
  int64_t vocab = 0;
  int64_t out_stride = 0;  // elements; 0 = hidden
};
KernelStatus embedding(const EmbeddingCudaParams& p, Stream stream);

}  // namespace fulgur::kernels::cuda
