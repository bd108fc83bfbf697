#include <cuda_bf16.h>

#include "kernels/cuda/activations.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/sampling_math.h"

namespace fulgur::kernels::cuda {

namespace {

// The CPU reference's sigmoid: 1 / (1 + e^{-x}) in fp32.
__device__ __forceinline__ float sigmoidf(float x) { return 1.f / (1.f + expf(-x)); }

// ---- silu: grid-stride over the elements (memory-bound, scalar loads are enough) -------------------
__global__ void silu_inplace_kernel(__nv_bfloat16* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = __bfloat162float(x[i]);
    x[i] = __float2bfloat16_rn(v * sigmoidf(v));
  }
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = __bfloat162float(x[i]);
  }
}

__host__ __device__ inline float hashed_value(uint64_t seed, int64_t i, float std, float offset) {
  const uint64_t z = kernels::sampling::random_bits(seed, static_cast<uint64_t>(i));  // the sampler's splitmix64
  const float u = static_cast<float>(z >> 40) * (1.f / 16777216.f);  // 24 bits: [0, 1)
  return offset + std * 1.7320508f * (2.f * u - 1.f);
}

template <class T>
__global__ void fill_random_kernel(T* x, int64_t n, uint64_t seed, float std, float offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = hashed_value(seed, i, std, offset);
    if constexpr (sizeof(T) == 2) {
      x[i] = __float2bfloat16_rn(v);
    } else {
      x[i] = v;
    }
  }
}

unsigned elementwise_blocks(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

// ---- lightning output gate: one block per token. Pass 1: sum of squares over the H*D features;
// pass 2: normalise, scale, gate, round once. Feature i is head i / D, dim i % D.
template <class T>
__device__ __forceinline__ float load_f(const T* p);
template <>
__device__ __forceinline__ float load_f<float>(const float* p) { return *p; }
template <>
__device__ __forceinline__ float load_f<__nv_bfloat16>(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_f(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <class T, class IO, int kThreads>
__global__ void lightning_output_gate_kernel(const T* attn, const IO* gate, const IO* w, IO* out, int64_t H, int64_t D,
                                             int64_t head_stride,
                                             int64_t gate_stride, float eps) {
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  const int64_t F = H * D;
  const T* a = attn + t * H * head_stride;
  float sum_sq = 0.f;
  for (int64_t i = threadIdx.x; i < F; i += kThreads) {
    const float v = load_f(a + (i / D) * head_stride + i % D);
    sum_sq += v * v;
  }
  sum_sq = common::block_sum<kThreads>(sum_sq, scratch);
  const float inv = rsqrtf(sum_sq / static_cast<float>(F) + eps);
  const IO* g = gate + t * gate_stride;
  IO* o = out + t * F;
  for (int64_t i = threadIdx.x; i < F; i += kThreads) {
    const float v = load_f(a + (i / D) * head_stride + i % D);
    const float y = load_f(w + i) * (v * inv);
    store_f(o + i, y * sigmoidf(load_f(g + i)));
  }
}

template <class T, class IO>
void launch_output_gate(const LightningOutputGateCudaParams& p, int64_t hs, int64_t gs, cudaStream_t stream) {
  const auto* a = static_cast<const T*>(p.attn);
  const auto* g = static_cast<const IO*>(p.gate);
  const auto* w = static_cast<const IO*>(p.norm_weight);
  auto* o = static_cast<IO*>(p.out);
  const dim3 grid(static_cast<unsigned>(p.num_tokens));
  if (p.num_heads * p.head_dim <= 1024) {
    lightning_output_gate_kernel<T, IO, 128><<<grid, 128, 0, stream>>>(a, g, w, o, p.num_heads, p.head_dim, hs, gs, p.eps);
  } else {
    lightning_output_gate_kernel<T, IO, 512><<<grid, 512, 0, stream>>>(a, g, w, o, p.num_heads, p.head_dim, hs, gs, p.eps);
  }
}

template <class T>
void launch_output_gate_io(const LightningOutputGateCudaParams& p, int64_t hs, int64_t gs, cudaStream_t stream) {
  if (p.io_dtype == ActivationDtype::kF32) {
    launch_output_gate<T, float>(p, hs, gs, stream);
  } else {
    launch_output_gate<T, __nv_bfloat16>(p, hs, gs, stream);
  }
}

}  // namespace

KernelStatus silu_inplace_bf16(uint16_t* x, int64_t n, Stream stream) {
  if (n < 0) return kernel_error("silu_inplace_bf16 (cuda): n must be >= 0");
  if (n == 0) return kernel_ok();
  if (x == nullptr) return kernel_error("silu_inplace_bf16 (cuda): x is null");
  silu_inplace_kernel<<<elementwise_blocks(n), 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(x), n);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

float fill_random_value(uint64_t seed, int64_t i, float std, float offset) { return hashed_value(seed, i, std, offset); }

KernelStatus fill_random(void* x, ActivationDtype dtype, int64_t n, uint64_t seed, float std, float offset,
                         Stream stream) {
  if (n < 0) return kernel_error("fill_random (cuda): n must be >= 0");
  if (n == 0) return kernel_ok();
  if (x == nullptr) return kernel_error("fill_random (cuda): x is null");
  if (dtype == ActivationDtype::kF32) {
    fill_random_kernel<float><<<elementwise_blocks(n), 256, 0, stream>>>(static_cast<float*>(x), n, seed, std, offset);
  } else {
    fill_random_kernel<__nv_bfloat16><<<elementwise_blocks(n), 256, 0, stream>>>(static_cast<__nv_bfloat16*>(x), n, seed,
                                                                                std, offset);
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus bf16_to_f32(const uint16_t* x, float* y, int64_t n, Stream stream) {
  if (n < 0) return kernel_error("bf16_to_f32 (cuda): n must be >= 0");
  if (n == 0) return kernel_ok();
  if (x == nullptr || y == nullptr) return kernel_error("bf16_to_f32 (cuda): null pointer");
  bf16_to_f32_kernel<<<elementwise_blocks(n), 256, 0, stream>>>(reinterpret_cast<const __nv_bfloat16*>(x), y, n);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus lightning_output_gate(const LightningOutputGateCudaParams& p, Stream stream) {
  if (p.num_tokens < 0) return kernel_error("lightning_output_gate (cuda): num_tokens must be >= 0");
  if (p.num_heads <= 0 || p.head_dim <= 0) return kernel_error("lightning_output_gate (cuda): heads and head_dim must be > 0");
  if (p.num_tokens > 0x7fffffff) return kernel_error("lightning_output_gate (cuda): num_tokens exceeds one grid");
  const int64_t hs = p.head_stride ? p.head_stride : p.head_dim;
  const int64_t gs = p.gate_stride ? p.gate_stride : p.num_heads * p.head_dim;
  if (hs < p.head_dim) return kernel_error("lightning_output_gate (cuda): head_stride < head_dim");
  if (gs < p.num_heads * p.head_dim) return kernel_error("lightning_output_gate (cuda): gate_stride < H*D");
  if (!(p.eps > 0.f)) return kernel_error("lightning_output_gate (cuda): eps must be > 0");
  if (p.num_tokens == 0) return kernel_ok();
  if (p.attn == nullptr || p.gate == nullptr || p.norm_weight == nullptr || p.out == nullptr) {
    return kernel_error("lightning_output_gate (cuda): null pointer");
  }
  if (p.attn_dtype == ActivationDtype::kF32) {
    launch_output_gate_io<float>(p, hs, gs, stream);
  } else {
    launch_output_gate_io<__nv_bfloat16>(p, hs, gs, stream);
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

}  // namespace fulgur::kernels::cuda
