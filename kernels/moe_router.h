// MoE router (spec §5): p = softmax(logits) in fp32 over all experts, top-k by p, weights
// renormalised to sum to 1. Ties go to the lower expert index (as torch.topk on CPU).
#pragma once

#include <cstdint>

#include "kernels/kernel_status.h"

namespace fulgur::kernels {

struct MoeRouterParams {
  const float* logits = nullptr;  // [num_tokens, num_experts]
  int32_t* topk_idx = nullptr;    // [num_tokens, k], descending probability
  float* topk_weight = nullptr;   // [num_tokens, k], renormalised
  float* probs = nullptr;         // optional [num_tokens, num_experts] softmax output (training aux loss)
  int64_t num_tokens = 0;
  int64_t num_experts = 0;
  int64_t k = 2;
};
KernelStatus moe_router_cpu(const MoeRouterParams& p);

}  // namespace fulgur::kernels
