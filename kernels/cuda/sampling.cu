#include <cuda_runtime.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/sampling.h"

namespace fulgur::kernels::cuda {

namespace {
constexpr int kSegment = static_cast<int>(kSampleGreedySegment);
constexpr int kThreads = 256;
constexpr int32_t kNonFinite = -1;

struct ArgMax {
  float value;
  int32_t index;  // kNonFinite: a non-finite logit was seen; 0x7fffffff: nothing seen yet
};

int64_t num_segments(int64_t vocab) { return (vocab + kSegment - 1) / kSegment; }
}  // namespace

// (value, index) beats (value', index') when value > value', or equal with index < index'; a
// non-finite marker beats everything, so it reaches the row's result.
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  if (a.index == kNonFinite || b.index == kNonFinite) return {0.f, kNonFinite};
  if (b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
  return a;
}

__device__ __forceinline__ ArgMax warp_argmax(ArgMax x) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const ArgMax o{__shfl_xor_sync(common::kFullMask, x.value, offset),
                   __shfl_xor_sync(common::kFullMask, x.index, offset)};
    x = better(x, o);
  }
  return x;
}

// ---- kernel 1: one block per (segment, row); kVec = 4 (16-byte loads) or 1 -------------------------
template <int kVec>
__global__ void __launch_bounds__(kThreads)
    argmax_segment_kernel(const float* __restrict__ logits, int64_t stride, int64_t vocab, ArgMax* __restrict__ partial) {
  const int64_t row = blockIdx.y;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kSegment;
  const int64_t end = min(begin + kSegment, vocab);
  const float* z = logits + row * stride;
  ArgMax best{-INFINITY, 0x7fffffff};
  bool finite = true;
  for (int64_t i = begin + threadIdx.x * kVec; i < end; i += kThreads * kVec) {  // ascending per thread
    if constexpr (kVec == 4) {
      const float4 v = *reinterpret_cast<const float4*>(z + i);
      const float x[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        finite = finite && isfinite(x[j]);
        if (x[j] > best.value || best.index == 0x7fffffff) best = {x[j], static_cast<int32_t>(i + j)};
      }
    } else {
      const float x = z[i];
      finite = finite && isfinite(x);
      if (x > best.value || best.index == 0x7fffffff) best = {x, static_cast<int32_t>(i)};
    }
  }
  if (!finite) best.index = kNonFinite;
  best = warp_argmax(best);
  __shared__ ArgMax warp_best[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x < 32) {
    best = threadIdx.x < kThreads / 32 ? warp_best[threadIdx.x] : ArgMax{-INFINITY, 0x7fffffff};
    best = warp_argmax(best);
    if (threadIdx.x == 0) partial[row * gridDim.x + blockIdx.x] = best;
  }
}

// ---- kernel 2: one warp per row over its segments --------------------------------------------------
__global__ void argmax_rows_kernel(const ArgMax* __restrict__ partial, int64_t segments, int64_t num_rows,
                                   int32_t* __restrict__ out_token) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= num_rows) return;
  ArgMax best{-INFINITY, 0x7fffffff};
  for (int64_t s = threadIdx.x % 32; s < segments; s += 32) best = better(best, partial[row * segments + s]);
  best = warp_argmax(best);
  if (threadIdx.x % 32 == 0) out_token[row] = best.index;
}

// ---- launcher -------------------------------------------------------------------------------------
static KernelStatus launch_sample_greedy(const SampleGreedyCudaParams& p, int64_t stride, cudaStream_t stream) {
  const int64_t segments = num_segments(p.vocab);
  auto* partial = static_cast<ArgMax*>(p.workspace);
  const dim3 grid1(static_cast<unsigned>(segments), static_cast<unsigned>(p.num_rows));
  const bool vec = p.vocab % 4 == 0 && stride % 4 == 0 && reinterpret_cast<uintptr_t>(p.logits) % 16 == 0;
  if (vec) {
    argmax_segment_kernel<4><<<grid1, kThreads, 0, stream>>>(p.logits, stride, p.vocab, partial);
  } else {
    argmax_segment_kernel<1><<<grid1, kThreads, 0, stream>>>(p.logits, stride, p.vocab, partial);
  }
  constexpr int kRowsPerBlock = 4;
  const dim3 grid2(static_cast<unsigned>((p.num_rows + kRowsPerBlock - 1) / kRowsPerBlock));
  argmax_rows_kernel<<<grid2, kRowsPerBlock * 32, 0, stream>>>(partial, segments, p.num_rows, p.out_token);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

// ---- entry -----------------------------------------------------------------------------------------
size_t sample_greedy_workspace_bytes(int64_t num_rows, int64_t vocab) {
  if (num_rows < 0 || vocab <= 0) return 0;
  return static_cast<size_t>(num_rows * num_segments(vocab)) * sizeof(ArgMax);
}

KernelStatus sample_greedy(const SampleGreedyCudaParams& p, Stream stream) {
  if (p.num_rows < 0) return kernel_error("sample_greedy (cuda): num_rows must be >= 0");
  if (p.num_rows > 65535) return kernel_error("sample_greedy (cuda): num_rows > 65535 (grid.y limit)");
  if (p.vocab <= 0 || p.vocab > 0x7fffffff) return kernel_error("sample_greedy (cuda): vocab must be in [1, 2^31 - 1]");
  const int64_t stride = p.logits_stride ? p.logits_stride : p.vocab;
  if (stride < p.vocab) return kernel_error("sample_greedy (cuda): logits_stride < vocab");
  if (p.num_rows == 0) return kernel_ok();
  if (p.logits == nullptr) return kernel_error("sample_greedy (cuda): logits is null");
  if (p.out_token == nullptr) return kernel_error("sample_greedy (cuda): out_token is null");
  if (p.workspace_bytes < sample_greedy_workspace_bytes(p.num_rows, p.vocab)) {
    return kernel_error("sample_greedy (cuda): workspace_bytes < sample_greedy_workspace_bytes()");
  }
  if (p.workspace == nullptr || reinterpret_cast<uintptr_t>(p.workspace) % alignof(ArgMax) != 0) {
    return kernel_error("sample_greedy (cuda): workspace is null or not 8-byte aligned");
  }
  return launch_sample_greedy(p, stride, stream);
}

}  // namespace fulgur::kernels::cuda
