#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/moe_router.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

TEST(MoeRouter, SoftmaxTopkRenormaliseMatchesReference) {
  for (int64_t E : {2, 4, 8, 32}) {
    for (int64_t K : {1, 2}) {
      const int64_t T = 257;
      std::vector<float> logits = test::random_floats(T * E, E * 10 + K, 2.f);
      std::vector<int32_t> idx(T * K, -1);
      std::vector<float> w(T * K), probs(T * E);
      MoeRouterParams p{.logits = logits.data(), .topk_idx = idx.data(), .topk_weight = w.data(),
                        .probs = probs.data(), .num_tokens = T, .num_experts = E, .k = K};
      ASSERT_TRUE(moe_router_cpu(p).ok());
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> pr(E);
        double den = 0;
        for (int64_t e = 0; e < E; ++e) den += (pr[e] = std::exp(double(logits[t * E + e])));
        for (auto& x : pr) x /= den;
        std::vector<int> order(E);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return pr[a] > pr[b]; });
        double sum = 0;
        for (int64_t r = 0; r < K; ++r) sum += pr[order[r]];
        for (int64_t r = 0; r < K; ++r) {
          ASSERT_EQ(idx[t * K + r], order[r]) << "token " << t;
          ASSERT_NEAR(w[t * K + r], pr[order[r]] / sum, 1e-6);
        }
        for (int64_t e = 0; e < E; ++e) ASSERT_NEAR(probs[t * E + e], pr[e], 1e-6);
      }
    }
  }
}

TEST(MoeRouter, TiesGoToLowerExpert) {
  std::vector<float> logits = {1.f, 3.f, 3.f, 3.f};
  std::vector<int32_t> idx(2);
  std::vector<float> w(2);
  MoeRouterParams p{.logits = logits.data(), .topk_idx = idx.data(), .topk_weight = w.data(), .num_tokens = 1,
                    .num_experts = 4, .k = 2};
  ASSERT_TRUE(moe_router_cpu(p).ok());
  EXPECT_EQ(idx[0], 1);
  EXPECT_EQ(idx[1], 2);
  EXPECT_FLOAT_EQ(w[0], 0.5f);
}

TEST(MoeRouter, RejectsNanAndBadK) {
  std::vector<float> logits = {NAN, 1.f};
  std::vector<int32_t> idx(2);
  std::vector<float> w(2);
  MoeRouterParams p{.logits = logits.data(), .topk_idx = idx.data(), .topk_weight = w.data(), .num_tokens = 1,
                    .num_experts = 2, .k = 1};
  EXPECT_FALSE(moe_router_cpu(p).ok());
  logits[0] = 0.f;
  p.k = 3;
  EXPECT_FALSE(moe_router_cpu(p).ok());
}

}  // namespace
}  // namespace fulgur::kernels
