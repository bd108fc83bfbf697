// Lightning attention (MiniMax linear attention with per-head decay), spec §3.3–§3.5.
//
// Per head with decay rate s > 0 and fp32 state S [D, D] (rows: k dims, cols: v dims), "as of the
// last token seen":   S_t = exp(-s) S_{t-1} + k_t^T v_t,   o_t = q_t S_t.
// Prefill computes this blockwise (block size B, any value >= 1), every exponent <= 0:
//   intra  O[i] = sum_{j<=i} exp(-s (i-j)) (q_i . k_j) v_j
//   inter  O[i] += exp(-s (i+1)) q_i S
//   state  S = exp(-s m) S + sum_j exp(-s (m-1-j)) k_j^T v_j          (m = tokens in the block)
// Sequences are packed (varlen): sequence b owns tokens [cu_seqlens[b], cu_seqlens[b+1]) and state
// slot slot_idx[b]; its state is read at the start and written back at the end, so a prefill can
// be split into chunks at any point (chunked prefill) and continued by decode.
#pragma once

#include <cstdint>

#include "kernels/kernel_status.h"

namespace fulgur::kernels {

struct LightningPrefillParams {
  // q, k, v: [num_tokens, H, D] element (t, h, d) at base + t*token_stride + h*head_stride + d.
  // The fused qkv projection gives token_stride 3HD, head_stride 3D, k = q + D, v = q + 2D.
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t qkv_token_stride = 0;
  int64_t qkv_head_stride = 0;
  float* out = nullptr;            // [num_tokens, H, D] contiguous
  float* states = nullptr;         // [num_slots, H, D, D] fp32
  const float* slopes = nullptr;   // [H] decay rates s_h > 0
  const int32_t* cu_seqlens = nullptr;  // [num_seqs + 1], cu_seqlens[0] = 0
  const int32_t* slot_idx = nullptr;    // [num_seqs]
  int64_t num_seqs = 0;
  int64_t num_slots = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 256;
  // Scratch of at least lightning_prefill_workspace_floats(...) floats (kernels never allocate).
  float* workspace = nullptr;
};
int64_t lightning_prefill_workspace_floats(int64_t block_size, int64_t head_dim);
KernelStatus lightning_prefill_cpu(const LightningPrefillParams& p);

struct LightningDecodeParams {
  // One token per sequence: q, k, v [num_seqs, H, D] with the strides as in prefill.
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t qkv_token_stride = 0;
  int64_t qkv_head_stride = 0;
  float* out = nullptr;           // [num_seqs, H, D] contiguous
  float* states = nullptr;        // [num_slots, H, D, D]
  const float* slopes = nullptr;  // [H]
  const int32_t* slot_idx = nullptr;  // [num_seqs]
  int64_t num_seqs = 0;
  int64_t num_slots = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
};
// S = exp(-s) S + k^T v;  o = q S.
KernelStatus lightning_decode_cpu(const LightningDecodeParams& p);

}  // namespace fulgur::kernels
