// RAII owners of CUDA streams, events and pinned host memory (move-only; destroyed on scope exit).
// Creation can fail, so each type is made by a static create() returning Expected<T>.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "devices/status.h"

namespace fulgur::cuda {

// Number of usable CUDA devices; 0 without a driver or GPU (never fails).
int device_count();

class CudaStream {
 public:
  // A non-blocking stream (no implicit ordering with the legacy default stream).
  static Expected<CudaStream> create(int priority = 0);
  CudaStream() = default;  // empty: handle() is the legacy default stream
  CudaStream(CudaStream&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  CudaStream& operator=(CudaStream&& o) noexcept;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  ~CudaStream();

  cudaStream_t handle() const { return s_; }
  Status synchronize() const;

 private:
  explicit CudaStream(cudaStream_t s) : s_(s) {}
  cudaStream_t s_ = nullptr;
};

class CudaEvent {
 public:
  // timing = false makes record/query cheaper (cudaEventDisableTiming); elapsed_ms needs true.
  static Expected<CudaEvent> create(bool timing = false);
  CudaEvent() = default;
  CudaEvent(CudaEvent&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  CudaEvent& operator=(CudaEvent&& o) noexcept;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  ~CudaEvent();

  cudaEvent_t handle() const { return e_; }
  Status record(cudaStream_t stream);
  // Work submitted to `stream` after this call waits for the recorded work (device-side).
  Status make_wait(cudaStream_t stream) const;
  Status synchronize() const;
  // true once the recorded work has completed (or nothing was recorded).
  Expected<bool> query() const;
  // Milliseconds between `start` and this event (both recorded with timing, this one completed).
  Expected<float> elapsed_ms_since(const CudaEvent& start) const;

 private:
  explicit CudaEvent(cudaEvent_t e) : e_(e) {}
  cudaEvent_t e_ = nullptr;
};

// Page-locked host memory (cudaMallocHost): copies to and from it run asynchronously on a stream.
class PinnedBuffer {
 public:
  static Expected<PinnedBuffer> create(size_t bytes);
  PinnedBuffer() = default;
  PinnedBuffer(PinnedBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer();

  void* data() const { return p_; }
  template <class T>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// Async copies on `stream` (host side pinned for true asynchrony; pageable works, synchronously).
Status copy_async(void* dst, const void* src, size_t bytes, cudaStream_t stream);

}  // namespace fulgur::cuda
