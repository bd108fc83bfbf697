#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/activations.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/rmsnorm.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

TEST(RmsNorm, MatchesDoubleReference) {
  for (int64_t rows : {1, 255, 256, 257}) {
    const int64_t dim = 96;
    std::vector<float> x = test::random_floats(rows * dim, rows, 3.f), w = test::random_floats(dim, 1), y(rows * dim);
    RmsNormParams p{.x = x.data(), .weight = w.data(), .y = y.data(), .rows = rows, .dim = dim, .eps = 1e-6f};
    ASSERT_TRUE(rmsnorm_cpu(p).ok());
    std::vector<double> ref(rows * dim);
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
      const double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
      for (int64_t i = 0; i < dim; ++i) ref[r * dim + i] = w[i] * x[r * dim + i] * inv;
    }
    EXPECT_LT(test::rel_l2(y, ref), 1e-6);
  }
}

TEST(Gemm, NtMatchesNaiveWithStridesAndBeta) {
  for (int64_t m : {1, 2, 255, 256, 257}) {
    const int64_t n = 33, k = 70, lda = 75, ldc = 40;
    std::vector<float> a = test::random_floats(m * lda, m), b = test::random_floats(n * k, m + 1);
    std::vector<float> c = test::random_floats(m * ldc, m + 2);
    std::vector<double> ref(c.begin(), c.end());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t l = 0; l < k; ++l) acc += double(a[i * lda + l]) * b[j * k + l];
        ref[i * ldc + j] = 2.0 * acc + 0.5 * c[i * ldc + j];
      }
    GemmParams p{.a = a.data(), .b = b.data(), .c = c.data(), .m = m, .n = n, .k = k, .lda = lda, .ldc = ldc,
                 .alpha = 2.f, .beta = 0.5f};
    ASSERT_TRUE(gemm_nt_cpu(p).ok());
    EXPECT_LT(test::rel_l2(c, ref), 1e-6) << "m " << m;
  }
}

TEST(Activations, SiluMulAndSigmoidMul) {
  std::vector<float> g = test::random_floats(257, 1, 4.f), u = test::random_floats(257, 2), out(257), x = u;
  silu_mul_cpu(g.data(), u.data(), out.data(), 257);
  sigmoid_mul_cpu(g.data(), x.data(), 257);
  for (int i = 0; i < 257; ++i) {
    const double sig = 1.0 / (1.0 + std::exp(-double(g[i])));
    ASSERT_NEAR(out[i], g[i] * sig * u[i], 1e-5);
    ASSERT_NEAR(x[i], u[i] * sig, 1e-6);
  }
}

TEST(Embedding, GathersRowsAndRejectsOutOfRangeIds) {
  std::vector<float> table = test::random_floats(10 * 4, 3), out(3 * 4, NAN);
  std::vector<int32_t> ids = {9, 0, 9};
  EmbeddingParams p{.table = table.data(), .ids = ids.data(), .out = out.data(), .num_tokens = 3, .hidden = 4, .vocab = 10};
  ASSERT_TRUE(embedding_cpu(p).ok());
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(out[i], table[36 + i]);
    EXPECT_EQ(out[4 + i], table[i]);
  }
  ids[1] = 10;
  EXPECT_FALSE(embedding_cpu(p).ok());
  ids[1] = -1;
  EXPECT_FALSE(embedding_cpu(p).ok());
}

}  // namespace
}  // namespace fulgur::kernels
