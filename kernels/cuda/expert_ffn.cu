// Expert FFN on the GPU: bf16 weights through cuBLAS grouped GEMMs + a fused SwiGLU kernel, and int8
// weight-only experts through an mma.sync kernel that streams the int8 rows (kernels/cuda/expert_ffn.h).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/expert_ffn.h"
#include "kernels/cuda/mma.cuh"

#define FULGUR_CUBLAS_CHECK(stmt)                                                                            \
  do {                                                                                                       \
    if (cublasStatus_t fulgur_cublas_err = (stmt); fulgur_cublas_err != CUBLAS_STATUS_SUCCESS) {             \
      return ::fulgur::kernels::kernel_error(#stmt " failed at " __FILE__ ":" FULGUR_CUDA_STR(__LINE__));     \
    }                                                                                                        \
  } while (0)

namespace fulgur::kernels::cuda {

namespace {
constexpr int kMaxE = static_cast<int>(kExpertFfnMaxExperts);
constexpr int kSwigluThreads = 256;
constexpr int kI8Warps = 4;  // split-K over the warps of a block
constexpr int kI8Threads = 32 * kI8Warps;
constexpr int kI8Chunk = 64;  // k per warp and iteration: 16 bytes of each weight row per thread quad
constexpr int kQuantThreads = 256;

size_t align256(size_t n) { return (n + 255) / 256 * 256; }
size_t pointer_table_bytes(int64_t num_experts) { return align256(6 * sizeof(void*) * size_t(num_experts)); }
}  // namespace

// ==== bf16 path =====================================================================================

// ---- per-expert pointer arrays of the two grouped GEMMs, passed by value (12 KiB parameter) ---------
struct ExpertPointerTable {
  const void* p[6][kMaxE];  // A1 (w13), B1 (x), C1 (h13), A2 (w2), B2 (act), C2 (y); `count` used each
};

__global__ void write_pointer_table_kernel(const __grid_constant__ ExpertPointerTable table, int count,
                                           const void** out) {
  for (int i = threadIdx.x; i < 6 * count; i += blockDim.x) out[i] = table.p[i / count][i % count];
}

// ---- h13[r, i] = silu(h13[r, i]) * h13[r, inter + i], in place over the gate half -------------------
template <int kVec>
__global__ void __launch_bounds__(kSwigluThreads)
    swiglu_inplace_kernel(__nv_bfloat16* __restrict__ h13, int64_t rows, int64_t inter) {
  const int64_t per_row = inter / kVec, total = rows * per_row;
  for (int64_t v = blockIdx.x * int64_t(kSwigluThreads) + threadIdx.x; v < total;
       v += int64_t(gridDim.x) * kSwigluThreads) {
    const int64_t r = v / per_row, i = (v - r * per_row) * kVec;
    __nv_bfloat16* gate = h13 + r * 2 * inter + i;
    const __nv_bfloat16* up = gate + inter;
    if constexpr (kVec == 8) {
      common::Bf16x8 g = common::load_bf16x8(gate);
      const common::Bf16x8 u = common::load_bf16x8(up);
#pragma unroll
      for (int j = 0; j < 8; ++j) g.v[j] = g.v[j] / (1.f + expf(-g.v[j])) * u.v[j];
      common::store_bf16x8(gate, g);
    } else {
      const float g = __bfloat162float(*gate), u = __bfloat162float(*up);
      *gate = __float2bfloat16_rn(g / (1.f + expf(-g)) * u);
    }
  }
}

static KernelStatus launch_swiglu(__nv_bfloat16* h13, int64_t rows, int64_t inter, Stream stream) {
  const int vec = inter % 8 == 0 ? 8 : 1;  // h13 is 256-byte aligned; rows of 2 * inter
  const int64_t total = rows * (inter / vec);
  const int blocks = static_cast<int>(std::min<int64_t>((total + kSwigluThreads - 1) / kSwigluThreads, 132 * 16));
  if (vec == 8) {
    swiglu_inplace_kernel<8><<<blocks, kSwigluThreads, 0, stream>>>(h13, rows, inter);
  } else {
    swiglu_inplace_kernel<1><<<blocks, kSwigluThreads, 0, stream>>>(h13, rows, inter);
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

// Tuning (correctness-neutral): which GEMM mode `automatic` takes. Measured on one H200 (bench/gpu/NOTES.md):
// the per-expert loop reaches 500-660 TFLOP/s at 256+ rows per expert where the grouped call stays at
// ~250; at decode sizes (<= 64 rows per expert over many experts) the grouped call is ~10-20 % faster.
static ExpertGemmMode resolve_mode(ExpertGemmMode mode, const int32_t* off, int E) {
  if (mode != ExpertGemmMode::automatic) return mode;
  int active = 0, max_rows = 0;
  for (int e = 0; e < E; ++e) {
    const int n = off[e + 1] - off[e];
    active += n > 0;
    max_rows = std::max(max_rows, n);
  }
  return max_rows <= 64 && active >= 8 ? ExpertGemmMode::grouped : ExpertGemmMode::per_expert;
}

// cublasSetStream resets a handle's workspace to cuBLAS's own pool (documented), which would drop the workspace
// a caller set (devices/cuda/blas.h): set the stream only when the handle is not already on it.
static KernelStatus bind_stream(cublasHandle_t h, Stream s) {
  cudaStream_t current = nullptr;
  FULGUR_CUBLAS_CHECK(cublasGetStream(h, &current));
  if (current != s) FULGUR_CUBLAS_CHECK(cublasSetStream(h, s));
  return kernel_ok();
}

size_t expert_ffn_bf16_workspace_bytes(int64_t rows, int64_t num_experts, int64_t inter) {
  return pointer_table_bytes(num_experts) + align256(size_t(rows) * 2 * size_t(inter) * 2);
}

KernelStatus expert_ffn_bf16(const ExpertFfnBf16Params& p, Stream stream) {
  if (p.num_experts < 1 || p.num_experts > kExpertFfnMaxExperts) return kernel_error("expert_ffn_bf16: num_experts out of [1, 256]");
  if (p.hidden < 1 || p.inter < 1 || 2 * p.inter > INT32_MAX || p.hidden > INT32_MAX) {
    return kernel_error("expert_ffn_bf16: hidden / inter out of range");
  }
  if (p.host_expert_offsets == nullptr) return kernel_error("expert_ffn_bf16: host_expert_offsets is null");
  if (p.blas == nullptr) return kernel_error("expert_ffn_bf16: blas handle is null");
  const int E = static_cast<int>(p.num_experts), H = static_cast<int>(p.hidden), I = static_cast<int>(p.inter);
  const int32_t* off = p.host_expert_offsets;
  if (off[0] != 0) return kernel_error("expert_ffn_bf16: host_expert_offsets[0] != 0");
  for (int e = 0; e < E; ++e) {
    if (off[e + 1] < off[e]) return kernel_error("expert_ffn_bf16: host_expert_offsets decrease");
  }
  const int64_t rows = off[E];
  if (rows == 0) return kernel_ok();
  if (p.x == nullptr || p.w13 == nullptr || p.w2 == nullptr || p.y == nullptr) return kernel_error("expert_ffn_bf16: null pointer");
  if (p.workspace == nullptr || p.workspace_bytes < expert_ffn_bf16_workspace_bytes(rows, E, I) ||
      reinterpret_cast<uintptr_t>(p.workspace) % 256 != 0) {
    return kernel_error("expert_ffn_bf16: workspace missing, too small or not 256-byte aligned");
  }
  if (p.num_side_streams < 0 || p.num_side_streams > kExpertFfnMaxSideStreams) {
    return kernel_error("expert_ffn_bf16: num_side_streams out of [0, 7]");
  }
  for (int i = 0; i < p.num_side_streams; ++i) {
    if (p.side[i].stream == nullptr || p.side[i].stream == stream || p.side[i].blas == nullptr ||
        p.side[i].done == nullptr || p.side[i].blas == p.blas) {
      return kernel_error("expert_ffn_bf16: a side stream needs its own stream, cuBLAS handle and event");
    }
  }
  if (p.num_side_streams > 0 && p.fork == nullptr) return kernel_error("expert_ffn_bf16: side streams need a fork event");
  const auto* x = reinterpret_cast<const __nv_bfloat16*>(p.x);
  const auto* w13 = reinterpret_cast<const __nv_bfloat16*>(p.w13);
  const auto* w2 = reinterpret_cast<const __nv_bfloat16*>(p.w2);
  auto* y = reinterpret_cast<__nv_bfloat16*>(p.y);
  const void** table = static_cast<const void**>(p.workspace);
  auto* h13 = reinterpret_cast<__nv_bfloat16*>(static_cast<char*>(p.workspace) + pointer_table_bytes(E));
  cublasHandle_t blas = p.blas;
  if (auto s = bind_stream(blas, stream); !s.ok()) return s;
  const float one = 1.f, zero = 0.f;

  if (resolve_mode(p.mode, off, E) == ExpertGemmMode::per_expert) {
    const int S = 1 + p.num_side_streams;
    if (p.num_side_streams > 0) {
      FULGUR_CUDA_CHECK(cudaEventRecord(p.fork, stream));
      for (int i = 0; i < p.num_side_streams; ++i) {
        if (auto s = bind_stream(p.side[i].blas, p.side[i].stream); !s.ok()) return s;
        FULGUR_CUDA_CHECK(cudaStreamWaitEvent(p.side[i].stream, p.fork, 0));
      }
    }
    // Expert chains round-robin over the streams (experts with rows only, so every stream gets work).
    auto run_chains = [&]() -> KernelStatus {
      int next = 0;
      for (int e = 0; e < E; ++e) {
        const int n = off[e + 1] - off[e];
        if (n == 0) continue;
        const int si = next++ % S;
        const Stream st = si == 0 ? stream : p.side[si - 1].stream;
        cublasHandle_t h = si == 0 ? blas : p.side[si - 1].blas;
        __nv_bfloat16* h13e = h13 + int64_t(off[e]) * 2 * I;
        FULGUR_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, 2 * I, n, H, &one, w13 + int64_t(e) * 2 * I * H,
                                         CUDA_R_16BF, H, x + int64_t(off[e]) * H, CUDA_R_16BF, H, &zero, h13e,
                                         CUDA_R_16BF, 2 * I, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        if (S > 1) {
          if (auto s = launch_swiglu(h13e, n, I, st); !s.ok()) return s;
          FULGUR_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, H, n, I, &one, w2 + int64_t(e) * H * I,
                                           CUDA_R_16BF, I, h13e, CUDA_R_16BF, 2 * I, &zero, y + int64_t(off[e]) * H,
                                           CUDA_R_16BF, H, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
      }
      return kernel_ok();
    };
    const KernelStatus chains = run_chains();
    if (S > 1) {
      // Join on every path, failures included: the caller frees the buffers on `stream`, so whatever was
      // queued on a side stream must finish before `stream` moves on (or before we return, if the event fails).
      KernelStatus joined = kernel_ok();
      for (int i = 0; i < p.num_side_streams; ++i) {
        if (cudaEventRecord(p.side[i].done, p.side[i].stream) != cudaSuccess ||
            cudaStreamWaitEvent(stream, p.side[i].done, 0) != cudaSuccess) {
          (void)cudaGetLastError();
          (void)cudaStreamSynchronize(p.side[i].stream);
          joined = kernel_error("expert_ffn_bf16: joining a side stream failed (it was synchronised instead)");
        }
      }
      return chains.ok() ? joined : chains;
    }
    if (!chains.ok()) return chains;
    // One stream: all gate/up GEMMs, one SwiGLU over every row, all down GEMMs.
    if (auto s = launch_swiglu(h13, rows, I, stream); !s.ok()) return s;
    for (int e = 0; e < E; ++e) {
      const int n = off[e + 1] - off[e];
      if (n == 0) continue;
      FULGUR_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, H, n, I, &one, w2 + int64_t(e) * H * I,
                                       CUDA_R_16BF, I, h13 + int64_t(off[e]) * 2 * I, CUDA_R_16BF, 2 * I, &zero,
                                       y + int64_t(off[e]) * H, CUDA_R_16BF, H, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT));
    }
    return kernel_ok();
  }

  // Grouped: one group per expert with rows, in expert order. cuBLAS (column-major) computes
  // C^T = W . X^T: m = output features, n = the expert's rows, k = input features.
  ExpertPointerTable t{};
  std::vector<int> n_arr;
  n_arr.reserve(E);
  for (int e = 0; e < E; ++e) {
    const int n = off[e + 1] - off[e];
    if (n == 0) continue;
    const int g = static_cast<int>(n_arr.size());
    t.p[0][g] = w13 + int64_t(e) * 2 * I * H;
    t.p[1][g] = x + int64_t(off[e]) * H;
    t.p[2][g] = h13 + int64_t(off[e]) * 2 * I;
    t.p[3][g] = w2 + int64_t(e) * H * I;
    t.p[4][g] = h13 + int64_t(off[e]) * 2 * I;  // act: the gate half, row stride 2 * inter
    t.p[5][g] = y + int64_t(off[e]) * H;
    n_arr.push_back(n);
  }
  const int G = static_cast<int>(n_arr.size());
  write_pointer_table_kernel<<<1, 256, 0, stream>>>(t, G, table);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  const std::vector<cublasOperation_t> op_t(G, CUBLAS_OP_T), op_n(G, CUBLAS_OP_N);
  const std::vector<int> ones(G, 1), m1(G, 2 * I), k1(G, H), lda1(G, H), ldb1(G, H), ldc1(G, 2 * I);
  const std::vector<int> m2(G, H), k2(G, I), lda2(G, I), ldb2(G, 2 * I), ldc2(G, H);
  const std::vector<float> alpha(G, 1.f), beta(G, 0.f);
  FULGUR_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(
      blas, op_t.data(), op_n.data(), m1.data(), n_arr.data(), k1.data(), alpha.data(), table + 0 * G, CUDA_R_16BF,
      lda1.data(), table + 1 * G, CUDA_R_16BF, ldb1.data(), beta.data(), const_cast<void* const*>(table + 2 * G),
      CUDA_R_16BF, ldc1.data(), G, ones.data(), CUBLAS_COMPUTE_32F));
  if (auto s = launch_swiglu(h13, rows, I, stream); !s.ok()) return s;
  FULGUR_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(
      blas, op_t.data(), op_n.data(), m2.data(), n_arr.data(), k2.data(), alpha.data(), table + 3 * G, CUDA_R_16BF,
      lda2.data(), table + 4 * G, CUDA_R_16BF, ldb2.data(), beta.data(), const_cast<void* const*>(table + 5 * G),
      CUDA_R_16BF, ldc2.data(), G, ones.data(), CUBLAS_COMPUTE_32F));
  return kernel_ok();
}

// ==== int8 weight-only path =========================================================================

// Fragment mapping. A warp covers two m16 tiles of weight rows (tile 0 and 1) and, per iteration, a
// 64-wide k chunk. Thread (g = lane / 4, q = lane % 4) loads 16 consecutive int8 weights of rows g and
// g + 8 at k = chunk + 16 q, and 16 consecutive bf16 of token g's x row at the same k. The mma's
// logical k columns 2q, 2q+1 | 2q+8, 2q+9 of step s map to this thread's k offsets 4s + 0, 1 | 2, 3, the
// same map for A (weights) and B (x), so the sum over the 64 k values is unchanged.
__device__ __forceinline__ uint32_t s8x2_to_bf16x2(uint32_t word, int shift) {
  const float lo = static_cast<float>(static_cast<int8_t>((word >> shift) & 0xffu));
  const float hi = static_cast<float>(static_cast<int8_t>((word >> (shift + 8)) & 0xffu));
  return mma::pack_bf16(lo, hi);  // exact: |q| <= 127 fits bf16's 8-bit significand
}

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.f + expf(-g)) * u; }

// Weight type W: int8_t (per-row scales after the sum) or __nv_bfloat16 (no scales: the bf16 experts with
// their sizes read on the device, expert_ffn_bf16_device). A bf16 thread loads 32 bytes per weight row and
// chunk instead of 16; the fragments take the bf16 pairs as they are.
// kGated: w = w13 [E, 2 * half_rows, K]; the block covers rows r0..r0+16 of w1 (tile 0) and of w3
// (tile 1) and writes act [rows, half_rows]. Otherwise w = w2 [E, R, K]; rows r0..r0+32, writes y [rows, R].
// kU chunks per warp and iteration (with one iteration prefetched): 2 x kU x 2 KiB of weights in flight
// per warp (int8; twice that for bf16); kU = 2 for the small int8 token tiles, where registers are plentiful
// and bandwidth is the limit.
template <class W, int kNT, bool kGated,
          int kU = (sizeof(W) == 1 && kNT <= 2 ? 2 : 1)>
__global__ void __launch_bounds__(kI8Threads)
    expert_int8_kernel(const __nv_bfloat16* __restrict__ x, const int32_t* __restrict__ offsets,
                       const W* __restrict__ w, const float* __restrict__ scale, __nv_bfloat16* __restrict__ out,
                       int K, int R, int half_rows) {
  constexpr bool kBf16 = sizeof(W) == 2;
  constexpr int kLoads = kBf16 ? 4 : 2;  // 16-byte loads per tile and chunk: rows g, g + 8 (x2 for bf16)
  constexpr int kTok = kNT * 8;
  __shared__ float red[kI8Warps][2][kTok][16];
  const int e = blockIdx.y;
  const int row_begin = offsets[e];
  const int n_rows = offsets[e + 1] - row_begin;
  if (n_rows <= 0) return;  // no tokens: no weight bytes read
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int r0 = kGated ? blockIdx.x * 16 : blockIdx.x * 32;
  const int64_t expert_row0 = int64_t(e) * R;
  const W* w_tile[2] = {w + (expert_row0 + r0) * K, w + (expert_row0 + r0 + (kGated ? half_rows : 16)) * K};
  const int num_chunks = K / kI8Chunk;
  const int out_ld = kGated ? half_rows : R;

  for (int tile = 0; tile < n_rows; tile += kTok) {
    float acc[2][kNT][4];
#pragma unroll
    for (int t = 0; t < 2; ++t)
#pragma unroll
      for (int j = 0; j < kNT; ++j) acc[t][j][0] = acc[t][j][1] = acc[t][j][2] = acc[t][j][3] = 0.f;
    const __nv_bfloat16* x_row[kNT];
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
      const int tok = min(tile + j * 8 + g, n_rows - 1);  // past the end: a valid row, result not stored
      x_row[j] = x + int64_t(row_begin + tok) * K + q * 16;
    }
    int4 cur[kU][2][kLoads], nxt[kU][2][kLoads];
    auto load_w = [&](int4 (&dst)[kU][2][kLoads], int chunk) {
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (chunk + u * kI8Warps >= num_chunks) break;
        const int64_t k0 = int64_t(chunk + u * kI8Warps) * kI8Chunk + q * 16;
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          const int4* row_g = reinterpret_cast<const int4*>(w_tile[t] + int64_t(g) * K + k0);
          const int4* row_g8 = reinterpret_cast<const int4*>(w_tile[t] + int64_t(g + 8) * K + k0);
          if constexpr (kBf16) {
            dst[u][t][0] = __ldcs(row_g), dst[u][t][1] = __ldcs(row_g + 1);
            dst[u][t][2] = __ldcs(row_g8), dst[u][t][3] = __ldcs(row_g8 + 1);
          } else {
            dst[u][t][0] = __ldcs(row_g);
            dst[u][t][1] = __ldcs(row_g8);
          }
        }
      }
    };
    if (warp < num_chunks) load_w(cur, warp);
    for (int c0 = warp; c0 < num_chunks; c0 += kU * kI8Warps) {
      if (c0 + kU * kI8Warps < num_chunks) load_w(nxt, c0 + kU * kI8Warps);
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int c = c0 + u * kI8Warps;
        if (c >= num_chunks) break;
        uint32_t a[2][4][4];  // [tile][step][fragment register]
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          if constexpr (kBf16) {
            // Word m of a row's 16 values holds k offsets 2m, 2m + 1: step s takes words 2s | 2s + 1.
            const int4 g0 = cur[u][t][0], g1 = cur[u][t][1], h0 = cur[u][t][2], h1 = cur[u][t][3];
            const uint32_t row_g[8] = {uint32_t(g0.x), uint32_t(g0.y), uint32_t(g0.z), uint32_t(g0.w),
                                       uint32_t(g1.x), uint32_t(g1.y), uint32_t(g1.z), uint32_t(g1.w)};
            const uint32_t row_g8[8] = {uint32_t(h0.x), uint32_t(h0.y), uint32_t(h0.z), uint32_t(h0.w),
                                        uint32_t(h1.x), uint32_t(h1.y), uint32_t(h1.z), uint32_t(h1.w)};
#pragma unroll
            for (int s = 0; s < 4; ++s) {
              a[t][s][0] = row_g[2 * s];
              a[t][s][1] = row_g8[2 * s];
              a[t][s][2] = row_g[2 * s + 1];
              a[t][s][3] = row_g8[2 * s + 1];
            }
          } else {
            const int4 lo = cur[u][t][0], hi = cur[u][t][1];
            const uint32_t lo_rows[4] = {uint32_t(lo.x), uint32_t(lo.y), uint32_t(lo.z), uint32_t(lo.w)};
            const uint32_t hi_rows[4] = {uint32_t(hi.x), uint32_t(hi.y), uint32_t(hi.z), uint32_t(hi.w)};
#pragma unroll
            for (int s = 0; s < 4; ++s) {
              a[t][s][0] = s8x2_to_bf16x2(lo_rows[s], 0);
              a[t][s][1] = s8x2_to_bf16x2(hi_rows[s], 0);
              a[t][s][2] = s8x2_to_bf16x2(lo_rows[s], 16);
              a[t][s][3] = s8x2_to_bf16x2(hi_rows[s], 16);
            }
          }
        }
        const int64_t kc = int64_t(c) * kI8Chunk;
#pragma unroll
        for (int j = 0; j < kNT; ++j) {
          const uint4 x0 = __ldg(reinterpret_cast<const uint4*>(x_row[j] + kc));
          const uint4 x1 = __ldg(reinterpret_cast<const uint4*>(x_row[j] + kc + 8));
          const uint32_t xb[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
          for (int s = 0; s < 4; ++s) {
#pragma unroll
            for (int t = 0; t < 2; ++t) mma::mma_bf16(acc[t][j], a[t][s], xb[2 * s], xb[2 * s + 1]);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u)
#pragma unroll
        for (int t = 0; t < 2; ++t)
#pragma unroll
          for (int i = 0; i < kLoads; ++i) cur[u][t][i] = nxt[u][t][i];
    }
    // Split-K sum over the warps: red[warp][tile][token][row]
#pragma unroll
    for (int t = 0; t < 2; ++t) {
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        red[warp][t][j * 8 + 2 * q][g] = acc[t][j][0];
        red[warp][t][j * 8 + 2 * q + 1][g] = acc[t][j][1];
        red[warp][t][j * 8 + 2 * q][g + 8] = acc[t][j][2];
        red[warp][t][j * 8 + 2 * q + 1][g + 8] = acc[t][j][3];
      }
    }
    __syncthreads();
    if constexpr (kGated) {
      for (int idx = threadIdx.x; idx < kTok * 16; idx += kI8Threads) {
        const int tok = idx / 16, i = idx % 16;
        if (tile + tok >= n_rows) continue;
        float gate = 0.f, up = 0.f;
#pragma unroll
        for (int v = 0; v < kI8Warps; ++v) gate += red[v][0][tok][i], up += red[v][1][tok][i];
        if constexpr (!kBf16) gate *= scale[expert_row0 + r0 + i], up *= scale[expert_row0 + half_rows + r0 + i];
        gate = __bfloat162float(__float2bfloat16_rn(gate));
        up = __bfloat162float(__float2bfloat16_rn(up));
        out[int64_t(row_begin + tile + tok) * out_ld + r0 + i] = __float2bfloat16_rn(silu_mul(gate, up));
      }
    } else {
      for (int idx = threadIdx.x; idx < kTok * 32; idx += kI8Threads) {
        const int tok = idx / 32, rr = idx % 32;
        if (tile + tok >= n_rows) continue;
        float sum = 0.f;
#pragma unroll
        for (int v = 0; v < kI8Warps; ++v) sum += red[v][rr / 16][tok][rr % 16];
        if constexpr (!kBf16) sum *= scale[expert_row0 + r0 + rr];
        out[int64_t(row_begin + tile + tok) * out_ld + r0 + rr] = __float2bfloat16_rn(sum);
      }
    }
    __syncthreads();
  }
}

// The two launches of the device-sizes path for weights W (int8 with scales, or bf16 with none).
template <class W, int kNT>
static KernelStatus launch_device_sizes(const uint16_t* x_bits, const int32_t* offsets, const W* w13, const float* s13,
                                        const W* w2, const float* s2, uint16_t* y_bits, int E, int H, int I,
                                        __nv_bfloat16* act, Stream stream) {
  const auto* x = reinterpret_cast<const __nv_bfloat16*>(x_bits);
  expert_int8_kernel<W, kNT, true><<<dim3(I / 16, E), kI8Threads, 0, stream>>>(x, offsets, w13, s13, act, H, 2 * I, I);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  expert_int8_kernel<W, kNT, false><<<dim3(H / 32, E), kI8Threads, 0, stream>>>(
      act, offsets, w2, s2, reinterpret_cast<__nv_bfloat16*>(y_bits), I, H, 0);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

// Token tile from the host bound on any expert's rows (tuning; any tile is correct).
template <class W>
static KernelStatus dispatch_device_sizes(int64_t bound, const uint16_t* x, const int32_t* offsets, const W* w13,
                                          const float* s13, const W* w2, const float* s2, uint16_t* y, int E, int H,
                                          int I, __nv_bfloat16* act, Stream stream) {
  if (bound <= 8) return launch_device_sizes<W, 1>(x, offsets, w13, s13, w2, s2, y, E, H, I, act, stream);
  if (bound <= 16) return launch_device_sizes<W, 2>(x, offsets, w13, s13, w2, s2, y, E, H, I, act, stream);
  if (bound <= 32) return launch_device_sizes<W, 4>(x, offsets, w13, s13, w2, s2, y, E, H, I, act, stream);
  return launch_device_sizes<W, 8>(x, offsets, w13, s13, w2, s2, y, E, H, I, act, stream);
}

size_t expert_ffn_int8_workspace_bytes(int64_t max_rows, int64_t inter) {
  return align256(size_t(max_rows) * size_t(inter) * 2);
}

KernelStatus expert_ffn_int8(const ExpertFfnInt8Params& p, Stream stream) {
  if (p.num_experts < 1 || p.num_experts > kExpertFfnMaxExperts) return kernel_error("expert_ffn_int8: num_experts out of [1, 256]");
  if (p.hidden < 64 || p.hidden % 64 != 0 || p.hidden > (1 << 24)) return kernel_error("expert_ffn_int8: hidden must be a positive multiple of 64");
  if (p.inter < 64 || p.inter % 64 != 0 || p.inter > (1 << 24)) return kernel_error("expert_ffn_int8: inter must be a positive multiple of 64");
  if (p.max_rows < 0 || p.max_rows > INT32_MAX || p.max_rows_per_expert < 0) return kernel_error("expert_ffn_int8: max_rows out of range");
  if (p.max_rows == 0) return kernel_ok();
  if (p.x == nullptr || p.expert_offsets == nullptr || p.w13 == nullptr || p.w13_scale == nullptr || p.w2 == nullptr ||
      p.w2_scale == nullptr || p.y == nullptr) {
    return kernel_error("expert_ffn_int8: null pointer");
  }
  for (const void* ptr : {static_cast<const void*>(p.x), static_cast<const void*>(p.w13), static_cast<const void*>(p.w2),
                          static_cast<const void*>(p.y)}) {
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return kernel_error("expert_ffn_int8: x, w13, w2 and y must be 16-byte aligned");
  }
  if (p.workspace == nullptr || p.workspace_bytes < expert_ffn_int8_workspace_bytes(p.max_rows, p.inter) ||
      reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0) {
    return kernel_error("expert_ffn_int8: workspace missing, too small or not 16-byte aligned");
  }
  auto* act = static_cast<__nv_bfloat16*>(p.workspace);
  const int64_t bound = p.max_rows_per_expert > 0 ? std::min(p.max_rows_per_expert, p.max_rows) : p.max_rows;
  return dispatch_device_sizes<int8_t>(bound, p.x, p.expert_offsets, p.w13, p.w13_scale, p.w2, p.w2_scale, p.y,
                                       static_cast<int>(p.num_experts), static_cast<int>(p.hidden),
                                       static_cast<int>(p.inter), act, stream);
}

KernelStatus expert_ffn_bf16_device(const ExpertFfnBf16DeviceParams& p, Stream stream) {
  if (p.num_experts < 1 || p.num_experts > kExpertFfnMaxExperts) {
    return kernel_error("expert_ffn_bf16_device: num_experts out of [1, 256]");
  }
  if (p.hidden < 64 || p.hidden % 64 != 0 || p.hidden > (1 << 24)) {
    return kernel_error("expert_ffn_bf16_device: hidden must be a positive multiple of 64");
  }
  if (p.inter < 64 || p.inter % 64 != 0 || p.inter > (1 << 24)) {
    return kernel_error("expert_ffn_bf16_device: inter must be a positive multiple of 64");
  }
  if (p.max_rows < 0 || p.max_rows > INT32_MAX || p.max_rows_per_expert < 0) {
    return kernel_error("expert_ffn_bf16_device: max_rows out of range");
  }
  if (p.max_rows == 0) return kernel_ok();
  if (p.x == nullptr || p.expert_offsets == nullptr || p.w13 == nullptr || p.w2 == nullptr || p.y == nullptr) {
    return kernel_error("expert_ffn_bf16_device: null pointer");
  }
  for (const void* ptr : {static_cast<const void*>(p.x), static_cast<const void*>(p.w13), static_cast<const void*>(p.w2),
                          static_cast<const void*>(p.y)}) {
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) {
      return kernel_error("expert_ffn_bf16_device: x, w13, w2 and y must be 16-byte aligned");
    }
  }
  if (p.workspace == nullptr || p.workspace_bytes < expert_ffn_int8_workspace_bytes(p.max_rows, p.inter) ||
      reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0) {
    return kernel_error("expert_ffn_bf16_device: workspace missing, too small or not 16-byte aligned");
  }
  auto* act = static_cast<__nv_bfloat16*>(p.workspace);
  const int64_t bound = p.max_rows_per_expert > 0 ? std::min(p.max_rows_per_expert, p.max_rows) : p.max_rows;
  const auto* w13 = reinterpret_cast<const __nv_bfloat16*>(p.w13);
  const auto* w2 = reinterpret_cast<const __nv_bfloat16*>(p.w2);
  return dispatch_device_sizes<__nv_bfloat16>(bound, p.x, p.expert_offsets, w13, nullptr, w2, nullptr, p.y,
                                              static_cast<int>(p.num_experts), static_cast<int>(p.hidden),
                                              static_cast<int>(p.inter), act, stream);
}

// ---- row-wise quantiser: one block per row ----------------------------------------------------------
__global__ void __launch_bounds__(kQuantThreads)
    quantize_rows_int8_kernel(const __nv_bfloat16* __restrict__ w, int64_t cols, int8_t* __restrict__ q,
                              float* __restrict__ scale) {
  __shared__ float warp_max[kQuantThreads / 32];
  const int64_t r = blockIdx.x;
  const __nv_bfloat16* row = w + r * cols;
  float amax = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += kQuantThreads) amax = fmaxf(amax, fabsf(__bfloat162float(row[c])));
  amax = common::warp_max(amax);
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = amax;
  __syncthreads();
  amax = 0.f;
#pragma unroll
  for (int i = 0; i < kQuantThreads / 32; ++i) amax = fmaxf(amax, warp_max[i]);
  const float s = amax > 0.f ? __fdiv_rn(amax, 127.f) : 1.f;
  if (threadIdx.x == 0) scale[r] = s;
  for (int64_t c = threadIdx.x; c < cols; c += kQuantThreads) {
    const float v = roundf(__fdiv_rn(__bfloat162float(row[c]), s));
    q[r * cols + c] = static_cast<int8_t>(fminf(fmaxf(v, -127.f), 127.f));
  }
}

// One block per row (its scale read once); 16 int8 per thread step -> two 16-byte bf16 stores when the row
// allows (cols % 16 == 0: every row start is then 16-byte aligned for q and 32-byte for w), else scalar.
template <bool kVec>
__global__ void dequantize_rows_int8_kernel(const int8_t* __restrict__ q, const float* __restrict__ scale, int64_t cols,
                                            __nv_bfloat16* __restrict__ w) {
  const int64_t r = blockIdx.x;
  const float s = scale[r];
  const int8_t* qr = q + r * cols;
  __nv_bfloat16* wr = w + r * cols;
  if constexpr (kVec) {
    for (int64_t c = threadIdx.x * 16; c < cols; c += int64_t(blockDim.x) * 16) {
      const int4 raw = *reinterpret_cast<const int4*>(qr + c);
      const int8_t* v = reinterpret_cast<const int8_t*>(&raw);
      uint4 out[2];
      auto* h = reinterpret_cast<__nv_bfloat162*>(out);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        h[i] = __floats2bfloat162_rn(__fmul_rn(static_cast<float>(v[2 * i]), s), __fmul_rn(static_cast<float>(v[2 * i + 1]), s));
      }
      reinterpret_cast<uint4*>(wr + c)[0] = out[0];
      reinterpret_cast<uint4*>(wr + c)[1] = out[1];
    }
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) wr[c] = __float2bfloat16_rn(__fmul_rn(static_cast<float>(qr[c]), s));
  }
}

KernelStatus dequantize_rows_int8(const int8_t* q, const float* scale, int64_t rows, int64_t cols, uint16_t* w,
                                  Stream stream) {
  if (rows < 0 || cols < 1 || rows > INT32_MAX) return kernel_error("dequantize_rows_int8: rows / cols out of range");
  if (rows == 0) return kernel_ok();
  if (q == nullptr || scale == nullptr || w == nullptr) return kernel_error("dequantize_rows_int8: null pointer");
  auto* out = reinterpret_cast<__nv_bfloat16*>(w);
  const bool vec = cols % 16 == 0 && reinterpret_cast<uintptr_t>(q) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  if (vec) {
    dequantize_rows_int8_kernel<true><<<static_cast<unsigned>(rows), 128, 0, stream>>>(q, scale, cols, out);
  } else {
    dequantize_rows_int8_kernel<false><<<static_cast<unsigned>(rows), 128, 0, stream>>>(q, scale, cols, out);
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus quantize_rows_int8(const QuantizeRowsInt8Params& p, Stream stream) {
  if (p.rows < 0 || p.cols < 1 || p.rows > INT32_MAX) return kernel_error("quantize_rows_int8: rows / cols out of range");
  if (p.rows == 0) return kernel_ok();
  if (p.w == nullptr || p.q == nullptr || p.scale == nullptr) return kernel_error("quantize_rows_int8: null pointer");
  quantize_rows_int8_kernel<<<static_cast<unsigned>(p.rows), kQuantThreads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(p.w), p.cols, p.q, p.scale);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

}  // namespace fulgur::kernels::cuda
