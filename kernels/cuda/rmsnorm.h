// RMSNorm on the GPU. Two entries:
//  - rmsnorm: same contract as rmsnorm_cpu (kernels/rmsnorm.h), f32 in and out. The first CUDA
//    kernel: it fixes the three-layer shape (kernel -> launcher -> checked entry) that the CUDA
//    backend follows.
//  - deepnorm_rmsnorm: the post-norm DeepNorm step of every sub-block (spec §2, §6), fused,
//      sum = alpha * residual + beta * x;   out = weight * sum / sqrt(mean(sum^2) + eps),
//    bf16 in and out, fp32 math (the sum is never rounded before the norm). In the decoder layer
//    residual is the previous norm's output h (not the raw stream), x the attention or MoE output,
//    alpha = 3.5566, beta = 1; the final model.norm is the same step after the last layer.
//    The post-norm scheme carries only `out` forward; the un-normed sum is an optional output for
//    dumps and checks (sum_out = nullptr skips it). Reference: scale_add_cpu then rmsnorm_cpu on
//    the same bf16 values in f32. ORIG rounds alpha*h and the normalised value to bf16 on the way
//    (spec §2 and §9.6); this kernel rounds once, at the output.
// All pointers are device pointers; the entries validate and enqueue on `stream`, never allocate.
#pragma once

#include <cstdint>

#include "kernels/cuda/runtime.h"
#include "kernels/rmsnorm.h"

namespace fulgur::kernels::cuda {

KernelStatus rmsnorm(const RmsNormParams& p, Stream stream);

struct DeepNormRmsNormCudaParams {
  const uint16_t* residual = nullptr;  // [rows, dim] bf16 bits, row stride residual_stride
  const uint16_t* x = nullptr;         // [rows, dim] bf16 bits, row stride x_stride
  const uint16_t* weight = nullptr;    // [dim] bf16 bits
  uint16_t* out = nullptr;             // [rows, dim] bf16 bits, row stride out_stride; may alias residual or x
                                       // (then with the same stride)
  uint16_t* sum_out = nullptr;         // optional [rows, dim] bf16 bits (alpha*residual + beta*x), row stride
                                       // sum_out_stride; may alias residual or x
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t residual_stride = 0;  // 0 = dim (all strides in elements)
  int64_t x_stride = 0;         // 0 = dim
  int64_t out_stride = 0;       // 0 = dim
  int64_t sum_out_stride = 0;   // 0 = dim
  float alpha = 1.f;
  float beta = 1.f;
  float eps = 1e-5f;
};
KernelStatus deepnorm_rmsnorm(const DeepNormRmsNormCudaParams& p, Stream stream);

}  // namespace fulgur::kernels::cuda
