// Token permutation for the MoE block (spec §5): group the rows of h by expert so that each expert
// runs one GEMM over a contiguous block, then combine the expert outputs back in token order.
// This is the plain C++ reference of kernels/cuda/moe_permute.h: the same layout and the same order
// of accumulation as MoeBlock::forward (actors/layers/moe_block.cpp).
//
// An assignment is one (token t, slot s) pair, a = t * k + s, of expert topk_idx[a].
// Layout of the permuted rows: expert e owns rows [expert_offsets[e], expert_offsets[e + 1]), holding
// its assignments in ascending a (tokens ascending; stable). Ids outside [0, num_experts) are
// dropped: they own no row, their inverse entry is -1, and expert_offsets[num_experts] (the number
// of rows) is below num_tokens * k; callers check it.
#pragma once

#include <cstdint>

#include "kernels/kernel_status.h"

namespace fulgur::kernels {

struct MoePermuteParams {
  const int32_t* topk_idx = nullptr;  // [num_tokens, k]
  const uint16_t* h = nullptr;        // optional [num_tokens, hidden] bf16 bits, row stride h_stride
  uint16_t* permuted = nullptr;       // [num_tokens * k, hidden] bf16 bits (only the first
                                      // expert_offsets[num_experts] rows written); null iff h is null
  int32_t* expert_offsets = nullptr;  // [num_experts + 1], exclusive prefix sum of the counts
  int32_t* permuted_token = nullptr;  // optional [num_tokens * k]: token of each permuted row
  int32_t* inverse = nullptr;         // [num_tokens, k]: permuted row of assignment a, or -1 (dropped)
  int64_t num_tokens = 0;
  int64_t k = 0;
  int64_t num_experts = 0;
  int64_t hidden = 0;
  int64_t h_stride = 0;  // elements; 0 = hidden
};
KernelStatus moe_permute_cpu(const MoePermuteParams& p);

struct MoeUnpermuteParams {
  const uint16_t* expert_out = nullptr;  // [rows, hidden] bf16 bits in the permuted order, row stride expert_out_stride
  const int32_t* inverse = nullptr;      // [num_tokens, k] from moe_permute
  const int32_t* topk_idx = nullptr;     // [num_tokens, k] (fixes the order of accumulation)
  const float* topk_weight = nullptr;    // [num_tokens, k]
  uint16_t* out = nullptr;               // [num_tokens, hidden] bf16 bits, row stride out_stride
  int64_t num_tokens = 0;
  int64_t k = 0;
  int64_t hidden = 0;
  int64_t expert_out_stride = 0;  // 0 = hidden
  int64_t out_stride = 0;         // 0 = hidden
};
// out[t] = bf16( sum over the token's slots in ascending expert id (then slot) of
//                weight * expert_out[inverse[t, s]] ), accumulated in f32 from 0 with a separate
// multiply and add per term (no fused multiply-add); dropped slots (inverse -1) add nothing.
KernelStatus moe_unpermute_cpu(const MoeUnpermuteParams& p);

}  // namespace fulgur::kernels
