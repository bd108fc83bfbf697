// MoE router on the GPU (spec §5): the same contract and the same numbers as moe_router_cpu
// (kernels/moe_router.h): p = softmax(logits) over all experts, top-k by p (ties to the lower expert
// index), weights renormalised to sum to 1, all outputs fp32. One warp per token.
//
// The probabilities are formed as the CPU reference forms them (exp of the f32 difference to the
// row maximum in double, the double sum, one rounding to f32), so the selected experts match the
// reference wherever the f32 probabilities do; the renormalising sum runs in f32 in selection order,
// as in the reference.
// Non-finite logits, an error on the CPU, cannot be reported from the kernel: such a token gets
// topk_idx = -1 and topk_weight = 0 in every slot (and NaN probs), which moe_permute drops and
// counts (see kernels/cuda/moe_permute.h), so the caller sees it in expert_offsets[E].
#pragma once

#include <cstdint>

#include "kernels/cuda/runtime.h"
#include "kernels/moe_router.h"

namespace fulgur::kernels::cuda {

// Largest expert count with an instantiated kernel (MiniMax-Text-01 uses 32) and largest k.
inline constexpr int64_t kMoeRouterMaxExperts = 256;
inline constexpr int64_t kMoeRouterMaxK = 64;

struct MoeRouterCudaParams {
  const float* logits = nullptr;  // [num_tokens, num_experts] fp32 (the gate GEMM's output), row stride logits_stride
  int32_t* topk_idx = nullptr;    // [num_tokens, k], descending probability
  float* topk_weight = nullptr;   // [num_tokens, k], renormalised
  float* probs = nullptr;         // optional [num_tokens, num_experts] softmax output (training aux loss)
  int64_t num_tokens = 0;
  int64_t num_experts = 0;
  int64_t k = 2;
  int64_t logits_stride = 0;  // elements; 0 = num_experts
};
KernelStatus moe_router(const MoeRouterCudaParams& p, Stream stream);

}  // namespace fulgur::kernels::cuda
