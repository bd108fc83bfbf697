#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/half.h"
#include "kernels/moe_permute.h"
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

// The permute reference on a hand-checked case: 3 tokens, k = 2, 4 experts, one id out of range.
TEST(MoePermute, GroupsByExpertStablyAndDropsBadIds) {
  const std::vector<int32_t> ids{2, 0, 0, 2, 9, 2};  // token 0: experts 2, 0; token 1: 0, 2; token 2: (dropped), 2
  const int64_t T = 3, k = 2, E = 4, H = 2;
  std::vector<uint16_t> h(T * H);
  for (int64_t i = 0; i < T * H; ++i) h[i] = f32_to_bf16(float(i + 1));  // token t holds {2t+1, 2t+2}
  std::vector<int32_t> off(E + 1), tok(T * k, -1), inv(T * k);
  std::vector<uint16_t> perm(T * k * H, 0);
  MoePermuteParams p{.topk_idx = ids.data(), .h = h.data(), .permuted = perm.data(), .expert_offsets = off.data(),
                     .permuted_token = tok.data(), .inverse = inv.data(), .num_tokens = T, .k = k,
                     .num_experts = E, .hidden = H};
  ASSERT_TRUE(moe_permute_cpu(p).ok());
  EXPECT_EQ(off, (std::vector<int32_t>{0, 2, 2, 5, 5}));        // expert 0: 2 rows, expert 2: 3 rows
  EXPECT_EQ(inv, (std::vector<int32_t>{2, 0, 1, 3, -1, 4}));    // expert 0: tokens 0, 1; expert 2: tokens 0, 1, 2
  EXPECT_EQ(std::vector<int32_t>(tok.begin(), tok.begin() + 5), (std::vector<int32_t>{0, 1, 0, 1, 2}));
  EXPECT_EQ(bf16_to_f32(perm[4 * H]), 5.f);  // row 4 is token 2
  // Identity experts, weights 0.25 / 0.75: every token comes back whole (the dropped slot adds nothing).
  const std::vector<float> w{0.25f, 0.75f, 0.25f, 0.75f, 0.25f, 0.75f};
  std::vector<uint16_t> out(T * H);
  MoeUnpermuteParams u{.expert_out = perm.data(), .inverse = inv.data(), .topk_idx = ids.data(),
                       .topk_weight = w.data(), .out = out.data(), .num_tokens = T, .k = k, .hidden = H};
  ASSERT_TRUE(moe_unpermute_cpu(u).ok());
  for (int64_t i = 0; i < 2 * H; ++i) EXPECT_EQ(bf16_to_f32(out[i]), float(i + 1));
  EXPECT_EQ(bf16_to_f32(out[2 * H]), 0.75f * 5.f);
}

}  // namespace
}  // namespace fulgur::kernels
