// Lightning attention on the GPU (spec §3.3–§3.5): the same math and the same params layout as the
// CPU reference (kernels/lightning_attention.h), with bf16 q/k/v read straight from the fused qkv
// projection, fp32 state slots, packed varlen sequences. All pointers are device pointers.
//
// Prefill runs in three kernels over 64-token chunks (the CPU block size has no meaning here):
//   1. local:  each sequence is cut into segments (a multiple of 64 tokens, chosen to fill the GPU);
//              for every segment but the last, the segment-local state sum_j e^{-s(L-1-j)} k_j^T v_j
//              from a zero state -> workspace.
//   2. scan:   per sequence and head, the state entering each segment
//              S_in[p+1] = e^{-s L_p} S_in[p] + local[p], S_in[0] = the slot's state -> workspace.
//   3. output: each segment from S_in, chunk by chunk: O = e^{-s(i+1)} Q S + ((Q K^T) . M) V,
//              S = e^{-s m} S + (e^{-s(m-1-j)} V)^T K; the last segment writes the slot's state.
// Every decay is e^{-s n} with n >= 0. Tensor cores (mma.sync bf16, f32 accumulation); the state
// is fp32 in registers and enters Q.S split into bf16 hi + lo (so Q.S is accurate to ~2^-16).
// The bf16 roundings left are those of the reference algorithm (decayed V for the state update)
// plus the masked scores P before P.V.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/runtime.h"

namespace fulgur::kernels::cuda {

enum class LightningOutDtype { kBf16, kF32 };

// head_dim values with an instantiated kernel; anything else is rejected by the entries.
inline constexpr int64_t kLightningHeadDims[] = {16, 32, 64, 128};

struct LightningPrefillCudaParams {
  // q, k, v: bf16 bits, element (t, h, d) at base + t*qkv_token_stride + h*qkv_head_stride + d.
  // The fused projection [T, H, 3D] gives token stride 3HD, head stride 3D, k = q + D, v = q + 2D.
  // Base pointers 16-byte aligned, strides multiples of 8 elements.
  const uint16_t* q = nullptr;
  const uint16_t* k = nullptr;
  const uint16_t* v = nullptr;
  int64_t qkv_token_stride = 0;
  int64_t qkv_head_stride = 0;
  void* out = nullptr;  // [num_tokens, H, D] contiguous, bf16 bits or f32 per out_dtype
  LightningOutDtype out_dtype = LightningOutDtype::kBf16;
  float* states = nullptr;              // [num_slots, H, D, D] fp32, rows k dims, cols v dims
  const float* slopes = nullptr;        // [H] decay rates s_h > 0
  const int32_t* cu_seqlens = nullptr;  // [num_seqs + 1] on the device, cu_seqlens[num_seqs] = num_tokens
  const int32_t* slot_idx = nullptr;    // [num_seqs] on the device, distinct, each in [0, num_slots)
  int64_t num_tokens = 0;
  int64_t num_seqs = 0;
  int64_t num_slots = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
  // Segments per sequence are chosen so that about target_ctas blocks run at once; 0 = the
  // device's multiprocessor count. Correctness-neutral (tuning).
  int64_t target_ctas = 0;
  // Output-pass blocks per SM, 1 or 2 (0 = the measured default: 2 from 64k tokens, else 1); with target_ctas 0 the output
  // pass runs multiprocessors * blocks_per_sm blocks. Correctness-neutral (tuning).
  int64_t blocks_per_sm = 0;
  // true: the state enters Q.S as bf16 hi + lo (accurate to ~2^-16). false: hi only, one more bf16
  // rounding of the inter-chunk term (the tests' tolerance grows from 2 to 3 roundings), ~20% faster.
  bool split_state = true;
  void* workspace = nullptr;  // lightning_prefill_workspace_bytes(*this) bytes, device memory
  size_t workspace_bytes = 0;
};
size_t lightning_prefill_workspace_bytes(const LightningPrefillCudaParams& p);
KernelStatus lightning_prefill(const LightningPrefillCudaParams& p, Stream stream);

struct LightningDecodeCudaParams {
  // One token per sequence: q, k, v bf16 bits [num_seqs, H, D] with the strides as in prefill.
  const uint16_t* q = nullptr;
  const uint16_t* k = nullptr;
  const uint16_t* v = nullptr;
  int64_t qkv_token_stride = 0;
  int64_t qkv_head_stride = 0;
  void* out = nullptr;  // [num_seqs, H, D] contiguous
  LightningOutDtype out_dtype = LightningOutDtype::kBf16;
  float* states = nullptr;            // [num_slots, H, D, D], updated in place
  const float* slopes = nullptr;      // [H]
  const int32_t* slot_idx = nullptr;  // [num_seqs] on the device
  int64_t num_seqs = 0;
  int64_t num_slots = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
};
// S = exp(-s) S + k^T v;  o = q S  (fp32 throughout; q, k, v exact bf16).
KernelStatus lightning_decode(const LightningDecodeCudaParams& p, Stream stream);

}  // namespace fulgur::kernels::cuda
