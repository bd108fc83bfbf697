// Token sampling on the GPU, for a batch of rows of fp32 logits (the lm_head output).
//
// sample_greedy: argmax of each row, ties to the lowest index: the token sample_cpu (kernels/sampling.h)
// picks at temperature 0. Two kernels: each row is cut into segments of kSampleGreedySegment logits,
// one block per (segment, row) writes its (max, index) to the workspace, then one warp per row
// reduces the segments in order. A row holding a non-finite logit (an error on the CPU) gets token -1.
// Temperature / top-k / top-p sampling on the GPU is not implemented yet (the CPU sampler draws it).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/runtime.h"

namespace fulgur::kernels::cuda {

// Logits per block in the first kernel. Correctness-neutral (tuning). Measured on the H200 at vocab
// 200064: 8192 -> 12.0 / 24.0 / 64.1 us at 1 / 64 / 256 rows; 2048 (predicted faster at one row, more
// blocks in flight) -> 13.8 / 28.6 / 75.2 us, so 8192 stays: at one row the two launches dominate.
inline constexpr int64_t kSampleGreedySegment = 8192;

struct SampleGreedyCudaParams {
  const float* logits = nullptr;  // [num_rows, vocab] fp32, row stride logits_stride, device
  int32_t* out_token = nullptr;   // [num_rows] device: the argmax, or -1 for a row with a non-finite logit
  int64_t num_rows = 0;
  int64_t vocab = 0;
  int64_t logits_stride = 0;  // elements; 0 = vocab
  void* workspace = nullptr;  // sample_greedy_workspace_bytes(num_rows, vocab) bytes of device memory, 8-byte aligned
  size_t workspace_bytes = 0;
};
// Workspace layout: {float max, int32 index}[num_rows][ceil(vocab / kSampleGreedySegment)].
size_t sample_greedy_workspace_bytes(int64_t num_rows, int64_t vocab);
KernelStatus sample_greedy(const SampleGreedyCudaParams& p, Stream stream);

}  // namespace fulgur::kernels::cuda
