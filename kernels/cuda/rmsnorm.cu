#include "kernels/cuda/check.cuh"
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

}  // namespace fulgur::kernels::cuda
