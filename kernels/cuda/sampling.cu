#include <cuda_runtime.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/sampling.h"
#include "kernels/sampling_math.h"

namespace fulgur::kernels::cuda {

namespace {
constexpr int kSegment = static_cast<int>(kSampleGreedySegment);
constexpr int kThreads = 256;
constexpr int32_t kNonFinite = -1;

struct ArgMax {
  float value;
  int32_t index;  // kNonFinite: a non-finite logit was seen; 0x7fffffff: nothing seen yet
};

int64_t num_segments(int64_t vocab) { return (vocab + kSegment - 1) / kSegment; }
}  // namespace

// (value, index) beats (value', index') when value > value', or equal with index < index'; a
// non-finite marker beats everything, so it reaches the row's result.
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  if (a.index == kNonFinite || b.index == kNonFinite) return {0.f, kNonFinite};
  if (b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
  return a;
}

__device__ __forceinline__ ArgMax warp_argmax(ArgMax x) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const ArgMax o{__shfl_xor_sync(common::kFullMask, x.value, offset),
                   __shfl_xor_sync(common::kFullMask, x.index, offset)};
    x = better(x, o);
  }
  return x;
}

// ---- kernel 1: one block per (segment, row); kVec = 4 (16-byte loads) or 1 -------------------------
template <int kVec>
__global__ void __launch_bounds__(kThreads)
    argmax_segment_kernel(const float* __restrict__ logits, int64_t stride, int64_t vocab, ArgMax* __restrict__ partial) {
  const int64_t row = blockIdx.y;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kSegment;
  const int64_t end = min(begin + kSegment, vocab);
  const float* z = logits + row * stride;
  ArgMax best{-INFINITY, 0x7fffffff};
  bool finite = true;
  for (int64_t i = begin + threadIdx.x * kVec; i < end; i += kThreads * kVec) {  // ascending per thread
    if constexpr (kVec == 4) {
      const float4 v = *reinterpret_cast<const float4*>(z + i);
      const float x[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        finite = finite && isfinite(x[j]);
        if (x[j] > best.value || best.index == 0x7fffffff) best = {x[j], static_cast<int32_t>(i + j)};
      }
    } else {
      const float x = z[i];
      finite = finite && isfinite(x);
      if (x > best.value || best.index == 0x7fffffff) best = {x, static_cast<int32_t>(i)};
    }
  }
  if (!finite) best.index = kNonFinite;
  best = warp_argmax(best);
  __shared__ ArgMax warp_best[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x < 32) {
    best = threadIdx.x < kThreads / 32 ? warp_best[threadIdx.x] : ArgMax{-INFINITY, 0x7fffffff};
    best = warp_argmax(best);
    if (threadIdx.x == 0) partial[row * gridDim.x + blockIdx.x] = best;
  }
}

// ---- kernel 2: one warp per row over its segments --------------------------------------------------
__global__ void argmax_rows_kernel(const ArgMax* __restrict__ partial, int64_t segments, int64_t num_rows,
                                   int32_t* __restrict__ out_token) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= num_rows) return;
  ArgMax best{-INFINITY, 0x7fffffff};
  for (int64_t s = threadIdx.x % 32; s < segments; s += 32) best = better(best, partial[row * segments + s]);
  best = warp_argmax(best);
  if (threadIdx.x % 32 == 0) out_token[row] = best.index;
}

// ---- launcher -------------------------------------------------------------------------------------
static KernelStatus launch_sample_greedy(const SampleGreedyCudaParams& p, int64_t stride, cudaStream_t stream) {
  const int64_t segments = num_segments(p.vocab);
  auto* partial = static_cast<ArgMax*>(p.workspace);
  const dim3 grid1(static_cast<unsigned>(segments), static_cast<unsigned>(p.num_rows));
  const bool vec = p.vocab % 4 == 0 && stride % 4 == 0 && reinterpret_cast<uintptr_t>(p.logits) % 16 == 0;
  if (vec) {
    argmax_segment_kernel<4><<<grid1, kThreads, 0, stream>>>(p.logits, stride, p.vocab, partial);
  } else {
    argmax_segment_kernel<1><<<grid1, kThreads, 0, stream>>>(p.logits, stride, p.vocab, partial);
  }
  constexpr int kRowsPerBlock = 4;
  const dim3 grid2(static_cast<unsigned>((p.num_rows + kRowsPerBlock - 1) / kRowsPerBlock));
  argmax_rows_kernel<<<grid2, kRowsPerBlock * 32, 0, stream>>>(partial, segments, p.num_rows, p.out_token);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

// ---- entry -----------------------------------------------------------------------------------------
size_t sample_greedy_workspace_bytes(int64_t num_rows, int64_t vocab) {
  if (num_rows < 0 || vocab <= 0) return 0;
  return static_cast<size_t>(num_rows * num_segments(vocab)) * sizeof(ArgMax);
}

KernelStatus sample_greedy(const SampleGreedyCudaParams& p, Stream stream) {
  if (p.num_rows < 0) return kernel_error("sample_greedy (cuda): num_rows must be >= 0");
  if (p.num_rows > 65535) return kernel_error("sample_greedy (cuda): num_rows > 65535 (grid.y limit)");
  if (p.vocab <= 0 || p.vocab > 0x7fffffff) return kernel_error("sample_greedy (cuda): vocab must be in [1, 2^31 - 1]");
  const int64_t stride = p.logits_stride ? p.logits_stride : p.vocab;
  if (stride < p.vocab) return kernel_error("sample_greedy (cuda): logits_stride < vocab");
  if (p.num_rows == 0) return kernel_ok();
  if (p.logits == nullptr) return kernel_error("sample_greedy (cuda): logits is null");
  if (p.out_token == nullptr) return kernel_error("sample_greedy (cuda): out_token is null");
  if (p.workspace_bytes < sample_greedy_workspace_bytes(p.num_rows, p.vocab)) {
    return kernel_error("sample_greedy (cuda): workspace_bytes < sample_greedy_workspace_bytes()");
  }
  if (p.workspace == nullptr || reinterpret_cast<uintptr_t>(p.workspace) % alignof(ArgMax) != 0) {
    return kernel_error("sample_greedy (cuda): workspace is null or not 8-byte aligned");
  }
  return launch_sample_greedy(p, stride, stream);
}

// ==== sample: temperature / top-k / top-p ============================================================
//
// One block per row. The tokens still in play (the "set": all of the row, then the top-k, then the
// top-p prefix) are either the row in global memory filtered by key >= lower, or, once at most
// kCandidates of them are left, their keys in shared memory. Each cut is a radix selection over the
// keys: a histogram of one digit (11 bits in the first pass over the row, then 8) holding counts
// and weights, warp 0 finds the bucket where the running sum from the top reaches the need, and the
// next pass looks only inside that bucket. A bucket of at most kCandidates tokens is gathered into
// shared memory, so a row is read from global memory about three times per cut.

namespace {
namespace sm = kernels::sampling;
constexpr int kSampleThreads = 512;
constexpr int kCandidates = 8192;    // keys kept in shared memory (64 KiB, dynamic)
constexpr int kFirstDigitBits = 11;  // the first pass over a whole row: 2048 buckets
constexpr int kMaxBuckets = 1 << kFirstDigitBits;

// Bucket weights are summed with 32-bit shared atomics (one 64-bit atomicAdd instead made the weighted passes
// 2.5x slower on the H200): mass = mass_hi * 2^32 + mass_lo, the carries out of mass_lo added to mass_hi.
// mass_hi stays below 2^32: at most 2^26 tokens, each adding at most 2^4 + 1 (a weight is <= 2^36).
struct SampleShared {
  unsigned int count[kMaxBuckets];
  unsigned int mass_lo[kMaxBuckets];
  unsigned int mass_hi[kMaxBuckets];
  unsigned long long reduce[kSampleThreads / 32];
  int chosen;                    // bucket of this pass, -1: none (a bug)
  unsigned long long above;      // value (count or weight) of the set's keys above the chosen bucket
  unsigned int above_n;          // their number
  unsigned long long need;       // fixed in the first pass of a selection
  unsigned long long found;      // the key of a lone candidate
  int n;                         // gather / compaction counter
};

enum class Need { fixed, top_p, draw };

struct RowSet {
  bool in_shared = false;        // the set is cand[0, n); else the row's keys >= lower
  int n = 0;
  unsigned long long lower = 0;  // every order key is >= 1
};
}  // namespace

// The logit an order key was made of (sampling_math.h's order_key, inverted; -0 comes back as +0).
__device__ __forceinline__ float key_logit(unsigned long long key) {
  const uint32_t ordered = static_cast<uint32_t>(key >> 32);
  return __uint_as_float((ordered & 0x80000000u) ? (ordered & 0x7fffffffu) : ~ordered);
}

// One row of logits and how to read it: 16-byte loads, four per thread in flight, where the row allows
// (one block reads a whole row, so the loads in flight set its speed), else one float at a time.
struct LogitRow {
  const float* z;
  int vocab;
  bool vec;  // z 16-byte aligned
};

// f(logit, token) for every token of the row, in no particular order.
template <class F>
__device__ __forceinline__ void for_each_logit(const LogitRow& row, F&& f) {
  int tail = 0;
  if (row.vec) {
    constexpr int kUnroll = 4;
    const float4* z4 = reinterpret_cast<const float4*>(row.z);
    const int n4 = row.vocab / 4;
    for (int j = threadIdx.x; j < n4; j += kSampleThreads * kUnroll) {
      float4 v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int q = j + u * kSampleThreads;
        v[u] = q < n4 ? z4[q] : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int q = j + u * kSampleThreads;
        if (q >= n4) break;
        f(v[u].x, 4 * q), f(v[u].y, 4 * q + 1), f(v[u].z, 4 * q + 2), f(v[u].w, 4 * q + 3);
      }
    }
    tail = 4 * n4;
  }
  for (int i = tail + threadIdx.x; i < row.vocab; i += kSampleThreads) f(row.z[i], i);
}

__device__ __forceinline__ unsigned long long block_max_u64(unsigned long long v, SampleShared& sh) {
  for (int offset = 16; offset > 0; offset /= 2) v = max(v, __shfl_xor_sync(common::kFullMask, v, offset));
  if (threadIdx.x % 32 == 0) sh.reduce[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x % 32 < kSampleThreads / 32 ? sh.reduce[threadIdx.x % 32] : 0ull;
  for (int offset = 16; offset > 0; offset /= 2) v = max(v, __shfl_xor_sync(common::kFullMask, v, offset));
  __syncthreads();
  return v;
}

__device__ __forceinline__ unsigned long long bucket_mass(const SampleShared& sh, int b) {
  return (static_cast<unsigned long long>(sh.mass_hi[b]) << 32) + sh.mass_lo[b];
}

// Warp 0: the first bucket from the top (buckets nb - 1 down to 0) where above + the running sum of
// values reaches sh.need; on the selection's first pass, sh.need is set from the set's total first.
template <bool kWeighted>
__device__ void choose_bucket(int nb, bool first, Need kind, unsigned long long need_arg, float top_p,
                              unsigned long long above, SampleShared& sh) {
  const int lane = threadIdx.x;
  const int per = nb >= 32 ? nb / 32 : 1;
  const int hi = nb - 1 - lane * per;  // this lane's buckets: hi, hi - 1, ..., hi - per + 1
  unsigned long long v = 0, n = 0;
  for (int j = 0; j < per && hi - j >= 0; ++j) {
    v += kWeighted ? bucket_mass(sh, hi - j) : sh.count[hi - j];
    n += sh.count[hi - j];
  }
  unsigned long long incl = v, incl_n = n;
  for (int offset = 1; offset < 32; offset *= 2) {
    const unsigned long long o = __shfl_up_sync(common::kFullMask, incl, offset);
    const unsigned long long on = __shfl_up_sync(common::kFullMask, incl_n, offset);
    if (lane >= offset) incl += o, incl_n += on;
  }
  unsigned long long need = sh.need;
  if (first) {
    const unsigned long long total = __shfl_sync(common::kFullMask, incl, 31);
    need = kind == Need::fixed ? need_arg
           : kind == Need::top_p ? sm::top_p_mass(total, top_p)
                                 : sm::draw_point(need_arg, total) + 1;
  }
  const unsigned hit = __ballot_sync(common::kFullMask, above + incl >= need);
  if (lane == 0) {
    sh.need = need;
    sh.chosen = -1;
  }
  __syncwarp();  // lane 0's -1 lands before the winner's bucket
  if (hit == 0) return;
  const int winner = __ffs(hit) - 1;
  if (lane != winner) return;
  unsigned long long acc = above + incl - v;
  unsigned acc_n = static_cast<unsigned>(incl_n - n);
  for (int j = 0; j < per && hi - j >= 0; ++j) {
    const int b = hi - j;
    const unsigned long long value = kWeighted ? bucket_mass(sh, b) : sh.count[b];
    if (acc + value >= need) {
      sh.chosen = b;
      sh.above = acc;
      sh.above_n = acc_n;
      return;
    }
    acc += value;
    acc_n += sh.count[b];
  }
}

// The radix selection over `set`: the key K where the running sum in key order (descending) of
// counts (kWeighted false) or weights first reaches the need. *above / *above_n: value and number of
// the set's keys greater than K. False when no key reaches the need (a bug). May overwrite cand
// when the set is not in it.
template <bool kWeighted>
__device__ bool radix_select(const LogitRow& row, float top, float inv_t, const RowSet& set,
                             Need kind, unsigned long long need_arg, float top_p, SampleShared& sh,
                             unsigned long long* cand, unsigned long long* key_out, unsigned long long* above_out,
                             unsigned* above_n_out) {
  unsigned long long prefix = 0, mask = 0, above = 0;
  unsigned above_n = 0;
  bool in_shared = set.in_shared;
  int n = set.n;
  int shift = 64;
  for (bool first = true;; first = false) {
    const int width = first && !in_shared ? kFirstDigitBits : min(8, shift);
    shift -= width;
    const int nb = 1 << width;
    for (int b = threadIdx.x; b < nb; b += kSampleThreads) {
      sh.count[b] = 0;
      sh.mass_lo[b] = 0;
      sh.mass_hi[b] = 0;
    }
    __syncthreads();
    auto add = [&](unsigned long long key, float l) {
      const int d = static_cast<int>((key >> shift) & static_cast<unsigned long long>(nb - 1));
      atomicAdd(&sh.count[d], 1u);
      if constexpr (kWeighted) {
        const unsigned long long w = sm::weight(l, top, inv_t);
        if (w != 0) {
          const unsigned lo = static_cast<unsigned>(w);
          const unsigned old = atomicAdd(&sh.mass_lo[d], lo);
          const unsigned hi = static_cast<unsigned>(w >> 32) + (old + lo < old ? 1u : 0u);  // + the carry
          if (hi != 0) atomicAdd(&sh.mass_hi[d], hi);
        }
      }
    };
    if (in_shared) {
      for (int j = threadIdx.x; j < n; j += kSampleThreads) {
        const unsigned long long key = cand[j];
        if ((key & mask) == prefix) add(key, key_logit(key));
      }
    } else {
      for_each_logit(row, [&](float l, int i) {
        const unsigned long long key = sm::order_key(l, static_cast<uint32_t>(i));
        if (key >= set.lower && (key & mask) == prefix) add(key, l);
      });
    }
    __syncthreads();
    if (threadIdx.x < 32) choose_bucket<kWeighted>(nb, first, kind, need_arg, top_p, above, sh);
    __syncthreads();
    const int chosen = sh.chosen;  // the same word for every thread: the branches below are uniform
    if (chosen < 0) return false;
    prefix |= static_cast<unsigned long long>(chosen) << shift;
    mask |= static_cast<unsigned long long>(nb - 1) << shift;
    above = sh.above;
    above_n += sh.above_n;
    const unsigned bucket_n = sh.count[chosen];
    __syncthreads();  // everyone has read sh before it changes
    if (mask == ~0ull) break;
    if (bucket_n == 1) {  // one candidate left: its key, from wherever the set is
      if (in_shared) {
        for (int j = threadIdx.x; j < n; j += kSampleThreads) {
          if ((cand[j] & mask) == prefix) sh.found = cand[j];
        }
      } else {
        for_each_logit(row, [&](float l, int i) {
          const unsigned long long key = sm::order_key(l, static_cast<uint32_t>(i));
          if (key >= set.lower && (key & mask) == prefix) sh.found = key;
        });
      }
      __syncthreads();
      prefix = sh.found;
      __syncthreads();
      break;
    }
    if (!in_shared && bucket_n <= static_cast<unsigned>(kCandidates)) {  // the bucket into shared memory
      if (threadIdx.x == 0) sh.n = 0;
      __syncthreads();
      for_each_logit(row, [&](float l, int i) {
        const unsigned long long key = sm::order_key(l, static_cast<uint32_t>(i));
        if (key >= set.lower && (key & mask) == prefix) cand[atomicAdd(&sh.n, 1)] = key;
      });
      __syncthreads();
      in_shared = true;
      n = sh.n;
      __syncthreads();
    }
  }
  *key_out = prefix;
  *above_out = above;
  *above_n_out = above_n;
  return true;
}

// The set's keys >= k (there are `count` of them): kept in shared memory where they fit.
__device__ void restrict_set(const LogitRow& row, RowSet& set, unsigned long long k, unsigned count,
                             SampleShared& sh, unsigned long long* cand) {
  constexpr int kPerThread = kCandidates / kSampleThreads;
  if (set.in_shared) {  // compact in place: read everything first
    unsigned long long mine[kPerThread];
#pragma unroll
    for (int r = 0; r < kPerThread; ++r) {
      const int j = threadIdx.x + r * kSampleThreads;
      mine[r] = j < set.n ? cand[j] : 0ull;
    }
    if (threadIdx.x == 0) sh.n = 0;
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kPerThread; ++r) {
      if (mine[r] >= k) cand[atomicAdd(&sh.n, 1)] = mine[r];  // 0 (no key) is below every k
    }
    __syncthreads();
    set.n = sh.n;
    __syncthreads();
    return;
  }
  set.lower = k;
  if (count > static_cast<unsigned>(kCandidates)) return;
  if (threadIdx.x == 0) sh.n = 0;
  __syncthreads();
  for_each_logit(row, [&](float l, int i) {
    const unsigned long long key = sm::order_key(l, static_cast<uint32_t>(i));
    if (key >= k) cand[atomicAdd(&sh.n, 1)] = key;
  });
  __syncthreads();
  set.in_shared = true;
  set.n = sh.n;
  __syncthreads();
}

__global__ void __launch_bounds__(kSampleThreads)
    sample_rows_kernel(const float* __restrict__ logits, int64_t stride, int vocab, bool vec,
                       const kernels::SamplingParams* __restrict__ params, int32_t* __restrict__ out_token) {
  __shared__ SampleShared sh;
  extern __shared__ unsigned long long cand[];  // [kCandidates]
  const LogitRow row{logits + blockIdx.x * stride, vocab, vec};
  const kernels::SamplingParams sp = params[blockIdx.x];
  unsigned long long best = 0;
  bool finite = true;
  for_each_logit(row, [&](float l, int i) {
    finite = finite && isfinite(l);
    best = max(best, static_cast<unsigned long long>(sm::order_key(l, static_cast<uint32_t>(i))));
  });
  finite = __syncthreads_and(finite);
  best = block_max_u64(best, sh);
  const bool bad_params = !(sp.temperature >= 0.f) || !isfinite(sp.temperature) ||
                          !(sp.top_p > 0.f && sp.top_p <= 1.f) || sp.top_k < 0;
  if (!finite || bad_params || sp.temperature == 0.f) {
    if (threadIdx.x == 0) {
      out_token[blockIdx.x] = !finite ? kSampleNonFinite : bad_params ? kSampleBadParams : static_cast<int32_t>(sm::key_token(best));
    }
    return;
  }
  const float top = key_logit(best);
  const float inv_t = sm::inverse_temperature(sp.temperature);
  RowSet set;
  set.n = row.vocab;
  unsigned long long key = 0, above = 0;
  unsigned above_n = 0;
  bool found = true;
  if (sp.top_k > 0 && sp.top_k < row.vocab) {  // top-k: the k largest keys
    found = radix_select<false>(row, top, inv_t, set, Need::fixed, static_cast<unsigned long long>(sp.top_k), 1.f,
                                sh, cand, &key, &above, &above_n);
    if (found) restrict_set(row, set, key, above_n + 1, sh, cand);
  }
  if (found && sp.top_p < 1.f) {  // top-p: the shortest prefix whose weight reaches ceil(total * top_p)
    found = radix_select<true>(row, top, inv_t, set, Need::top_p, 0, sp.top_p, sh, cand, &key, &above, &above_n);
    if (found) restrict_set(row, set, key, above_n + 1, sh, cand);
  }
  if (found) {  // the draw: the first key whose running weight exceeds the point
    found = radix_select<true>(row, top, inv_t, set, Need::draw, sm::random_bits(sp.seed, sp.step), 1.f, sh, cand,
                               &key, &above, &above_n);
  }
  if (threadIdx.x == 0) out_token[blockIdx.x] = found ? static_cast<int32_t>(sm::key_token(key)) : kSampleInternalError;
}

static KernelStatus launch_sample(const SampleCudaParams& p, int64_t stride, cudaStream_t stream) {
  constexpr size_t kDynamicShared = kCandidates * sizeof(unsigned long long);
  FULGUR_CUDA_CHECK(cudaFuncSetAttribute(sample_rows_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kDynamicShared)));
  const bool vec = stride % 4 == 0 && reinterpret_cast<uintptr_t>(p.logits) % 16 == 0;
  sample_rows_kernel<<<static_cast<unsigned>(p.num_rows), kSampleThreads, kDynamicShared, stream>>>(
      p.logits, stride, static_cast<int>(p.vocab), vec, p.params, p.out_token);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus sample(const SampleCudaParams& p, Stream stream) {
  if (p.num_rows < 0 || p.num_rows > 0x7fffffff) return kernel_error("sample (cuda): num_rows must be in [0, 2^31 - 1]");
  if (p.vocab <= 0 || p.vocab > sm::kMaxVocab) return kernel_error("sample (cuda): vocab must be in [1, 2^26]");
  const int64_t stride = p.logits_stride ? p.logits_stride : p.vocab;
  if (stride < p.vocab) return kernel_error("sample (cuda): logits_stride < vocab");
  if (p.num_rows == 0) return kernel_ok();
  if (p.logits == nullptr || p.params == nullptr || p.out_token == nullptr) {
    return kernel_error("sample (cuda): logits, params or out_token is null");
  }
  return launch_sample(p, stride, stream);
}

}  // namespace fulgur::kernels::cuda
