#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/sampling.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

int32_t draw(const std::vector<float>& logits, SamplingParams sp) {
  std::vector<char> ws(sample_workspace_bytes(static_cast<int64_t>(logits.size())));
  int32_t tok = -1;
  EXPECT_TRUE(sample_cpu(logits.data(), static_cast<int64_t>(logits.size()), sp, ws.data(), &tok).ok());
  return tok;
}

TEST(Sampling, GreedyIsArgmaxLowestOnTies) {
  std::vector<float> logits = {0.f, 2.f, 5.f, 5.f, -1.f};
  EXPECT_EQ(draw(logits, {}), 2);
}

TEST(Sampling, TopK1AndTinyTopPAreGreedy) {
  std::vector<float> logits = test::random_floats(1000, 4);
  const int32_t greedy = draw(logits, {});
  for (uint64_t step = 0; step < 50; ++step) {
    EXPECT_EQ(draw(logits, {.temperature = 1.5f, .top_k = 1, .seed = 9, .step = step}), greedy);
    EXPECT_EQ(draw(logits, {.temperature = 1.5f, .top_p = 1e-6f, .seed = 9, .step = step}), greedy);
  }
}

TEST(Sampling, SameSeedSameTokensOtherSeedDiffers) {
  std::vector<float> logits(50, 0.f);  // uniform
  std::vector<int32_t> a, b, c;
  for (uint64_t s = 0; s < 40; ++s) {
    a.push_back(draw(logits, {.temperature = 1.f, .seed = 1, .step = s}));
    b.push_back(draw(logits, {.temperature = 1.f, .seed = 1, .step = s}));
    c.push_back(draw(logits, {.temperature = 1.f, .seed = 2, .step = s}));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Sampling, FrequenciesFollowSoftmaxWithTopKAndTopP) {
  // logits log(4), log(3), log(2), log(1) -> p = .4 .3 .2 .1
  std::vector<float> logits = {std::log(4.f), std::log(3.f), std::log(2.f), std::log(1.f)};
  const int n = 20000;
  auto freq = [&](SamplingParams sp) {
    std::vector<double> f(4, 0);
    for (int s = 0; s < n; ++s) {
      sp.step = s;
      f[draw(logits, sp)] += 1.0 / n;
    }
    return f;
  };
  auto f = freq({.temperature = 1.f, .seed = 3});
  EXPECT_NEAR(f[0], 0.4, 0.015);
  EXPECT_NEAR(f[3], 0.1, 0.015);
  f = freq({.temperature = 1.f, .top_k = 2, .seed = 3});  // .4/.7, .3/.7
  EXPECT_NEAR(f[0], 4.0 / 7, 0.015);
  EXPECT_EQ(f[2] + f[3], 0.0);
  f = freq({.temperature = 1.f, .top_p = 0.85f, .seed = 3});  // keeps .4 .3 .2
  EXPECT_NEAR(f[2], 0.2 / 0.9, 0.015);
  EXPECT_EQ(f[3], 0.0);
  f = freq({.temperature = 0.5f, .seed = 3});  // p ~ p^2
  EXPECT_NEAR(f[0], 16.0 / 30, 0.015);
}

TEST(Sampling, RejectsBadParametersAndNonFiniteLogits) {
  std::vector<float> logits = {1.f, 2.f};
  std::vector<char> ws(sample_workspace_bytes(2));
  int32_t tok;
  EXPECT_FALSE(sample_cpu(logits.data(), 2, {.temperature = -1.f}, ws.data(), &tok).ok());
  EXPECT_FALSE(sample_cpu(logits.data(), 2, {.temperature = 1.f, .top_p = 0.f}, ws.data(), &tok).ok());
  EXPECT_FALSE(sample_cpu(logits.data(), 2, {.temperature = NAN}, ws.data(), &tok).ok());
  logits[1] = NAN;
  EXPECT_FALSE(sample_cpu(logits.data(), 2, {}, ws.data(), &tok).ok());
}

}  // namespace
}  // namespace fulgur::kernels
