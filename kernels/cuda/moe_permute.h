// MoE token permute / unpermute on the GPU: the contracts of kernels/moe_permute.h (the CPU
// reference), with device pointers, caller-provided workspace, enqueued on a stream.
//
// moe_permute runs four kernels over the num_tokens * k assignments, cut into chunks of
// kMoePermuteChunk (a = t * k + s ascending):
//   1. count:   per chunk, a histogram over experts          -> workspace chunk_counts [chunks, E]
//   2. scan:    one block: per expert, the exclusive sum over chunks, then over experts
//               -> expert_offsets [E + 1]; chunk_counts becomes each chunk's first row per expert
//   3. scatter: per chunk, the stable rank of each assignment among the chunk's assignments of the
//               same expert (warp match + per-warp counts, tile by tile in order)
//               -> inverse [T, k], permuted_token [T * k]
//   4. gather:  one block per assignment copies h[t] to its row (16-byte vectors where aligned)
// Every step is deterministic (no atomics on global memory), so the output is bit-identical to
// moe_permute_cpu. Ids outside [0, E) are dropped as in the reference; the kernels never write out
// of bounds for any id.
//
// moe_unpermute: one block per token; the token's slots are ordered by expert id, then each thread
// accumulates its columns in f32 with separately rounded multiply and add (__fmul_rn, __fadd_rn):
// bit-identical to moe_unpermute_cpu.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/runtime.h"
#include "kernels/moe_permute.h"

namespace fulgur::kernels::cuda {

inline constexpr int64_t kMoePermuteChunk = 1024;     // assignments per block in steps 1 and 3
inline constexpr int64_t kMoePermuteMaxExperts = 256;  // one thread per expert in steps 2 and 3
inline constexpr int64_t kMoeUnpermuteMaxK = 64;

// Same fields as MoePermuteParams (all device pointers), plus the workspace.
struct MoePermuteCudaParams : MoePermuteParams {
  void* workspace = nullptr;  // moe_permute_workspace_bytes(...) bytes of device memory, 4-byte aligned
  size_t workspace_bytes = 0;
};
// Workspace layout: int32 chunk_counts[ceil(num_tokens * k / kMoePermuteChunk)][num_experts].
size_t moe_permute_workspace_bytes(int64_t num_tokens, int64_t k, int64_t num_experts);
KernelStatus moe_permute(const MoePermuteCudaParams& p, Stream stream);

// Same fields as MoeUnpermuteParams, device pointers; k <= kMoeUnpermuteMaxK.
KernelStatus moe_unpermute(const MoeUnpermuteParams& p, Stream stream);

}  // namespace fulgur::kernels::cuda
