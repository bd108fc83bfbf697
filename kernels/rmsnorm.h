// RMSNorm and the DeepNorm residual combination (spec §2, §6).
#pragma once

#include <cstdint>

#include "kernels/kernel_status.h"

namespace fulgur::kernels {

struct RmsNormParams {
  const float* x = nullptr;       // [rows, dim], row stride x_stride
  const float* weight = nullptr;  // [dim]
  float* y = nullptr;             // [rows, dim], row stride y_stride (may alias x)
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t x_stride = 0;  // 0 = dim
  int64_t y_stride = 0;  // 0 = dim
  float eps = 1e-5f;
};

// y = weight * x / sqrt(mean(x^2) + eps), accumulated in double per row.
KernelStatus rmsnorm_cpu(const RmsNormParams& p);

// out = alpha * residual + beta * x, element-wise over n values (out may alias either input).
void scale_add_cpu(const float* residual, const float* x, float* out, int64_t n, float alpha, float beta);

}  // namespace fulgur::kernels
