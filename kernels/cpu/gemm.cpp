#include <cblas.h>

#include "kernels/gemm.h"

namespace fulgur::kernels {

KernelStatus gemm_nt_cpu(const GemmParams& p) {
  if (p.m < 0 || p.n < 0 || p.k < 0) return kernel_error("gemm: negative size");
  const int64_t lda = p.lda ? p.lda : p.k;
  const int64_t ldb = p.ldb ? p.ldb : p.k;
  const int64_t ldc = p.ldc ? p.ldc : p.n;
  if (lda < p.k || ldb < p.k || ldc < p.n) return kernel_error("gemm: leading dimension too small");
  if (p.m == 0 || p.n == 0) return kernel_ok();
  if (p.k == 0) {
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t j = 0; j < p.n; ++j) p.c[i * ldc + j] = p.beta == 0.f ? 0.f : p.beta * p.c[i * ldc + j];
    return kernel_ok();
  }
  if (p.m == 1) {
    // One row (decode): a matrix-vector product. OpenBLAS 0.3.21's sgemm would pack the whole
    // weight matrix for a single row; sgemv streams it once.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(p.n), static_cast<int>(p.k), p.alpha, p.b,
                static_cast<int>(ldb), p.a, 1, p.beta, p.c, 1);
    return kernel_ok();
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(p.m), static_cast<int>(p.n),
              static_cast<int>(p.k), p.alpha, p.a, static_cast<int>(lda), p.b, static_cast<int>(ldb),
              p.beta, p.c, static_cast<int>(ldc));
  return kernel_ok();
}

}  // namespace fulgur::kernels
