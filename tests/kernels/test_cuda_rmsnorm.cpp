// GPU RMSNorm against the CPU reference. Skips (with the reason) where no CUDA device exists,
// as on CI; runs on the GPU machine.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/cuda/rmsnorm.h"
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

}  // namespace
}  // namespace fulgur::kernels
