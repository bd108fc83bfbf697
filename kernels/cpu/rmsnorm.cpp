#include <cmath>

#include "kernels/rmsnorm.h"

namespace fulgur::kernels {

KernelStatus rmsnorm_cpu(const RmsNormParams& p) {
  if (p.rows < 0 || p.dim <= 0) return kernel_error("rmsnorm: bad sizes");
  const int64_t xs = p.x_stride ? p.x_stride : p.dim;
  const int64_t ys = p.y_stride ? p.y_stride : p.dim;
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* x = p.x + r * xs;
    float* y = p.y + r * ys;
    double sum_sq = 0.0;
    for (int64_t i = 0; i < p.dim; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(p.dim) + p.eps));
    for (int64_t i = 0; i < p.dim; ++i) y[i] = p.weight[i] * (x[i] * inv);
  }
  return kernel_ok();
}

void scale_add_cpu(const float* residual, const float* x, float* out, int64_t n, float alpha, float beta) {
  for (int64_t i = 0; i < n; ++i) out[i] = alpha * residual[i] + beta * x[i];
}

}  // namespace fulgur::kernels
