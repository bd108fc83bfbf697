// Softmax attention on the GPU (spec §4): partial NeoX RoPE, paged bf16 KV cache, causal GQA, with
// the same semantics as the CPU reference (kernels/softmax_attention.h). All pointers are device
// pointers; sizes are host values.
//
// Both entries run, on one stream:
//   1. cache write: RoPE on the new tokens' k (fp32 math, rounded to bf16) -> k_cache[slot], v -> v_cache[slot].
//   2. attention (flash style, mma.sync m16n8k16 bf16, fp32 accumulation and online softmax; on Hopper the
//      prefill runs the wgmma + TMA kernel of softmax_attention_sm90.cu instead, same rows and math): a block
//      owns 128 "rows" (prefill; decode 64), each a (query token, q head) pair of one kv head's group,
//      so one K/V tile serves every q head of the group (GQA packed into M). The block loads its q rows once,
//      applies RoPE to them in shared memory (positions per token), then streams 64-key tiles of the
//      sequence's context from the paged cache (cp.async, two stages), causal per row.
//   Prefill: one pass, bf16 out. Decode (one query per sequence): the context is split over
//   num_splits blocks per (sequence, kv head) (flash-decoding); a combine kernel merges the fp32
//   partials (workspace) into the bf16 output.
// Chunked prefill: sequence b's n_b new tokens sit at positions context_lens[b] - n_b + i and attend
// to every cached position <= their own, the chunk's own tokens included (written in step 1).
//
// bf16 roundings beyond the fp32 reference: roped q and k (stored bf16), the probabilities P before
// P.V, the output.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/runtime.h"

namespace fulgur::kernels::cuda {

// head_dim values with an instantiated kernel; anything else is rejected by the entries.
inline constexpr int64_t kSoftmaxHeadDims[] = {16, 64, 128};

struct SoftmaxAttentionCudaParams {
  // New tokens, bf16 bits. q: (t, h, d) at q + t*q_token_stride + h*head_dim + d, [num_tokens, H, D];
  // k, v: (t, kvh, d) at k + t*kv_token_stride + kvh*head_dim + d, [num_tokens, KV, D]. The fused
  // projection [T, (H + 2 KV) D] gives q_token_stride = kv_token_stride = (H + 2 KV) D, k = q + H D,
  // v = k + KV D. q 16-byte aligned with q_token_stride a multiple of 8; k, v unrotated.
  const uint16_t* q = nullptr;
  const uint16_t* k = nullptr;
  const uint16_t* v = nullptr;
  int64_t q_token_stride = 0;
  int64_t kv_token_stride = 0;
  const int32_t* positions = nullptr;     // [num_tokens] RoPE position of each token (absolute in its sequence)
  const int64_t* slot_mapping = nullptr;  // [num_tokens] cache slot = block * page_size + offset
  // Paged cache, bf16 bits: [num_blocks, page_size, KV, D], 16-byte aligned.
  uint16_t* k_cache = nullptr;
  uint16_t* v_cache = nullptr;
  int64_t num_blocks = 0;
  int64_t page_size = 0;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t max_blocks_per_seq = 0;
  // Prefill: sequence b owns tokens [cu_seqlens_q[b], cu_seqlens_q[b+1]), [num_seqs + 1].
  // Decode: ignored, token b is sequence b's one query (num_tokens == num_seqs).
  const int32_t* cu_seqlens_q = nullptr;
  const int32_t* context_lens = nullptr;  // [num_seqs] cached tokens after this step's write (>= n_b)
  int64_t num_tokens = 0;
  int64_t num_seqs = 0;
  int64_t num_heads = 0;     // H, a multiple of num_kv_heads; q head h reads kv head h / (H / KV)
  int64_t num_kv_heads = 0;  // KV
  int64_t head_dim = 0;      // D, one of kSoftmaxHeadDims
  int64_t rotary_dim = 0;    // even, <= head_dim; pairs (j, j + rotary_dim/2), angle = pos * theta^(-2j/rotary_dim)
  double theta = 10000.0;
  float scale = 0.f;           // softmax scale, 1/sqrt(D)
  uint16_t* out = nullptr;     // [num_tokens, H, D] bf16 bits, contiguous
  // Decode: host bound on max(context_lens) (sizes the split count; any value >= 1 gives correct
  // results) and the split count (0 = chosen from the device and the sizes). Tuning only.
  int64_t max_context = 0;
  int64_t num_splits = 0;
  // Prefill: q rows per warp, 16 (8 warps, Q fragments in registers) or 32 (4 warps x 2 m16 tiles,
  // each K/V fragment feeds two mma); 0 = the default. Tuning only.
  int64_t prefill_rows_per_warp = 0;
  // Prefill kernel: kPrefillAuto = the Hopper one (wgmma + TMA, softmax_attention_sm90.cu) where it applies
  // (head_dim 128, a q-head group dividing 128, rotary_dim a multiple of 32, page_size a multiple of 16, an
  // sm_90a GPU and build), else mma.sync; kPrefillMma: mma.sync (prefill_rows_per_warp > 0 implies it);
  // kPrefillSm90: the Hopper one, an error where it does not apply. The same semantics and roundings.
  int64_t prefill_kernel = 0;
  void* workspace = nullptr;  // decode: softmax_decode_workspace_bytes(*this) bytes; prefill: none
  size_t workspace_bytes = 0;
};

inline constexpr int64_t kPrefillAuto = 0, kPrefillMma = 1, kPrefillSm90 = 2;

// Writes roped k and v of the new tokens into the cache (step 1 alone).
KernelStatus softmax_kv_cache_write(const SoftmaxAttentionCudaParams& p, Stream stream);
// Cache write, then causal paged attention for every new token (varlen, chunked prefill).
KernelStatus softmax_attention_prefill(const SoftmaxAttentionCudaParams& p, Stream stream);
// Split count decode will use for these params (>= 1), and its fp32 partials' size in bytes.
int64_t softmax_decode_num_splits(const SoftmaxAttentionCudaParams& p);
size_t softmax_decode_workspace_bytes(const SoftmaxAttentionCudaParams& p);
// Cache write, then one query per sequence against its context: split-K attention + combine.
KernelStatus softmax_attention_decode(const SoftmaxAttentionCudaParams& p, Stream stream);

}  // namespace fulgur::kernels::cuda
