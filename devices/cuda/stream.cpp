#include "devices/cuda/stream.h"

#include <cstdio>
#include <string>
#include <utility>

#include "devices/cuda/check.h"

namespace fulgur::cuda {

Status cuda_status(cudaError_t err, const char* stmt, const char* file, int line) {
  (void)cudaGetLastError();
  const Errc code = err == cudaErrorMemoryAllocation ? Errc::out_of_memory
                    : (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) ? Errc::unavailable
                                                                                       : Errc::internal;
  return Status(code, std::string(stmt) + " failed at " + file + ":" + std::to_string(line) + ": " +
                          cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

Status cublas_status(cublasStatus_t err, const char* stmt, const char* file, int line) {
  const Errc code = err == CUBLAS_STATUS_ALLOC_FAILED ? Errc::out_of_memory
                    : err == CUBLAS_STATUS_NOT_SUPPORTED ? Errc::unsupported
                    : err == CUBLAS_STATUS_INVALID_VALUE ? Errc::invalid_argument
                                                         : Errc::internal;
  return Status(code, std::string(stmt) + " failed at " + file + ":" + std::to_string(line) + ": " +
                          cublasGetStatusName(err) + " (" + cublasGetStatusString(err) + ")");
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

// ---- CudaStream ----
Expected<CudaStream> CudaStream::create(int priority) {
  cudaStream_t s = nullptr;
  FULGUR_CUDA_TRY(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, priority));
  return CudaStream(s);
}
CudaStream& CudaStream::operator=(CudaStream&& o) noexcept {
  if (this != &o) {
    if (s_) (void)cudaStreamDestroy(s_);
    s_ = std::exchange(o.s_, nullptr);
  }
  return *this;
}
CudaStream::~CudaStream() {
  if (s_) (void)cudaStreamDestroy(s_);
}
Status CudaStream::synchronize() const {
  FULGUR_CUDA_TRY(cudaStreamSynchronize(s_));
  return Status::ok();
}

// ---- CudaEvent ----
Expected<CudaEvent> CudaEvent::create(bool timing) {
  cudaEvent_t e = nullptr;
  FULGUR_CUDA_TRY(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
  return CudaEvent(e);
}
CudaEvent& CudaEvent::operator=(CudaEvent&& o) noexcept {
  if (this != &o) {
    if (e_) (void)cudaEventDestroy(e_);
    e_ = std::exchange(o.e_, nullptr);
  }
  return *this;
}
CudaEvent::~CudaEvent() {
  if (e_) (void)cudaEventDestroy(e_);
}
Status CudaEvent::record(cudaStream_t stream) {
  FULGUR_CUDA_TRY(cudaEventRecord(e_, stream));
  return Status::ok();
}
Status CudaEvent::make_wait(cudaStream_t stream) const {
  FULGUR_CUDA_TRY(cudaStreamWaitEvent(stream, e_, 0));
  return Status::ok();
}
Status CudaEvent::synchronize() const {
  FULGUR_CUDA_TRY(cudaEventSynchronize(e_));
  return Status::ok();
}
Expected<bool> CudaEvent::query() const {
  const cudaError_t err = cudaEventQuery(e_);
  if (err == cudaSuccess) return true;
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  return cuda_status(err, "cudaEventQuery(e_)", __FILE__, __LINE__);
}
Expected<float> CudaEvent::elapsed_ms_since(const CudaEvent& start) const {
  float ms = 0.f;
  FULGUR_CUDA_TRY(cudaEventElapsedTime(&ms, start.e_, e_));
  return ms;
}

// ---- PinnedBuffer ----
Expected<PinnedBuffer> PinnedBuffer::create(size_t bytes) {
  PinnedBuffer b;
  if (bytes == 0) return b;
  FULGUR_CUDA_TRY(cudaMallocHost(&b.p_, bytes));
  b.bytes_ = bytes;
  return b;
}
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) (void)cudaFreeHost(p_);
    p_ = std::exchange(o.p_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}
PinnedBuffer::~PinnedBuffer() {
  if (p_) (void)cudaFreeHost(p_);
}

Status copy_async(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  FULGUR_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
  return Status::ok();
}

}  // namespace fulgur::cuda
