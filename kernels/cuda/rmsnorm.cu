#include <cuda_bf16.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rmsnorm.h"

namespace fulgur::kernels::cuda {

// ---- kernel: one block per row, kThreads threads stride over the row ------------------------
template <int kThreads>
__global__ void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                               int64_t dim, int64_t x_stride, int64_t y_stride, float eps) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024);
  const int64_t row = blockIdx.x;
  const float* xr = x + row * x_stride;
  float* yr = y + row * y_stride;
  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) sum += xr[i] * xr[i];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  __shared__ float warp_sums[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.f;
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (threadIdx.x == 0) warp_sums[0] = sum;
  }
  __syncthreads();
  const float inv = rsqrtf(warp_sums[0] / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) yr[i] = w[i] * (xr[i] * inv);
}

// ---- launcher: runtime sizes -> instantiation, grid and block ----------------------------------
static KernelStatus launch_rmsnorm(const RmsNormParams& p, int64_t xs, int64_t ys, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (p.dim <= 256) {
    rmsnorm_kernel<64><<<grid, 64, 0, stream>>>(p.x, p.weight, p.y, p.dim, xs, ys, p.eps);
  } else {
    rmsnorm_kernel<256><<<grid, 256, 0, stream>>>(p.x, p.weight, p.y, p.dim, xs, ys, p.eps);
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

// ---- entry: validate, then launch ----------------------------------------------------------------
KernelStatus rmsnorm(const RmsNormParams& p, Stream stream) {
  if (p.rows < 0 || p.dim <= 0) return kernel_error("rmsnorm (cuda): bad sizes");
  if (p.rows == 0) return kernel_ok();
  if (p.rows > 0x7fffffff) return kernel_error("rmsnorm (cuda): too many rows for one grid");
  const int64_t xs = p.x_stride ? p.x_stride : p.dim;
  const int64_t ys = p.y_stride ? p.y_stride : p.dim;
  return launch_rmsnorm(p, xs, ys, stream);
}


// ==== DeepNorm residual + RMSNorm, bf16 in and out ==============================================

// ---- kernel: one block per row. Pass 1 forms the sum in fp32 and its sum of squares; pass 2
// forms it again (the row is in L1/L2) and writes. Each element is read and written by the same
// thread after the barrier inside block_sum, so out / sum_out may alias the inputs.
// kVec: 8 (16-byte loads; dim, strides and bases multiples of 8 elements / 16 bytes) or 1.
// The sum is formed as scale_add_cpu forms it: both products rounded, then added (no FMA), so it
// equals the reference's bit for bit even where alpha * residual and beta * x nearly cancel.
__device__ __forceinline__ float deepnorm_sum(float alpha, float r, float beta, float x) {
  return __fadd_rn(__fmul_rn(alpha, r), __fmul_rn(beta, x));
}

template <int kThreads, int kVec>
__global__ void deepnorm_rmsnorm_kernel(const __nv_bfloat16* residual, const __nv_bfloat16* x,
                                        const __nv_bfloat16* weight, __nv_bfloat16* out, __nv_bfloat16* sum_out,
                                        int64_t dim, int64_t rs, int64_t xs, int64_t os, int64_t ss, float alpha,
                                        float beta, float eps) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const __nv_bfloat16* rr = residual + row * rs;
  const __nv_bfloat16* xr = x + row * xs;
  float sum_sq = 0.f;
  for (int64_t i = threadIdx.x * kVec; i < dim; i += kThreads * kVec) {
    if constexpr (kVec == 8) {
      const common::Bf16x8 a = common::load_bf16x8(rr + i), b = common::load_bf16x8(xr + i);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float s = deepnorm_sum(alpha, a.v[j], beta, b.v[j]);
        sum_sq += s * s;
      }
    } else {
      const float s = deepnorm_sum(alpha, __bfloat162float(rr[i]), beta, __bfloat162float(xr[i]));
      sum_sq += s * s;
    }
  }
  sum_sq = common::block_sum<kThreads>(sum_sq, scratch);
  const float inv = rsqrtf(sum_sq / static_cast<float>(dim) + eps);
  __nv_bfloat16* orow = out + row * os;
  __nv_bfloat16* srow = sum_out != nullptr ? sum_out + row * ss : nullptr;
  for (int64_t i = threadIdx.x * kVec; i < dim; i += kThreads * kVec) {
    if constexpr (kVec == 8) {
      const common::Bf16x8 a = common::load_bf16x8(rr + i), b = common::load_bf16x8(xr + i);
      const common::Bf16x8 w = common::load_bf16x8(weight + i);
      common::Bf16x8 s, y;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        s.v[j] = deepnorm_sum(alpha, a.v[j], beta, b.v[j]);
        y.v[j] = w.v[j] * (s.v[j] * inv);
      }
      if (srow != nullptr) common::store_bf16x8(srow + i, s);
      common::store_bf16x8(orow + i, y);
    } else {
      const float s = deepnorm_sum(alpha, __bfloat162float(rr[i]), beta, __bfloat162float(xr[i]));
      if (srow != nullptr) srow[i] = __float2bfloat16_rn(s);
      orow[i] = __float2bfloat16_rn(__bfloat162float(weight[i]) * (s * inv));
    }
  }
}

// ---- launcher: vector width and block size -> instantiation ---------------------------------------
template <int kVec>
static void launch_deepnorm_vec(const DeepNormRmsNormCudaParams& p, int64_t rs, int64_t xs, int64_t os, int64_t ss,
                                cudaStream_t stream) {
  const auto* r = reinterpret_cast<const __nv_bfloat16*>(p.residual);
  const auto* x = reinterpret_cast<const __nv_bfloat16*>(p.x);
  const auto* w = reinterpret_cast<const __nv_bfloat16*>(p.weight);
  auto* o = reinterpret_cast<__nv_bfloat16*>(p.out);
  auto* s = reinterpret_cast<__nv_bfloat16*>(p.sum_out);
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (p.dim / kVec <= 512) {  // <= 8 iterations per thread at 64 threads
    deepnorm_rmsnorm_kernel<64, kVec><<<grid, 64, 0, stream>>>(r, x, w, o, s, p.dim, rs, xs, os, ss, p.alpha, p.beta, p.eps);
  } else {
    deepnorm_rmsnorm_kernel<256, kVec><<<grid, 256, 0, stream>>>(r, x, w, o, s, p.dim, rs, xs, os, ss, p.alpha, p.beta,
                                                                 p.eps);
  }
}

static KernelStatus launch_deepnorm_rmsnorm(const DeepNormRmsNormCudaParams& p, int64_t rs, int64_t xs, int64_t os,
                                            int64_t ss, cudaStream_t stream) {
  const int vec = common::bf16_vec_width(p.dim, {p.residual, p.x, p.weight, p.out, p.sum_out}, {rs, xs, os, ss});
  if (vec == 8) {
    launch_deepnorm_vec<8>(p, rs, xs, os, ss, stream);
  } else {
    launch_deepnorm_vec<1>(p, rs, xs, os, ss, stream);
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

// ---- entry: validate, then launch ----------------------------------------------------------------
KernelStatus deepnorm_rmsnorm(const DeepNormRmsNormCudaParams& p, Stream stream) {
  if (p.rows < 0) return kernel_error("deepnorm_rmsnorm (cuda): rows must be >= 0");
  if (p.dim <= 0) return kernel_error("deepnorm_rmsnorm (cuda): dim must be > 0");
  if (p.rows > 0x7fffffff) return kernel_error("deepnorm_rmsnorm (cuda): rows exceed one grid (2^31 - 1)");
  if (p.rows == 0) return kernel_ok();
  if (p.residual == nullptr) return kernel_error("deepnorm_rmsnorm (cuda): residual is null");
  if (p.x == nullptr) return kernel_error("deepnorm_rmsnorm (cuda): x is null");
  if (p.weight == nullptr) return kernel_error("deepnorm_rmsnorm (cuda): weight is null");
  if (p.out == nullptr) return kernel_error("deepnorm_rmsnorm (cuda): out is null");
  const int64_t rs = p.residual_stride ? p.residual_stride : p.dim;
  const int64_t xs = p.x_stride ? p.x_stride : p.dim;
  const int64_t os = p.out_stride ? p.out_stride : p.dim;
  const int64_t ss = p.sum_out_stride ? p.sum_out_stride : p.dim;
  if (rs < p.dim) return kernel_error("deepnorm_rmsnorm (cuda): residual_stride < dim");
  if (xs < p.dim) return kernel_error("deepnorm_rmsnorm (cuda): x_stride < dim");
  if (os < p.dim) return kernel_error("deepnorm_rmsnorm (cuda): out_stride < dim");
  if (p.sum_out != nullptr && ss < p.dim) return kernel_error("deepnorm_rmsnorm (cuda): sum_out_stride < dim");
  if (!(p.eps > 0.f)) return kernel_error("deepnorm_rmsnorm (cuda): eps must be > 0");
  return launch_deepnorm_rmsnorm(p, rs, xs, os, ss, stream);
}

}  // namespace fulgur::kernels::cuda
