// RMSNorm on the GPU: same contract as rmsnorm_cpu (kernels/rmsnorm.h), f32 in and out, device
// pointers, enqueued on `stream`. The first CUDA kernel: it fixes the three-layer shape
// (kernel -> launcher -> checked entry) that the CUDA backend follows.
#pragma once

#include "kernels/cuda/runtime.h"
#include "kernels/rmsnorm.h"

namespace fulgur::kernels::cuda {

KernelStatus rmsnorm(const RmsNormParams& p, Stream stream);

}  // namespace fulgur::kernels::cuda
