#include <cuda_runtime.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/reference_f32.h"

namespace fulgur::kernels::cuda {

namespace {

unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

// ---- gather_rows: one block per output row, 4-byte words where the row allows --------------------------
template <class Word>
__global__ void gather_rows_kernel(const Word* src, int64_t src_rows, int64_t row_words, const int32_t* ids, Word* out) {
  const int64_t i = blockIdx.x;
  const int32_t id = ids[i];
  Word* o = out + i * row_words;
  if (id < 0 || id >= src_rows) {
    for (int64_t c = threadIdx.x; c < row_words; c += blockDim.x) o[c] = Word{};
    return;
  }
  const Word* s = src + id * row_words;
  for (int64_t c = threadIdx.x; c < row_words; c += blockDim.x) o[c] = s[c];
}

// ---- DeepNorm RMSNorm in f32: one block per row ----------------------------------------------------------
__global__ void deepnorm_f32_kernel(const float* r, const float* x, const float* w, float* out, float* sum_out,
                                    int64_t dim, float alpha, float beta, float eps) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const float* rr = r + row * dim;
  const float* xr = x + row * dim;
  float sq = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += 256) {
    const float s = alpha * rr[i] + beta * xr[i];
    sq += s * s;
  }
  sq = common::block_sum<256>(sq, scratch);
  const float inv = rsqrtf(sq / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += 256) {
    const float s = alpha * rr[i] + beta * xr[i];  // every element read and written by one thread
    if (sum_out != nullptr) sum_out[row * dim + i] = s;
    out[row * dim + i] = w[i] * (s * inv);
  }
}

__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }

__global__ void silu_f32_kernel(float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = x[i] * sigmoid_f(x[i]);
  }
}

__global__ void silu_mul_f32_kernel(const float* h, int64_t rows, int64_t inter, float* out) {
  const int64_t n = rows * inter;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / inter, c = i % inter;
    const float g = h[r * 2 * inter + c];
    out[i] = g * sigmoid_f(g) * h[r * 2 * inter + inter + c];
  }
}

// ---- lightning recurrence: block (sequence, head), thread j holds column j of S in registers ------------
template <int D>
__global__ void lightning_recurrence_kernel(LightningRecurrenceF32Params p) {
  __shared__ float qs[D], ks[D];
  const int64_t b = blockIdx.x, h = blockIdx.y;
  const int j = threadIdx.x;
  const int64_t t0 = p.cu_seqlens[b], t1 = p.cu_seqlens[b + 1];
  float* state = p.states + ((static_cast<int64_t>(p.slot_idx[b]) * p.num_heads + h) * D) * D;
  const float decay = expf(-p.slopes[h]);
  float s[D];
#pragma unroll
  for (int i = 0; i < D; ++i) s[i] = state[i * D + j];
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t base = t * p.token_stride + h * p.head_stride;
    qs[j] = p.q[base + j];
    ks[j] = p.k[base + j];
    const float vj = p.v[base + j];
    __syncthreads();
    float o = 0.f;
#pragma unroll
    for (int i = 0; i < D; ++i) {
      s[i] = decay * s[i] + ks[i] * vj;
      o += qs[i] * s[i];
    }
    p.out[(t * p.num_heads + h) * D + j] = o;
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < D; ++i) state[i * D + j] = s[i];
}

// ---- softmax attention f32 ---------------------------------------------------------------------------------
// NeoX pair (j, j + rot/2), angle pos * theta^(-2j/rot), in double like the CPU reference.
__device__ __forceinline__ float rope_elem(const float* x, int64_t d, int64_t rot, int64_t pos, double theta) {
  if (d >= rot) return x[d];
  const int64_t half = rot / 2, jj = d % half;
  const double angle = static_cast<double>(pos) * pow(theta, -2.0 * static_cast<double>(jj) / static_cast<double>(rot));
  const float c = static_cast<float>(cos(angle)), s = static_cast<float>(sin(angle));
  return d < half ? x[d] * c - x[d + half] * s : x[d] * c + x[d - half] * s;
}

// One thread per (token, kv head, dim): the roped k and v of the new tokens into the cache.
__global__ void softmax_cache_write_f32_kernel(SoftmaxAttentionF32Params p) {
  const int64_t n = p.num_tokens * p.num_kv_heads * p.head_dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % p.head_dim, kvh = (i / p.head_dim) % p.num_kv_heads, t = i / (p.head_dim * p.num_kv_heads);
    const float* kt = p.k + t * p.kv_token_stride + kvh * p.head_dim;
    const float* vt = p.v + t * p.kv_token_stride + kvh * p.head_dim;
    const int64_t slot = p.slot_mapping[t];
    const int64_t dst = (slot * p.num_kv_heads + kvh) * p.head_dim + d;
    p.k_cache[dst] = rope_elem(kt, d, p.rotary_dim, p.positions[t], p.theta);
    p.v_cache[dst] = vt[d];
  }
}

constexpr int kMaxDimsPerLane = 4;  // head_dim <= 128

// One warp per (token, q head): lanes split the head's dims; keys in order with an online softmax.
__global__ void softmax_attention_f32_kernel(SoftmaxAttentionF32Params p) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= p.num_tokens * p.num_heads) return;
  const int64_t t = warp / p.num_heads, h = warp % p.num_heads;
  const int64_t kvh = h / (p.num_heads / p.num_kv_heads);
  int64_t b = 0;
  while (b + 1 < p.num_seqs && p.cu_seqlens_q[b + 1] <= t) ++b;
  const int64_t pos = p.positions[t];
  const int64_t D = p.head_dim;
  const float* qt = p.q + t * p.q_token_stride + h * D;
  float q[kMaxDimsPerLane], acc[kMaxDimsPerLane];
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    q[i] = d < D ? rope_elem(qt, d, p.rotary_dim, pos, p.theta) : 0.f;
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int32_t* table = p.block_tables + b * p.max_blocks_per_seq;
  for (int64_t key = 0; key <= pos; ++key) {
    const int64_t slot = static_cast<int64_t>(table[key / p.page_size]) * p.page_size + key % p.page_size;
    const float* kr = p.k_cache + (slot * p.num_kv_heads + kvh) * D;
    const float* vr = p.v_cache + (slot * p.num_kv_heads + kvh) * D;
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxDimsPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < D) dot += q[i] * kr[d];
    }
    const float score = common::warp_sum(dot) * p.scale;
    const float m_new = fmaxf(m, score);
    const float corr = expf(m - m_new), e = expf(score - m_new);
    l = l * corr + e;
#pragma unroll
    for (int i = 0; i < kMaxDimsPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < D) acc[i] = acc[i] * corr + e * vr[d];
    }
    m = m_new;
  }
  float* o = p.out + (t * p.num_heads + h) * D;
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < D) o[d] = acc[i] / l;
  }
}

__global__ void moe_unpermute_f32_kernel(const float* y, const int32_t* inverse, const float* w, int64_t T, int64_t k,
                                         int64_t hidden, float* out) {
  const int64_t n = T * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / hidden, c = i % hidden;
    float sum = 0.f;
    for (int64_t s = 0; s < k; ++s) {
      const int32_t row = inverse[t * k + s];
      if (row >= 0) sum += w[t * k + s] * y[static_cast<int64_t>(row) * hidden + c];
    }
    out[i] = sum;
  }
}

}  // namespace

KernelStatus gather_rows(const void* src, int64_t src_rows, int64_t row_bytes, const int32_t* ids, int64_t num_ids,
                         void* out, Stream stream) {
  if (num_ids < 0 || src_rows < 0 || row_bytes <= 0) return kernel_error("gather_rows (cuda): bad sizes");
  if (num_ids > 0x7fffffff) return kernel_error("gather_rows (cuda): too many rows for one grid");
  if (num_ids == 0) return kernel_ok();
  if (src == nullptr || ids == nullptr || out == nullptr) return kernel_error("gather_rows (cuda): null pointer");
  const bool words = row_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(out) % 4 == 0;
  if (words) {
    gather_rows_kernel<uint32_t><<<static_cast<unsigned>(num_ids), 128, 0, stream>>>(
        static_cast<const uint32_t*>(src), src_rows, row_bytes / 4, ids, static_cast<uint32_t*>(out));
  } else {
    gather_rows_kernel<uint8_t><<<static_cast<unsigned>(num_ids), 128, 0, stream>>>(
        static_cast<const uint8_t*>(src), src_rows, row_bytes, ids, static_cast<uint8_t*>(out));
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus deepnorm_rmsnorm_f32(const DeepNormRmsNormF32Params& p, Stream stream) {
  if (p.rows < 0 || p.dim <= 0) return kernel_error("deepnorm_rmsnorm_f32 (cuda): bad sizes");
  if (p.rows > 0x7fffffff) return kernel_error("deepnorm_rmsnorm_f32 (cuda): too many rows for one grid");
  if (!(p.eps > 0.f)) return kernel_error("deepnorm_rmsnorm_f32 (cuda): eps must be > 0");
  if (p.rows == 0) return kernel_ok();
  if (p.residual == nullptr || p.x == nullptr || p.weight == nullptr || p.out == nullptr) {
    return kernel_error("deepnorm_rmsnorm_f32 (cuda): null pointer");
  }
  deepnorm_f32_kernel<<<static_cast<unsigned>(p.rows), 256, 0, stream>>>(p.residual, p.x, p.weight, p.out, p.sum_out,
                                                                        p.dim, p.alpha, p.beta, p.eps);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus silu_inplace_f32(float* x, int64_t n, Stream stream) {
  if (n < 0) return kernel_error("silu_inplace_f32 (cuda): n must be >= 0");
  if (n == 0) return kernel_ok();
  if (x == nullptr) return kernel_error("silu_inplace_f32 (cuda): x is null");
  silu_f32_kernel<<<grid_for(n, 256), 256, 0, stream>>>(x, n);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus silu_mul_f32(const float* h, int64_t rows, int64_t inter, float* out, Stream stream) {
  if (rows < 0 || inter <= 0) return kernel_error("silu_mul_f32 (cuda): bad sizes");
  if (rows == 0) return kernel_ok();
  if (h == nullptr || out == nullptr) return kernel_error("silu_mul_f32 (cuda): null pointer");
  silu_mul_f32_kernel<<<grid_for(rows * inter, 256), 256, 0, stream>>>(h, rows, inter, out);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus lightning_recurrence_f32(const LightningRecurrenceF32Params& p, Stream stream) {
  if (p.num_seqs < 0 || p.num_heads <= 0 || p.num_slots <= 0) return kernel_error("lightning_recurrence_f32 (cuda): bad sizes");
  if (p.num_seqs == 0 || p.num_tokens == 0) return kernel_ok();
  if (p.num_seqs > 0x7fffffff || p.num_heads > 65535) return kernel_error("lightning_recurrence_f32 (cuda): grid too large");
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr || p.out == nullptr || p.states == nullptr ||
      p.slopes == nullptr || p.cu_seqlens == nullptr || p.slot_idx == nullptr) {
    return kernel_error("lightning_recurrence_f32 (cuda): null pointer");
  }
  const dim3 grid(static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.num_heads));
  switch (p.head_dim) {
    case 16: lightning_recurrence_kernel<16><<<grid, 16, 0, stream>>>(p); break;
    case 32: lightning_recurrence_kernel<32><<<grid, 32, 0, stream>>>(p); break;
    case 64: lightning_recurrence_kernel<64><<<grid, 64, 0, stream>>>(p); break;
    case 128: lightning_recurrence_kernel<128><<<grid, 128, 0, stream>>>(p); break;
    default: return kernel_error("lightning_recurrence_f32 (cuda): head_dim must be 16, 32, 64 or 128");
  }
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus softmax_attention_f32(const SoftmaxAttentionF32Params& p, Stream stream) {
  if (p.num_tokens < 0 || p.num_seqs <= 0 || p.num_heads <= 0 || p.num_kv_heads <= 0 || p.page_size <= 0) {
    return kernel_error("softmax_attention_f32 (cuda): bad sizes");
  }
  if (p.num_heads % p.num_kv_heads != 0) return kernel_error("softmax_attention_f32 (cuda): heads % kv heads != 0");
  if (p.head_dim <= 0 || p.head_dim > 32 * kMaxDimsPerLane) return kernel_error("softmax_attention_f32 (cuda): head_dim must be in [1, 128]");
  if (p.rotary_dim < 0 || p.rotary_dim > p.head_dim || p.rotary_dim % 2 != 0) {
    return kernel_error("softmax_attention_f32 (cuda): rotary_dim must be even and <= head_dim");
  }
  if (p.num_tokens == 0) return kernel_ok();
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr || p.positions == nullptr || p.slot_mapping == nullptr ||
      p.k_cache == nullptr || p.v_cache == nullptr || p.block_tables == nullptr || p.cu_seqlens_q == nullptr ||
      p.out == nullptr) {
    return kernel_error("softmax_attention_f32 (cuda): null pointer");
  }
  softmax_cache_write_f32_kernel<<<grid_for(p.num_tokens * p.num_kv_heads * p.head_dim, 256), 256, 0, stream>>>(p);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  const int64_t warps = p.num_tokens * p.num_heads;
  const int64_t blocks = (warps * 32 + 127) / 128;
  if (blocks > 0x7fffffff) return kernel_error("softmax_attention_f32 (cuda): too many tokens for one grid");
  softmax_attention_f32_kernel<<<static_cast<unsigned>(blocks), 128, 0, stream>>>(p);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

KernelStatus moe_unpermute_f32(const float* y, const int32_t* inverse, const float* topk_weight, int64_t num_tokens,
                               int64_t k, int64_t hidden, float* out, Stream stream) {
  if (num_tokens < 0 || k <= 0 || hidden <= 0) return kernel_error("moe_unpermute_f32 (cuda): bad sizes");
  if (num_tokens == 0) return kernel_ok();
  if (y == nullptr || inverse == nullptr || topk_weight == nullptr || out == nullptr) {
    return kernel_error("moe_unpermute_f32 (cuda): null pointer");
  }
  moe_unpermute_f32_kernel<<<grid_for(num_tokens * hidden, 256), 256, 0, stream>>>(y, inverse, topk_weight, num_tokens, k,
                                                                                  hidden, out);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

}  // namespace fulgur::kernels::cuda
