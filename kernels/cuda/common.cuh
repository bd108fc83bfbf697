// Device helpers shared by the elementwise / reduction kernels (rmsnorm, moe_*, embedding, sampling):
// warp and block sums, and 8 x bf16 (16-byte) vector loads and stores.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>

namespace fulgur::kernels::cuda::common {

constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Sum over the block of kThreads threads; every thread gets the result. `scratch` holds >= 32 floats
// in shared memory; the call ends with a barrier, so scratch may be reused right after.
template <int kThreads>
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024);
  v = warp_sum(v);
  if constexpr (kThreads == 32) {
    return v;
  } else {
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    v = threadIdx.x % 32 < kThreads / 32 ? scratch[threadIdx.x % 32] : 0.f;
    v = warp_sum(v);
    __syncthreads();
    return v;
  }
}

// 8 consecutive bf16 values <-> one 16-byte word. Pointers must be 16-byte aligned.
struct Bf16x8 {
  float v[8];
};

__device__ __forceinline__ Bf16x8 load_bf16x8(const __nv_bfloat16* p) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
  Bf16x8 r;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    r.v[2 * i] = f.x;
    r.v[2 * i + 1] = f.y;
  }
  return r;
}

__device__ __forceinline__ void store_bf16x8(__nv_bfloat16* p, const Bf16x8& x) {
  uint4 raw;
  auto* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(x.v[2 * i], x.v[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// Vector width (8 or 1 elements) usable for rows of `dim` bf16 values at these bases and row strides.
inline int bf16_vec_width(int64_t dim, std::initializer_list<const void*> bases, std::initializer_list<int64_t> strides) {
  if (dim % 8 != 0) return 1;
  for (const void* b : bases) {
    if (b != nullptr && reinterpret_cast<uintptr_t>(b) % 16 != 0) return 1;
  }
  for (int64_t s : strides) {
    if (s % 8 != 0) return 1;
  }
  return 8;
}

}  // namespace fulgur::kernels::cuda::common
