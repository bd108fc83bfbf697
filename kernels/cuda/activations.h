// Elementwise pieces of the layer glue on the GPU, around the cuBLAS projections (the CPU
// references are kernels/activations.h and kernels/rmsnorm.h):
//  - silu_inplace_bf16: x = bf16(x * sigmoid(x)) over n contiguous bf16 values (the lightning qkv
//    activation, spec §3.1; fp32 math, one rounding).
//  - lightning_output_gate: the lightning output path of spec §3.6 before out_proj, fused:
//      y = norm_weight * RMSNorm(attn) over all H*D features of a token (eps 1e-6 in MiniMax),
//      out = bf16(y * sigmoid(gate)),
//    reading the attention output [T, H, head_stride] (f32 or bf16; only the first head_dim values
//    of each head are features: head_stride > head_dim when the caller padded heads to a kernel's
//    head_dim) and writing [T, H*D] contiguous. Reference: rmsnorm_cpu then sigmoid_mul_cpu on the
//    same values in f32 (y = w * (x * inv), then y * sigmoid(g)).
//  - bf16_to_f32: widening copy (exact), for an fp32 GEMM on a bf16 activation.
//  - fill_random: x[i] = offset + std * sqrt(3) * (2 u_i - 1), u_i uniform in [0, 1) from a hash of (seed, i)
//    (splitmix64; the same values on every device and launch shape): random weights for benchmarks.
// All pointers are device pointers; entries validate and enqueue on `stream`, never allocate.
#pragma once

#include <cstdint>

#include "kernels/cuda/runtime.h"

namespace fulgur::kernels::cuda {

KernelStatus silu_inplace_bf16(uint16_t* x, int64_t n, Stream stream);

KernelStatus bf16_to_f32(const uint16_t* x, float* y, int64_t n, Stream stream);

enum class ActivationDtype { kBf16, kF32 };

KernelStatus fill_random(void* x, ActivationDtype dtype, int64_t n, uint64_t seed, float std, float offset, Stream stream);
// The value fill_random writes at index i (before rounding to bf16), for checking it on the host.
float fill_random_value(uint64_t seed, int64_t i, float std, float offset);

struct LightningOutputGateCudaParams {
  const void* attn = nullptr;  // [num_tokens, num_heads, head_stride], dtype attn_dtype
  ActivationDtype attn_dtype = ActivationDtype::kF32;
  // gate, norm_weight and out in io_dtype (bf16 bits, or f32 for the f32 compute mode; out then unrounded).
  ActivationDtype io_dtype = ActivationDtype::kBf16;
  const void* gate = nullptr;         // [num_tokens, H*D] (the output_gate projection), row stride gate_stride
  const void* norm_weight = nullptr;  // [H*D]
  void* out = nullptr;                // [num_tokens, H*D], contiguous
  int64_t num_tokens = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;     // D: features per head
  int64_t head_stride = 0;  // elements between heads of attn; 0 = head_dim (>= head_dim)
  int64_t gate_stride = 0;  // elements; 0 = H*D
  float eps = 1e-6f;
};
KernelStatus lightning_output_gate(const LightningOutputGateCudaParams& p, Stream stream);

}  // namespace fulgur::kernels::cuda
