// The f32 kernels of the CUDA model's f32 compute mode (actors/layers/cuda_model.h,
// CudaComputeDtype::f32): every activation, weight and state in f32, so the GPU forward can be held to
// the float64 reference within 1e-4 (and used to tell kernel bugs from bf16 rounding). They follow
// the math of the CPU references one to one and are simple on purpose, not tuned: the fast path is bf16.
//  - gather_rows: out[i] = src[ids[i]] for rows of row_bytes bytes (embedding, logits rows, MoE permute);
//    an id outside [0, src_rows) gives a zero row (never an out-of-bounds read).
//  - deepnorm_rmsnorm_f32: out = w * s / sqrt(mean(s^2) + eps), s = alpha * residual + beta * x (spec §6).
//  - silu_inplace_f32, silu_mul_f32 (out[r, i] = silu(h[r, i]) * h[r, inter + i] over [rows, 2 * inter]).
//  - lightning_recurrence_f32: the exact recurrence of spec §3.3 per sequence and head,
//      S_t = e^{-s} S_{t-1} + k_t^T v_t,  o_t = q_t S_t,
//    from the sequence's state slot, writing the final state back: prefill, chunked prefill and
//    decode are the same call. One block per (sequence, head), thread j owns column j of S.
//  - softmax_attention_f32: partial NeoX RoPE (angles in double, as the CPU reference), k/v into a
//    paged f32 cache, then causal GQA attention of every new token over positions [0, its own],
//    online softmax in f32, one warp per (token, q head).
//  - moe_unpermute_f32: out[t] = sum over slots of weight * y[inverse[t, s]] (dropped slots skipped).
// All pointers are device pointers; entries validate and enqueue on `stream`, never allocate.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/runtime.h"

namespace fulgur::kernels::cuda {

KernelStatus gather_rows(const void* src, int64_t src_rows, int64_t row_bytes, const int32_t* ids, int64_t num_ids,
                         void* out, Stream stream);

struct DeepNormRmsNormF32Params {
  const float* residual = nullptr;  // [rows, dim]
  const float* x = nullptr;         // [rows, dim]
  const float* weight = nullptr;    // [dim]
  float* out = nullptr;             // [rows, dim]; may alias residual or x
  float* sum_out = nullptr;         // optional [rows, dim]
  int64_t rows = 0;
  int64_t dim = 0;
  float alpha = 1.f, beta = 1.f, eps = 1e-5f;
};
KernelStatus deepnorm_rmsnorm_f32(const DeepNormRmsNormF32Params& p, Stream stream);

KernelStatus silu_inplace_f32(float* x, int64_t n, Stream stream);
KernelStatus silu_mul_f32(const float* h, int64_t rows, int64_t inter, float* out, Stream stream);

// head_dim values instantiated for the recurrence (the CUDA model pads to one of them).
inline constexpr int64_t kLightningRecurrenceHeadDims[] = {16, 32, 64, 128};

struct LightningRecurrenceF32Params {
  const float* q = nullptr;  // element (t, h, d) at q + t * token_stride + h * head_stride + d; k, v likewise
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
  float* out = nullptr;                 // [num_tokens, H, D] contiguous
  float* states = nullptr;              // [num_slots, H, D, D], rows k dims, cols v dims
  const float* slopes = nullptr;        // [H]
  const int32_t* cu_seqlens = nullptr;  // [num_seqs + 1]
  const int32_t* slot_idx = nullptr;    // [num_seqs]
  int64_t num_tokens = 0, num_seqs = 0, num_slots = 0, num_heads = 0, head_dim = 0;
};
KernelStatus lightning_recurrence_f32(const LightningRecurrenceF32Params& p, Stream stream);

struct SoftmaxAttentionF32Params {
  const float* q = nullptr;  // (t, h, d) at q + t * q_token_stride + h * D + d
  const float* k = nullptr;  // (t, kvh, d) at k + t * kv_token_stride + kvh * D + d; v likewise
  const float* v = nullptr;
  int64_t q_token_stride = 0, kv_token_stride = 0;
  const int32_t* positions = nullptr;     // [num_tokens]
  const int64_t* slot_mapping = nullptr;  // [num_tokens]
  float* k_cache = nullptr;               // [num_blocks, page_size, KV, D]
  float* v_cache = nullptr;
  int64_t num_blocks = 0, page_size = 0;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t max_blocks_per_seq = 0;
  const int32_t* cu_seqlens_q = nullptr;  // [num_seqs + 1]
  int64_t num_tokens = 0, num_seqs = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0, rotary_dim = 0;
  double theta = 10000.0;
  float scale = 0.f;
  float* out = nullptr;  // [num_tokens, H, D]
};
KernelStatus softmax_attention_f32(const SoftmaxAttentionF32Params& p, Stream stream);

KernelStatus moe_unpermute_f32(const float* y, const int32_t* inverse, const float* topk_weight, int64_t num_tokens,
                               int64_t k, int64_t hidden, float* out, Stream stream);

}  // namespace fulgur::kernels::cuda
