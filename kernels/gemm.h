// Dense GEMM for linear layers: C = alpha * A * B^T + beta * C, with B stored [n, k] like a
// checkpoint's [out, in] weight. CPU: OpenBLAS sgemm.
#pragma once

#include <cstdint>

#include "kernels/kernel_status.h"

namespace fulgur::kernels {

struct GemmParams {
  const float* a = nullptr;  // [m, k], row stride lda (0 = k)
  const float* b = nullptr;  // [n, k], row stride ldb (0 = k)
  float* c = nullptr;        // [m, n], row stride ldc (0 = n)
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  float alpha = 1.f;
  float beta = 0.f;
};

KernelStatus gemm_nt_cpu(const GemmParams& p);

}  // namespace fulgur::kernels
