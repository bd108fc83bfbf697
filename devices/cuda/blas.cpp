#include "devices/cuda/blas.h"

#include <utility>

#include "devices/cuda/check.h"

namespace fulgur::cuda {

Expected<BlasHandles> BlasHandles::create(CachingAllocator& alloc, cudaStream_t stream, size_t workspace_bytes) {
  BlasHandles h;
  FULGUR_ASSIGN_OR_RETURN(h.workspace_, DeviceMemory::create(alloc, workspace_bytes, stream));
  FULGUR_CUBLAS_TRY(cublasCreate(&h.blas_));
  FULGUR_CUBLAS_TRY(cublasLtCreate(&h.lt_));
  FULGUR_CUBLAS_TRY(cublasSetWorkspace(h.blas_, h.workspace_.data(), h.workspace_.bytes()));
  FULGUR_TRY(h.set_stream(stream));
  return h;
}

Status BlasHandles::set_stream(cudaStream_t stream) {
  FULGUR_CUBLAS_TRY(cublasSetStream(blas_, stream));
  FULGUR_CUBLAS_TRY(cublasSetWorkspace(blas_, workspace_.data(), workspace_.bytes()));  // setStream resets it
  stream_ = stream;
  workspace_.set_stream(stream);
  return Status::ok();
}

BlasHandles::BlasHandles(BlasHandles&& o) noexcept
    : blas_(std::exchange(o.blas_, nullptr)), lt_(std::exchange(o.lt_, nullptr)), workspace_(std::move(o.workspace_)),
      stream_(o.stream_) {}
BlasHandles& BlasHandles::operator=(BlasHandles&& o) noexcept {
  if (this != &o) {
    destroy();
    blas_ = std::exchange(o.blas_, nullptr), lt_ = std::exchange(o.lt_, nullptr);
    workspace_ = std::move(o.workspace_), stream_ = o.stream_;
  }
  return *this;
}
void BlasHandles::destroy() {
  if (blas_) (void)cublasDestroy(blas_);
  if (lt_) (void)cublasLtDestroy(lt_);
  blas_ = nullptr, lt_ = nullptr;
  workspace_.reset();
}
BlasHandles::~BlasHandles() { destroy(); }

}  // namespace fulgur::cuda
