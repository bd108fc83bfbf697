// One check macro for the CUDA runtime: evaluates the call and returns a KernelStatus naming the
// statement, file and line when it fails.
#pragma once

#include <cuda_runtime.h>

#include "kernels/kernel_status.h"

#define FULGUR_CUDA_STR2(x) #x
#define FULGUR_CUDA_STR(x) FULGUR_CUDA_STR2(x)
#define FULGUR_CUDA_CHECK(stmt)                                                                \
  do {                                                                                         \
    if (cudaError_t fulgur_cuda_err = (stmt); fulgur_cuda_err != cudaSuccess) {                \
      (void)cudaGetLastError();                                                                \
      return ::fulgur::kernels::kernel_error(#stmt " failed at " __FILE__ ":" FULGUR_CUDA_STR(__LINE__)); \
    }                                                                                          \
  } while (0)
