// GPU RMSNorm (f32) and the fused DeepNorm RMSNorm (bf16) against the CPU reference. Skips (with
// the reason) where no CUDA device exists, as on CI; runs on the GPU machine.
//
// DeepNorm tolerance: the kernel computes in f32 the same quantity as the f32 reference
// (scale_add_cpu + rmsnorm_cpu on the same bf16 inputs; the sum alpha*residual + beta*x is formed
// identically, the norm differs only by summation order and rsqrtf, ~1e-6 relative) and rounds it
// once to bf16, whose half ulp is at most 2^-8 of the value:
// so every element must lie within (2^-8 + 1e-5) |ref| of the reference, and the rel L2 error near
// the rms of one bf16 rounding, 2^-8 sqrt(E[1/m^2] / 3) ~= 1.6e-3 (m the mantissa) -> below 2.5e-3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/half.h"
#include "kernels/rmsnorm.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

TEST(CudaRmsNorm, MatchesCpuReference) {
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine: GPU test skipped";
  for (int64_t rows : {1, 255, 256, 257}) {
    for (int64_t dim : {16, 257, 6144}) {
      std::vector<float> x = test::random_floats(rows * dim, rows + dim, 2.f), w = test::random_floats(dim, 3);
      std::vector<float> ref(rows * dim), got(rows * dim, -1.f);
      RmsNormParams p{.x = x.data(), .weight = w.data(), .y = ref.data(), .rows = rows, .dim = dim, .eps = 1e-5f};
      ASSERT_TRUE(rmsnorm_cpu(p).ok());
      void *dx, *dw, *dy;
      ASSERT_TRUE(cuda::device_alloc(&dx, x.size() * 4).ok());
      ASSERT_TRUE(cuda::device_alloc(&dw, w.size() * 4).ok());
      ASSERT_TRUE(cuda::device_alloc(&dy, got.size() * 4).ok());
      ASSERT_TRUE(cuda::copy_to_device(dx, x.data(), x.size() * 4).ok());
      ASSERT_TRUE(cuda::copy_to_device(dw, w.data(), w.size() * 4).ok());
      ASSERT_TRUE(cuda::copy_to_device(dy, got.data(), got.size() * 4).ok());  // poison
      p.x = static_cast<float*>(dx), p.weight = static_cast<float*>(dw), p.y = static_cast<float*>(dy);
      ASSERT_TRUE(cuda::rmsnorm(p, nullptr).ok());
      ASSERT_TRUE(cuda::synchronize().ok());
      ASSERT_TRUE(cuda::copy_to_host(got.data(), dy, got.size() * 4).ok());
      EXPECT_LT(test::rel_l2(got, ref), 1e-6) << rows << "x" << dim << " " << test::first_mismatch(got, ref, 1e-5);
      (void)cuda::device_free(dx), (void)cuda::device_free(dw), (void)cuda::device_free(dy);
    }
  }
}

constexpr double kDeepNormElemTol = 0x1.0p-8 + 1e-5;  // of |ref|, per element
constexpr double kDeepNormRelL2 = 2.5e-3;
constexpr float kAlpha = 3.5565588200778455f;  // spec §2

// Worst |got - ref| / |ref| over elements (|ref| floored at 1e-30), and the first element past tol.
struct ElemCheck {
  double worst = 0;
  std::string first_bad;
};
ElemCheck check_elems(const std::vector<float>& got, const std::vector<float>& ref, double tol) {
  ElemCheck c;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::abs(double(got[i]) - ref[i]), r = d / std::max(std::abs(double(ref[i])), 1e-30);
    if (!(d <= tol * std::abs(double(ref[i])) + 1e-30)) {
      if (c.first_bad.empty()) {
        c.first_bad = "first mismatch at " + std::to_string(i) + ": got " + std::to_string(got[i]) + " want " +
                      std::to_string(ref[i]);
      }
      c.worst = std::max(c.worst, std::isfinite(r) ? r : 1e30);
    } else {
      c.worst = std::max(c.worst, r);
    }
  }
  return c;
}

struct DeepNormCase {
  int64_t rows, dim;
  int64_t pad = 0;       // extra elements per input row (strided residual and x)
  bool in_place = false;  // out aliases residual, sum_out aliases x
};

void run_deepnorm_case(const DeepNormCase& c, double& worst_elem, double& worst_l2) {
  SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.dim) + " pad " + std::to_string(c.pad) +
               (c.in_place ? " in place" : ""));
  const int64_t rows = c.rows, dim = c.dim, ld = dim + c.pad;
  const uint64_t seed = static_cast<uint64_t>(rows * 7919 + dim * 31 + c.pad + (c.in_place ? 5 : 0));
  // residual: a previous norm's output (rms ~1); x: a sub-block output; weight around 1.
  const std::vector<uint16_t> r16 = test::to_bf16(test::random_floats(rows * ld, seed, 1.f));
  const std::vector<uint16_t> x16 = test::to_bf16(test::random_floats(rows * ld, seed + 1, 2.f));
  std::vector<float> wf = test::random_floats(dim, seed + 2, 0.2f);
  for (auto& w : wf) w += 1.f;
  const std::vector<uint16_t> w16 = test::to_bf16(wf);
  // Reference, f32, on the same bf16 values.
  const std::vector<float> r = test::from_bf16(r16), x = test::from_bf16(x16), w = test::from_bf16(w16);
  std::vector<float> sum_ref(rows * dim), ref(rows * dim);
  for (int64_t i = 0; i < rows; ++i) scale_add_cpu(&r[i * ld], &x[i * ld], &sum_ref[i * dim], dim, kAlpha, 1.f);
  RmsNormParams cp{.x = sum_ref.data(), .weight = w.data(), .y = ref.data(), .rows = rows, .dim = dim, .eps = 1e-5f};
  ASSERT_TRUE(rmsnorm_cpu(cp).ok());

  auto dr = test::to_device(r16), dx = test::to_device(x16), dw = test::to_device(w16);
  test::DeviceBuffer dout(rows * dim * 2), dsum(rows * dim * 2);
  const std::vector<uint16_t> poison(rows * dim, 0x7fc1);  // NaN
  test::upload(dout, poison);
  test::upload(dsum, poison);
  cuda::DeepNormRmsNormCudaParams p;
  p.residual = dr->as<uint16_t>(), p.x = dx->as<uint16_t>(), p.weight = dw->as<uint16_t>();
  p.out = dout.as<uint16_t>(), p.sum_out = dsum.as<uint16_t>();
  p.rows = rows, p.dim = dim, p.residual_stride = ld, p.x_stride = ld, p.alpha = kAlpha, p.beta = 1.f, p.eps = 1e-5f;
  if (c.in_place) {
    p.out = dr->as<uint16_t>(), p.sum_out = dx->as<uint16_t>(), p.out_stride = ld, p.sum_out_stride = ld;
  }
  ASSERT_TRUE(cuda::deepnorm_rmsnorm(p, nullptr).ok());
  ASSERT_TRUE(cuda::synchronize().ok());
  std::vector<uint16_t> out16(rows * ld), sum16(rows * ld);
  if (c.in_place) {
    test::download(out16, *dr);
    test::download(sum16, *dx);
  } else {
    out16.resize(rows * dim), sum16.resize(rows * dim);
    test::download(out16, dout);
    test::download(sum16, dsum);
  }
  std::vector<float> got(rows * dim), got_sum(rows * dim);
  const int64_t gld = c.in_place ? ld : dim;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < dim; ++j) {
      got[i * dim + j] = bf16_to_f32(out16[i * gld + j]);
      got_sum[i * dim + j] = bf16_to_f32(sum16[i * gld + j]);
    }
  }
  const ElemCheck e = check_elems(got, ref, kDeepNormElemTol), es = check_elems(got_sum, sum_ref, kDeepNormElemTol);
  const double l2 = test::rel_l2(got, ref), l2s = test::rel_l2(got_sum, sum_ref);
  EXPECT_LE(e.worst, kDeepNormElemTol) << "out: " << e.first_bad;
  EXPECT_LE(es.worst, kDeepNormElemTol) << "sum_out: " << es.first_bad;
  EXPECT_LT(l2, kDeepNormRelL2) << "out";
  EXPECT_LT(l2s, kDeepNormRelL2) << "sum_out";
  worst_elem = std::max({worst_elem, e.worst, es.worst});
  worst_l2 = std::max({worst_l2, l2, l2s});
}

TEST(CudaDeepNormRmsNorm, MatchesCpuReference) {
  FULGUR_SKIP_WITHOUT_GPU();
  double worst_elem = 0, worst_l2 = 0;
  for (int64_t rows : {1, 255, 256, 257, 4096}) {
    for (int64_t dim : {16, 257, 6144}) run_deepnorm_case({rows, dim}, worst_elem, worst_l2);
  }
  // Strided rows (the 16-byte path with padding of 8, the scalar path with 3) and in place.
  run_deepnorm_case({257, 6144, 8}, worst_elem, worst_l2);
  run_deepnorm_case({255, 6144, 3}, worst_elem, worst_l2);
  run_deepnorm_case({256, 6144, 0, true}, worst_elem, worst_l2);
  run_deepnorm_case({33, 257, 5, true}, worst_elem, worst_l2);
  std::printf("deepnorm_rmsnorm: worst element error %.3g of |ref| (tol %.3g), worst rel L2 %.3g (tol %.3g)\n",
              worst_elem, kDeepNormElemTol, worst_l2, kDeepNormRelL2);
}

TEST(CudaDeepNormRmsNorm, RejectsBadShapesByName) {
  cuda::DeepNormRmsNormCudaParams p;
  p.rows = 4, p.dim = 0;
  const KernelStatus s = cuda::deepnorm_rmsnorm(p, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("dim"), std::string::npos) << s.error;
  p.dim = 16, p.x_stride = 8;
  uint16_t dummy[1];
  p.residual = p.x = p.weight = dummy, p.out = dummy;
  const KernelStatus s2 = cuda::deepnorm_rmsnorm(p, nullptr);
  ASSERT_FALSE(s2.ok());
  EXPECT_NE(std::string(s2.error).find("x_stride"), std::string::npos) << s2.error;
}

}  // namespace
}  // namespace fulgur::kernels
