// Host side of TMA: tensor maps (CUtensorMap) for the sm_90 kernels (kernels/cuda/sm90.cuh).
// The driver's encoder is reached through the runtime's entry-point query, so nothing links libcuda.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "kernels/kernel_status.h"

namespace fulgur::kernels::cuda {

// A bf16 tensor of `rank` (2..5) dimensions, dims[0] innermost (contiguous); strides_bytes[i] is the
// byte stride of dimension i + 1 (multiples of 16). Boxes of box[0] x box[1] x ... elements are loaded
// with 128-byte swizzle, so box[0] * 2 must be <= 128 (64 bf16: one swizzle row). The base must be
// 16-byte aligned. Out-of-range elements of a box load as zeros.
KernelStatus make_tensor_map_bf16_sw128(CUtensorMap* map, const void* base, int rank, const uint64_t* dims,
                                        const uint64_t* strides_bytes, const uint32_t* box);

}  // namespace fulgur::kernels::cuda
