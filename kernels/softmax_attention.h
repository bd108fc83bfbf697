// Softmax attention for MiniMax's full-attention layers (spec §4): GQA, partial NeoX RoPE,
// causal, with a paged KV cache.
//
// KV cache: k_cache / v_cache [num_blocks, page_size, KV, D]. A token's cache slot is
// block * page_size + offset; a sequence's blocks are listed in its block-table row.
#pragma once

#include <cstdint>

#include "kernels/kernel_status.h"

namespace fulgur::kernels {

struct RopeParams {
  // x: [num_tokens, num_heads, head_dim], element (t, h, d) at x + t*token_stride + h*head_stride + d.
  float* x = nullptr;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
  int64_t num_tokens = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
  const int32_t* positions = nullptr;  // [num_tokens] absolute positions in the sequence
  int64_t rotary_dim = 0;              // even, <= head_dim; dims [rotary_dim, head_dim) pass through
  double theta = 10000.0;
};
// NeoX half-split rotation on dims [0, rotary_dim): pairs (j, j + rotary_dim/2),
// angle = pos * theta^(-2j/rotary_dim). In place.
KernelStatus rope_neox_cpu(const RopeParams& p);

struct KvCacheWriteParams {
  const float* k = nullptr;  // [num_tokens, KV, D], element (t, h, d) at k + t*token_stride + h*D + d
  const float* v = nullptr;  // same layout as k
  int64_t token_stride = 0;
  float* k_cache = nullptr;  // [num_blocks, page_size, KV, D]
  float* v_cache = nullptr;
  const int64_t* slot_mapping = nullptr;  // [num_tokens] flat slot = block * page_size + offset
  int64_t num_tokens = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t num_blocks = 0;
  int64_t page_size = 0;
};
KernelStatus kv_cache_write_cpu(const KvCacheWriteParams& p);

struct PagedAttentionParams {
  const float* q = nullptr;  // [num_tokens, H, D], element (t, h, d) at q + t*q_token_stride + h*D + d
  int64_t q_token_stride = 0;
  const float* k_cache = nullptr;  // [num_blocks, page_size, KV, D]
  const float* v_cache = nullptr;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t max_blocks_per_seq = 0;
  // Sequence b owns query tokens [cu_seqlens_q[b], cu_seqlens_q[b+1]); its context (cached
  // tokens, the new ones included) is context_lens[b] long; query i of n_b sits at position
  // context_lens[b] - n_b + i and attends to positions <= its own (causal).
  const int32_t* cu_seqlens_q = nullptr;  // [num_seqs + 1]
  const int32_t* context_lens = nullptr;  // [num_seqs]
  int64_t num_seqs = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // q head h reads kv head h / (H / KV)
  int64_t head_dim = 0;
  int64_t num_blocks = 0;
  int64_t page_size = 0;
  float scale = 1.f;     // 1/sqrt(D)
  float* out = nullptr;  // [num_tokens, H, D] contiguous
  float* workspace = nullptr;  // >= paged_attention_workspace_floats(longest context, D) floats
  int64_t workspace_floats = 0;
};
// Scratch for one sequence: its K and V gathered per kv head, and scores of one query tile.
int64_t paged_attention_workspace_floats(int64_t max_context, int64_t head_dim);
KernelStatus paged_attention_cpu(const PagedAttentionParams& p);

}  // namespace fulgur::kernels
