#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/softmax_attention.h"

namespace fulgur::kernels {

KernelStatus rope_neox_cpu(const RopeParams& p) {
  if (p.rotary_dim < 0 || p.rotary_dim % 2 != 0 || p.rotary_dim > p.head_dim) {
    return kernel_error("rope: rotary_dim must be even and <= head_dim");
  }
  const int64_t half = p.rotary_dim / 2;
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const double pos = p.positions[t];
    for (int64_t j = 0; j < half; ++j) {
      const double inv_freq = std::pow(p.theta, -2.0 * static_cast<double>(j) / static_cast<double>(p.rotary_dim));
      const double angle = pos * inv_freq;
      const float c = static_cast<float>(std::cos(angle));
      const float s = static_cast<float>(std::sin(angle));
      for (int64_t h = 0; h < p.num_heads; ++h) {
        float* x = p.x + t * p.token_stride + h * p.head_stride;
        const float a = x[j], b = x[j + half];
        x[j] = a * c - b * s;
        x[j + half] = b * c + a * s;
      }
    }
  }
  return kernel_ok();
}

KernelStatus kv_cache_write_cpu(const KvCacheWriteParams& p) {
  const int64_t row = p.num_kv_heads * p.head_dim;
  const int64_t num_slots = p.num_blocks * p.page_size;
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0 || slot >= num_slots) return kernel_error("kv cache write: slot out of range");
    std::copy_n(p.k + t * p.token_stride, row, p.k_cache + slot * row);
    std::copy_n(p.v + t * p.token_stride, row, p.v_cache + slot * row);
  }
  return kernel_ok();
}

namespace {
constexpr int64_t kQueryTile = 64;  // query rows per score tile
}  // namespace

// Workspace layout (floats): K of one kv head [ctx, D] | V [ctx, D] | scores [kQueryTile, ctx].
int64_t paged_attention_workspace_floats(int64_t max_context, int64_t head_dim) {
  return max_context * (2 * head_dim + kQueryTile);
}

// Per sequence and kv head: gather K, V from the pages, then for each q head of the group and
// each tile of queries: S = scale Q K^T (BLAS), causal softmax per row, O = P V (BLAS).
KernelStatus paged_attention_cpu(const PagedAttentionParams& p) {
  const int64_t H = p.num_heads, KV = p.num_kv_heads, D = p.head_dim;
  if (H <= 0 || KV <= 0 || H % KV != 0) return kernel_error("attention: num_heads must be a multiple of num_kv_heads");
  const int64_t group = H / KV;
  const int64_t row = KV * D;
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    const int64_t q_begin = p.cu_seqlens_q[b], q_end = p.cu_seqlens_q[b + 1];
    const int64_t nq = q_end - q_begin, ctx = p.context_lens[b];
    if (nq < 0 || ctx < nq) return kernel_error("attention: context shorter than its queries");
    if (nq == 0) continue;
    if (paged_attention_workspace_floats(ctx, D) > p.workspace_floats) {
      return kernel_error("attention: workspace too small for the context");
    }
    if ((ctx + p.page_size - 1) / p.page_size > p.max_blocks_per_seq) {
      return kernel_error("attention: context exceeds the block table");
    }
    const int32_t* table = p.block_tables + b * p.max_blocks_per_seq;
    for (int64_t pos = 0; pos < ctx; pos += p.page_size) {
      const int32_t block = table[pos / p.page_size];
      if (block < 0 || block >= p.num_blocks) return kernel_error("attention: block id out of range");
    }
    float* k = p.workspace;
    float* v = k + ctx * D;
    float* scores = v + ctx * D;
    for (int64_t kvh = 0; kvh < KV; ++kvh) {
      for (int64_t pos = 0; pos < ctx; ++pos) {
        const int64_t slot = static_cast<int64_t>(table[pos / p.page_size]) * p.page_size + pos % p.page_size;
        std::copy_n(p.k_cache + slot * row + kvh * D, D, k + pos * D);
        std::copy_n(p.v_cache + slot * row + kvh * D, D, v + pos * D);
      }
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        for (int64_t i0 = 0; i0 < nq; i0 += kQueryTile) {
          const int64_t m = std::min(kQueryTile, nq - i0);
          const int64_t keys = ctx - nq + i0 + m;  // the tile's last query sees this many keys
          const float* q = p.q + (q_begin + i0) * p.q_token_stride + h * D;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(keys),
                      static_cast<int>(D), p.scale, q, static_cast<int>(p.q_token_stride), k, static_cast<int>(D), 0.f,
                      scores, static_cast<int>(keys));
          for (int64_t i = 0; i < m; ++i) {
            float* s = scores + i * keys;
            const int64_t visible = ctx - nq + i0 + i + 1;  // causal: positions <= the query's own
            const float max_score = *std::max_element(s, s + visible);
            double denom = 0.0;
            for (int64_t pos = 0; pos < visible; ++pos) denom += (s[pos] = std::exp(s[pos] - max_score));
            const float inv = static_cast<float>(1.0 / denom);
            for (int64_t pos = 0; pos < visible; ++pos) s[pos] *= inv;
            std::fill(s + visible, s + keys, 0.f);
          }
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(D),
                      static_cast<int>(keys), 1.f, scores, static_cast<int>(keys), v, static_cast<int>(D), 0.f,
                      p.out + ((q_begin + i0) * H + h) * D, static_cast<int>(H * D));
        }
      }
    }
  }
  return kernel_ok();
}

}  // namespace fulgur::kernels
