// Token sampling on the GPU, for a batch of rows of fp32 logits (the lm_head output).
//
// sample_greedy: argmax of each row, ties to the lowest index: the token sample_cpu (kernels/sampling.h)
// picks at temperature 0. Two kernels: each row is cut into segments of kSampleGreedySegment logits,
// one block per (segment, row) writes its (max, index) to the workspace, then one warp per row
// reduces the segments in order. A row holding a non-finite logit (an error on the CPU) gets token -1.
//
// sample: temperature / top-k / top-p sampling with per-row parameters, the token sample_cpu draws
// from the same row and (seed, step), bit for bit: both use the integer weights of
// kernels/sampling_math.h. One block per row and no sort: the row's maximum, then radix selections
// over the 64-bit order keys — by count for the top-k cut, by weight for the top-p cut and for the draw
// itself — with the candidates moved to shared memory once at most 8192 are left (sampling.cu).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/runtime.h"
#include "kernels/sampling.h"

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

// Tokens sample answers instead of a token id.
inline constexpr int32_t kSampleNonFinite = -1;      // the row holds a NaN or an infinity
inline constexpr int32_t kSampleBadParams = -2;      // its SamplingParams fail check_sampling_params
inline constexpr int32_t kSampleInternalError = -3;  // a selection found no token (a bug)

struct SampleCudaParams {
  const float* logits = nullptr;                     // [num_rows, vocab] fp32, row stride logits_stride, device
  const kernels::SamplingParams* params = nullptr;   // [num_rows] device: each row's own parameters
  int32_t* out_token = nullptr;                      // [num_rows] device: the token, or a kSample* code
  int64_t num_rows = 0;
  int64_t vocab = 0;  // <= 2^26 (sampling_math.h)
  int64_t logits_stride = 0;  // elements; 0 = vocab
};
KernelStatus sample(const SampleCudaParams& p, Stream stream);

}  // namespace fulgur::kernels::cuda
