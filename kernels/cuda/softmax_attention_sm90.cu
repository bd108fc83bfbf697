// Causal GQA prefill on Hopper tensor cores: the attention pass of softmax_attention_prefill for head_dim
// 128 (kernels/cuda/softmax_attention.h has the contract; the cache write runs before, unchanged).
//
// A block owns 128 rows, each a (query token, q head) pair of one kv head's group (token-major: 128 / group
// tokens x group heads, so one K/V tile serves every q head of the group), and walks the keys its rows may see
// in tiles of 128 from the paged cache:
//   warpgroup 0, one thread: the producer. It looks the tile's pages up in the block table and issues TMA loads
//     of boxes of up to 128 keys (the largest power of two from 16 dividing the page size; 128-byte swizzle, two
//     64-wide halves of head_dim) into a 3-stage ring of K and V tiles, K and V freed separately; a page outside
//     the cache loads as zeros, boxes past the keys the block sees are not loaded.
//   warpgroups 1 and 2: 64 rows each. Q is loaded once into registers as the A fragments of wgmma (RoPE applied
//     there, rounded to bf16 as the mma.sync kernel does), then per tile
//       S = Q K^T   wgmma m64n128k16, A from registers, K K-major from shared memory (8 k-steps over head_dim)
//       causal mask, base-2 online softmax in fp32 (as softmax_attention.cu, with 2^x as one ex2.approx.ftz),
//       P rounded to bf16 in registers
//       O += P V    wgmma m64n128k16, A = P from registers, V MN-major (transposed B; 8 k-steps over keys)
//     The two warpgroups take turns on the tensor cores (named barriers, FA3's "ping-pong"): one's softmax runs
//     while the other's GEMMs do.
// Keys past the context in the last tile: S masked to -inf (P = 0), k-steps wholly past it skipped, and the
// rows of the last k-step past it zeroed in shared memory first (0 x NaN would poison O).
// Measured against torch's flash SDPA and the steps that got here: bench/gpu/NOTES.md.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <mutex>
#include <set>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/sm90.cuh"
#include "kernels/cuda/softmax_common.cuh"
#include "kernels/cuda/tma.h"

namespace fulgur::kernels::cuda::softmax_detail {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kD = 128;
constexpr int kBM = 128;   // rows per block (2 consumer warpgroups x 64)
constexpr int kBN = 128;   // keys per tile
constexpr int kStages = 3;  // K/V tiles in flight: two tiles of slack cover the L2 latency of a 64 KiB load
constexpr int kThreads = 384;
constexpr int kHalfBytes = kBN * 64 * 2;       // one 64-wide half of a K or V tile: 16 KiB
constexpr int kTileBytes = 2 * kHalfBytes;     // K or V tile
constexpr int kStageBytes = 2 * kTileBytes;    // K then V

// Named barriers (0 is __syncthreads): the tensor-core turns of consumer 0 and 1, the tail's V zeroing, and
// the RoPE table (both consumers).
constexpr int kBarTurn0 = 1, kBarTurn1 = 2, kBarTail = 3, kBarRope = 4;
constexpr int kRopeTable = 2048;  // (cos, sin) entries: the block's tokens x rotary_dim / 2 when they fit

struct alignas(8) Shared {
  uint64_t full_k[kStages];
  uint64_t full_v[kStages];
  uint64_t empty_k[kStages];  // K is free once both consumers' S is done, V once their P V is
  uint64_t empty_v[kStages];
  double inv_freq[kD / 2];     // when the table does not fit
  float2 rope[kRopeTable];     // [token of the block][j]: cos and sin of pos * inv_freq[j]
};
constexpr size_t kSmemBytes = 1024 + size_t(kStages) * kStageBytes + sizeof(Shared);
static_assert(kSmemBytes <= 227 * 1024, "shared memory above the sm_90 limit");

struct Sm90Args {
  const bf16* q;
  int64_t q_token_stride;
  const int32_t* positions;
  const int32_t* block_tables;
  int max_blocks_per_seq;
  int page_size;
  int box_rows;   // keys per TMA box: the largest of 128, 64, 32, 16 dividing page_size
  int num_slots;  // num_blocks * page_size: the row count of the cache maps
  int num_blocks;
  const int32_t* cu_q;
  const int32_t* context_lens;
  int num_seqs;
  int num_heads;
  int group;
  int rotary_dim;
  double theta;
  float scale_log2;
  bf16* out;
  int items_per_head;  // bound on the row blocks of all sequences
};

// 2^x with denormal results flushed to zero (one MUFU op; exp2f adds a range fix-up around it). Exact enough
// for P, which is rounded to bf16 next.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// RoPE on the thread's Q pairs raw[row half][k-step][column half] (bf16x2 at column kk 16 + hc 8 + 2 c4) into
// wgmma A fragments; kH16 = rotary_dim / 32 (the partner of k-step kk is kk +- kH16). Angles from the block's
// table (token qtok) or, where it did not fit, from inv_freq at position qp.
template <int kH16>
__device__ __forceinline__ void rope_q(const uint32_t (&raw)[2][kD / 16][2], uint32_t (&qa)[kD / 16][4], const Shared& s,
                                       bool table, const int (&qtok)[2], const int (&qp)[2], int c4) {
  constexpr int kHalf = 16 * kH16;
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
      for (int hc = 0; hc < 2; ++hc) {
        uint32_t v = raw[hr][kk][hc];
        if constexpr (kH16 > 0) {
          if (kk < 2 * kH16) {
            const bool lo = kk < kH16;
            const uint32_t pv = raw[hr][lo ? kk + kH16 : kk - kH16][hc];
            const __nv_bfloat162 xv = *reinterpret_cast<const __nv_bfloat162*>(&v);
            const __nv_bfloat162 pp = *reinterpret_cast<const __nv_bfloat162*>(&pv);
            const float x[2] = {__low2float(xv), __high2float(xv)}, p[2] = {__low2float(pp), __high2float(pp)};
            float y[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int j = (lo ? kk : kk - kH16) * 16 + hc * 8 + 2 * c4 + e;
              float cs, sn;
              if (table) {
                const float2 rc = s.rope[qtok[hr] * kHalf + j];
                cs = rc.x, sn = rc.y;
              } else {
                rope_cos_sin(qp[hr], s.inv_freq[j], cs, sn);
              }
              y[e] = lo ? x[e] * cs - p[e] * sn : x[e] * cs + p[e] * sn;
            }
            v = mma::pack_bf16(y[0], y[1]);
          }
        }
        qa[kk][hr + 2 * hc] = v;
      }
    }
  }
}

// One work item: a block of 128 rows of one sequence for one kv head. Work index w: kv head w / items_per_head
// (head-major, so the blocks running at once share a head's K/V in L2), then the sequence's row blocks in
// reverse (the longest causal ranges first). Returns false for indices past the sequences' blocks (the count
// is a bound); the same answer in every warp (find_tile is warp-wide).
struct Work {
  int kvh, seq, q_begin, nq, ctx, total_rows, row0, first_token_pos, kv_end, num_tiles;
};
__device__ __forceinline__ bool describe(const Sm90Args& a, int w, Work& wk) {
  wk.kvh = w / a.items_per_head;
  const int item = a.items_per_head - 1 - w % a.items_per_head;
  int tile = 0;
  if (!find_tile(a.cu_q, a.num_seqs, a.group, kBM, item, wk.seq, tile)) return false;
  wk.q_begin = a.cu_q[wk.seq];
  wk.nq = a.cu_q[wk.seq + 1] - wk.q_begin;
  wk.ctx = a.context_lens[wk.seq];
  wk.total_rows = wk.nq * a.group;
  wk.row0 = tile * kBM;
  const int last_row = min(wk.row0 + kBM, wk.total_rows) - 1;
  wk.first_token_pos = wk.ctx - wk.nq + wk.row0 / a.group;
  wk.kv_end = max(0, min(wk.ctx, wk.ctx - wk.nq + last_row / a.group + 1));  // keys any row of the block sees
  wk.num_tiles = (wk.kv_end + kBN - 1) / kBN;
  return true;
}
// grid: one block per work item, in work order. (Persistent blocks walking the items in a fixed snake order,
// the producer loading the next item's tiles early, were measured slower at 4k tokens, 1.13 vs 0.81 ms: the
// hardware's hand-out of blocks to SMs as they free up balances the causal lengths better.)
__global__ void __launch_bounds__(kThreads, 1)
    softmax_prefill_sm90_kernel(const __grid_constant__ CUtensorMap map_k, const __grid_constant__ CUtensorMap map_v,
                                const Sm90Args a) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __trap();  // compiled for a GPU without wgmma / TMA; the host never launches this image (prefill_sm90_supported)
#else
  extern __shared__ uint8_t smem_raw[];
  uint8_t* stages = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  Shared& s = *reinterpret_cast<Shared*>(stages + size_t(kStages) * kStageBytes);

  Work wk;
  if (!describe(a, static_cast<int>(blockIdx.x), wk)) return;  // every warp: find_tile is warp-wide

  if (threadIdx.x == 0) {
    sm90::prefetch_tensor_map(&map_k);
    sm90::prefetch_tensor_map(&map_v);
    for (int i = 0; i < kStages; ++i) {
      sm90::mbar_init(&s.full_k[i], 1), sm90::mbar_init(&s.full_v[i], 1);
      sm90::mbar_init(&s.empty_k[i], 8), sm90::mbar_init(&s.empty_v[i], 8);
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;

  if (wg == 0) {  // producer
    sm90::regs_dealloc<40>();
    if (threadIdx.x != 0) return;
    const int R = a.box_rows, box_bytes = R * 128;
    const int32_t* table = a.block_tables + static_cast<int64_t>(wk.seq) * a.max_blocks_per_seq;
    for (int j = 0; j < wk.num_tiles; ++j) {
      const int st = j % kStages;
      const uint32_t ph = (j / kStages) & 1;
      const int n0 = j * kBN;
      const int used = min(kBN, (wk.kv_end - n0 + 15) / 16 * 16);  // the keys the consumers' k-steps read
      const int boxes = (used + R - 1) / R;
      int rows[kBN / 16];
#pragma unroll
      for (int b = 0; b < kBN / 16; ++b) {  // the table reads of a tile in flight together
        rows[b] = a.num_slots;              // past the map: loads as zeros
        const int pos = n0 + b * R;
        if (b < boxes) {
          const int blk = table[pos / a.page_size];
          if (static_cast<unsigned>(blk) < static_cast<unsigned>(a.num_blocks)) {
            rows[b] = blk * a.page_size + pos % a.page_size;
          }
        }
      }
      uint8_t* tk = stages + size_t(st) * kStageBytes;
      uint8_t* tv = tk + kTileBytes;
      sm90::mbar_wait(&s.empty_k[st], ph ^ 1);
      sm90::mbar_arrive_expect_tx(&s.full_k[st], boxes * 2 * box_bytes);
      for (int b = 0; b < boxes; ++b) {
        sm90::tma_load_3d(tk + b * box_bytes, &map_k, &s.full_k[st], 0, wk.kvh, rows[b]);
        sm90::tma_load_3d(tk + kHalfBytes + b * box_bytes, &map_k, &s.full_k[st], 64, wk.kvh, rows[b]);
      }
      sm90::mbar_wait(&s.empty_v[st], ph ^ 1);
      sm90::mbar_arrive_expect_tx(&s.full_v[st], boxes * 2 * box_bytes);
      for (int b = 0; b < boxes; ++b) {
        sm90::tma_load_3d(tv + b * box_bytes, &map_v, &s.full_v[st], 0, wk.kvh, rows[b]);
        sm90::tma_load_3d(tv + kHalfBytes + b * box_bytes, &map_v, &s.full_v[st], 64, wk.kvh, rows[b]);
      }
    }
    return;
  }

  sm90::regs_alloc<232>();
  const int cw = wg - 1;
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4, g = lane / 4, c4 = lane % 4;
  const int my_turn = cw == 0 ? kBarTurn0 : kBarTurn1, other_turn = cw == 0 ? kBarTurn1 : kBarTurn0;
  const int half = a.rotary_dim / 2;
  const int tokens = kBM / a.group;
  const bool table = tokens * half <= kRopeTable;
  if (!table) {
    for (int j = threadIdx.x - 128; j < half; j += 256) s.inv_freq[j] = pow(a.theta, -2.0 * j / a.rotary_dim);
  }
  if (cw == 1) sm90::named_barrier_arrive(kBarTurn0, 256);  // consumer 0 takes the first turn
  const int row0 = wk.row0, tok0 = row0 / a.group;

  // ---- Q fragments, roped (fp32 math, bf16 result) ----
  // The angles (double, rope_cos_sin) once per (token, pair) of the block in a shared table where it fits
  // (MiniMax: 16 tokens x 32 pairs), else once per element from the shared inv_freq.
  if (table) {
    for (int i = threadIdx.x - 128; i < tokens * half; i += 256) {
      const int tt = i / half, j = i % half;
      float cs = 1.f, sn = 0.f;
      if (tok0 + tt < wk.nq) {
        rope_cos_sin(a.positions[wk.q_begin + tok0 + tt], pow(a.theta, -2.0 * j / a.rotary_dim), cs, sn);
      }
      s.rope[i] = make_float2(cs, sn);
    }
  }
  sm90::named_barrier(kBarRope, 256);
  // All 32 loads of the thread's Q pairs first (they are in flight together), then RoPE: the partner of
  // column d (d +- rotary_dim / 2, rotary_dim a multiple of 32) is another of the thread's own pairs.
  uint32_t raw[2][kD / 16][2];
  int qpos[2], qtok[2], qp[2];
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int fr = row0 + cw * 64 + warp * 16 + g + 8 * hr;
    const bool valid = fr < wk.total_rows;
    qpos[hr] = valid ? wk.ctx - wk.nq + fr / a.group : INT_MAX;
    qtok[hr] = valid ? fr / a.group - tok0 : 0;
    const int64_t t = wk.q_begin + (valid ? fr / a.group : 0);
    const bf16* qrow =
        a.q + t * a.q_token_stride + static_cast<int64_t>(wk.kvh * a.group + (valid ? fr % a.group : 0)) * kD;
    qp[hr] = valid && !table ? a.positions[t] : 0;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
      for (int hc = 0; hc < 2; ++hc) {
        raw[hr][kk][hc] = valid ? *reinterpret_cast<const uint32_t*>(qrow + kk * 16 + hc * 8 + 2 * c4) : 0u;
      }
    }
  }
  uint32_t qa[kD / 16][4];
  switch (half / 16) {
    case 0: rope_q<0>(raw, qa, s, table, qtok, qp, c4); break;
    case 1: rope_q<1>(raw, qa, s, table, qtok, qp, c4); break;
    case 2: rope_q<2>(raw, qa, s, table, qtok, qp, c4); break;
    case 3: rope_q<3>(raw, qa, s, table, qtok, qp, c4); break;
    default: rope_q<4>(raw, qa, s, table, qtok, qp, c4); break;
  }

  float o[kD / 2];
#pragma unroll
  for (int i = 0; i < kD / 2; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int kv_end = wk.kv_end, ctx = wk.ctx;
  for (int j = 0; j < wk.num_tiles; ++j) {
    const int st = j % kStages;
    const uint32_t ph = (j / kStages) & 1;
    const int n0 = j * kBN;
    uint8_t* tk = stages + size_t(st) * kStageBytes;
    uint8_t* tv = tk + kTileBytes;

    // S = Q K^T
    float sc[kBN / 2];
    sm90::mbar_wait(&s.full_k[st], ph);
    sm90::named_barrier(my_turn, 256);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      const uint64_t desc = sm90::desc_advance_k(sm90::desc_k128(tk + (kk / 4) * kHalfBytes), (kk % 4) * 16);
      sm90::Wgmma<kBN>::mma_rs<false>(sc, qa[kk], desc, kk > 0 ? 1 : 0);
    }
    sm90::wgmma_commit();
    sm90::named_barrier_arrive(other_turn, 256);
    sm90::wgmma_wait<0>();
    sm90::fence_operands(sc);
    if (lane == 0) sm90::mbar_arrive(&s.empty_k[st]);

    // Causal mask and keys past the range.
    if (n0 + kBN > min(kv_end, wk.first_token_pos + 1)) {
#pragma unroll
      for (int jj = 0; jj < kBN / 8; ++jj) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kp = n0 + jj * 8 + 2 * c4 + (e & 1);
          if (kp > qpos[e / 2] || kp >= kv_end) sc[4 * jj + e] = -INFINITY;
        }
      }
    }
    // Online softmax in base 2 (the mma.sync kernel's arithmetic).
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < kBN / 8; ++jj) {
      mx0 = fmaxf(mx0, fmaxf(sc[4 * jj], sc[4 * jj + 1]));
      mx1 = fmaxf(mx1, fmaxf(sc[4 * jj + 2], sc[4 * jj + 3]));
    }
#pragma unroll
    for (int off = 1; off < 4; off *= 2) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    const float mn0 = fmaxf(m[0], mx0 * a.scale_log2), mn1 = fmaxf(m[1], mx1 * a.scale_log2);
    const float base0 = mn0 == -INFINITY ? 0.f : mn0, base1 = mn1 == -INFINITY ? 0.f : mn1;
    const float alpha0 = ex2(m[0] - base0), alpha1 = ex2(m[1] - base1);
    m[0] = mn0, m[1] = mn1;
    float sum0 = 0.f, sum1 = 0.f;
    uint32_t pa[kBN / 16][4];
#pragma unroll
    for (int jj = 0; jj < kBN / 8; ++jj) {
      const float p0 = ex2(fmaf(sc[4 * jj], a.scale_log2, -base0));
      const float p1 = ex2(fmaf(sc[4 * jj + 1], a.scale_log2, -base0));
      const float p2 = ex2(fmaf(sc[4 * jj + 2], a.scale_log2, -base1));
      const float p3 = ex2(fmaf(sc[4 * jj + 3], a.scale_log2, -base1));
      sum0 += p0 + p1, sum1 += p2 + p3;
      pa[jj / 2][(jj % 2) * 2] = mma::pack_bf16(p0, p1);
      pa[jj / 2][(jj % 2) * 2 + 1] = mma::pack_bf16(p2, p3);
    }
    l[0] = l[0] * alpha0 + sum0, l[1] = l[1] * alpha1 + sum1;
#pragma unroll
    for (int i = 0; i < kD / 8; ++i) {
      o[4 * i] *= alpha0, o[4 * i + 1] *= alpha0, o[4 * i + 2] *= alpha1, o[4 * i + 3] *= alpha1;
    }

    // O += P V
    sm90::mbar_wait(&s.full_v[st], ph);
    const int used = min(kBN, (kv_end - n0 + 15) / 16 * 16);  // keys of the k-steps that run
    if (ctx - n0 < used) {  // the last k-step reaches past the context: its rows there may hold anything
      if (cw == 0) {
        for (int i = threadIdx.x % 128; i < (used - (ctx - n0)) * 2 * 8; i += 128) {
          const int rr = ctx - n0 + i / 16, h = (i / 8) % 2, chunk = i % 8;
          *reinterpret_cast<uint4*>(tv + h * kHalfBytes + rr * 128 + chunk * 16) = make_uint4(0, 0, 0, 0);
        }
        sm90::fence_proxy_async_smem();
      }
      sm90::named_barrier(kBarTail, 256);
    }
    const int ksteps = used / 16;
    sm90::named_barrier(my_turn, 256);
    sm90::wgmma_fence();
    if (ksteps == kBN / 16) {
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        sm90::Wgmma<kD>::mma_rs<true>(o, pa[kk], sm90::desc_mn128(tv + kk * 2048, kHalfBytes), 1);
      }
    } else {  // the last tile: k-steps wholly past the keys are skipped
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        if (kk < ksteps) sm90::Wgmma<kD>::mma_rs<true>(o, pa[kk], sm90::desc_mn128(tv + kk * 2048, kHalfBytes), 1);
      }
    }
    sm90::wgmma_commit();
    sm90::named_barrier_arrive(other_turn, 256);
    sm90::wgmma_wait<0>();
    sm90::fence_operands(o);
    if (lane == 0) sm90::mbar_arrive(&s.empty_v[st]);
  }

  // ---- out = O / l (bf16) ----
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    float lsum = l[hr];
#pragma unroll
    for (int off = 1; off < 4; off *= 2) lsum += __shfl_xor_sync(0xffffffffu, lsum, off);
    const int fr = row0 + cw * 64 + warp * 16 + g + 8 * hr;
    if (fr >= wk.total_rows) continue;
    const int64_t t = wk.q_begin + fr / a.group;
    const int h = wk.kvh * a.group + fr % a.group;
    const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
    bf16* dst = a.out + (t * a.num_heads + h) * kD;
#pragma unroll
    for (int i = 0; i < kD / 8; ++i) {
      *reinterpret_cast<__nv_bfloat162*>(dst + i * 8 + 2 * c4) =
          __floats2bfloat162_rn(o[4 * i + 2 * hr] * inv, o[4 * i + 2 * hr + 1] * inv);
    }
  }
  if (cw == 0) sm90::named_barrier(kBarTurn0, 256);  // consumer 1's last arrival
#endif
}

// Whether the binary holds sm_90a code for the kernel and its shared memory is opted in on this device.
KernelStatus ready_on_device() {
  static std::mutex mu;
  static std::set<int> ready;
  int dev = 0;
  FULGUR_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (ready.count(dev)) return kernel_ok();
  cudaFuncAttributes fa{};
  FULGUR_CUDA_CHECK(cudaFuncGetAttributes(&fa, softmax_prefill_sm90_kernel));
  if (fa.binaryVersion != 90) return kernel_error("softmax attention prefill (cuda): this build has no sm_90a code");
  FULGUR_CUDA_CHECK(cudaFuncSetAttribute(softmax_prefill_sm90_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kSmemBytes)));
  ready.insert(dev);
  return kernel_ok();
}

}  // namespace

bool prefill_sm90_supported(const SoftmaxAttentionCudaParams& p) {
  if (p.head_dim != kD || p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0) return false;
  const int64_t group = p.num_heads / p.num_kv_heads;
  if (group > kBM || kBM % group != 0) return false;
  if (p.rotary_dim % 32 != 0 || p.page_size % 16 != 0) return false;
  if (p.num_blocks * p.page_size > INT32_MAX || p.num_kv_heads > 65535) return false;
  if (device_major() != 9) return false;
  return ready_on_device().ok();
}

KernelStatus prefill_sm90(const SoftmaxAttentionCudaParams& p, cudaStream_t stream) {
  if (!prefill_sm90_supported(p)) {
    return kernel_error("softmax attention prefill (cuda): the Hopper kernel needs head_dim 128, a q-head group "
                        "dividing 128, rotary_dim a multiple of 32, page_size a multiple of 16 and an sm_90a GPU");
  }
  CUtensorMap map_k, map_v;
  const uint64_t dims[3] = {uint64_t(kD), uint64_t(p.num_kv_heads), uint64_t(p.num_blocks * p.page_size)};
  const uint64_t strides[2] = {uint64_t(kD) * 2, uint64_t(p.num_kv_heads) * kD * 2};
  int box_rows = 16;
  while (box_rows < kBN && p.page_size % (2 * box_rows) == 0) box_rows *= 2;
  const uint32_t box[3] = {64, 1, static_cast<uint32_t>(box_rows)};
  if (auto st = make_tensor_map_bf16_sw128(&map_k, p.k_cache, 3, dims, strides, box); !st.ok()) return st;
  if (auto st = make_tensor_map_bf16_sw128(&map_v, p.v_cache, 3, dims, strides, box); !st.ok()) return st;
  Sm90Args a{};
  a.q = reinterpret_cast<const bf16*>(p.q);
  a.q_token_stride = p.q_token_stride;
  a.positions = p.positions;
  a.block_tables = p.block_tables;
  a.max_blocks_per_seq = static_cast<int>(p.max_blocks_per_seq);
  a.page_size = static_cast<int>(p.page_size);
  a.box_rows = box_rows;
  a.num_blocks = static_cast<int>(p.num_blocks);
  a.num_slots = static_cast<int>(p.num_blocks * p.page_size);
  a.cu_q = p.cu_seqlens_q;
  a.context_lens = p.context_lens;
  a.num_seqs = static_cast<int>(p.num_seqs);
  a.num_heads = static_cast<int>(p.num_heads);
  a.group = static_cast<int>(p.num_heads / p.num_kv_heads);
  a.rotary_dim = static_cast<int>(p.rotary_dim);
  a.theta = p.theta;
  a.scale_log2 = p.scale * 1.4426950408889634f;
  a.out = reinterpret_cast<bf16*>(p.out);
  const int64_t items = (p.num_tokens * a.group + kBM - 1) / kBM + p.num_seqs;  // bound on every sequence's tiles
  if (items * p.num_kv_heads > 0x3fffffff) return kernel_error("softmax attention prefill (cuda): too many row blocks");
  a.items_per_head = static_cast<int>(items);
  const dim3 grid(static_cast<unsigned>(items * p.num_kv_heads));
  softmax_prefill_sm90_kernel<<<grid, kThreads, kSmemBytes, stream>>>(map_k, map_v, a);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

}  // namespace fulgur::kernels::cuda::softmax_detail
