// cuBLAS and cuBLASLt handles for one device and stream, with their workspace taken from the
// caching allocator (cuBLAS then allocates nothing itself during calls).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstddef>

#include "devices/cuda/allocator.h"
#include "devices/status.h"

namespace fulgur::cuda {

class BlasHandles {
 public:
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;  // cuBLAS's Hopper recommendation
  static Expected<BlasHandles> create(CachingAllocator& alloc, cudaStream_t stream,
                                      size_t workspace_bytes = kDefaultWorkspaceBytes);
  BlasHandles() = default;
  BlasHandles(BlasHandles&& o) noexcept;
  BlasHandles& operator=(BlasHandles&& o) noexcept;
  BlasHandles(const BlasHandles&) = delete;
  BlasHandles& operator=(const BlasHandles&) = delete;
  ~BlasHandles();

  cublasHandle_t blas() const { return blas_; }
  cublasLtHandle_t lt() const { return lt_; }
  // The workspace for cublasLtMatmul calls (cuBLAS's own handle already has it set).
  void* workspace() const { return workspace_.data(); }
  size_t workspace_bytes() const { return workspace_.bytes(); }
  cudaStream_t stream() const { return stream_; }
  Status set_stream(cudaStream_t stream);

 private:
  void destroy();
  cublasHandle_t blas_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  DeviceMemory workspace_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace fulgur::cuda
