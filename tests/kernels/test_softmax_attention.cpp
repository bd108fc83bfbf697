// RoPE, KV-cache write and paged causal GQA attention against direct double implementations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/softmax_attention.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

// Spec §4 in double: x'[j] = a cos - b sin, x'[j+r/2] = b cos + a sin on dims < rotary_dim.
std::vector<double> rope_ref(const std::vector<float>& x, int64_t T, int64_t H, int64_t D,
                             const std::vector<int32_t>& pos, int64_t rd, double theta) {
  std::vector<double> y(x.begin(), x.end());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < rd / 2; ++j) {
        const double ang = pos[t] * std::pow(theta, -2.0 * j / rd);
        const double a = x[(t * H + h) * D + j], b = x[(t * H + h) * D + j + rd / 2];
        y[(t * H + h) * D + j] = a * std::cos(ang) - b * std::sin(ang);
        y[(t * H + h) * D + j + rd / 2] = b * std::cos(ang) + a * std::sin(ang);
      }
  return y;
}

TEST(Rope, PartialNeoxMatchesReference) {
  for (int64_t rd : {0, 8, 16, 64}) {
    const int64_t T = 37, H = 3, D = 64;
    std::vector<float> x = test::random_floats(T * H * D, 11 + rd);
    std::vector<int32_t> pos(T);
    std::iota(pos.begin(), pos.end(), 1000);
    std::vector<double> ref = rope_ref(x, T, H, D, pos, rd, 1e7);
    RopeParams p{.x = x.data(), .token_stride = H * D, .head_stride = D, .num_tokens = T, .num_heads = H,
                 .head_dim = D, .positions = pos.data(), .rotary_dim = rd, .theta = 1e7};
    ASSERT_TRUE(rope_neox_cpu(p).ok());
    EXPECT_LT(test::rel_l2(x, ref), 1e-6) << "rotary_dim " << rd;
    // The pass-through dims are untouched bit for bit.
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = rd; d < D; ++d) ASSERT_EQ(x[t * H * D + d], static_cast<float>(ref[t * H * D + d]));
  }
}

TEST(Rope, RejectsOddRotaryDim) {
  float x[4] = {};
  int32_t pos = 0;
  RopeParams p{.x = x, .token_stride = 4, .head_stride = 4, .num_tokens = 1, .num_heads = 1, .head_dim = 4,
               .positions = &pos, .rotary_dim = 3};
  EXPECT_FALSE(rope_neox_cpu(p).ok());
}

// Naive causal GQA over contiguous K/V [ctx, KV, D] in double.
std::vector<double> attention_ref(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                  int64_t nq, int64_t ctx, int64_t H, int64_t KV, int64_t D) {
  std::vector<double> out(nq * H * D, 0.0);
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / KV), qpos = ctx - nq + i;
      std::vector<double> s(qpos + 1);
      double mx = -1e300;
      for (int64_t p = 0; p <= qpos; ++p) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += double(q[(i * H + h) * D + d]) * k[(p * KV + kvh) * D + d];
        s[p] = dot / std::sqrt(double(D));
        mx = std::max(mx, s[p]);
      }
      double den = 0;
      for (auto& x : s) den += (x = std::exp(x - mx));
      for (int64_t p = 0; p <= qpos; ++p)
        for (int64_t d = 0; d < D; ++d) out[(i * H + h) * D + d] += s[p] / den * v[(p * KV + kvh) * D + d];
    }
  return out;
}

struct AttnCase {
  int64_t ctx, nq, H, KV, D, page;
};
class PagedAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(PagedAttention, MatchesNaiveWithShuffledPages) {
  const auto c = GetParam();
  const int64_t pages_needed = (c.ctx + c.page - 1) / c.page, num_blocks = pages_needed + 3;
  std::vector<float> k = test::random_floats(c.ctx * c.KV * c.D, 1 + c.ctx);
  std::vector<float> v = test::random_floats(c.ctx * c.KV * c.D, 2 + c.ctx);
  std::vector<float> q = test::random_floats(c.nq * c.H * c.D, 3 + c.ctx);
  // A shuffled page table, written through kv_cache_write.
  std::vector<int32_t> pages(num_blocks);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(static_cast<unsigned>(c.ctx)));
  pages.resize(pages_needed);
  std::vector<int64_t> slots(c.ctx);
  for (int64_t p = 0; p < c.ctx; ++p) slots[p] = int64_t(pages[p / c.page]) * c.page + p % c.page;
  std::vector<float> kc(num_blocks * c.page * c.KV * c.D, NAN), vc(kc.size(), NAN);
  KvCacheWriteParams w{.k = k.data(), .v = v.data(), .token_stride = c.KV * c.D, .k_cache = kc.data(),
                       .v_cache = vc.data(), .slot_mapping = slots.data(), .num_tokens = c.ctx,
                       .num_kv_heads = c.KV, .head_dim = c.D, .num_blocks = num_blocks, .page_size = c.page};
  ASSERT_TRUE(kv_cache_write_cpu(w).ok());
  std::vector<float> out(c.nq * c.H * c.D, NAN), ws(paged_attention_workspace_floats(c.ctx, c.D));
  int32_t cu[2] = {0, static_cast<int32_t>(c.nq)}, ctx = static_cast<int32_t>(c.ctx);
  PagedAttentionParams p{.q = q.data(), .q_token_stride = c.H * c.D, .k_cache = kc.data(), .v_cache = vc.data(),
                         .block_tables = pages.data(), .max_blocks_per_seq = pages_needed, .cu_seqlens_q = cu,
                         .context_lens = &ctx, .num_seqs = 1, .num_heads = c.H, .num_kv_heads = c.KV,
                         .head_dim = c.D, .num_blocks = num_blocks, .page_size = c.page,
                         .scale = static_cast<float>(1.0 / std::sqrt(double(c.D))), .out = out.data(),
                         .workspace = ws.data(), .workspace_floats = static_cast<int64_t>(ws.size())};
  ASSERT_TRUE(paged_attention_cpu(p).ok());
  std::vector<double> ref = attention_ref(q, k, v, c.nq, c.ctx, c.H, c.KV, c.D);
  EXPECT_LT(test::rel_l2(out, ref), 1e-5) << test::first_mismatch(out, ref, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(HostileShapes, PagedAttention,
                         ::testing::Values(AttnCase{1, 1, 4, 2, 16, 16},       // one token
                                           AttnCase{255, 255, 8, 2, 16, 16},   // full prefill, GQA 4
                                           AttnCase{256, 256, 4, 4, 8, 16},    // MHA
                                           AttnCase{257, 257, 4, 1, 8, 32},    // MQA, page boundary + 1
                                           AttnCase{300, 1, 8, 2, 16, 16},     // decode
                                           AttnCase{300, 45, 6, 3, 8, 7},      // chunk at the end, odd page
                                           AttnCase{200, 130, 4, 2, 8, 16}));  // several query tiles

TEST(PagedAttention, RejectsContextShorterThanQueries) {
  std::vector<float> q(16), kc(16), vc(16), out(16), ws(paged_attention_workspace_floats(4, 4));
  int32_t table = 0, cu[2] = {0, 2}, ctx = 1;
  PagedAttentionParams p{.q = q.data(), .q_token_stride = 4, .k_cache = kc.data(), .v_cache = vc.data(),
                         .block_tables = &table, .max_blocks_per_seq = 1, .cu_seqlens_q = cu, .context_lens = &ctx,
                         .num_seqs = 1, .num_heads = 1, .num_kv_heads = 1, .head_dim = 4, .num_blocks = 1,
                         .page_size = 4, .scale = 0.5f, .out = out.data(), .workspace = ws.data(),
                         .workspace_floats = static_cast<int64_t>(ws.size())};
  EXPECT_FALSE(paged_attention_cpu(p).ok());
}

}  // namespace
}  // namespace fulgur::kernels
