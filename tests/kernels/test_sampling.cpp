#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/sampling.h"
#include "kernels/sampling_math.h"
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

TEST(Sampling, RejectsHugeVocabularyAndMisalignedWorkspace) {
  std::vector<float> logits = {1.f, 2.f};
  std::vector<uint64_t> ws(4);
  int32_t tok;
  EXPECT_FALSE(sample_cpu(logits.data(), sampling::kMaxVocab + 1, {}, ws.data(), &tok).ok());
  EXPECT_FALSE(sample_cpu(logits.data(), 2, {.temperature = 1.f}, reinterpret_cast<char*>(ws.data()) + 4, &tok).ok());
}

// ---- the shared integer arithmetic (kernels/sampling_math.h) -------------------------------------

TEST(SamplingMath, ExpIsAccurateOnItsWholeRange) {
  double worst = 0;
  for (int i = 0; i <= 640000; ++i) {
    const float x = -64.f * static_cast<float>(i) / 640000.f;
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(sampling::exp_nonpositive(x) - want) / want);
  }
  EXPECT_LT(worst, 2e-7);
  EXPECT_EQ(sampling::exp_nonpositive(0.f), 1.f);
}

TEST(SamplingMath, WeightsScaleTheProbabilities) {
  const float inv_t = sampling::inverse_temperature(0.5f);
  EXPECT_EQ(sampling::weight(3.f, 3.f, inv_t), uint64_t{1} << sampling::kWeightBits);
  const double w = static_cast<double>(sampling::weight(2.f, 3.f, inv_t));  // exp(-2)
  EXPECT_NEAR(w / std::ldexp(1.0, sampling::kWeightBits), std::exp(-2.0), 1e-7);
  EXPECT_EQ(sampling::weight(-100.f, 3.f, inv_t), 0u);                              // x < -25
  EXPECT_EQ(sampling::weight(-30.f, -5.f, 1.f), 0u);                                // e^-25 < 2^-36
  EXPECT_EQ(sampling::weight(2.f, 3.f, sampling::inverse_temperature(1e-40f)), 0u);  // 1/t = inf: greedy
  EXPECT_EQ(sampling::weight(3.f, 3.f, sampling::inverse_temperature(1e-40f)), uint64_t{1} << sampling::kWeightBits);
  EXPECT_EQ(sampling::weight(-3e38f, 3e38f, 1.f), 0u);  // logit - top overflows to -inf
}

TEST(SamplingMath, TopPMassIsTheExactCeiling) {
  std::mt19937_64 rng(5);
  for (int i = 0; i < 20000; ++i) {
    const uint64_t total = 1 + rng() % (uint64_t{1} << (i % 63));
    float top_p = std::ldexp(static_cast<float>(rng() % (1u << 24)) + 1.f, -24 - static_cast<int>(rng() % 130));
    if (i % 7 == 0) top_p = 1.f;
    if (!(top_p > 0.f && top_p <= 1.f)) continue;
    // need = ceil(total * top_p) iff need >= total * top_p > need - 1. With top_p = m * 2^-s exactly:
    // need * 2^s >= m * total > (need - 1) * 2^s, checked in 128-bit integers (s < 128 here).
    int e = 0;
    const float mant = std::frexp(top_p, &e);
    const unsigned __int128 m = static_cast<uint64_t>(std::ldexp(mant, 24));
    const int s = 24 - e;
    const uint64_t need = sampling::top_p_mass(total, top_p);
    ASSERT_GE(need, 1u);
    ASSERT_LE(need, total);
    if (s < 100) {
      const unsigned __int128 v = m * total;
      ASSERT_GE(static_cast<unsigned __int128>(need) << s, v) << "total " << total << " top_p " << top_p;
      ASSERT_LT(static_cast<unsigned __int128>(need - 1) << s, v) << "total " << total << " top_p " << top_p;
    } else {
      ASSERT_EQ(need, 1u) << "total " << total << " top_p " << top_p;  // total * top_p < 2^63 * 2^-76 < 1
    }
  }
  EXPECT_EQ(sampling::top_p_mass(10, 0.5f), 5u);
  EXPECT_EQ(sampling::top_p_mass(11, 0.5f), 6u);
  EXPECT_EQ(sampling::top_p_mass(7, 1.f), 7u);
  EXPECT_EQ(sampling::top_p_mass(uint64_t{1} << 40, 1e-30f), 1u);
}

TEST(SamplingMath, DrawPointCoversTheTotal) {
  EXPECT_EQ(sampling::draw_point(0, 1000), 0u);
  EXPECT_EQ(sampling::draw_point(~uint64_t{0}, 1000), 999u);
  EXPECT_EQ(sampling::draw_point(uint64_t{1} << 63, 1000), 500u);
}

TEST(SamplingMath, OrderKeyIsLogitThenLowerId) {
  std::vector<float> v = {1.f, -1.f, 0.f, -0.f, 2.5f, -2.5f, 1.f, 3e38f, -3e38f, 1e-40f, -1e-40f};
  for (size_t a = 0; a < v.size(); ++a) {
    for (size_t b = 0; b < v.size(); ++b) {
      if (a == b) continue;
      const bool first = v[a] > v[b] || (v[a] == v[b] && a < b);
      EXPECT_EQ(sampling::order_key(v[a], static_cast<uint32_t>(a)) > sampling::order_key(v[b], static_cast<uint32_t>(b)),
                first)
          << v[a] << "@" << a << " vs " << v[b] << "@" << b;
    }
  }
  EXPECT_EQ(sampling::key_token(sampling::order_key(-7.f, 12345)), 12345u);
}

}  // namespace
}  // namespace fulgur::kernels
