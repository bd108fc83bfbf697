// Minimal CUDA runtime access for code that is compiled without nvcc (tests, CLI): device count,
// device memory and copies. Errors come back as static messages (kernels/ depends on nothing).
// The full device layer (streams, events, caching allocator) lives in devices/ (CUDA issue).
#pragma once

#include <cstddef>

#include "kernels/kernel_status.h"

struct CUstream_st;

namespace fulgur::kernels::cuda {

using Stream = CUstream_st*;  // cudaStream_t without including the CUDA headers

// Number of usable CUDA devices; 0 when there is no driver or no GPU (never fails).
int device_count();
// Compute capability major of the current device (9 = Hopper); 0 without a device.
int device_major();
KernelStatus device_alloc(void** ptr, size_t bytes);
KernelStatus device_free(void* ptr);
KernelStatus copy_to_device(void* dst, const void* src, size_t bytes);
KernelStatus copy_to_host(void* dst, const void* src, size_t bytes);
KernelStatus synchronize();

}  // namespace fulgur::kernels::cuda
