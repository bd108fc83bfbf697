// Pieces shared by the softmax attention kernels (softmax_attention.cu: mma.sync, any GPU;
// softmax_attention_sm90.cu: wgmma + TMA, Hopper): RoPE angles and the varlen work-item lookup.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/softmax_attention.h"

namespace fulgur::kernels::cuda::softmax_detail {

// cos and sin of pos * inv_freq: the angle in double (as the CPU reference), reduced to [-pi, pi]
// in double, then single-precision sincos on the small remainder.
inline __device__ void rope_cos_sin(int pos, double inv_freq, float& c, float& s) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  const double angle = static_cast<double>(pos) * inv_freq;
  const double turns = rint(angle * (1.0 / kTwoPi));
  const float r = static_cast<float>(fma(-turns, kTwoPi, angle));
  sincosf(r, &s, &c);
}

// Tiles of kRows flat rows per sequence: ceil(n_b * group / kRows). Finds the (sequence, tile) of
// work item `item` by a warp-wide scan over cu_seqlens; every lane returns the same answer.
inline __device__ bool find_tile(const int32_t* __restrict__ cu, int num_seqs, int group, int rows, int item, int& seq,
                          int& tile) {
  const int lane = threadIdx.x % 32;
  int base = 0;
  for (int b0 = 0; b0 < num_seqs; b0 += 32) {
    const int b = b0 + lane;
    int n = 0;
    if (b < num_seqs) n = static_cast<int>((static_cast<int64_t>(cu[b + 1] - cu[b]) * group + rows - 1) / rows);
    int incl = n;
    for (int off = 1; off < 32; off *= 2) {
      const int x = __shfl_up_sync(0xffffffffu, incl, off);
      if (lane >= off) incl += x;
    }
    const int excl = incl - n;
    const unsigned hit = __ballot_sync(0xffffffffu, n > 0 && item >= base + excl && item < base + incl);
    if (hit) {
      const int src = __ffs(hit) - 1;
      seq = b0 + src;
      tile = item - base - __shfl_sync(0xffffffffu, excl, src);
      return true;
    }
    base += __shfl_sync(0xffffffffu, incl, 31);
  }
  return false;
}

// The Hopper prefill (softmax_attention_sm90.cu): whether it takes these params (head_dim 128, a group
// dividing 128, rotary_dim a multiple of 32, page_size a multiple of 16, an sm_90 device and binary), and
// the attention pass alone (the caller has written the cache).
bool prefill_sm90_supported(const SoftmaxAttentionCudaParams& p);
KernelStatus prefill_sm90(const SoftmaxAttentionCudaParams& p, cudaStream_t stream);

}  // namespace fulgur::kernels::cuda::softmax_detail
