// One check macro per library (style.md §12): the CUDA runtime and cuBLAS. Each evaluates the
// statement once and, on failure, returns a fulgur Status naming the statement, file, line and the
// library's own error text from the enclosing function (which returns Status or Expected<T>).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "devices/status.h"

namespace fulgur::cuda {

// cudaErrorMemoryAllocation -> out_of_memory; no device / no driver -> unavailable; else internal.
// Clears the sticky "last error" so the next call does not report it again.
Status cuda_status(cudaError_t err, const char* stmt, const char* file, int line);
Status cublas_status(cublasStatus_t err, const char* stmt, const char* file, int line);

}  // namespace fulgur::cuda

#define FULGUR_CUDA_TRY(stmt)                                                                          \
  do {                                                                                                 \
    if (const cudaError_t fulgur_cuda_err_ = (stmt); fulgur_cuda_err_ != cudaSuccess)                  \
      return ::fulgur::cuda::cuda_status(fulgur_cuda_err_, #stmt, __FILE__, __LINE__);                 \
  } while (0)

#define FULGUR_CUBLAS_TRY(stmt)                                                                        \
  do {                                                                                                 \
    if (const cublasStatus_t fulgur_cublas_err_ = (stmt); fulgur_cublas_err_ != CUBLAS_STATUS_SUCCESS) \
      return ::fulgur::cuda::cublas_status(fulgur_cublas_err_, #stmt, __FILE__, __LINE__);             \
  } while (0)
