// Softmax attention (prefill, decode) and the roped KV-cache write on the GPU; the design is
// described in the header.
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/softmax_attention.h"
#include "kernels/cuda/softmax_common.cuh"

namespace fulgur::kernels::cuda {

namespace {

using bf16 = __nv_bfloat16;
using softmax_detail::find_tile;
using softmax_detail::rope_cos_sin;

// ---- compile-time shape of the attention kernel ---------------------------------------------------
// kWarps warps, each owning 16 kMTiles rows (a row = one (query token, q head) pair of the kv head's group).
template <int kD, int kWarps, int kMTiles>
struct AttnShape {
  static constexpr int kRows = 16 * kMTiles * kWarps;
  static constexpr int kKeys = 64;                 // keys per K/V tile
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kLd = kD + 8;               // shared row stride (elements): ldmatrix without bank conflicts
  static constexpr int kChunks = kD / 8;           // 16-byte pieces per row
  static constexpr int kStages = 2;
  // Shared memory: inv_freq [kD/2] doubles | Q [kRows, kLd] | K [kStages, kKeys, kLd] | V [kStages, kKeys, kLd].
  static constexpr size_t kFreqBytes = static_cast<size_t>(kD / 2) * 8;
  static constexpr size_t kSmemBytes =
      kFreqBytes + (static_cast<size_t>(kRows) + 2 * kStages * kKeys) * kLd * sizeof(bf16);
};

// Tuning (correctness-neutral), chosen per call by prefill_rows_per_warp:
//  - 16 rows per warp: kPrefillWarps = 8 warps, 128 rows per K/V tile, Q fragments in registers
//    (~200 registers, 1 block/SM);
//  - 32 rows per warp: kPrefillWarps2 = 4 warps x 2 m16 tiles, 128 rows per tile, Q re-read from shared
//    memory, each K/V fragment feeds two mma (255 registers, ~90 B spilled, 2 blocks/SM). Faster on the
//    H200 (bench/gpu/NOTES.md), so the default.
// Decode: 4 warps (the cache loads spread over 128 threads).
constexpr int kPrefillWarps = 8;
constexpr int kPrefillWarps2 = 4;
constexpr int kPrefillRowsPerWarp = 32;
constexpr int kDecodeWarps = 4;
constexpr int kKeysPerTile = 64;

struct AttnArgs {
  const bf16* q;
  int64_t q_token_stride;
  const int32_t* positions;
  const bf16* k_cache;
  const bf16* v_cache;
  const int32_t* block_tables;
  int max_blocks_per_seq;
  int page_size;
  int num_blocks;
  const int32_t* cu_q;  // nullptr: decode (token b = sequence b)
  const int32_t* context_lens;
  int num_seqs;
  int num_heads;
  int num_kv_heads;
  int group;
  int rotary_dim;
  double theta;
  float scale_log2;   // scale * log2(e): softmax in base 2
  bf16* out;          // non-split
  float* part_o;      // split: [num_tokens, H, num_splits, D] unnormalised
  float* part_ml;     // split: [num_tokens, H, num_splits, 2] (running max in log2 units, sum)
  int num_splits;
};

// grid (work items, KV, splits). Work item = (sequence, tile of kRows flat rows); items run in
// reverse so the longest causal tiles of a sequence start first. kSplit: keys of the row tile's
// range are cut into gridDim.z parts, each writing fp32 partials for the combine kernel.
template <int kD, int kWarps, int kMTiles, bool kSplit>
__global__ void __launch_bounds__(32 * kWarps, kWarps >= 8 ? 1 : 2) softmax_attention_kernel(const AttnArgs a) {
  using S = AttnShape<kD, kWarps, kMTiles>;
  constexpr int kRows = S::kRows, kKeys = S::kKeys, kLd = S::kLd, kChunks = S::kChunks, kThreads = S::kThreads;
  extern __shared__ __align__(16) unsigned char smem[];
  double* inv_freq = reinterpret_cast<double*>(smem);
  bf16* s_q = reinterpret_cast<bf16*>(smem + S::kFreqBytes);
  bf16* s_k = s_q + kRows * kLd;
  bf16* s_v = s_k + S::kStages * kKeys * kLd;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int item = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  int seq = 0, tile = 0;
  if (a.cu_q != nullptr) {
    if (!find_tile(a.cu_q, a.num_seqs, a.group, kRows, item, seq, tile)) return;
  } else {
    const int tiles_per_seq = (a.group + kRows - 1) / kRows;
    seq = item / tiles_per_seq;
    tile = item % tiles_per_seq;
    if (seq >= a.num_seqs) return;
  }
  const int q_begin = a.cu_q ? a.cu_q[seq] : seq;
  const int nq = a.cu_q ? a.cu_q[seq + 1] - q_begin : 1;
  const int ctx = a.context_lens[seq];
  const int total_rows = nq * a.group;
  const int row0 = tile * kRows;
  const int last_row = min(row0 + kRows, total_rows) - 1;
  const int first_token_pos = ctx - nq + row0 / a.group;     // key position the first row may see up to
  const int kv_end = max(0, min(ctx, ctx - nq + last_row / a.group + 1));  // keys any row of the tile sees
  int k_begin = 0, k_end = kv_end;
  if constexpr (kSplit) {
    const int per = (kv_end + a.num_splits - 1) / a.num_splits;
    const int len = (per + kKeys - 1) / kKeys * kKeys;
    k_begin = min(kv_end, split * len);
    k_end = min(kv_end, k_begin + len);
  }
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;

  // Each thread copies the 16-byte piece `piece` of rows tid / kChunks + pass * kRowsPerPass (passes unrolled,
  // so the block-table reads of one tile are in flight together).
  constexpr int kRowsPerPass = kThreads / kChunks;
  static_assert(kThreads % kChunks == 0);
  const int piece = tid % kChunks;
  // ---- Q rows -> shared (cp.async), inv_freq ----
#pragma unroll
  for (int pass = 0; pass < (kRows + kRowsPerPass - 1) / kRowsPerPass; ++pass) {
    const int r = tid / kChunks + pass * kRowsPerPass, fr = row0 + r;
    if (r >= kRows) break;
    const bf16* src = a.q;
    int bytes = 0;
    if (fr < total_rows) {
      const int64_t t = q_begin + fr / a.group;
      const int h = kvh * a.group + fr % a.group;
      src = a.q + t * a.q_token_stride + static_cast<int64_t>(h) * kD + piece * 8;
      bytes = 16;
    }
    mma::cp_async_16(s_q + r * kLd + piece * 8, src, bytes);
  }
  mma::cp_async_commit();
  const int half = a.rotary_dim / 2;
  for (int j = tid; j < half; j += kThreads) inv_freq[j] = pow(a.theta, -2.0 * j / a.rotary_dim);

  auto load_kv = [&](int stage, int n0) {
    bf16* dk = s_k + stage * kKeys * kLd;
    bf16* dv = s_v + stage * kKeys * kLd;
    constexpr int kPasses = (kKeys + kRowsPerPass - 1) / kRowsPerPass;
    int64_t off[kPasses];
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
      const int r = tid / kChunks + pass * kRowsPerPass, pos = n0 + r;
      off[pass] = -1;
      if (r < kKeys && pos < k_end) {
        const int blk = table[pos / a.page_size];
        if (static_cast<unsigned>(blk) < static_cast<unsigned>(a.num_blocks)) {
          const int64_t slot = static_cast<int64_t>(blk) * a.page_size + pos % a.page_size;
          off[pass] = (slot * a.num_kv_heads + kvh) * kD + piece * 8;
        }
      }
    }
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
      const int r = tid / kChunks + pass * kRowsPerPass;
      if (r >= kKeys) break;
      const bf16* sk = a.k_cache;
      const bf16* sv = a.v_cache;
      int bytes = 0;
      if (off[pass] >= 0) {
        sk += off[pass];
        sv += off[pass];
        bytes = 16;
      }
      mma::cp_async_16(dk + r * kLd + piece * 8, sk, bytes);
      mma::cp_async_16(dv + r * kLd + piece * 8, sv, bytes);
    }
  };
  const int num_tiles = (k_end - k_begin + kKeys - 1) / kKeys;
  if (num_tiles > 0) load_kv(0, k_begin);
  mma::cp_async_commit();
  mma::cp_async_wait<1>();
  __syncthreads();

  // ---- RoPE on the q rows in shared memory (fp32 math, bf16 result) ----
  for (int i = tid; i < kRows * half; i += kThreads) {
    const int r = i / half, j = i % half, fr = row0 + r;
    if (fr >= total_rows) continue;
    float c, s;
    rope_cos_sin(a.positions[q_begin + fr / a.group], inv_freq[j], c, s);
    bf16* x = s_q + r * kLd;
    const float x0 = __bfloat162float(x[j]), x1 = __bfloat162float(x[j + half]);
    x[j] = __float2bfloat16_rn(x0 * c - x1 * s);
    x[j + half] = __float2bfloat16_rn(x1 * c + x0 * s);
  }
  __syncthreads();
  // Q fragments: kept in registers with one m16 tile per warp; with two (kMTiles = 2) re-read from
  // shared memory at every k step (the registers hold the second tile's accumulators instead).
  constexpr bool kQInRegs = kMTiles == 1;
  uint32_t qf[kQInRegs ? kD / 16 : 1][4];
  if constexpr (kQInRegs) {
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      mma::ldmatrix_x4(qf[kk], s_q + (warp * 16 + lane % 16) * kLd + kk * 16 + (lane / 16) * 8);
    }
  }

  const int g = lane / 4, t4 = lane % 4;
  // The thread's rows: m16 tile mt of the warp, half hr -> flat row row0 + (warp kMTiles + mt) 16 + g + 8 hr.
  // Query position of each; rows past the tile see every loaded key.
  int qpos[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int fr = row0 + (warp * kMTiles + mt) * 16 + g + 8 * hr;
      qpos[mt][hr] = fr < total_rows ? ctx - nq + fr / a.group : INT_MAX;
    }
  }
  float o[kMTiles][kD / 8][4];
  float m[kMTiles][2], l[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int i = 0; i < kD / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
  }

  for (int it = 0; it < num_tiles; ++it) {
    const int n0 = k_begin + it * kKeys;
    if (it + 1 < num_tiles) {
      load_kv((it + 1) % 2, n0 + kKeys);
      mma::cp_async_commit();
      mma::cp_async_wait<1>();
    } else {
      mma::cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* tk = s_k + (it % 2) * kKeys * kLd;
    const bf16* tv = s_v + (it % 2) * kKeys * kLd;

    // S = Q K^T (16 kMTiles rows x 64 keys per warp)
    float s[kMTiles][kKeys / 8][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
    }
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t qa[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        if constexpr (kQInRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) qa[mt][e] = qf[kk][e];
        } else {
          mma::ldmatrix_x4(qa[mt], s_q + ((warp * kMTiles + mt) * 16 + lane % 16) * kLd + kk * 16 + (lane / 16) * 8);
        }
      }
#pragma unroll
      for (int n2 = 0; n2 < kKeys / 16; ++n2) {
        uint32_t b[4];
        mma::ldmatrix_x4(b, tk + (n2 * 16 + (lane / 16) * 8 + lane % 8) * kLd + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          mma::mma_bf16(s[mt][2 * n2], qa[mt], b[0], b[1]);
          mma::mma_bf16(s[mt][2 * n2 + 1], qa[mt], b[2], b[3]);
        }
      }
    }
    // Causal mask and keys past the range (zero-filled in shared memory).
    if (n0 + kKeys > min(k_end, first_token_pos + 1)) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int kp = n0 + j * 8 + 2 * t4 + (e & 1);
            if (kp > qpos[mt][e / 2] || kp >= k_end) s[mt][j][e] = -INFINITY;
          }
        }
      }
    }
    // Online softmax in base 2.
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) {
        mx0 = fmaxf(mx0, fmaxf(s[mt][j][0], s[mt][j][1]));
        mx1 = fmaxf(mx1, fmaxf(s[mt][j][2], s[mt][j][3]));
      }
#pragma unroll
      for (int off = 1; off < 4; off *= 2) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
      }
      const float mn0 = fmaxf(m[mt][0], mx0 * a.scale_log2), mn1 = fmaxf(m[mt][1], mx1 * a.scale_log2);
      const float base0 = mn0 == -INFINITY ? 0.f : mn0, base1 = mn1 == -INFINITY ? 0.f : mn1;
      const float alpha0 = exp2f(m[mt][0] - base0), alpha1 = exp2f(m[mt][1] - base1);
      m[mt][0] = mn0;
      m[mt][1] = mn1;
      float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) {
        s[mt][j][0] = exp2f(fmaf(s[mt][j][0], a.scale_log2, -base0));
        s[mt][j][1] = exp2f(fmaf(s[mt][j][1], a.scale_log2, -base0));
        s[mt][j][2] = exp2f(fmaf(s[mt][j][2], a.scale_log2, -base1));
        s[mt][j][3] = exp2f(fmaf(s[mt][j][3], a.scale_log2, -base1));
        sum0 += s[mt][j][0] + s[mt][j][1];
        sum1 += s[mt][j][2] + s[mt][j][3];
      }
      l[mt][0] = l[mt][0] * alpha0 + sum0;
      l[mt][1] = l[mt][1] * alpha1 + sum1;
#pragma unroll
      for (int i = 0; i < kD / 8; ++i) {
        o[mt][i][0] *= alpha0;
        o[mt][i][1] *= alpha0;
        o[mt][i][2] *= alpha1;
        o[mt][i][3] *= alpha1;
      }
    }
    // O += P V (P rounded to bf16)
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      uint32_t pa[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        pa[mt][0] = mma::pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = mma::pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = mma::pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = mma::pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int n2 = 0; n2 < kD / 16; ++n2) {
        uint32_t b[4];
        mma::ldmatrix_x4_trans(b, tv + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * kLd + n2 * 16 + (lane / 16) * 8);
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          mma::mma_bf16(o[mt][2 * n2], pa[mt], b[0], b[1]);
          mma::mma_bf16(o[mt][2 * n2 + 1], pa[mt], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the stage is overwritten by the next iteration's load
  }

#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float lsum = l[mt][hr];
#pragma unroll
      for (int off = 1; off < 4; off *= 2) lsum += __shfl_xor_sync(0xffffffffu, lsum, off);
      const int fr = row0 + (warp * kMTiles + mt) * 16 + g + 8 * hr;
      if (fr >= total_rows) continue;
      const int64_t t = q_begin + fr / a.group;
      const int h = kvh * a.group + fr % a.group;
      if constexpr (kSplit) {
        const int64_t part = (t * a.num_heads + h) * a.num_splits + split;
        float* po = a.part_o + part * kD;
#pragma unroll
        for (int i = 0; i < kD / 8; ++i) {
          *reinterpret_cast<float2*>(po + i * 8 + 2 * t4) = make_float2(o[mt][i][2 * hr], o[mt][i][2 * hr + 1]);
        }
        if (t4 == 0) *reinterpret_cast<float2*>(a.part_ml + part * 2) = make_float2(m[mt][hr], lsum);
      } else {
        const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
        bf16* dst = a.out + (t * a.num_heads + h) * kD;
#pragma unroll
        for (int i = 0; i < kD / 8; ++i) {
          *reinterpret_cast<__nv_bfloat162*>(dst + i * 8 + 2 * t4) =
              __floats2bfloat162_rn(o[mt][i][2 * hr] * inv, o[mt][i][2 * hr + 1] * inv);
        }
      }
    }
  }
}

// grid (num_tokens, H), kD threads: out = sum_s 2^(m_s - M) O_s / sum_s 2^(m_s - M) l_s.
template <int kD>
__global__ void softmax_combine_kernel(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                       int num_splits, int num_heads, bf16* __restrict__ out) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * num_heads + blockIdx.y;
  const int d = threadIdx.x;
  const float* ml = part_ml + row * num_splits * 2;
  float mx = -INFINITY;
  for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, ml[2 * s]);
  float acc = 0.f, l = 0.f;
  if (mx != -INFINITY) {
    for (int s = 0; s < num_splits; ++s) {
      const float w = exp2f(ml[2 * s] - mx);  // 0 for an empty split (m = -inf)
      l += w * ml[2 * s + 1];
      acc += w * part_o[(row * num_splits + s) * kD + d];
    }
  }
  out[row * kD + d] = __float2bfloat16_rn(l > 0.f ? acc / l : 0.f);
}

// grid (num_tokens), 256 threads: RoPE on k (pairs from the block's inv_freq table), k and v -> cache.
__global__ void softmax_kv_cache_write_kernel(const bf16* __restrict__ k, const bf16* __restrict__ v,
                                              int64_t kv_token_stride, const int32_t* __restrict__ positions,
                                              const int64_t* __restrict__ slot_mapping, bf16* __restrict__ k_cache,
                                              bf16* __restrict__ v_cache, int64_t num_slots, int num_kv_heads,
                                              int head_dim, int rotary_dim, double theta) {
  __shared__ double inv_freq[256];
  __shared__ float cos_sin[2 * 256];
  const int64_t t = blockIdx.x;
  const int half = rotary_dim / 2;
  const int64_t slot = slot_mapping[t];
  if (slot < 0 || slot >= num_slots) return;  // the host reference rejects these; here they are skipped
  const int pos = positions[t];
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    inv_freq[j] = pow(theta, -2.0 * j / rotary_dim);
    rope_cos_sin(pos, inv_freq[j], cos_sin[2 * j], cos_sin[2 * j + 1]);
  }
  __syncthreads();
  const int row = num_kv_heads * head_dim;
  const bf16* kt = k + t * kv_token_stride;
  const bf16* vt = v + t * kv_token_stride;
  for (int i = threadIdx.x; i < row; i += blockDim.x) {
    const int d = i % head_dim;
    float y = __bfloat162float(kt[i]);
    if (d < rotary_dim) {
      const int j = d < half ? d : d - half;
      const float c = cos_sin[2 * j], s = cos_sin[2 * j + 1];
      if (d < half) {
        y = y * c - __bfloat162float(kt[i + half]) * s;
      } else {
        y = y * c + __bfloat162float(kt[i - half]) * s;
      }
    }
    k_cache[slot * row + i] = __float2bfloat16_rn(y);
    v_cache[slot * row + i] = vt[i];
  }
}

// ---- launchers --------------------------------------------------------------------------------------
AttnArgs make_args(const SoftmaxAttentionCudaParams& p) {
  AttnArgs a{};
  a.q = reinterpret_cast<const bf16*>(p.q);
  a.q_token_stride = p.q_token_stride;
  a.positions = p.positions;
  a.k_cache = reinterpret_cast<const bf16*>(p.k_cache);
  a.v_cache = reinterpret_cast<const bf16*>(p.v_cache);
  a.block_tables = p.block_tables;
  a.max_blocks_per_seq = static_cast<int>(p.max_blocks_per_seq);
  a.page_size = static_cast<int>(p.page_size);
  a.num_blocks = static_cast<int>(p.num_blocks);
  a.cu_q = p.cu_seqlens_q;
  a.context_lens = p.context_lens;
  a.num_seqs = static_cast<int>(p.num_seqs);
  a.num_heads = static_cast<int>(p.num_heads);
  a.num_kv_heads = static_cast<int>(p.num_kv_heads);
  a.group = static_cast<int>(p.num_heads / p.num_kv_heads);
  a.rotary_dim = static_cast<int>(p.rotary_dim);
  a.theta = p.theta;
  a.scale_log2 = p.scale * 1.4426950408889634f;
  a.out = reinterpret_cast<bf16*>(p.out);
  return a;
}

template <int kD, int kWarps, int kMTiles, bool kSplit>
KernelStatus launch_attention(const AttnArgs& a, int64_t items, int64_t kv_heads, int64_t splits, cudaStream_t stream) {
  using S = AttnShape<kD, kWarps, kMTiles>;
  auto kernel = softmax_attention_kernel<kD, kWarps, kMTiles, kSplit>;
  FULGUR_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(S::kSmemBytes)));
  const dim3 grid(static_cast<unsigned>(items), static_cast<unsigned>(kv_heads), static_cast<unsigned>(splits));
  kernel<<<grid, S::kThreads, S::kSmemBytes, stream>>>(a);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus launch_cache_write(const SoftmaxAttentionCudaParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0) return kernel_ok();
  softmax_kv_cache_write_kernel<<<static_cast<unsigned>(p.num_tokens), 256, 0, stream>>>(
      reinterpret_cast<const bf16*>(p.k), reinterpret_cast<const bf16*>(p.v), p.kv_token_stride, p.positions,
      p.slot_mapping, reinterpret_cast<bf16*>(p.k_cache), reinterpret_cast<bf16*>(p.v_cache),
      p.num_blocks * p.page_size, static_cast<int>(p.num_kv_heads), static_cast<int>(p.head_dim),
      static_cast<int>(p.rotary_dim), p.theta);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

bool head_dim_supported(int64_t d) {
  for (int64_t x : kSoftmaxHeadDims) {
    if (x == d) return true;
  }
  return false;
}

// Shape and pointer checks shared by every entry; the message names the argument.
KernelStatus validate(const SoftmaxAttentionCudaParams& p, bool decode) {
  if (p.num_heads <= 0 || p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0) {
    return kernel_error("softmax attention (cuda): num_heads must be a positive multiple of num_kv_heads");
  }
  if (p.num_kv_heads > 65535) return kernel_error("softmax attention (cuda): num_kv_heads exceeds the grid (65535)");
  if (!head_dim_supported(p.head_dim)) return kernel_error("softmax attention (cuda): head_dim must be 16, 64 or 128");
  if (p.rotary_dim < 0 || p.rotary_dim % 2 != 0 || p.rotary_dim > p.head_dim) {
    return kernel_error("softmax attention (cuda): rotary_dim must be even and <= head_dim");
  }
  if (p.num_tokens < 0 || p.num_seqs < 0) return kernel_error("softmax attention (cuda): negative num_tokens or num_seqs");
  if (p.num_tokens > (int64_t{1} << 30) / std::max<int64_t>(1, p.num_heads)) {
    return kernel_error("softmax attention (cuda): num_tokens * num_heads exceeds 2^30");
  }
  if (decode && p.num_tokens != p.num_seqs) return kernel_error("softmax attention decode (cuda): num_tokens must equal num_seqs");
  if (p.num_blocks <= 0 || p.page_size <= 0 || p.num_blocks * p.page_size > INT_MAX) {
    return kernel_error("softmax attention (cuda): num_blocks and page_size must be positive (slots < 2^31)");
  }
  if (p.max_blocks_per_seq <= 0) return kernel_error("softmax attention (cuda): max_blocks_per_seq must be positive");
  if (!(p.scale > 0.f)) return kernel_error("softmax attention (cuda): scale must be positive");
  if (!(p.theta > 0.0)) return kernel_error("softmax attention (cuda): theta must be positive");
  if (!p.q || !p.k || !p.v || !p.positions || !p.slot_mapping || !p.k_cache || !p.v_cache || !p.block_tables ||
      !p.context_lens || !p.out || (!decode && !p.cu_seqlens_q)) {
    return kernel_error("softmax attention (cuda): null pointer among q, k, v, positions, slot_mapping, caches, "
                        "block_tables, cu_seqlens_q, context_lens, out");
  }
  if (!aligned16(p.q) || p.q_token_stride % 8 != 0 || p.q_token_stride < p.num_heads * p.head_dim) {
    return kernel_error("softmax attention (cuda): q must be 16-byte aligned, q_token_stride a multiple of 8 and >= H*D");
  }
  if (p.kv_token_stride < p.num_kv_heads * p.head_dim) {
    return kernel_error("softmax attention (cuda): kv_token_stride must be >= KV*D");
  }
  if (!aligned16(p.k_cache) || !aligned16(p.v_cache)) {
    return kernel_error("softmax attention (cuda): k_cache and v_cache must be 16-byte aligned");
  }
  return kernel_ok();
}

int multiprocessors() {
  int dev = 0, sms = 132;
  if (cudaGetDevice(&dev) == cudaSuccess) {
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) sms = 132;
  }
  (void)cudaGetLastError();
  return sms;
}

}  // namespace

// ---- entries ----------------------------------------------------------------------------------------
KernelStatus softmax_kv_cache_write(const SoftmaxAttentionCudaParams& p, Stream stream) {
  if (p.num_kv_heads <= 0 || !head_dim_supported(p.head_dim) || p.rotary_dim < 0 || p.rotary_dim % 2 != 0 ||
      p.rotary_dim > p.head_dim) {
    return kernel_error("softmax kv cache write (cuda): bad num_kv_heads, head_dim or rotary_dim");
  }
  if (p.num_tokens < 0 || p.num_tokens > 0x7fffffff) return kernel_error("softmax kv cache write (cuda): num_tokens out of range");
  if (p.num_blocks <= 0 || p.page_size <= 0) return kernel_error("softmax kv cache write (cuda): num_blocks and page_size must be positive");
  if (p.kv_token_stride < p.num_kv_heads * p.head_dim) return kernel_error("softmax kv cache write (cuda): kv_token_stride must be >= KV*D");
  if (!p.k || !p.v || !p.positions || !p.slot_mapping || !p.k_cache || !p.v_cache) {
    return kernel_error("softmax kv cache write (cuda): null pointer among k, v, positions, slot_mapping, caches");
  }
  return launch_cache_write(p, stream);
}

KernelStatus softmax_attention_prefill(const SoftmaxAttentionCudaParams& p, Stream stream) {
  if (auto st = validate(p, false); !st.ok()) return st;
  if (p.num_seqs == 0 || p.num_tokens == 0) return kernel_ok();
  if (p.prefill_kernel < kPrefillAuto || p.prefill_kernel > kPrefillSm90 ||
      (p.prefill_kernel == kPrefillSm90 && p.prefill_rows_per_warp != 0)) {
    return kernel_error("softmax attention prefill (cuda): prefill_kernel must be 0, 1 or 2 (2 without prefill_rows_per_warp)");
  }
  const bool sm90 = p.prefill_kernel == kPrefillSm90 ||
                    (p.prefill_kernel == kPrefillAuto && p.prefill_rows_per_warp == 0 &&
                     softmax_detail::prefill_sm90_supported(p));
  if (p.prefill_kernel == kPrefillSm90 && !softmax_detail::prefill_sm90_supported(p)) {
    return softmax_detail::prefill_sm90(p, stream);  // the error naming what it needs
  }
  if (auto st = launch_cache_write(p, stream); !st.ok()) return st;
  if (sm90) return softmax_detail::prefill_sm90(p, stream);
  const AttnArgs a = make_args(p);
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t rows_per_warp = p.prefill_rows_per_warp == 0 ? kPrefillRowsPerWarp : p.prefill_rows_per_warp;
  if (rows_per_warp != 16 && rows_per_warp != 32) {
    return kernel_error("softmax attention prefill (cuda): prefill_rows_per_warp must be 0, 16 or 32");
  }
  const int64_t rows = rows_per_warp == 16 ? 16 * kPrefillWarps : 32 * kPrefillWarps2;
  const int64_t items = (p.num_tokens * group + rows - 1) / rows + p.num_seqs;  // bound on the tiles of all sequences
  if (items > 0x7fffffff) return kernel_error("softmax attention prefill (cuda): too many tiles for the grid");
  const int64_t kv = p.num_kv_heads;
  if (rows_per_warp == 16) {
    switch (p.head_dim) {
      case 16: return launch_attention<16, kPrefillWarps, 1, false>(a, items, kv, 1, stream);
      case 64: return launch_attention<64, kPrefillWarps, 1, false>(a, items, kv, 1, stream);
      case 128: return launch_attention<128, kPrefillWarps, 1, false>(a, items, kv, 1, stream);
      default: break;
    }
  } else {
    switch (p.head_dim) {
      case 16: return launch_attention<16, kPrefillWarps2, 2, false>(a, items, kv, 1, stream);
      case 64: return launch_attention<64, kPrefillWarps2, 2, false>(a, items, kv, 1, stream);
      case 128: return launch_attention<128, kPrefillWarps2, 2, false>(a, items, kv, 1, stream);
      default: break;
    }
  }
  return kernel_error("softmax attention (cuda): head_dim must be 16, 64 or 128");
}

int64_t softmax_decode_num_splits(const SoftmaxAttentionCudaParams& p) {
  if (p.num_splits > 0) return std::min<int64_t>(p.num_splits, 65535);
  if (p.num_kv_heads <= 0 || p.num_heads <= 0) return 1;
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t blocks = std::max<int64_t>(1, p.num_seqs) * p.num_kv_heads * ((group + 16 * kDecodeWarps - 1) / (16 * kDecodeWarps));
  const int64_t target = 4 * static_cast<int64_t>(multiprocessors());  // tuning: about 4 resident blocks per SM
  const int64_t by_fill = (target + blocks - 1) / blocks;
  const int64_t by_len = std::max<int64_t>(1, p.max_context / (4 * kKeysPerTile));  // >= 256 keys per split
  return std::clamp<int64_t>(std::min(by_fill, by_len), 1, 256);
}

size_t softmax_decode_workspace_bytes(const SoftmaxAttentionCudaParams& p) {
  const int64_t splits = softmax_decode_num_splits(p);
  return static_cast<size_t>(std::max<int64_t>(0, p.num_seqs) * std::max<int64_t>(0, p.num_heads) * splits *
                             (std::max<int64_t>(0, p.head_dim) + 2)) * sizeof(float);
}

KernelStatus softmax_attention_decode(const SoftmaxAttentionCudaParams& p, Stream stream) {
  if (auto st = validate(p, true); !st.ok()) return st;
  if (p.num_seqs == 0) return kernel_ok();
  if (p.num_seqs > 65535) return kernel_error("softmax attention decode (cuda): num_seqs exceeds the grid (65535)");
  const int64_t splits = softmax_decode_num_splits(p);
  if (!p.workspace || p.workspace_bytes < softmax_decode_workspace_bytes(p) || !aligned16(p.workspace)) {
    return kernel_error("softmax attention decode (cuda): workspace missing, unaligned or smaller than "
                        "softmax_decode_workspace_bytes");
  }
  if (auto st = launch_cache_write(p, stream); !st.ok()) return st;
  AttnArgs a = make_args(p);
  a.cu_q = nullptr;
  a.num_splits = static_cast<int>(splits);
  a.part_o = static_cast<float*>(p.workspace);
  a.part_ml = a.part_o + p.num_seqs * p.num_heads * splits * p.head_dim;
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t items = p.num_seqs * ((group + 16 * kDecodeWarps - 1) / (16 * kDecodeWarps));
  const dim3 cgrid(static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.num_heads));
  KernelStatus st;
  switch (p.head_dim) {
    case 16:
      st = launch_attention<16, kDecodeWarps, 1, true>(a, items, p.num_kv_heads, splits, stream);
      if (st.ok()) softmax_combine_kernel<16><<<cgrid, 16, 0, stream>>>(a.part_o, a.part_ml, a.num_splits, a.num_heads, a.out);
      break;
    case 64:
      st = launch_attention<64, kDecodeWarps, 1, true>(a, items, p.num_kv_heads, splits, stream);
      if (st.ok()) softmax_combine_kernel<64><<<cgrid, 64, 0, stream>>>(a.part_o, a.part_ml, a.num_splits, a.num_heads, a.out);
      break;
    case 128:
      st = launch_attention<128, kDecodeWarps, 1, true>(a, items, p.num_kv_heads, splits, stream);
      if (st.ok()) softmax_combine_kernel<128><<<cgrid, 128, 0, stream>>>(a.part_o, a.part_ml, a.num_splits, a.num_heads, a.out);
      break;
    default: return kernel_error("softmax attention (cuda): head_dim must be 16, 64 or 128");
  }
  if (!st.ok()) return st;
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

}  // namespace fulgur::kernels::cuda
