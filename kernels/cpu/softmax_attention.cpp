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

KernelStatus paged_attention_cpu(const PagedAttentionParams& p) {
  const int64_t H = p.num_heads, KV = p.num_kv_heads, D = p.head_dim;
  if (H <= 0 || KV <= 0 || H % KV != 0) return kernel_error("attention: num_heads must be a multiple of num_kv_heads");
  const int64_t group = H / KV;
  const int64_t row = KV * D;
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    const int64_t q_begin = p.cu_seqlens_q[b], q_end = p.cu_seqlens_q[b + 1];
    const int64_t nq = q_end - q_begin, ctx = p.context_lens[b];
    if (nq < 0 || ctx < nq) return kernel_error("attention: context shorter than its queries");
    if (ctx > p.workspace_floats) return kernel_error("attention: workspace too small for the context");
    if ((ctx + p.page_size - 1) / p.page_size > p.max_blocks_per_seq) {
      return kernel_error("attention: context exceeds the block table");
    }
    const int32_t* table = p.block_tables + b * p.max_blocks_per_seq;
    for (int64_t pos = 0; pos < ctx; ++pos) {
      const int32_t block = table[pos / p.page_size];
      if (block < 0 || block >= p.num_blocks) return kernel_error("attention: block id out of range");
    }
    auto slot_row = [&](int64_t pos) {
      return (static_cast<int64_t>(table[pos / p.page_size]) * p.page_size + pos % p.page_size) * row;
    };
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t q_pos = ctx - nq + i;
      for (int64_t h = 0; h < H; ++h) {
        const float* q = p.q + (q_begin + i) * p.q_token_stride + h * D;
        const int64_t kvh = h / group;
        float* scores = p.workspace;
        float max_score = -INFINITY;
        for (int64_t pos = 0; pos <= q_pos; ++pos) {
          const float* k = p.k_cache + slot_row(pos) + kvh * D;
          float dot = 0.f;
          for (int64_t d = 0; d < D; ++d) dot += q[d] * k[d];
          scores[pos] = dot * p.scale;
          max_score = std::max(max_score, scores[pos]);
        }
        double denom = 0.0;
        for (int64_t pos = 0; pos <= q_pos; ++pos) {
          scores[pos] = std::exp(scores[pos] - max_score);
          denom += scores[pos];
        }
        float* o = p.out + ((q_begin + i) * H + h) * D;
        std::fill(o, o + D, 0.f);
        const float inv = static_cast<float>(1.0 / denom);
        for (int64_t pos = 0; pos <= q_pos; ++pos) {
          const float* v = p.v_cache + slot_row(pos) + kvh * D;
          const float w = scores[pos] * inv;
          for (int64_t d = 0; d < D; ++d) o[d] += w * v[d];
        }
      }
    }
  }
  return kernel_ok();
}

}  // namespace fulgur::kernels
