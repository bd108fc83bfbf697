#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/embedding.h"

namespace fulgur::kernels::cuda {

namespace {
constexpr int kThreads = 128;
}  // namespace

// ---- kernel: one block per token; 16-byte vectors where aligned -----------------------------------
template <int kVec>
__global__ void __launch_bounds__(kThreads)
    embedding_kernel(const __nv_bfloat16* __restrict__ table, const int32_t* __restrict__ ids,
                     __nv_bfloat16* __restrict__ out, int64_t hidden, int64_t vocab, int64_t out_stride) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  const bool in_range = id >= 0 && id < vocab;
  const __nv_bfloat16* src = table + (in_range ? static_cast<int64_t>(id) : 0) * hidden;
  __nv_bfloat16* dst = out + t * out_stride;
  for (int64_t i = threadIdx.x * kVec; i < hidden; i += kThreads * kVec) {
    if constexpr (kVec == 8) {
      *reinterpret_cast<uint4*>(dst + i) = in_range ? *reinterpret_cast<const uint4*>(src + i) : make_uint4(0, 0, 0, 0);
    } else {
      dst[i] = in_range ? src[i] : __float2bfloat16_rn(0.f);
    }
  }
}

// ---- launcher -------------------------------------------------------------------------------------
static KernelStatus launch_embedding(const EmbeddingCudaParams& p, int64_t os, cudaStream_t stream) {
  const auto* table = reinterpret_cast<const __nv_bfloat16*>(p.table);
  auto* out = reinterpret_cast<__nv_bfloat16*>(p.out);
  const dim3 grid(static_cast<unsigned>(p.num_tokens));
  if (common::bf16_vec_width(p.hidden, {p.table, p.out}, {os}) == 8) {
    embedding_kernel<8><<<grid, kThreads, 0, stream>>>(table, p.ids, out, p.hidden, p.vocab, os);
  } else {
    embedding_kernel<1><<<grid, kThreads, 0, stream>>>(table, p.ids, out, p.hidden, p.vocab, os);
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

// ---- entry: validate (the host ids too), then launch ----------------------------------------------
KernelStatus embedding(const EmbeddingCudaParams& p, Stream stream) {
  if (p.num_tokens < 0) return kernel_error("embedding (cuda): num_tokens must be >= 0");
  if (p.hidden <= 0) return kernel_error("embedding (cuda): hidden must be > 0");
  if (p.vocab <= 0 || p.vocab > 0x7fffffff) return kernel_error("embedding (cuda): vocab must be in [1, 2^31 - 1]");
  if (p.num_tokens > 0x7fffffff) return kernel_error("embedding (cuda): num_tokens exceeds one grid");
  const int64_t os = p.out_stride ? p.out_stride : p.hidden;
  if (os < p.hidden) return kernel_error("embedding (cuda): out_stride < hidden");
  if (p.num_tokens == 0) return kernel_ok();
  if (p.table == nullptr) return kernel_error("embedding (cuda): table is null");
  if (p.ids == nullptr) return kernel_error("embedding (cuda): ids is null");
  if (p.out == nullptr) return kernel_error("embedding (cuda): out is null");
  if (p.ids_host != nullptr) {
    for (int64_t t = 0; t < p.num_tokens; ++t) {
      if (p.ids_host[t] < 0 || p.ids_host[t] >= p.vocab) {
        return kernel_error("embedding (cuda): ids_host holds a token id outside [0, vocab); nothing launched");
      }
    }
  }
  return launch_embedding(p, os, stream);
}

}  // namespace fulgur::kernels::cuda
