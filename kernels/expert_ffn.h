// Expert FFN of one MoE layer over tokens already grouped by expert (spec §5; the layout of
// kernels/moe_permute.h): the plain C++ reference of kernels/cuda/expert_ffn.h.
//
// For every expert e and every row r in [expert_offsets[e], expert_offsets[e + 1]):
//   gate = w1[e] . x[r],  up = w3[e] . x[r]        ([inter] each; w1, w3 stored together as w13)
//   act  = silu(gate) * up                          ([inter])
//   y[r] = w2[e] . act                              ([hidden])
// the SwiGLU of MoeBlock::expert_forward (actors/layers/moe_block.cpp). Sums run in double.
// With round_intermediates, gate, up and act are rounded to bf16 where the GPU stores them in bf16
// (the GEMM outputs and the activation), so the reference mirrors the device's roundings and the
// comparison is left with accumulation-order noise; without it, the MoeBlock f32 semantics.
//
// Also here: the row-wise int8 weight quantiser (w ~= q * scale per output row) and its inverse.
#pragma once

#include <cstdint>

#include "kernels/kernel_status.h"

namespace fulgur::kernels {

struct ExpertFfnRefParams {
  const float* x = nullptr;               // [rows, hidden], row-major (rows = expert_offsets[num_experts])
  const float* w13 = nullptr;             // [num_experts, 2 * inter, hidden]: rows [0, inter) = w1 (gate),
                                          //   rows [inter, 2 * inter) = w3 (up); row-major
  const float* w2 = nullptr;              // [num_experts, hidden, inter], row-major
  const int32_t* expert_offsets = nullptr;  // [num_experts + 1], non-decreasing, expert_offsets[0] = 0
  float* y = nullptr;                     // [rows, hidden]
  int64_t num_experts = 0;
  int64_t hidden = 0;
  int64_t inter = 0;
  bool round_intermediates = true;
};
KernelStatus expert_ffn_cpu(const ExpertFfnRefParams& p);

// Row-wise symmetric int8: scale[r] = max_c |w[r, c]| / 127 (1 where the row is all zeros),
// q[r, c] = round-half-away(w[r, c] / scale[r]) clamped to [-127, 127]. w: [rows, cols].
void quantize_rows_int8_cpu(const float* w, int64_t rows, int64_t cols, int8_t* q, float* scale);
// w[r, c] = q[r, c] * scale[r] in f32.
void dequantize_rows_int8_cpu(const int8_t* q, const float* scale, int64_t rows, int64_t cols, float* w);

}  // namespace fulgur::kernels
