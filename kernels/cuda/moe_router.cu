#include <cuda_runtime.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe_router.h"

namespace fulgur::kernels::cuda {

namespace {
constexpr int kWarpsPerBlock = 4;
}  // namespace

// ---- kernel: one warp per token; expert e lives in lane e % 32, register e / 32 -------------------
// kPerLane = ceil(num_experts / 32) rounded up to 1, 2, 4 or 8.
template <int kPerLane>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    moe_router_kernel(const float* __restrict__ logits, int64_t logits_stride, int32_t* __restrict__ topk_idx,
                      float* __restrict__ topk_weight, float* __restrict__ probs, int64_t num_tokens, int num_experts,
                      int k) {
  const int lane = threadIdx.x % 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (t >= num_tokens) return;  // whole warps leave together
  const float* z = logits + t * logits_stride;
  float zl[kPerLane];
  float max_z = -INFINITY;
  bool finite = true;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + 32 * j;
    zl[j] = e < num_experts ? z[e] : -INFINITY;
    if (e < num_experts) {
      finite = finite && isfinite(zl[j]);
      max_z = fmaxf(max_z, zl[j]);
    }
  }
  finite = __all_sync(common::kFullMask, finite);
  int32_t* idx = topk_idx + t * k;
  float* w = topk_weight + t * k;
  if (!finite) {
    for (int r = lane; r < k; r += 32) idx[r] = -1, w[r] = 0.f;
    if (probs != nullptr) {
      for (int e = lane; e < num_experts; e += 32) probs[t * num_experts + e] = NAN;
    }
    return;
  }
  max_z = common::warp_max(max_z);
  double ex[kPerLane];
  double denom = 0.0;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    ex[j] = lane + 32 * j < num_experts ? exp(static_cast<double>(zl[j] - max_z)) : 0.0;
    denom += ex[j];
  }
  denom = common::warp_sum(denom);
  float p[kPerLane];  // -inf: no expert there, or already selected
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + 32 * j;
    p[j] = e < num_experts ? static_cast<float>(ex[j] / denom) : -INFINITY;
    if (probs != nullptr && e < num_experts) probs[t * num_experts + e] = p[j];
  }
  // k rounds of a warp argmax; (p, e) beats (p', e') when p > p' or p == p' and e < e'.
  float kept[kMoeRouterMaxK / 32];  // slot r's probability, held by lane r % 32 in kept[r / 32]
  float sum = 0.f;
  for (int r = 0; r < k; ++r) {
    float best_p = -INFINITY;
    int best_e = 0x7fffffff;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      if (p[j] > best_p) best_p = p[j], best_e = lane + 32 * j;  // ascending e within the lane
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      const float op = __shfl_xor_sync(common::kFullMask, best_p, offset);
      const int oe = __shfl_xor_sync(common::kFullMask, best_e, offset);
      if (op > best_p || (op == best_p && oe < best_e)) best_p = op, best_e = oe;
    }
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      if (lane + 32 * j == best_e) p[j] = -INFINITY;
    }
    if (lane == r % 32) {
      idx[r] = best_e;
#pragma unroll
      for (int m = 0; m < kMoeRouterMaxK / 32; ++m) {
        if (m == r / 32) kept[m] = best_p;
      }
    }
    sum += best_p;  // the same f32 sequence as the reference, in every lane
  }
#pragma unroll
  for (int m = 0; m < kMoeRouterMaxK / 32; ++m) {
    const int r = lane + 32 * m;
    if (r < k) w[r] = kept[m] / sum;
  }
}

// ---- launcher: expert count -> instantiation ------------------------------------------------------
static KernelStatus launch_moe_router(const MoeRouterCudaParams& p, int64_t stride, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.num_tokens + kWarpsPerBlock - 1) / kWarpsPerBlock));
  const dim3 block(kWarpsPerBlock * 32);
  const int E = static_cast<int>(p.num_experts), k = static_cast<int>(p.k);
  if (E <= 32) {
    moe_router_kernel<1><<<grid, block, 0, stream>>>(p.logits, stride, p.topk_idx, p.topk_weight, p.probs, p.num_tokens, E, k);
  } else if (E <= 64) {
    moe_router_kernel<2><<<grid, block, 0, stream>>>(p.logits, stride, p.topk_idx, p.topk_weight, p.probs, p.num_tokens, E, k);
  } else if (E <= 128) {
    moe_router_kernel<4><<<grid, block, 0, stream>>>(p.logits, stride, p.topk_idx, p.topk_weight, p.probs, p.num_tokens, E, k);
  } else {
    moe_router_kernel<8><<<grid, block, 0, stream>>>(p.logits, stride, p.topk_idx, p.topk_weight, p.probs, p.num_tokens, E, k);
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

// ---- entry: validate, then launch ----------------------------------------------------------------
KernelStatus moe_router(const MoeRouterCudaParams& p, Stream stream) {
  if (p.num_tokens < 0) return kernel_error("moe_router (cuda): num_tokens must be >= 0");
  if (p.num_experts <= 0 || p.num_experts > kMoeRouterMaxExperts) {
    return kernel_error("moe_router (cuda): num_experts must be in [1, 256]");
  }
  if (p.k <= 0 || p.k > p.num_experts) return kernel_error("moe_router (cuda): need 0 < k <= num_experts");
  if (p.k > kMoeRouterMaxK) return kernel_error("moe_router (cuda): k > 64 is not supported");
  const int64_t stride = p.logits_stride ? p.logits_stride : p.num_experts;
  if (stride < p.num_experts) return kernel_error("moe_router (cuda): logits_stride < num_experts");
  if (p.num_tokens == 0) return kernel_ok();
  if ((p.num_tokens + kWarpsPerBlock - 1) / kWarpsPerBlock > 0x7fffffff) {
    return kernel_error("moe_router (cuda): num_tokens exceeds one grid");
  }
  if (p.logits == nullptr) return kernel_error("moe_router (cuda): logits is null");
  if (p.topk_idx == nullptr) return kernel_error("moe_router (cuda): topk_idx is null");
  if (p.topk_weight == nullptr) return kernel_error("moe_router (cuda): topk_weight is null");
  return launch_moe_router(p, stride, stream);
}

}  // namespace fulgur::kernels::cuda
