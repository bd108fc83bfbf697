// The f32 kernels of the CUDA model's f32 mode (kernels/cuda/reference_f32.h) against the CPU
// references on fresh random inputs: varlen packs with lengths 1, 255, 256, 257, shuffled state slots
// and KV pages, and a second call continuing every sequence (chunked prefill, decode). Both sides
// compute in f32 in a different order: relative L2 within 1e-5. Skips where no CUDA device exists.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/activations.h"
#include "kernels/cuda/reference_f32.h"
#include "kernels/lightning_attention.h"
#include "kernels/rmsnorm.h"
#include "kernels/softmax_attention.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

constexpr double kTol = 1e-5;

std::vector<int32_t> cu_of(const std::vector<int32_t>& lens) {
  std::vector<int32_t> cu = {0};
  for (int32_t n : lens) cu.push_back(cu.back() + n);
  return cu;
}

TEST(CudaReferenceF32, LightningRecurrenceMatchesCpuAcrossChunks) {
  FULGUR_SKIP_WITHOUT_GPU();
  for (int64_t D : {16, 64}) {
    const int64_t H = 3, slots = 6;
    const std::vector<int32_t> slot_idx = {4, 0, 5, 2};
    std::vector<float> states_cpu = test::random_floats(slots * H * D * D, D, 0.1f);
    auto d_states = test::to_device(states_cpu);
    auto d_slots = test::to_device(slot_idx);
    std::vector<float> slopes = {0.9f, 0.05f, 0.003f};
    auto d_slopes = test::to_device(slopes);
    // Two calls per sequence: a prefill of 1 / 255 / 256 / 257 tokens, then 3 / 1 / 0 / 64 more.
    for (const std::vector<int32_t>& lens : {std::vector<int32_t>{1, 255, 256, 257}, std::vector<int32_t>{3, 1, 0, 64}}) {
      const std::vector<int32_t> cu = cu_of(lens);
      const int64_t T = cu.back();
      const std::vector<float> qkv = test::random_floats(T * H * 3 * D, T + D, 0.5f);
      std::vector<float> out_cpu(T * H * D), ws(lightning_prefill_workspace_floats(64, D));
      LightningPrefillParams c;
      c.q = qkv.data(), c.k = qkv.data() + D, c.v = qkv.data() + 2 * D, c.qkv_token_stride = H * 3 * D;
      c.qkv_head_stride = 3 * D, c.out = out_cpu.data(), c.states = states_cpu.data(), c.slopes = slopes.data();
      c.cu_seqlens = cu.data(), c.slot_idx = slot_idx.data(), c.num_seqs = 4, c.num_slots = slots, c.num_heads = H;
      c.head_dim = D, c.block_size = 64, c.workspace = ws.data();
      ASSERT_TRUE(lightning_prefill_cpu(c).ok());

      auto d_qkv = test::to_device(qkv);
      auto d_cu = test::to_device(cu);
      auto d_out = test::to_device(std::vector<float>(T * H * D, NAN));
      cuda::LightningRecurrenceF32Params p;
      const float* q = d_qkv->as<float>();
      p.q = q, p.k = q + D, p.v = q + 2 * D, p.token_stride = H * 3 * D, p.head_stride = 3 * D;
      p.out = d_out->as<float>(), p.states = d_states->as<float>(), p.slopes = d_slopes->as<float>();
      p.cu_seqlens = d_cu->as<int32_t>(), p.slot_idx = d_slots->as<int32_t>();
      p.num_tokens = T, p.num_seqs = 4, p.num_slots = slots, p.num_heads = H, p.head_dim = D;
      ASSERT_TRUE(cuda::lightning_recurrence_f32(p, nullptr).ok());
      ASSERT_TRUE(cuda::synchronize().ok());
      std::vector<float> out(T * H * D), states(states_cpu.size());
      test::download(out, *d_out);
      test::download(states, *d_states);
      EXPECT_LT(test::rel_l2(out, out_cpu), kTol) << "D " << D << " T " << T;
      EXPECT_LT(test::rel_l2(states, states_cpu), kTol) << "D " << D << " T " << T;
    }
  }
}

TEST(CudaReferenceF32, SoftmaxAttentionMatchesCpuPrefillThenDecode) {
  FULGUR_SKIP_WITHOUT_GPU();
  const int64_t H = 8, KV = 2, D = 64, rot = 32, page = 16, per_seq = 20, S = 3;
  const int64_t blocks = S * per_seq;
  // Sequence b's pages: a shuffled set.
  std::vector<int32_t> pages(blocks);
  std::iota(pages.begin(), pages.end(), 0);
  std::reverse(pages.begin(), pages.end());
  std::swap(pages[3], pages[40]);
  std::vector<float> kc_cpu(blocks * page * KV * D, 0.f), vc_cpu = kc_cpu;
  auto d_kc = test::to_device(kc_cpu), d_vc = test::to_device(vc_cpu);
  auto d_tables = test::to_device(pages);
  std::vector<int32_t> ctx(S, 0);
  for (const std::vector<int32_t>& lens : {std::vector<int32_t>{1, 255, 257}, std::vector<int32_t>{1, 1, 1}}) {
    const std::vector<int32_t> cu = cu_of(lens);
    const int64_t T = cu.back(), width = (H + 2 * KV) * D;
    std::vector<float> qkv = test::random_floats(T * width, T + 5, 1.f);
    std::vector<int32_t> positions;
    std::vector<int64_t> slot_mapping;
    for (int64_t b = 0; b < S; ++b) {
      for (int32_t i = 0; i < lens[b]; ++i) {
        const int32_t pos = ctx[b] + i;
        positions.push_back(pos);
        slot_mapping.push_back(static_cast<int64_t>(pages[b * per_seq + pos / page]) * page + pos % page);
      }
      ctx[b] += lens[b];
    }
    auto d_qkv = test::to_device(qkv);
    auto d_pos = test::to_device(positions);
    auto d_slot = test::to_device(slot_mapping);
    auto d_cu = test::to_device(cu);
    auto d_out = test::to_device(std::vector<float>(T * H * D, NAN));

    // CPU: rope q and k in place, write the cache, attend.
    std::vector<float> x = qkv;
    for (auto [off, heads] : {std::pair<int64_t, int64_t>{0, H}, std::pair<int64_t, int64_t>{H * D, KV}}) {
      RopeParams rp;
      rp.x = x.data() + off, rp.token_stride = width, rp.head_stride = D, rp.num_tokens = T, rp.num_heads = heads;
      rp.head_dim = D, rp.positions = positions.data(), rp.rotary_dim = rot, rp.theta = 1e7;
      ASSERT_TRUE(rope_neox_cpu(rp).ok());
    }
    KvCacheWriteParams wp;
    wp.k = x.data() + H * D, wp.v = x.data() + (H + KV) * D, wp.token_stride = width;
    wp.k_cache = kc_cpu.data(), wp.v_cache = vc_cpu.data(), wp.slot_mapping = slot_mapping.data();
    wp.num_tokens = T, wp.num_kv_heads = KV, wp.head_dim = D, wp.num_blocks = blocks, wp.page_size = page;
    ASSERT_TRUE(kv_cache_write_cpu(wp).ok());
    std::vector<float> out_cpu(T * H * D), ws(paged_attention_workspace_floats(*std::max_element(ctx.begin(), ctx.end()), D));
    PagedAttentionParams ap;
    ap.q = x.data(), ap.q_token_stride = width, ap.k_cache = kc_cpu.data(), ap.v_cache = vc_cpu.data();
    ap.block_tables = pages.data(), ap.max_blocks_per_seq = per_seq, ap.cu_seqlens_q = cu.data();
    ap.context_lens = ctx.data(), ap.num_seqs = S, ap.num_heads = H, ap.num_kv_heads = KV, ap.head_dim = D;
    ap.num_blocks = blocks, ap.page_size = page, ap.scale = 0.125f, ap.out = out_cpu.data();
    ap.workspace = ws.data(), ap.workspace_floats = static_cast<int64_t>(ws.size());
    ASSERT_TRUE(paged_attention_cpu(ap).ok());

    cuda::SoftmaxAttentionF32Params p;
    const float* q = d_qkv->as<float>();
    p.q = q, p.k = q + H * D, p.v = q + (H + KV) * D, p.q_token_stride = width, p.kv_token_stride = width;
    p.positions = d_pos->as<int32_t>(), p.slot_mapping = d_slot->as<int64_t>();
    p.k_cache = d_kc->as<float>(), p.v_cache = d_vc->as<float>(), p.num_blocks = blocks, p.page_size = page;
    p.block_tables = d_tables->as<int32_t>(), p.max_blocks_per_seq = per_seq, p.cu_seqlens_q = d_cu->as<int32_t>();
    p.num_tokens = T, p.num_seqs = S, p.num_heads = H, p.num_kv_heads = KV, p.head_dim = D, p.rotary_dim = rot;
    p.theta = 1e7, p.scale = 0.125f, p.out = d_out->as<float>();
    ASSERT_TRUE(cuda::softmax_attention_f32(p, nullptr).ok());
    ASSERT_TRUE(cuda::synchronize().ok());
    std::vector<float> out(T * H * D);
    test::download(out, *d_out);
    EXPECT_LT(test::rel_l2(out, out_cpu), kTol) << "T " << T;
  }
}

TEST(CudaReferenceF32, ElementwiseAndGatherMatchCpu) {
  FULGUR_SKIP_WITHOUT_GPU();
  const int64_t rows = 257, dim = 300, inter = 37;
  // DeepNorm RMSNorm.
  const std::vector<float> r = test::random_floats(rows * dim, 1), x = test::random_floats(rows * dim, 2),
                           w = test::random_floats(dim, 3);
  std::vector<float> ref(rows * dim);
  scale_add_cpu(r.data(), x.data(), ref.data(), rows * dim, 1.7f, 0.6f);
  const std::vector<float> sum_ref = ref;
  RmsNormParams rp{.x = ref.data(), .weight = w.data(), .y = ref.data(), .rows = rows, .dim = dim, .eps = 1e-5f};
  ASSERT_TRUE(rmsnorm_cpu(rp).ok());
  auto dr = test::to_device(r), dx = test::to_device(x), dw = test::to_device(w);
  test::DeviceBuffer dout(rows * dim * 4), dsum(rows * dim * 4);
  cuda::DeepNormRmsNormF32Params dp;
  dp.residual = dr->as<float>(), dp.x = dx->as<float>(), dp.weight = dw->as<float>(), dp.out = dout.as<float>();
  dp.sum_out = dsum.as<float>(), dp.rows = rows, dp.dim = dim, dp.alpha = 1.7f, dp.beta = 0.6f, dp.eps = 1e-5f;
  ASSERT_TRUE(cuda::deepnorm_rmsnorm_f32(dp, nullptr).ok());
  std::vector<float> got(rows * dim), sum(rows * dim);
  ASSERT_TRUE(cuda::synchronize().ok());
  test::download(got, dout);
  test::download(sum, dsum);
  EXPECT_LT(test::rel_l2(got, ref), kTol);
  EXPECT_LT(test::rel_l2(sum, sum_ref), 1e-7);

  // silu(gate) * up over [rows, 2 inter].
  const std::vector<float> h = test::random_floats(rows * 2 * inter, 4, 2.f);
  std::vector<float> act_ref(rows * inter);
  for (int64_t i = 0; i < rows; ++i) silu_mul_cpu(h.data() + i * 2 * inter, h.data() + i * 2 * inter + inter,
                                                   act_ref.data() + i * inter, inter);
  auto dh = test::to_device(h);
  test::DeviceBuffer dact(rows * inter * 4);
  ASSERT_TRUE(cuda::silu_mul_f32(dh->as<float>(), rows, inter, dact.as<float>(), nullptr).ok());
  std::vector<float> act(rows * inter);
  ASSERT_TRUE(cuda::synchronize().ok());
  test::download(act, dact);
  EXPECT_LT(test::rel_l2(act, act_ref), kTol);

  // gather_rows: ids out of range give zero rows; odd row sizes take the byte path.
  const std::vector<int32_t> ids = {5, 0, 256, -1, 257, 5};
  auto dids = test::to_device(ids);
  for (int64_t row_bytes : {int64_t{dim * 4}, int64_t{13}}) {
    test::DeviceBuffer dg(ids.size() * row_bytes);
    ASSERT_TRUE(cuda::gather_rows(dx->ptr, rows, row_bytes, dids->as<int32_t>(), static_cast<int64_t>(ids.size()), dg.ptr,
                                  nullptr).ok());
    std::vector<uint8_t> g(ids.size() * row_bytes);
    ASSERT_TRUE(cuda::synchronize().ok());
    test::download(g, dg);
    const auto* src = reinterpret_cast<const uint8_t*>(x.data());
    for (size_t i = 0; i < ids.size(); ++i) {
      for (int64_t c = 0; c < row_bytes; ++c) {
        const uint8_t want = ids[i] >= 0 && ids[i] < rows ? src[ids[i] * row_bytes + c] : 0;
        ASSERT_EQ(g[i * row_bytes + c], want) << "row " << i << " byte " << c;
      }
    }
  }

  // Unpermute: out[t] = sum_s w[t, s] * y[inverse[t, s]], slot -1 skipped.
  const int64_t T = 5, k = 2;
  const std::vector<int32_t> inverse = {3, 0, 1, -1, 9, 2, 4, 5, 8, 6};
  const std::vector<float> tw = test::random_floats(T * k, 6), y = test::random_floats(10 * dim, 7);
  std::vector<float> un_ref(T * dim, 0.f);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t s = 0; s < k; ++s) {
      if (inverse[t * k + s] < 0) continue;
      for (int64_t c = 0; c < dim; ++c) un_ref[t * dim + c] += tw[t * k + s] * y[inverse[t * k + s] * dim + c];
    }
  }
  auto dinv = test::to_device(inverse), dtw = test::to_device(tw), dy = test::to_device(y);
  test::DeviceBuffer dun(T * dim * 4);
  ASSERT_TRUE(cuda::moe_unpermute_f32(dy->as<float>(), dinv->as<int32_t>(), dtw->as<float>(), T, k, dim, dun.as<float>(),
                                      nullptr).ok());
  std::vector<float> un(T * dim);
  ASSERT_TRUE(cuda::synchronize().ok());
  test::download(un, dun);
  EXPECT_LT(test::rel_l2(un, un_ref), kTol);
}

}  // namespace
}  // namespace fulgur::kernels
