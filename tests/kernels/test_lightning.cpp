// Lightning attention kernels against the exact token-by-token recurrence (spec §3.3) in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/lightning_attention.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

// Packed q|k|v per head like the fused projection: [T, H, 3D].
struct Inputs {
  int64_t T, H, D;
  std::vector<float> qkv;
  std::vector<float> slopes;
  const float* q() const { return qkv.data(); }
  int64_t ts() const { return 3 * H * D; }
};

Inputs make_inputs(int64_t T, int64_t H, int64_t D, uint64_t seed) {
  Inputs in{T, H, D, test::random_floats(static_cast<size_t>(T * H * 3 * D), seed, 0.5f), {}};
  // Realistic decays: the fastest head of layer 0 (s = 0.917) down to slow ones (s ~ 1e-3).
  for (int64_t h = 0; h < H; ++h) in.slopes.push_back(static_cast<float>(0.917 * std::pow(0.35, h)));
  return in;
}

// Exact recurrence in double; state [H, D, D] updated in place; returns o [T, H, D].
std::vector<double> recurrence(const Inputs& in, int64_t t_begin, int64_t t_end, std::vector<double>& state) {
  const int64_t H = in.H, D = in.D;
  std::vector<double> out;
  for (int64_t t = t_begin; t < t_end; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const float* q = in.q() + t * in.ts() + h * 3 * D;
      const float* k = q + D;
      const float* v = q + 2 * D;
      const double decay = std::exp(-static_cast<double>(in.slopes[h]));
      double* S = state.data() + h * D * D;
      for (int64_t i = 0; i < D; ++i)
        for (int64_t j = 0; j < D; ++j) S[i * D + j] = decay * S[i * D + j] + double(k[i]) * v[j];
      for (int64_t j = 0; j < D; ++j) {
        double o = 0;
        for (int64_t i = 0; i < D; ++i) o += double(q[i]) * S[i * D + j];
        out.push_back(o);
      }
    }
  }
  return out;
}

std::vector<float> prefill(const Inputs& in, std::vector<float>& state, int64_t block, int64_t t_begin, int64_t t_end) {
  std::vector<float> out(static_cast<size_t>((t_end - t_begin) * in.H * in.D), NAN);
  std::vector<float> ws(static_cast<size_t>(lightning_prefill_workspace_floats(block, in.D)));
  int32_t cu[2] = {0, static_cast<int32_t>(t_end - t_begin)};
  int32_t slot = 0;
  LightningPrefillParams p;
  const float* base = in.q() + t_begin * in.ts();
  p.q = base, p.k = base + in.D, p.v = base + 2 * in.D;
  p.qkv_token_stride = in.ts(), p.qkv_head_stride = 3 * in.D;
  p.out = out.data(), p.states = state.data(), p.slopes = in.slopes.data();
  p.cu_seqlens = cu, p.slot_idx = &slot, p.num_seqs = 1, p.num_slots = 1;
  p.num_heads = in.H, p.head_dim = in.D, p.block_size = block, p.workspace = ws.data();
  EXPECT_TRUE(lightning_prefill_cpu(p).ok());
  return out;
}

struct Case {
  int64_t T, block;
};

class LightningPrefill : public ::testing::TestWithParam<Case> {};

TEST_P(LightningPrefill, MatchesRecurrenceAndFinalState) {
  const auto [T, block] = GetParam();
  const int64_t H = 4, D = 16;
  Inputs in = make_inputs(T, H, D, 1000 + T * 7 + block);
  std::vector<double> ref_state(H * D * D, 0.0);
  std::vector<double> ref = recurrence(in, 0, T, ref_state);
  std::vector<float> state(H * D * D, 0.f);
  std::vector<float> out = prefill(in, state, block, 0, T);
  EXPECT_LT(test::rel_l2(out, ref), 2e-6) << test::first_mismatch(out, ref, 1e-4);
  EXPECT_LT(test::rel_l2(state, ref_state), 2e-6);
}

INSTANTIATE_TEST_SUITE_P(HostileLengths, LightningPrefill,
                         ::testing::Values(Case{1, 256}, Case{255, 256}, Case{256, 256}, Case{257, 256},
                                           Case{600, 256}, Case{77, 16}, Case{64, 16}, Case{65, 1}, Case{130, 7},
                                           Case{1, 1}, Case{1000, 64}));

TEST(LightningPrefill, ChunkedPrefillCarriesState) {
  const int64_t T = 300, H = 3, D = 8;
  Inputs in = make_inputs(T, H, D, 7);
  std::vector<double> ref_state(H * D * D, 0.0);
  std::vector<double> ref = recurrence(in, 0, T, ref_state);
  for (std::vector<int64_t> cuts : {std::vector<int64_t>{1, 2, 255, 256, 300}, std::vector<int64_t>{100, 300},
                                    std::vector<int64_t>{17, 18, 190, 300}}) {
    std::vector<float> state(H * D * D, 0.f), out;
    int64_t begin = 0;
    for (int64_t end : cuts) {
      std::vector<float> part = prefill(in, state, 32, begin, end);
      out.insert(out.end(), part.begin(), part.end());
      begin = end;
    }
    EXPECT_LT(test::rel_l2(out, ref), 2e-6);
    EXPECT_LT(test::rel_l2(state, ref_state), 2e-6);
  }
}

TEST(LightningDecode, ContinuesPrefillExactly) {
  const int64_t T = 40, H = 4, D = 16, K = 25;
  Inputs in = make_inputs(T, H, D, 99);
  std::vector<double> ref_state(H * D * D, 0.0);
  std::vector<double> ref = recurrence(in, 0, T, ref_state);
  std::vector<float> state(H * D * D, 0.f);
  std::vector<float> out = prefill(in, state, 16, 0, K);
  for (int64_t t = K; t < T; ++t) {
    std::vector<float> o(H * D, NAN);
    int32_t slot = 0;
    LightningDecodeParams p;
    const float* base = in.q() + t * in.ts();
    p.q = base, p.k = base + D, p.v = base + 2 * D;
    p.qkv_token_stride = in.ts(), p.qkv_head_stride = 3 * D;
    p.out = o.data(), p.states = state.data(), p.slopes = in.slopes.data(), p.slot_idx = &slot;
    p.num_seqs = 1, p.num_slots = 1, p.num_heads = H, p.head_dim = D;
    ASSERT_TRUE(lightning_decode_cpu(p).ok());
    out.insert(out.end(), o.begin(), o.end());
  }
  EXPECT_LT(test::rel_l2(out, ref), 2e-6);
  EXPECT_LT(test::rel_l2(state, ref_state), 2e-6);
}

TEST(LightningPrefill, PackedVarlenUsesEachSequencesSlot) {
  // Three sequences packed into one call, slots permuted, one slot starting from a non-zero state.
  const int64_t H = 2, D = 8;
  const std::vector<int64_t> lens = {5, 1, 70};
  const std::vector<int32_t> slots = {2, 0, 1};
  const int64_t T = 76, num_slots = 3;
  Inputs in = make_inputs(T, H, D, 5);
  std::vector<float> states(num_slots * H * D * D, 0.f);
  std::vector<float> init = test::random_floats(H * D * D, 6, 0.1f);
  std::copy(init.begin(), init.end(), states.begin() + 1 * H * D * D);  // slot 1 (third sequence)
  std::vector<int32_t> cu = {0, 5, 6, 76};
  std::vector<float> out(T * H * D, NAN);
  std::vector<float> ws(lightning_prefill_workspace_floats(16, D));
  LightningPrefillParams p;
  p.q = in.q(), p.k = in.q() + D, p.v = in.q() + 2 * D;
  p.qkv_token_stride = in.ts(), p.qkv_head_stride = 3 * D;
  p.out = out.data(), p.states = states.data(), p.slopes = in.slopes.data();
  p.cu_seqlens = cu.data(), p.slot_idx = slots.data(), p.num_seqs = 3, p.num_slots = num_slots;
  p.num_heads = H, p.head_dim = D, p.block_size = 16, p.workspace = ws.data();
  ASSERT_TRUE(lightning_prefill_cpu(p).ok());
  int64_t begin = 0;
  for (size_t b = 0; b < lens.size(); ++b) {
    std::vector<double> st(H * D * D, 0.0);
    if (b == 2) std::copy(init.begin(), init.end(), st.begin());
    std::vector<double> ref = recurrence(in, begin, begin + lens[b], st);
    std::vector<float> got(out.begin() + begin * H * D, out.begin() + (begin + lens[b]) * H * D);
    EXPECT_LT(test::rel_l2(got, ref), 2e-6) << "sequence " << b;
    std::vector<float> got_state(states.begin() + slots[b] * H * D * D, states.begin() + (slots[b] + 1) * H * D * D);
    EXPECT_LT(test::rel_l2(got_state, st), 2e-6) << "sequence " << b;
    begin += lens[b];
  }
}

TEST(LightningPrefill, LongFastDecayStaysFinite) {
  // s = 0.917 over 4096 tokens: a factored exp(+s j) would overflow; block-relative exponents don't.
  const int64_t T = 4096, H = 1, D = 4;
  Inputs in = make_inputs(T, H, D, 3);
  in.slopes = {0.917f};
  std::vector<float> state(H * D * D, 0.f);
  std::vector<float> out = prefill(in, state, 256, 0, T);
  for (float x : out) ASSERT_TRUE(std::isfinite(x));
  std::vector<double> ref_state(H * D * D, 0.0);
  EXPECT_LT(test::rel_l2(out, recurrence(in, 0, T, ref_state)), 2e-6);
}

TEST(LightningPrefill, RejectsBadSlot) {
  Inputs in = make_inputs(4, 1, 4, 1);
  std::vector<float> state(16), out(16), ws(lightning_prefill_workspace_floats(4, 4));
  int32_t cu[2] = {0, 4}, slot = 3;
  LightningPrefillParams p;
  p.q = in.q(), p.k = in.q() + 4, p.v = in.q() + 8, p.qkv_token_stride = 12, p.qkv_head_stride = 12;
  p.out = out.data(), p.states = state.data(), p.slopes = in.slopes.data(), p.cu_seqlens = cu, p.slot_idx = &slot;
  p.num_seqs = 1, p.num_slots = 1, p.num_heads = 1, p.head_dim = 4, p.block_size = 4, p.workspace = ws.data();
  EXPECT_FALSE(lightning_prefill_cpu(p).ok());
}

}  // namespace
}  // namespace fulgur::kernels
