// Elementwise activations around the GEMMs (CPU reference; contiguous buffers of n floats).
#pragma once

#include <cstdint>

namespace fulgur::kernels {

void silu_inplace_cpu(float* x, int64_t n);                                   // x = x * sigmoid(x)
void silu_mul_cpu(const float* gate, const float* up, float* out, int64_t n);  // out = silu(gate) * up
void sigmoid_mul_cpu(const float* gate, float* x, int64_t n);                 // x = x * sigmoid(gate)

}  // namespace fulgur::kernels
