#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe_permute.h"

namespace fulgur::kernels::cuda {

namespace {
constexpr int kChunk = static_cast<int>(kMoePermuteChunk);
constexpr int kMaxE = static_cast<int>(kMoePermuteMaxExperts);
constexpr int kMaxK = static_cast<int>(kMoeUnpermuteMaxK);
constexpr int kScanThreads = kMaxE;  // one thread per expert
constexpr int kRankThreads = 256;    // steps 1 and 3: a chunk is kChunk / kRankThreads tiles
constexpr int kCopyThreads = 128;    // steps 4 and unpermute: one row per block

int64_t num_chunks(int64_t n) { return (n + kChunk - 1) / kChunk; }
}  // namespace

// ==== moe_permute ===================================================================================

// ---- step 1: chunk histograms [chunks, E] -----------------------------------------------------------
__global__ void __launch_bounds__(kRankThreads)
    moe_count_kernel(const int32_t* __restrict__ ids, int64_t n, int E, int32_t* __restrict__ chunk_counts) {
  __shared__ int32_t hist[kMaxE];
  for (int e = threadIdx.x; e < E; e += kRankThreads) hist[e] = 0;
  __syncthreads();
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t end = min(begin + kChunk, n);
  for (int64_t a = begin + threadIdx.x; a < end; a += kRankThreads) {
    const int32_t e = ids[a];
    if (e >= 0 && e < E) atomicAdd(&hist[e], 1);  // shared memory only: the counts do not depend on order
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += kRankThreads) chunk_counts[static_cast<int64_t>(blockIdx.x) * E + e] = hist[e];
}

// ---- step 2: one block; expert_offsets and each chunk's first row per expert --------------------------
__global__ void __launch_bounds__(kScanThreads)
    moe_scan_kernel(int32_t* __restrict__ chunk_counts, int64_t chunks, int E, int32_t* __restrict__ expert_offsets) {
  __shared__ int32_t offsets[kMaxE + 1];
  const int e = threadIdx.x;
  int32_t total = 0;
  if (e < E) {
    for (int64_t c = 0; c < chunks; ++c) total += chunk_counts[c * E + e];
    offsets[e + 1] = total;
  }
  __syncthreads();
  if (e == 0) {
    offsets[0] = 0;
    for (int i = 1; i <= E; ++i) offsets[i] += offsets[i - 1];
  }
  __syncthreads();
  if (e < E) {
    int32_t row = offsets[e];
    for (int64_t c = 0; c < chunks; ++c) {
      const int32_t count = chunk_counts[c * E + e];
      chunk_counts[c * E + e] = row;
      row += count;
    }
  }
  for (int i = e; i <= E; i += kScanThreads) expert_offsets[i] = offsets[i];
}

// ---- step 3: stable ranks -> inverse map and permuted_token -------------------------------------------
// Tiles of kRankThreads assignments in order; within a tile, an assignment's row is its chunk's next
// row for the expert + the expert's count in lower warps + its rank among its warp's peers.
__global__ void __launch_bounds__(kRankThreads)
    moe_scatter_kernel(const int32_t* __restrict__ ids, int64_t n, int E, int k,
                       const int32_t* __restrict__ chunk_first, int32_t* __restrict__ inverse,
                       int32_t* __restrict__ permuted_token) {
  constexpr int kWarps = kRankThreads / 32;
  __shared__ int32_t next[kMaxE];
  __shared__ int32_t warp_counts[kWarps][kMaxE];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int e = threadIdx.x; e < E; e += kRankThreads) {
    next[e] = chunk_first[static_cast<int64_t>(blockIdx.x) * E + e];
    for (int w = 0; w < kWarps; ++w) warp_counts[w][e] = 0;
  }
  __syncthreads();
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t end = min(begin + kChunk, n);
  for (int64_t base = begin; base < end; base += kRankThreads) {  // uniform over the block
    const int64_t a = base + threadIdx.x;
    const int32_t e = a < end ? ids[a] : -1;
    const bool valid = e >= 0 && e < E;
    const unsigned peers = __match_any_sync(common::kFullMask, valid ? e : -1);
    const unsigned lower = peers & ((1u << lane) - 1u);
    if (valid && lower == 0) warp_counts[warp][e] = __popc(peers);
    __syncthreads();
    if (valid) {
      int32_t row = next[e] + __popc(lower);
      for (int w = 0; w < warp; ++w) row += warp_counts[w][e];
      inverse[a] = row;
      if (permuted_token != nullptr) permuted_token[row] = static_cast<int32_t>(a / k);
    } else if (a < end) {
      inverse[a] = -1;
    }
    __syncthreads();
    for (int x = threadIdx.x; x < E; x += kRankThreads) {
      int32_t tile_count = 0;
      for (int w = 0; w < kWarps; ++w) tile_count += warp_counts[w][x], warp_counts[w][x] = 0;
      next[x] += tile_count;
    }
    __syncthreads();
  }
}

// ---- step 4: one block per assignment copies its token's row ----------------------------------------
template <int kVec>
__global__ void __launch_bounds__(kCopyThreads)
    moe_gather_kernel(const __nv_bfloat16* __restrict__ h, int64_t h_stride, const int32_t* __restrict__ inverse,
                      __nv_bfloat16* __restrict__ permuted, int64_t hidden, int k) {
  const int64_t a = blockIdx.x;
  const int32_t row = inverse[a];
  if (row < 0) return;
  const __nv_bfloat16* src = h + (a / k) * h_stride;
  __nv_bfloat16* dst = permuted + static_cast<int64_t>(row) * hidden;
  for (int64_t i = threadIdx.x * kVec; i < hidden; i += kCopyThreads * kVec) {
    if constexpr (kVec == 8) {
      *reinterpret_cast<uint4*>(dst + i) = *reinterpret_cast<const uint4*>(src + i);
    } else {
      dst[i] = src[i];
    }
  }
}

// ---- launcher -------------------------------------------------------------------------------------
static KernelStatus launch_moe_permute(const MoePermuteCudaParams& p, int64_t hs, cudaStream_t stream) {
  const int64_t n = p.num_tokens * p.k;
  const int E = static_cast<int>(p.num_experts), k = static_cast<int>(p.k);
  auto* chunk_counts = static_cast<int32_t*>(p.workspace);
  const int64_t chunks = num_chunks(n);
  if (chunks > 0) {
    moe_count_kernel<<<static_cast<unsigned>(chunks), kRankThreads, 0, stream>>>(p.topk_idx, n, E, chunk_counts);
  }
  moe_scan_kernel<<<1, kScanThreads, 0, stream>>>(chunk_counts, chunks, E, p.expert_offsets);
  if (chunks > 0) {
    moe_scatter_kernel<<<static_cast<unsigned>(chunks), kRankThreads, 0, stream>>>(p.topk_idx, n, E, k, chunk_counts,
                                                                                  p.inverse, p.permuted_token);
  }
  if (p.h != nullptr && n > 0) {
    const auto* h = reinterpret_cast<const __nv_bfloat16*>(p.h);
    auto* out = reinterpret_cast<__nv_bfloat16*>(p.permuted);
    if (common::bf16_vec_width(p.hidden, {p.h, p.permuted}, {hs}) == 8) {
      moe_gather_kernel<8><<<static_cast<unsigned>(n), kCopyThreads, 0, stream>>>(h, hs, p.inverse, out, p.hidden, k);
    } else {
      moe_gather_kernel<1><<<static_cast<unsigned>(n), kCopyThreads, 0, stream>>>(h, hs, p.inverse, out, p.hidden, k);
    }
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

// ---- entry -----------------------------------------------------------------------------------------
size_t moe_permute_workspace_bytes(int64_t num_tokens, int64_t k, int64_t num_experts) {
  if (num_tokens < 0 || k <= 0 || num_experts <= 0) return 0;
  return static_cast<size_t>(num_chunks(num_tokens * k) * num_experts) * sizeof(int32_t);
}

KernelStatus moe_permute(const MoePermuteCudaParams& p, Stream stream) {
  if (p.num_tokens < 0) return kernel_error("moe_permute (cuda): num_tokens must be >= 0");
  if (p.k <= 0) return kernel_error("moe_permute (cuda): k must be > 0");
  if (p.num_experts <= 0 || p.num_experts > kMoePermuteMaxExperts) {
    return kernel_error("moe_permute (cuda): num_experts must be in [1, 256]");
  }
  if (p.num_tokens * p.k > 0x7fffffff) return kernel_error("moe_permute (cuda): num_tokens * k exceeds int32 rows");
  if ((p.h == nullptr) != (p.permuted == nullptr)) return kernel_error("moe_permute (cuda): h and permuted go together");
  if (p.h != nullptr && p.hidden <= 0) return kernel_error("moe_permute (cuda): hidden must be > 0");
  const int64_t hs = p.h_stride ? p.h_stride : p.hidden;
  if (p.h != nullptr && hs < p.hidden) return kernel_error("moe_permute (cuda): h_stride < hidden");
  if (p.expert_offsets == nullptr) return kernel_error("moe_permute (cuda): expert_offsets is null");
  if (p.num_tokens > 0 && p.topk_idx == nullptr) return kernel_error("moe_permute (cuda): topk_idx is null");
  if (p.num_tokens > 0 && p.inverse == nullptr) return kernel_error("moe_permute (cuda): inverse is null");
  const size_t need = moe_permute_workspace_bytes(p.num_tokens, p.k, p.num_experts);
  if (p.workspace_bytes < need) return kernel_error("moe_permute (cuda): workspace_bytes < moe_permute_workspace_bytes()");
  if (need > 0 && (p.workspace == nullptr || reinterpret_cast<uintptr_t>(p.workspace) % 4 != 0)) {
    return kernel_error("moe_permute (cuda): workspace is null or not 4-byte aligned");
  }
  return launch_moe_permute(p, hs, stream);
}

// ==== moe_unpermute =================================================================================

// ---- kernel: one block per token. Thread 0 orders the token's live slots by expert id (insertion
// sort, stable); then every thread sums its columns in that order. ----------------------------------
template <int kVec>
__global__ void __launch_bounds__(kCopyThreads)
    moe_unpermute_kernel(const __nv_bfloat16* __restrict__ y, int64_t y_stride, const int32_t* __restrict__ inverse,
                         const int32_t* __restrict__ ids, const float* __restrict__ weights,
                         __nv_bfloat16* __restrict__ out, int64_t out_stride, int64_t hidden, int k) {
  __shared__ int32_t rows[kMaxK], keys[kMaxK];
  __shared__ float ws[kMaxK];
  __shared__ int num_terms;
  const int64_t t = blockIdx.x;
  if (threadIdx.x == 0) {
    int n = 0;
    for (int s = 0; s < k; ++s) {
      const int32_t row = inverse[t * k + s];
      if (row < 0) continue;
      const int32_t e = ids[t * k + s];
      int j = n++;
      for (; j > 0 && keys[j - 1] > e; --j) rows[j] = rows[j - 1], keys[j] = keys[j - 1], ws[j] = ws[j - 1];
      rows[j] = row, keys[j] = e, ws[j] = weights[t * k + s];
    }
    num_terms = n;
  }
  __syncthreads();
  const int n = num_terms;
  __nv_bfloat16* dst = out + t * out_stride;
  for (int64_t i = threadIdx.x * kVec; i < hidden; i += kCopyThreads * kVec) {
    if constexpr (kVec == 8) {
      common::Bf16x8 acc{};
      for (int j = 0; j < n; ++j) {
        const common::Bf16x8 v = common::load_bf16x8(y + static_cast<int64_t>(rows[j]) * y_stride + i);
#pragma unroll
        for (int c = 0; c < 8; ++c) acc.v[c] = __fadd_rn(acc.v[c], __fmul_rn(ws[j], v.v[c]));
      }
      common::store_bf16x8(dst + i, acc);
    } else {
      float acc = 0.f;
      for (int j = 0; j < n; ++j) {
        acc = __fadd_rn(acc, __fmul_rn(ws[j], __bfloat162float(y[static_cast<int64_t>(rows[j]) * y_stride + i])));
      }
      dst[i] = __float2bfloat16_rn(acc);
    }
  }
}

static KernelStatus launch_moe_unpermute(const MoeUnpermuteParams& p, int64_t ys, int64_t os, cudaStream_t stream) {
  const auto* y = reinterpret_cast<const __nv_bfloat16*>(p.expert_out);
  auto* out = reinterpret_cast<__nv_bfloat16*>(p.out);
  const dim3 grid(static_cast<unsigned>(p.num_tokens));
  const int k = static_cast<int>(p.k);
  if (common::bf16_vec_width(p.hidden, {p.expert_out, p.out}, {ys, os}) == 8) {
    moe_unpermute_kernel<8><<<grid, kCopyThreads, 0, stream>>>(y, ys, p.inverse, p.topk_idx, p.topk_weight, out, os,
                                                               p.hidden, k);
  } else {
    moe_unpermute_kernel<1><<<grid, kCopyThreads, 0, stream>>>(y, ys, p.inverse, p.topk_idx, p.topk_weight, out, os,
                                                               p.hidden, k);
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus moe_unpermute(const MoeUnpermuteParams& p, Stream stream) {
  if (p.num_tokens < 0) return kernel_error("moe_unpermute (cuda): num_tokens must be >= 0");
  if (p.k <= 0 || p.k > kMoeUnpermuteMaxK) return kernel_error("moe_unpermute (cuda): k must be in [1, 64]");
  if (p.hidden <= 0) return kernel_error("moe_unpermute (cuda): hidden must be > 0");
  if (p.num_tokens > 0x7fffffff) return kernel_error("moe_unpermute (cuda): num_tokens exceeds one grid");
  const int64_t ys = p.expert_out_stride ? p.expert_out_stride : p.hidden;
  const int64_t os = p.out_stride ? p.out_stride : p.hidden;
  if (ys < p.hidden) return kernel_error("moe_unpermute (cuda): expert_out_stride < hidden");
  if (os < p.hidden) return kernel_error("moe_unpermute (cuda): out_stride < hidden");
  if (p.num_tokens == 0) return kernel_ok();
  if (p.expert_out == nullptr) return kernel_error("moe_unpermute (cuda): expert_out is null");
  if (p.inverse == nullptr) return kernel_error("moe_unpermute (cuda): inverse is null");
  if (p.topk_idx == nullptr) return kernel_error("moe_unpermute (cuda): topk_idx is null");
  if (p.topk_weight == nullptr) return kernel_error("moe_unpermute (cuda): topk_weight is null");
  if (p.out == nullptr) return kernel_error("moe_unpermute (cuda): out is null");
  return launch_moe_unpermute(p, ys, os, stream);
}

}  // namespace fulgur::kernels::cuda
