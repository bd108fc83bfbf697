// GPU softmax attention (roped KV-cache write, varlen / chunked prefill, split-K decode) against the
// CPU reference (kernels/cpu/softmax_attention.cpp, f32) on the same bf16-valued inputs, over paged
// caches with shuffled pages. Skips (with the reason) where no CUDA device exists, as on CI.
//
// Tolerances, from the rms relative error of one bf16 rounding, e_b = 2^-8 * sqrt(E[1/m^2] / 3)
// ~= 1.7e-3 (m the mantissa in [1, 2)):
//  - cache (roped k): the GPU stores roped k in bf16, one rounding: e_b -> kTolCache 2.5e-3 (v is exact).
//  - attention output: the GPU rounds roped q and k (scores s move by ~sqrt(2) e_b |s|, and the
//    weights p by as much relative to one another: with q ~ N(0, 1.5^2), k ~ N(0, 1) and scale
//    1/sqrt(D), |s| ~ 1.5), P before P.V (e_b) and the output (e_b) where the reference keeps f32:
//    sqrt(1 + 1 + 2 * 1.5^2) e_b ~= 2.5 e_b ~= 4.3e-3 -> kTolOut 5e-3 (the weight errors average
//    over keys, so long contexts land well below).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cuda/softmax_attention.h"
#include "kernels/half.h"
#include "kernels/softmax_attention.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

using test::DeviceBuffer;
using test::download;
using test::to_bf16;
using test::to_device;
using test::upload;

constexpr double kTolCache = 2.5e-3;
constexpr double kTolOut = 5e-3;
constexpr double kTheta = 1e7;  // MiniMax's rope_theta
double g_worst_out = 0, g_worst_cache = 0;

std::vector<float> bf16_round(std::vector<float> v) {
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

std::string describe(const std::vector<float>& got, const std::vector<float>& want, int64_t H, int64_t D, double tol) {
  std::string s;
  int shown = 0;
  for (size_t i = 0; i < want.size() && shown < 5; ++i) {
    const double d = std::abs(double(got[i]) - want[i]);
    if (!(d <= 8 * tol * (std::abs(double(want[i])) + 0.1))) {
      char buf[160];
      std::snprintf(buf, sizeof buf, " [t=%lld h=%lld d=%lld] got %.6g want %.6g;", (long long)(i / (H * D)),
                    (long long)(i / D % H), (long long)(i % D), got[i], want[i]);
      s += buf;
      ++shown;
    }
  }
  return shown ? "first mismatches:" + s : "no single element far off";
}

// Sequences sharing one paged cache (pages handed out shuffled), stepped through prefill chunks and
// decode on the CPU (f32 cache) and the GPU (bf16 cache, unwritten slots poisoned with NaN).
struct Session {
  int64_t H, KV, D, rot, page;
  int64_t num_seqs, max_blocks, num_blocks;
  std::vector<int32_t> table, past;
  std::vector<float> k_cache, v_cache;              // CPU, [num_blocks, page, KV, D]
  std::unique_ptr<DeviceBuffer> dk, dv, dtable;     // GPU, bf16
  uint64_t seed;
  int64_t rows_per_warp = 0;  // prefill variant (0 = default, 16, 32)
  int64_t prefill_kernel = 0;  // cuda::kPrefillAuto / kPrefillMma / kPrefillSm90

  Session(int64_t H_, int64_t KV_, int64_t D_, int64_t rot_, int64_t page_, int64_t seqs, int64_t max_len, uint64_t seed_)
      : H(H_), KV(KV_), D(D_), rot(rot_), page(page_), num_seqs(seqs), seed(seed_) {
    max_blocks = (max_len + page - 1) / page;
    num_blocks = num_seqs * max_blocks + 3;  // a few pages nobody owns
    std::vector<int32_t> ids(static_cast<size_t>(num_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::shuffle(ids.begin(), ids.end(), rng);
    table.assign(ids.begin(), ids.begin() + num_seqs * max_blocks);
    past.assign(static_cast<size_t>(num_seqs), 0);
    const size_t cache_elems = static_cast<size_t>(num_blocks * page * KV * D);
    k_cache.assign(cache_elems, 0.f);
    v_cache.assign(cache_elems, 0.f);
    const std::vector<uint16_t> nan(cache_elems, 0x7fc0);
    dk = to_device(nan);
    dv = to_device(nan);
    dtable = to_device(table);
  }

  // One step: seq b gets lens[b] new tokens (decode: all 1, through the decode entry).
  void step(const std::vector<int32_t>& lens, bool decode, int64_t num_splits, const std::string& what) {
    std::vector<int32_t> cu{0}, ctx, pos;
    std::vector<int64_t> slots;
    for (int64_t b = 0; b < num_seqs; ++b) {
      for (int32_t i = 0; i < lens[b]; ++i) {
        const int64_t p = past[b] + i;
        pos.push_back(static_cast<int32_t>(p));
        slots.push_back(static_cast<int64_t>(table[b * max_blocks + p / page]) * page + p % page);
      }
      cu.push_back(cu.back() + lens[b]);
      ctx.push_back(past[b] + lens[b]);
    }
    const int64_t T = cu.back();
    const int64_t row = (H + 2 * KV) * D;  // fused [T, (H + 2 KV) D] layout on the GPU
    std::vector<float> qkv = bf16_round(test::random_floats(static_cast<size_t>(T * row), seed++, 1.f));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < H * D; ++i) qkv[t * row + i] = bf16_to_f32(f32_to_bf16(1.5f * qkv[t * row + i]));
    // CPU reference on separate contiguous q, k, v.
    std::vector<float> q(T * H * D), k(T * KV * D), v(T * KV * D);
    for (int64_t t = 0; t < T; ++t) {
      std::copy_n(&qkv[t * row], H * D, &q[t * H * D]);
      std::copy_n(&qkv[t * row + H * D], KV * D, &k[t * KV * D]);
      std::copy_n(&qkv[t * row + (H + KV) * D], KV * D, &v[t * KV * D]);
    }
    for (auto [x, heads] : {std::pair{&q, H}, std::pair{&k, KV}}) {
      RopeParams rp{.x = x->data(), .token_stride = heads * D, .head_stride = D, .num_tokens = T, .num_heads = heads,
                    .head_dim = D, .positions = pos.data(), .rotary_dim = rot, .theta = kTheta};
      ASSERT_TRUE(rope_neox_cpu(rp).ok());
    }
    KvCacheWriteParams wp{.k = k.data(), .v = v.data(), .token_stride = KV * D, .k_cache = k_cache.data(),
                          .v_cache = v_cache.data(), .slot_mapping = slots.data(), .num_tokens = T,
                          .num_kv_heads = KV, .head_dim = D, .num_blocks = num_blocks, .page_size = page};
    ASSERT_TRUE(kv_cache_write_cpu(wp).ok());
    int64_t max_ctx = 1;
    for (int32_t c : ctx) max_ctx = std::max<int64_t>(max_ctx, c);
    std::vector<float> ws(static_cast<size_t>(paged_attention_workspace_floats(max_ctx, D)));
    std::vector<float> ref(static_cast<size_t>(T * H * D), 0.f);
    PagedAttentionParams ap{.q = q.data(), .q_token_stride = H * D, .k_cache = k_cache.data(), .v_cache = v_cache.data(),
                            .block_tables = table.data(), .max_blocks_per_seq = max_blocks, .cu_seqlens_q = cu.data(),
                            .context_lens = ctx.data(), .num_seqs = num_seqs, .num_heads = H, .num_kv_heads = KV,
                            .head_dim = D, .num_blocks = num_blocks, .page_size = page,
                            .scale = static_cast<float>(1.0 / std::sqrt(double(D))), .out = ref.data(),
                            .workspace = ws.data(), .workspace_floats = static_cast<int64_t>(ws.size())};
    ASSERT_TRUE(paged_attention_cpu(ap).ok());

    // GPU.
    auto dqkv = to_device(to_bf16(qkv));
    auto dpos = to_device(pos.empty() ? std::vector<int32_t>{0} : pos);
    auto dslots = to_device(slots.empty() ? std::vector<int64_t>{0} : slots);
    auto dcu = to_device(cu);
    auto dctx = to_device(ctx);
    DeviceBuffer dout(static_cast<size_t>(T * H * D) * 2);
    upload(dout, std::vector<uint16_t>(static_cast<size_t>(T * H * D), 0x7fc0));  // poison: NaN
    cuda::SoftmaxAttentionCudaParams g;
    g.q = dqkv->as<uint16_t>(), g.k = g.q + H * D, g.v = g.k + KV * D;
    g.q_token_stride = row, g.kv_token_stride = row;
    g.positions = dpos->as<int32_t>(), g.slot_mapping = dslots->as<int64_t>();
    g.k_cache = dk->as<uint16_t>(), g.v_cache = dv->as<uint16_t>(), g.num_blocks = num_blocks, g.page_size = page;
    g.block_tables = dtable->as<int32_t>(), g.max_blocks_per_seq = max_blocks;
    g.cu_seqlens_q = decode ? nullptr : dcu->as<int32_t>(), g.context_lens = dctx->as<int32_t>();
    g.num_tokens = T, g.num_seqs = num_seqs, g.num_heads = H, g.num_kv_heads = KV, g.head_dim = D;
    g.rotary_dim = rot, g.theta = kTheta, g.scale = static_cast<float>(1.0 / std::sqrt(double(D)));
    g.out = dout.as<uint16_t>(), g.max_context = max_ctx, g.num_splits = num_splits;
    g.prefill_rows_per_warp = rows_per_warp;
    g.prefill_kernel = decode ? 0 : prefill_kernel;
    std::unique_ptr<DeviceBuffer> dws;
    if (decode) {
      g.workspace_bytes = cuda::softmax_decode_workspace_bytes(g);
      dws = std::make_unique<DeviceBuffer>(g.workspace_bytes);
      g.workspace = dws->ptr;
    }
    const KernelStatus s = decode ? cuda::softmax_attention_decode(g, nullptr) : cuda::softmax_attention_prefill(g, nullptr);
    ASSERT_TRUE(s.ok()) << s.error;
    ASSERT_TRUE(cuda::synchronize().ok());
    std::vector<uint16_t> raw(static_cast<size_t>(T * H * D));
    download(raw, dout);
    const std::vector<float> got = test::from_bf16(raw);
    // Cache: every slot written so far, compared where the CPU wrote.
    std::vector<uint16_t> ck(k_cache.size()), cv(v_cache.size());
    download(ck, *dk);
    download(cv, *dv);
    std::vector<float> gk, gv, wk, wv;
    for (int64_t b = 0; b < num_seqs; ++b)
      for (int64_t p = 0; p < ctx[b]; ++p) {
        const int64_t base = (static_cast<int64_t>(table[b * max_blocks + p / page]) * page + p % page) * KV * D;
        for (int64_t i = 0; i < KV * D; ++i) {
          gk.push_back(bf16_to_f32(ck[base + i])), wk.push_back(k_cache[base + i]);
          gv.push_back(bf16_to_f32(cv[base + i])), wv.push_back(v_cache[base + i]);
        }
      }
    const double e_out = T ? test::rel_l2(got, ref) : 0.0;
    const double e_k = test::rel_l2(gk, wk), e_v = test::rel_l2(gv, wv);
    g_worst_out = std::max(g_worst_out, e_out);
    g_worst_cache = std::max(g_worst_cache, e_k);
    std::printf("[softmax %s] %-26s H=%lld KV=%lld D=%-3lld rot=%-3lld page=%-3lld T=%-5lld max_ctx=%-5lld splits=%lld  "
                "rel_l2 out %.3e  k cache %.3e  v cache %.1e\n",
                decode ? "decode " : "prefill", what.c_str(), (long long)H, (long long)KV, (long long)D, (long long)rot,
                (long long)page, (long long)T, (long long)max_ctx,
                (long long)(decode ? cuda::softmax_decode_num_splits(g) : 1), e_out, e_k, e_v);
    for (float x : got) ASSERT_TRUE(std::isfinite(x)) << what << ": non-finite output (unwritten or NaN read)";
    EXPECT_LT(e_out, kTolOut) << what << ": " << describe(got, ref, H, D, kTolOut);
    EXPECT_LT(e_k, kTolCache) << what << " (k cache)";
    EXPECT_EQ(e_v, 0.0) << what << " (v cache is a copy)";
    for (int64_t b = 0; b < num_seqs; ++b) past[b] += lens[b];
  }
};

TEST(CudaSoftmaxAttention, SingleSequenceHostileLengths) {
  FULGUR_SKIP_WITHOUT_GPU();
  for (int64_t D : {16, 64, 128}) {
    for (int32_t T : {1, 63, 64, 65, 255, 256, 257, 1000}) {
      Session s(8, 2, D, D / 2, 16, 1, T, 1000 + T + D);  // GQA 4, partial RoPE
      s.step({T}, false, 0, "single GQA4 rot=D/2");
    }
  }
}

TEST(CudaSoftmaxAttention, HeadGroupingsAndFullRotary) {
  FULGUR_SKIP_WITHOUT_GPU();
  struct G {
    int64_t H, KV;
    const char* what;
  };
  for (const G g : {G{4, 4, "MHA"}, G{8, 1, "MQA"}, G{32, 1, "MQA group 32"}, G{64, 8, "MiniMax 64/8"}}) {
    for (int64_t D : {64, 128}) {
      Session s(g.H, g.KV, D, D, 32, 2, 300, 2000 + g.H + D);  // rotary_dim == head_dim
      s.step({257, 65}, false, 0, std::string(g.what) + " prefill");
      s.step({1, 1}, true, 0, std::string(g.what) + " decode");
    }
  }
  Session s(8, 2, 128, 64, 16, 1, 200, 77);  // MiniMax-style partial rotary at D=128
  s.step({200}, false, 0, "GQA4 rot=64");
  Session z(4, 2, 64, 0, 16, 1, 70, 78);  // no rotary at all
  z.step({70}, false, 0, "rot=0");
}

TEST(CudaSoftmaxAttention, PackedVarlenWithShortSequences) {
  FULGUR_SKIP_WITHOUT_GPU();
  for (int64_t D : {16, 64, 128}) {
    Session s(8, 2, D, D / 2, 16, 6, 300, 3000 + D);
    s.step({65, 1, 300, 0, 128, 257}, false, 0, "varlen with 1 and 0");
  }
  Session s(4, 1, 64, 32, 7, 5, 64, 3100);  // page size 7 (pages cut tiles at odd places)
  s.step({1, 1, 1, 2, 64}, false, 0, "varlen page 7");
}

TEST(CudaSoftmaxAttention, ChunkedPrefillThenDecode) {
  FULGUR_SKIP_WITHOUT_GPU();
  for (int64_t D : {16, 64, 128}) {
    for (int64_t page : {16, 64}) {
      // Chunks split each sequence at 1, 255 and 256 tokens, then two decode steps.
      Session s(8, 2, D, D / 2, page, 3, 520, 4000 + D + page);
      s.step({1, 255, 256}, false, 0, "chunk 1");
      s.step({256, 1, 1}, false, 0, "chunk 2");
      s.step({0, 257, 255}, false, 0, "chunk 3");
      s.step({1, 1, 1}, true, 0, "decode auto splits");
      s.step({1, 1, 1}, true, 3, "decode 3 splits");
    }
  }
}

TEST(CudaSoftmaxAttention, DecodeSplitCounts) {
  FULGUR_SKIP_WITHOUT_GPU();
  for (int64_t D : {16, 64, 128}) {
    Session s(16, 2, D, D / 2, 16, 5, 1400, 5000 + D);
    s.step({1000, 1, 63, 700, 257}, false, 0, "context");
    for (int64_t splits : {1, 2, 7, 64, 0}) s.step({1, 1, 1, 1, 1}, true, splits, "decode");  // 64: empty splits
  }
  std::printf("[softmax] worst rel_l2 so far: out %.3e (tol %.1e), k cache %.3e (tol %.1e)\n", g_worst_out, kTolOut,
              g_worst_cache, kTolCache);
}

// Both prefill variants (16 rows per warp, Q in registers; 32 rows = two m16 tiles per warp) by name,
// whichever is the default, over the hostile shapes.
TEST(CudaSoftmaxAttention, PrefillVariantsByRowsPerWarp) {
  FULGUR_SKIP_WITHOUT_GPU();
  for (int64_t rpw : {16, 32}) {
    const std::string tag = " rows/warp " + std::to_string(rpw);
    for (int64_t D : {16, 64, 128}) {
      for (int32_t T : {1, 63, 64, 65, 257, 1000}) {
        Session s(8, 2, D, D / 2, 16, 1, T, 6000 + T + D);
        s.rows_per_warp = rpw;
        s.step({T}, false, 0, "single" + tag);
      }
      Session s(32, 1, D, D, 16, 3, 520, 6100 + D);  // MQA group 32, chunked
      s.rows_per_warp = rpw;
      s.step({1, 255, 256}, false, 0, "chunk 1" + tag);
      s.step({256, 1, 1}, false, 0, "chunk 2" + tag);
      s.step({0, 257, 255}, false, 0, "chunk 3" + tag);
      s.step({1, 1, 1}, true, 0, "decode after" + tag);
    }
  }
  std::printf("[softmax] worst rel_l2 so far: out %.3e (tol %.1e), k cache %.3e (tol %.1e)\n", g_worst_out, kTolOut,
              g_worst_cache, kTolCache);
}

// The Hopper prefill (wgmma + TMA, softmax_attention_sm90.cu) by name over its hostile shapes: lengths around
// its 16-key boxes and 128-key tiles (the last box reaches past the context into NaN-poisoned slots), every
// q-head group it takes (1 .. 128 heads per kv head, so 128 .. 1 tokens per block), rotary 0 / 64 / 128, pages
// of 16 / 48 (boxes cross pages unevenly) / 64, packed varlen with empty and 1-token sequences, chunked
// prefill, and shapes it refuses by name. The default (auto) runs it for head_dim 128 in the tests above.
TEST(CudaSoftmaxAttention, HopperPrefillByName) {
  FULGUR_SKIP_WITHOUT_HOPPER();
  for (int32_t T : {1, 15, 16, 17, 127, 128, 129, 255, 256, 257, 1000, 2100}) {
    Session s(64, 8, 128, 64, 16, 1, T, 7000 + T);  // MiniMax: GQA 8, rotary 64
    s.prefill_kernel = cuda::kPrefillSm90;
    s.step({T}, false, 0, "sm90 single MiniMax");
  }
  struct G {
    int64_t H, KV, rot, page;
    const char* what;
  };
  for (const G g : {G{4, 4, 128, 16, "sm90 MHA rot=D"}, G{8, 2, 0, 48, "sm90 GQA4 rot=0 page 48"},
                    G{32, 1, 64, 64, "sm90 group 32"}, G{128, 1, 128, 32, "sm90 group 128"}}) {
    Session s(g.H, g.KV, 128, g.rot, g.page, 2, 400, 7100 + g.H + g.page);
    s.prefill_kernel = cuda::kPrefillSm90;
    s.step({257, 143}, false, 0, g.what);
    s.step({1, 1}, true, 0, std::string(g.what) + " then decode");
  }
  Session v(16, 2, 128, 64, 16, 6, 300, 7200);
  v.prefill_kernel = cuda::kPrefillSm90;
  v.step({65, 1, 300, 0, 128, 257}, false, 0, "sm90 varlen with 1 and 0");
  for (int64_t page : {16, 64}) {
    Session s(64, 8, 128, 64, page, 3, 520, 7300 + page);
    s.prefill_kernel = cuda::kPrefillSm90;
    s.step({1, 255, 256}, false, 0, "sm90 chunk 1");
    s.step({256, 1, 1}, false, 0, "sm90 chunk 2");
    s.step({0, 257, 255}, false, 0, "sm90 chunk 3");
    s.step({1, 1, 1}, true, 0, "decode after sm90 chunks");
  }
  std::printf("[softmax] worst rel_l2 so far: out %.3e (tol %.1e), k cache %.3e (tol %.1e)\n", g_worst_out, kTolOut,
              g_worst_cache, kTolCache);
  // Shapes it does not take are refused by name (the default falls back to mma.sync for them).
  cuda::SoftmaxAttentionCudaParams p;
  p.num_heads = 8, p.num_kv_heads = 2, p.head_dim = 64, p.rotary_dim = 32, p.page_size = 16, p.num_blocks = 4;
  p.max_blocks_per_seq = 1, p.num_tokens = 1, p.num_seqs = 1, p.scale = 0.125f, p.theta = 1e4;
  DeviceBuffer any(4096);
  p.q = p.k = p.v = any.as<uint16_t>(), p.q_token_stride = p.kv_token_stride = 8 * 64;
  p.positions = any.as<int32_t>(), p.slot_mapping = any.as<int64_t>(), p.k_cache = p.v_cache = any.as<uint16_t>();
  p.block_tables = p.cu_seqlens_q = p.context_lens = any.as<int32_t>(), p.out = any.as<uint16_t>();
  p.prefill_kernel = cuda::kPrefillSm90;
  const KernelStatus st = cuda::softmax_attention_prefill(p, nullptr);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string(st.error).find("head_dim 128"), std::string::npos) << st.error;
}

TEST(CudaSoftmaxAttention, RejectsBadShapes) {
  cuda::SoftmaxAttentionCudaParams g;
  g.num_heads = 8, g.num_kv_heads = 2, g.head_dim = 96, g.rotary_dim = 32;
  KernelStatus s = cuda::softmax_attention_prefill(g, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("head_dim"), std::string::npos);
  g.head_dim = 64, g.num_kv_heads = 3;
  s = cuda::softmax_attention_prefill(g, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("num_kv_heads"), std::string::npos);
  g.num_kv_heads = 2, g.rotary_dim = 33;
  s = cuda::softmax_attention_decode(g, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("rotary_dim"), std::string::npos);
}

}  // namespace
}  // namespace fulgur::kernels
