// Lightning attention prefill and decode on the GPU; the design is described in the header.
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/lightning_attention.h"
#include "kernels/cuda/mma.cuh"

namespace fulgur::kernels::cuda {

namespace {

// ---- compile-time shape of the prefill kernels --------------------------------------------------
// One warp per 16 value dims (kD / 16 warps); warp w owns rows [16w, 16w+16) of the transposed
// state S^T (value dims x key dims) in its accumulators and columns [16w, 16w+16) of the output.
template <int kD>
struct PrefillShape {
  static constexpr int kChunk = 64;                    // tokens per chunk
  static constexpr int kWarps = kD / 16;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kLd = kD + 8;                   // shared row stride (elements): ldmatrix without bank conflicts
  static constexpr int kTile = kChunk * kLd;           // one of q, k, v for one chunk
  static constexpr int kStage = 3 * kTile;             // q, k, v
  static constexpr int kLdP = kChunk + 8;
  static constexpr int kStages = 2;
  static constexpr size_t kSmemBytes =
      (static_cast<size_t>(kStages) * kStage + static_cast<size_t>(kChunk) * kLdP) * 2 + (kChunk + 1) * 4;
  static constexpr int kNTiles = kD / 8;               // n8 tiles of the state over key dims
};

// Finds the (sequence, segment) of work item `item` by a warp-wide scan over the sequences.
// Every lane returns the same answer; false when item is past the last segment.
__device__ bool find_item(const int32_t* __restrict__ cu_seqlens, int num_seqs, int seg_len, int item, int& seq,
                          int& seg) {
  const int lane = threadIdx.x % 32;
  int base = 0;
  for (int b0 = 0; b0 < num_seqs; b0 += 32) {
    const int b = b0 + lane;
    int n = 0;
    if (b < num_seqs) n = (cu_seqlens[b + 1] - cu_seqlens[b] + seg_len - 1) / seg_len;
    int incl = n;
    for (int off = 1; off < 32; off *= 2) {
      const int x = __shfl_up_sync(0xffffffffu, incl, off);
      if (lane >= off) incl += x;
    }
    const int excl = incl - n;
    const unsigned hit = __ballot_sync(0xffffffffu, n > 0 && item >= base + excl && item < base + incl);
    if (hit) {
      const int src = __ffs(hit) - 1;
      seq = b0 + src;
      seg = item - base - __shfl_sync(0xffffffffu, excl, src);
      return true;
    }
    base += __shfl_sync(0xffffffffu, incl, 31);
  }
  return false;
}

// Same scan: index of the first segment of sequence `seq` and its segment count.
__device__ void seq_items(const int32_t* __restrict__ cu_seqlens, int seq, int seg_len, int& first, int& count) {
  const int lane = threadIdx.x % 32;
  int sum = 0;
  for (int b0 = 0; b0 < seq; b0 += 32) {
    const int b = b0 + lane;
    int n = 0;
    if (b < seq) n = (cu_seqlens[b + 1] - cu_seqlens[b] + seg_len - 1) / seg_len;
    for (int off = 16; off > 0; off /= 2) n += __shfl_xor_sync(0xffffffffu, n, off);
    sum += n;
  }
  first = sum;
  count = (cu_seqlens[seq + 1] - cu_seqlens[seq] + seg_len - 1) / seg_len;
}

// Issues the cp.async copies of one chunk (rows >= m zero-filled) of the tensors [kFirst, 3).
template <int kD, int kFirst>
__device__ __forceinline__ void load_chunk(__nv_bfloat16* stage, const uint16_t* q, const uint16_t* k,
                                           const uint16_t* v, int64_t token_stride, int m) {
  using S = PrefillShape<kD>;
  constexpr int kPieces = kD / 8;  // 16-byte pieces per row
  constexpr int kTotal = (3 - kFirst) * S::kChunk * kPieces;
#pragma unroll 4
  for (int i = threadIdx.x; i < kTotal; i += S::kThreads) {
    const int tensor = kFirst + i / (S::kChunk * kPieces);
    const int rem = i % (S::kChunk * kPieces);
    const int row = rem / kPieces, piece = rem % kPieces;
    const uint16_t* base = tensor == 0 ? q : (tensor == 1 ? k : v);
    const bool valid = row < m;
    const uint16_t* src = base + (valid ? row * token_stride + piece * 8 : 0);
    mma::cp_async_16(stage + tensor * S::kTile + row * S::kLd + piece * 8, src, valid ? 16 : 0);
  }
}

// S^T = e^{-s m} S^T + (decayed V)^T K for one chunk; vs/ks are the chunk's V and K tiles.
template <int kD>
__device__ __forceinline__ void update_state(float (&st)[PrefillShape<kD>::kNTiles][4], const __nv_bfloat16* vs,
                                             const __nv_bfloat16* ks, const float* decay, int m) {
  using S = PrefillShape<kD>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, t = lane % 4;
  const float dm = decay[m];
#pragma unroll
  for (int j = 0; j < S::kNTiles; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) st[j][e] *= dm;
#pragma unroll
  for (int kk = 0; kk < S::kChunk / 16; ++kk) {
    if (kk * 16 >= m) break;
    // A = V^T rows [16w, 16w+16) (value dims) x tokens [16kk, 16kk+16), each token j scaled by e^{-s(m-1-j)}.
    uint32_t a[4];
    mma::ldmatrix_x4_trans(a, vs + (16 * kk + lane % 8 + 8 * (lane / 16)) * S::kLd + 16 * warp + 8 * ((lane / 8) % 2));
    const int j0 = 16 * kk + 2 * t;
    const int js[2] = {j0, j0 + 8};
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int j = js[half];
      const float d0 = j < m ? decay[m - 1 - j] : 0.f;
      const float d1 = j + 1 < m ? decay[m - 2 - j] : 0.f;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float2 x = mma::unpack_bf16(a[2 * half + r]);
        a[2 * half + r] = mma::pack_bf16(x.x * d0, x.y * d1);
      }
    }
#pragma unroll
    for (int n0 = 0; n0 < kD; n0 += 16) {
      uint32_t b[4];
      mma::ldmatrix_x4_trans(b, ks + (16 * kk + lane % 8 + 8 * ((lane / 8) % 2)) * S::kLd + n0 + 8 * (lane / 16));
      mma::mma_bf16(st[n0 / 8], a, b[0], b[1]);
      mma::mma_bf16(st[n0 / 8 + 1], a, b[2], b[3]);
    }
  }
}

// State element (value dim dv, key dim dk) of accumulator tile j, entry e, for this thread.
__device__ __forceinline__ int state_offset(int kD, int warp, int lane, int j, int e) {
  const int dv = 16 * warp + lane / 4 + 8 * (e / 2);
  const int dk = 8 * j + 2 * (lane % 4) + (e % 2);
  return dk * kD + dv;
}

// Decay table e^{-s n}, n = 0..64, in shared memory.
template <int kD>
__device__ __forceinline__ void fill_decay(float* decay, float s) {
  for (int n = threadIdx.x; n <= PrefillShape<kD>::kChunk; n += PrefillShape<kD>::kThreads) {
    decay[n] = expf(-s * static_cast<float>(n));
  }
}

struct PrefillArgs {
  const uint16_t* q;
  const uint16_t* k;
  const uint16_t* v;
  int64_t token_stride, head_stride;
  void* out;
  float* states;
  const float* slopes;
  const int32_t* cu_seqlens;
  const int32_t* slot_idx;
  float* ws;  // [fine segments, H, D, D]
  int num_seqs, num_heads, seg_len;  // seg_len: fine segment (kernels 1, 2), a multiple of 64
  int group;                         // kernel 3 runs groups of `group` consecutive fine segments
};

// Fine segments whose local state some group needs: those before the start of the last group.
__device__ __forceinline__ int needed_segments(int count, int group) { return (count - 1) / group * group; }

// ---- kernel 1: segment-local states (all segments but each sequence's last) ----------------------
template <int kD>
__global__ void __launch_bounds__(PrefillShape<kD>::kThreads, 2) lightning_local_state_kernel(PrefillArgs a) {
  using S = PrefillShape<kD>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* stages = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  float* decay = reinterpret_cast<float*>(smem_raw + (S::kStages * S::kStage + S::kChunk * S::kLdP) * 2);
  int seq, seg;
  if (!find_item(a.cu_seqlens, a.num_seqs, a.seg_len, blockIdx.x, seq, seg)) return;
  const int h = blockIdx.y;
  const int seq_begin = a.cu_seqlens[seq], seq_end = a.cu_seqlens[seq + 1];
  const int count = (seq_end - seq_begin + a.seg_len - 1) / a.seg_len;
  if (seg >= needed_segments(count, a.group)) return;  // inside the last group: never needed (always full length)
  const int t_begin = seq_begin + seg * a.seg_len;
  const int t_end = t_begin + a.seg_len;
  fill_decay<kD>(decay, a.slopes[h]);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float st[S::kNTiles][4] = {};
  const int64_t head_off = static_cast<int64_t>(h) * a.head_stride;
  auto chunk_ptr = [&](const uint16_t* base, int t0) { return base + t0 * a.token_stride + head_off; };
  const int num_chunks = (t_end - t_begin + S::kChunk - 1) / S::kChunk;
  for (int c = 0; c < S::kStages && c < num_chunks; ++c) {
    const int t0 = t_begin + c * S::kChunk;
    load_chunk<kD, 1>(stages + c * S::kStage, nullptr, chunk_ptr(a.k, t0), chunk_ptr(a.v, t0), a.token_stride,
                      min(S::kChunk, t_end - t0));
    mma::cp_async_commit();
  }
  for (int c = 0; c < num_chunks; ++c) {
    if (c + 1 < num_chunks) mma::cp_async_wait<1>(); else mma::cp_async_wait<0>();
    __syncthreads();
    const __nv_bfloat16* stage = stages + (c % S::kStages) * S::kStage;
    const int m = min(S::kChunk, t_end - (t_begin + c * S::kChunk));
    update_state<kD>(st, stage + 2 * S::kTile, stage + S::kTile, decay, m);
    __syncthreads();
    if (c + S::kStages < num_chunks) {
      const int t0 = t_begin + (c + S::kStages) * S::kChunk;
      load_chunk<kD, 1>(stages + (c % S::kStages) * S::kStage, nullptr, chunk_ptr(a.k, t0), chunk_ptr(a.v, t0),
                        a.token_stride, min(S::kChunk, t_end - t0));
      mma::cp_async_commit();
    }
  }
  float* out = a.ws + (static_cast<int64_t>(blockIdx.x) * a.num_heads + h) * kD * kD;
#pragma unroll
  for (int j = 0; j < S::kNTiles; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) out[state_offset(kD, warp, lane, j, e)] = st[j][e];
}

// ---- kernel 2: states entering each segment (elementwise over D*D, sequential over segments) ----
template <int kD>
__global__ void lightning_segment_scan_kernel(PrefillArgs a) {
  const int seq = blockIdx.z, h = blockIdx.y;
  int first, count;
  seq_items(a.cu_seqlens, seq, a.seg_len, first, count);
  const int e4 = blockIdx.x * blockDim.x + threadIdx.x;  // float4 index within D*D
  if (count == 0 || e4 >= kD * kD / 4) return;
  const float s = a.slopes[h];
  float4 r = reinterpret_cast<const float4*>(
      a.states + (static_cast<int64_t>(a.slot_idx[seq]) * a.num_heads + h) * kD * kD)[e4];
  const int needed = needed_segments(count, a.group);
  const float d = expf(-s * static_cast<float>(a.seg_len));  // decay across one full fine segment
  for (int p = 0; p <= needed; p += 1) {  // S_in of every fine segment up to the last group's start
    float4* w = reinterpret_cast<float4*>(a.ws + (static_cast<int64_t>(first + p) * a.num_heads + h) * kD * kD) + e4;
    float4 local = make_float4(0.f, 0.f, 0.f, 0.f);
    if (p < needed) local = *w;
    *w = r;
    r = make_float4(d * r.x + local.x, d * r.y + local.y, d * r.z + local.z, d * r.w + local.w);
  }
}

// ---- kernel 3: outputs of each segment from its entering state; final state to the slot ---------
// kMinBlocks: blocks per SM the register budget is cut for (2: <= 128 registers, two blocks share an
// SM and hide each other's barrier and mma latency). kSplit: S enters Q.S as bf16 hi + lo (exact to
// ~2^-16); false: hi only (one more bf16 rounding, 64 fewer mma per warp and chunk at D = 128).
template <int kD, typename OutT, int kMinBlocks, bool kSplit>
__global__ void __launch_bounds__(PrefillShape<kD>::kThreads, kMinBlocks) lightning_output_kernel(PrefillArgs a) {
  using S = PrefillShape<kD>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* stages = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  auto* ps = stages + S::kStages * S::kStage;  // masked, decayed scores P [64, 64] bf16
  float* decay = reinterpret_cast<float*>(smem_raw + (S::kStages * S::kStage + S::kChunk * S::kLdP) * 2);
  int seq, grp;
  const int group_len = a.seg_len * a.group;
  if (!find_item(a.cu_seqlens, a.num_seqs, group_len, blockIdx.x, seq, grp)) return;
  const int h = blockIdx.y;
  int first_fine, fine_count;
  seq_items(a.cu_seqlens, seq, a.seg_len, first_fine, fine_count);
  const int seq_begin = a.cu_seqlens[seq], seq_end = a.cu_seqlens[seq + 1];
  const int t_begin = seq_begin + grp * group_len;
  const int t_end = min(seq_end, t_begin + group_len);
  const bool last = t_end == seq_end;
  fill_decay<kD>(decay, a.slopes[h]);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;

  float st[S::kNTiles][4];
  {
    const float* in = a.ws + (static_cast<int64_t>(first_fine + grp * a.group) * a.num_heads + h) * kD * kD;
#pragma unroll
    for (int j = 0; j < S::kNTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[j][e] = in[state_offset(kD, warp, lane, j, e)];
  }
  const int64_t head_off = static_cast<int64_t>(h) * a.head_stride;
  auto chunk_ptr = [&](const uint16_t* base, int t0) { return base + t0 * a.token_stride + head_off; };
  const int num_chunks = (t_end - t_begin + S::kChunk - 1) / S::kChunk;
  for (int c = 0; c < S::kStages && c < num_chunks; ++c) {
    const int t0 = t_begin + c * S::kChunk;
    load_chunk<kD, 0>(stages + c * S::kStage, chunk_ptr(a.q, t0), chunk_ptr(a.k, t0), chunk_ptr(a.v, t0),
                      a.token_stride, min(S::kChunk, t_end - t0));
    mma::cp_async_commit();
  }
  const int64_t out_token_stride = static_cast<int64_t>(a.num_heads) * kD;
  OutT* out_head = static_cast<OutT*>(a.out) + static_cast<int64_t>(h) * kD + 16 * warp + 2 * t;

  for (int c = 0; c < num_chunks; ++c) {
    if (c + 1 < num_chunks) mma::cp_async_wait<1>(); else mma::cp_async_wait<0>();
    __syncthreads();
    const __nv_bfloat16* qs = stages + (c % S::kStages) * S::kStage;
    const __nv_bfloat16* ks = qs + S::kTile;
    const __nv_bfloat16* vs = ks + S::kTile;
    const int t0 = t_begin + c * S::kChunk;
    const int m = min(S::kChunk, t_end - t0);
    const int m_tiles = (m + 15) / 16;

    // (1) P = (Q K^T) . M for the 10 lower-triangular 16x16 tiles, spread over the warps.
    for (int tile = warp; tile < 10; tile += S::kWarps) {
      const int ti = tile < 1 ? 0 : tile < 3 ? 1 : tile < 6 ? 2 : 3;  // row tile
      const int tj = tile - ti * (ti + 1) / 2;                       // col tile <= ti
      if (ti >= m_tiles) continue;
      // Two accumulator pairs (even / odd kk): dependent mma chains of kD/32 instead of kD/16.
      float acc[2][4] = {}, acc2[2][4] = {};
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        uint32_t qa[4], kb[4];
        mma::ldmatrix_x4(qa, qs + (16 * ti + lane % 8 + 8 * ((lane / 8) % 2)) * S::kLd + 16 * kk + 8 * (lane / 16));
        mma::ldmatrix_x4(kb, ks + (16 * tj + lane % 8 + 8 * (lane / 16)) * S::kLd + 16 * kk + 8 * ((lane / 8) % 2));
        float (&x0)[4] = kk % 2 ? acc2[0] : acc[0];
        float (&x1)[4] = kk % 2 ? acc2[1] : acc[1];
        mma::mma_bf16(x0, qa, kb[0], kb[1]);
        mma::mma_bf16(x1, qa, kb[2], kb[3]);
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] += acc2[nt][e];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) {
          const int i = 16 * ti + g + 8 * rh;
          const int j = 16 * tj + 8 * nt + 2 * t;
          const float p0 = j <= i ? acc[nt][2 * rh] * decay[i - j] : 0.f;
          const float p1 = j + 1 <= i ? acc[nt][2 * rh + 1] * decay[i - j - 1] : 0.f;
          *reinterpret_cast<uint32_t*>(ps + i * S::kLdP + j) = mma::pack_bf16(p0, p1);
        }
      }
    }

    // (2) O = diag(e^{-s(i+1)}) Q S with S = S_hi + S_lo taken from the state accumulators.
    float o[4][2][4] = {};
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t bhi[2][2], blo[2][2];  // [value-dim half][b0, b1]
#pragma unroll
      for (int half = 0; half < 2; ++half) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float x0 = st[2 * kk + r][2 * half], x1 = st[2 * kk + r][2 * half + 1];
          bhi[half][r] = mma::pack_bf16(x0, x1);
          if constexpr (kSplit) {
            const float2 hi = mma::unpack_bf16(bhi[half][r]);
            blo[half][r] = mma::pack_bf16(x0 - hi.x, x1 - hi.y);
          }
        }
      }
      // Q is read from shared memory once per (kk, mt) and used for hi and lo: shared-memory
      // bandwidth, not mma latency, is the limit here (every warp reads all of Q; ncu: L1 71% busy).
      // hi of both halves before lo, so consecutive mma never share an accumulator.
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        if (mt >= m_tiles) break;
        uint32_t qa[4];
        mma::ldmatrix_x4(qa, qs + (16 * mt + lane % 8 + 8 * ((lane / 8) % 2)) * S::kLd + 16 * kk + 8 * (lane / 16));
#pragma unroll
        for (int half = 0; half < 2; ++half) mma::mma_bf16(o[mt][half], qa, bhi[half][0], bhi[half][1]);
        if constexpr (kSplit) {
#pragma unroll
          for (int half = 0; half < 2; ++half) mma::mma_bf16(o[mt][half], qa, blo[half][0], blo[half][1]);
        }
      }
    }
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
      const float d0 = decay[min(16 * mt + g + 1, S::kChunk)], d1 = decay[min(16 * mt + g + 9, S::kChunk)];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        o[mt][half][0] *= d0, o[mt][half][1] *= d0, o[mt][half][2] *= d1, o[mt][half][3] *= d1;
      }
    }
    __syncthreads();  // P complete

    // (3) O += P V for this warp's 16 value dims.
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
      if (mt >= m_tiles) break;
#pragma unroll
      for (int kk = 0; kk <= mt; ++kk) {
        uint32_t pa[4], vb[4];
        mma::ldmatrix_x4(pa, ps + (16 * mt + lane % 8 + 8 * ((lane / 8) % 2)) * S::kLdP + 16 * kk + 8 * (lane / 16));
        mma::ldmatrix_x4_trans(vb, vs + (16 * kk + lane % 8 + 8 * ((lane / 8) % 2)) * S::kLd + 16 * warp + 8 * (lane / 16));
        mma::mma_bf16(o[mt][0], pa, vb[0], vb[1]);
        mma::mma_bf16(o[mt][1], pa, vb[2], vb[3]);
      }
    }
    // (4) store the chunk's outputs
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
      for (int rh = 0; rh < 2; ++rh) {
        const int i = 16 * mt + g + 8 * rh;
        if (i >= m) continue;
        OutT* row = out_head + static_cast<int64_t>(t0 + i) * out_token_stride;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const float x0 = o[mt][half][2 * rh], x1 = o[mt][half][2 * rh + 1];
          if constexpr (sizeof(OutT) == 4) {
            *reinterpret_cast<float2*>(row + 8 * half) = make_float2(x0, x1);
          } else {
            *reinterpret_cast<uint32_t*>(row + 8 * half) = mma::pack_bf16(x0, x1);
          }
        }
      }
    }
    // (5) state update with this chunk
    update_state<kD>(st, vs, ks, decay, m);
    __syncthreads();  // stage and P free
    if (c + S::kStages < num_chunks) {
      const int tn = t_begin + (c + S::kStages) * S::kChunk;
      load_chunk<kD, 0>(stages + (c % S::kStages) * S::kStage, chunk_ptr(a.q, tn), chunk_ptr(a.k, tn),
                        chunk_ptr(a.v, tn), a.token_stride, min(S::kChunk, t_end - tn));
      mma::cp_async_commit();
    }
  }
  if (last) {
    float* slot = a.states + (static_cast<int64_t>(a.slot_idx[seq]) * a.num_heads + h) * kD * kD;
#pragma unroll
    for (int j = 0; j < S::kNTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) slot[state_offset(kD, warp, lane, j, e)] = st[j][e];
  }
}

// ---- decode: one block per (column slice, head, sequence) ---------------------------------------
// Threads own 4 consecutive value dims (one float4 of each state row) and stride over key dims.
template <int kD>
struct DecodeShape {
  static constexpr int kThreads = 256;
  static constexpr int kSplit = kD >= 64 ? 2 : 1;  // value-dim slices per head (8 loads in flight per thread at D=128)
  static constexpr int kCols = kD / kSplit;
  static constexpr int kColGroups = kCols / 4;
  static constexpr int kRowsPerPass = kThreads / kColGroups;
  static constexpr int kRowsPerThread = (kD + kRowsPerPass - 1) / kRowsPerPass;
};

__device__ __forceinline__ float bf16_at(const uint16_t* p) { return __uint_as_float(static_cast<uint32_t>(*p) << 16); }

template <int kD, typename OutT>
__global__ void __launch_bounds__(256) lightning_decode_kernel(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                                               const uint16_t* __restrict__ v, int64_t token_stride,
                                                               int64_t head_stride, OutT* __restrict__ out,
                                                               float* __restrict__ states, const float* __restrict__ slopes,
                                                               const int32_t* __restrict__ slot_idx, int num_heads) {
  using S = DecodeShape<kD>;
  const int slice = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int cg = threadIdx.x % S::kColGroups, r0 = threadIdx.x / S::kColGroups;
  const int col = slice * S::kCols + 4 * cg;
  const int64_t in_off = b * token_stride + h * head_stride;
  float* state = states + (static_cast<int64_t>(slot_idx[b]) * num_heads + h) * kD * kD;
  const float decay = expf(-slopes[h]);
  float4 rows[S::kRowsPerThread];
#pragma unroll
  for (int i = 0; i < S::kRowsPerThread; ++i) {
    const int r = r0 + i * S::kRowsPerPass;
    if (r < kD) rows[i] = __ldcs(reinterpret_cast<const float4*>(state + r * kD + col));
  }
  float vv[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) vv[c] = bf16_at(v + in_off + col + c);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int i = 0; i < S::kRowsPerThread; ++i) {
    const int r = r0 + i * S::kRowsPerPass;
    if (r >= kD) continue;
    const float kr = bf16_at(k + in_off + r), qr = bf16_at(q + in_off + r);
    float4 x = rows[i];
    x.x = decay * x.x + kr * vv[0];
    x.y = decay * x.y + kr * vv[1];
    x.z = decay * x.z + kr * vv[2];
    x.w = decay * x.w + kr * vv[3];
    __stcs(reinterpret_cast<float4*>(state + r * kD + col), x);
    acc[0] += qr * x.x, acc[1] += qr * x.y, acc[2] += qr * x.z, acc[3] += qr * x.w;
  }
  __shared__ float4 partial[S::kThreads];
  partial[threadIdx.x] = make_float4(acc[0], acc[1], acc[2], acc[3]);
  __syncthreads();
  if (threadIdx.x < S::kColGroups) {
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int r = 0; r < S::kRowsPerPass && r < kD; ++r) {
      const float4 p = partial[r * S::kColGroups + threadIdx.x];
      sum.x += p.x, sum.y += p.y, sum.z += p.z, sum.w += p.w;
    }
    OutT* o = out + (static_cast<int64_t>(b) * num_heads + h) * kD + col;
    if constexpr (sizeof(OutT) == 4) {
      *reinterpret_cast<float4*>(o) = sum;
    } else {
      uint2 packed = make_uint2(mma::pack_bf16(sum.x, sum.y), mma::pack_bf16(sum.z, sum.w));
      *reinterpret_cast<uint2*>(o) = packed;
    }
  }
}

// ---- launchers -----------------------------------------------------------------------------------
struct PrefillPlan {
  int seg_len = 0;     // tokens per fine segment (local states, scan), a multiple of 64
  int group = 1;       // fine segments per output block
  int max_items = 0;   // upper bound of the number of fine segments over all sequences
  int max_groups = 0;  // upper bound of the number of groups
};
// Fine segments per output group: the local-state pass then runs on `kGroup` times more blocks than
// the output pass (it would otherwise run on half of the GPU for two groups per sequence).
constexpr int64_t kGroup = 4;
// Output blocks per SM when the caller leaves blocks_per_sm at 0 (measured, bench/gpu/NOTES.md): two
// (128 registers) gain ~4% from 64k tokens on; below, the extra groups cost more than they give
// (4k: 0.24 -> 0.37 ms).
constexpr int64_t kTwoBlocksFromTokens = 65536;
int64_t output_blocks_per_sm(const LightningPrefillCudaParams& p) {
  if (p.blocks_per_sm == 1 || p.blocks_per_sm == 2) return p.blocks_per_sm;
  return p.num_tokens >= kTwoBlocksFromTokens ? 2 : 1;
}

KernelStatus make_plan(const LightningPrefillCudaParams& p, PrefillPlan& plan) {
  int64_t target = p.target_ctas;
  if (target <= 0) {
    int dev = 0, sms = 0;
    FULGUR_CUDA_CHECK(cudaGetDevice(&dev));
    FULGUR_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    target = static_cast<int64_t>(sms) * output_blocks_per_sm(p);
  }
  const int64_t per_seq = std::max<int64_t>(1, target / std::max<int64_t>(1, p.num_heads));
  const int64_t fine_per_seq = per_seq * kGroup;
  int64_t seg = (std::max<int64_t>(p.num_tokens, 1) + fine_per_seq - 1) / fine_per_seq;
  seg = std::max<int64_t>(64, (seg + 63) / 64 * 64);
  plan.seg_len = static_cast<int>(seg);
  plan.group = static_cast<int>(kGroup);
  plan.max_items = static_cast<int>(p.num_seqs + p.num_tokens / seg);
  plan.max_groups = static_cast<int>(p.num_seqs + p.num_tokens / (seg * kGroup));
  return kernel_ok();
}

template <int kD, typename OutT>
KernelStatus launch_prefill(const PrefillArgs& a, const PrefillPlan& plan, int64_t blocks_per_sm, bool split,
                            cudaStream_t stream) {
  using S = PrefillShape<kD>;
  static_assert(S::kSmemBytes <= 227 * 1024);
  // Two blocks per SM fit in shared memory: 2 * (kSmemBytes + 1 KiB reserved) <= 228 KiB at D = 128.
  static_assert(2 * (S::kSmemBytes + 1024) <= 228 * 1024);
  auto* out_kernel = blocks_per_sm == 1 ? (split ? lightning_output_kernel<kD, OutT, 1, true>
                                                 : lightning_output_kernel<kD, OutT, 1, false>)
                                        : (split ? lightning_output_kernel<kD, OutT, 2, true>
                                                 : lightning_output_kernel<kD, OutT, 2, false>);
  FULGUR_CUDA_CHECK(cudaFuncSetAttribute(lightning_local_state_kernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(S::kSmemBytes)));
  FULGUR_CUDA_CHECK(cudaFuncSetAttribute(out_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(S::kSmemBytes)));
  const dim3 grid(static_cast<unsigned>(plan.max_items), static_cast<unsigned>(a.num_heads));
  const dim3 out_grid(static_cast<unsigned>(plan.max_groups), static_cast<unsigned>(a.num_heads));
  lightning_local_state_kernel<kD><<<grid, S::kThreads, S::kSmemBytes, stream>>>(a);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  const dim3 scan_grid((kD * kD / 4 + 255) / 256, static_cast<unsigned>(a.num_heads), static_cast<unsigned>(a.num_seqs));
  lightning_segment_scan_kernel<kD><<<scan_grid, 256, 0, stream>>>(a);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  out_kernel<<<out_grid, S::kThreads, S::kSmemBytes, stream>>>(a);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

template <typename OutT>
KernelStatus dispatch_prefill(const LightningPrefillCudaParams& p, const PrefillArgs& a, const PrefillPlan& plan,
                              cudaStream_t stream) {
  const int64_t b = output_blocks_per_sm(p);
  switch (p.head_dim) {
    case 16: return launch_prefill<16, OutT>(a, plan, b, p.split_state, stream);
    case 32: return launch_prefill<32, OutT>(a, plan, b, p.split_state, stream);
    case 64: return launch_prefill<64, OutT>(a, plan, b, p.split_state, stream);
    case 128: return launch_prefill<128, OutT>(a, plan, b, p.split_state, stream);
    default: return kernel_error("lightning prefill (cuda): head_dim must be 16, 32, 64 or 128");
  }
}

template <int kD, typename OutT>
KernelStatus launch_decode(const LightningDecodeCudaParams& p, cudaStream_t stream) {
  using S = DecodeShape<kD>;
  const dim3 grid(S::kSplit, static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.num_seqs));
  lightning_decode_kernel<kD, OutT><<<grid, S::kThreads, 0, stream>>>(
      p.q, p.k, p.v, p.qkv_token_stride, p.qkv_head_stride, static_cast<OutT*>(p.out), p.states, p.slopes, p.slot_idx,
      static_cast<int>(p.num_heads));
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

template <typename OutT>
KernelStatus dispatch_decode(const LightningDecodeCudaParams& p, cudaStream_t stream) {
  switch (p.head_dim) {
    case 16: return launch_decode<16, OutT>(p, stream);
    case 32: return launch_decode<32, OutT>(p, stream);
    case 64: return launch_decode<64, OutT>(p, stream);
    case 128: return launch_decode<128, OutT>(p, stream);
    default: return kernel_error("lightning decode (cuda): head_dim must be 16, 32, 64 or 128");
  }
}

bool head_dim_supported(int64_t d) {
  for (int64_t x : kLightningHeadDims) {
    if (x == d) return true;
  }
  return false;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

// ---- entries -------------------------------------------------------------------------------------
size_t lightning_prefill_workspace_bytes(const LightningPrefillCudaParams& p) {
  PrefillPlan plan;
  if (!make_plan(p, plan).ok()) return 0;
  return static_cast<size_t>(plan.max_items) * static_cast<size_t>(p.num_heads) * static_cast<size_t>(p.head_dim) *
         static_cast<size_t>(p.head_dim) * sizeof(float);
}

KernelStatus lightning_prefill(const LightningPrefillCudaParams& p, Stream stream) {
  if (p.num_tokens < 0 || p.num_seqs < 0 || p.num_slots <= 0 || p.num_heads <= 0) {
    return kernel_error("lightning prefill (cuda): bad sizes");
  }
  if (!head_dim_supported(p.head_dim)) return kernel_error("lightning prefill (cuda): head_dim must be 16, 32, 64 or 128");
  if (p.num_seqs == 0) return kernel_ok();
  if (p.num_tokens > 0x7fffffff - 64 || p.num_heads > 65535 || p.num_seqs > 65535) {
    return kernel_error("lightning prefill (cuda): sizes exceed the grid");
  }
  if (!p.q || !p.k || !p.v || !p.out || !p.states || !p.slopes || !p.cu_seqlens || !p.slot_idx) {
    return kernel_error("lightning prefill (cuda): null pointer");
  }
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || p.qkv_token_stride % 8 || p.qkv_head_stride % 8) {
    return kernel_error("lightning prefill (cuda): q/k/v must be 16-byte aligned with strides a multiple of 8");
  }
  PrefillPlan plan;
  if (auto st = make_plan(p, plan); !st.ok()) return st;
  if (!p.workspace || p.workspace_bytes < lightning_prefill_workspace_bytes(p)) {
    return kernel_error("lightning prefill (cuda): workspace missing or too small");
  }
  const PrefillArgs a{p.q, p.k, p.v, p.qkv_token_stride, p.qkv_head_stride, p.out, p.states, p.slopes,
                      p.cu_seqlens, p.slot_idx, static_cast<float*>(p.workspace), static_cast<int>(p.num_seqs),
                      static_cast<int>(p.num_heads), plan.seg_len, plan.group};
  if (p.num_tokens == 0) return kernel_ok();
  return p.out_dtype == LightningOutDtype::kF32 ? dispatch_prefill<float>(p, a, plan, stream)
                                                : dispatch_prefill<__nv_bfloat16>(p, a, plan, stream);
}

KernelStatus lightning_decode(const LightningDecodeCudaParams& p, Stream stream) {
  if (p.num_seqs < 0 || p.num_slots <= 0 || p.num_heads <= 0) return kernel_error("lightning decode (cuda): bad sizes");
  if (!head_dim_supported(p.head_dim)) return kernel_error("lightning decode (cuda): head_dim must be 16, 32, 64 or 128");
  if (p.num_seqs == 0) return kernel_ok();
  if (p.num_heads > 65535 || p.num_seqs > 65535) return kernel_error("lightning decode (cuda): sizes exceed the grid");
  if (!p.q || !p.k || !p.v || !p.out || !p.states || !p.slopes || !p.slot_idx) {
    return kernel_error("lightning decode (cuda): null pointer");
  }
  if (!aligned16(p.states)) return kernel_error("lightning decode (cuda): states must be 16-byte aligned");
  return p.out_dtype == LightningOutDtype::kF32 ? dispatch_decode<float>(p, stream)
                                                : dispatch_decode<__nv_bfloat16>(p, stream);
}

}  // namespace fulgur::kernels::cuda
