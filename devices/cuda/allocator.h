// Caching device allocator (one per device): kernels never allocate (style.md §5); their inputs,
// outputs and workspaces come from here.
//
// Sizes are rounded up to a size class (2^k or 1.5 * 2^k bytes, at least 512; multiples of 2 MiB
// from 64 MiB up), and a freed block goes to its class's free list with the stream it was freed on
// and an event recorded there. Reuse is stream-ordered: the same stream takes the block back at
// once (its later work runs after the earlier work); another stream only once the event has
// completed. cudaMalloc happens only when no block fits; on out-of-memory the completed cached
// blocks are released and the cudaMalloc retried. Thread-safe (one mutex).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "devices/status.h"

namespace fulgur::cuda {

struct AllocatorStats {
  size_t bytes_in_use = 0;     // size classes of the blocks handed out and not yet returned
  size_t bytes_reserved = 0;   // everything obtained by cudaMalloc and not yet freed
  size_t peak_bytes_in_use = 0;
  size_t num_device_allocs = 0;  // cudaMalloc calls that succeeded
  size_t num_reuses = 0;         // allocations served from a free list
};

class CachingAllocator {
 public:
  explicit CachingAllocator(int device = 0) : device_(device) {}
  ~CachingAllocator();  // frees every block (the caller must have finished using them)
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // At least `bytes` (256-byte aligned) of device memory for work on `stream`; bytes 0 gives nullptr.
  Expected<void*> allocate(size_t bytes, cudaStream_t stream);
  // Returns a block from allocate(); `stream` is the last stream whose work uses it.
  Status deallocate(void* ptr, cudaStream_t stream);
  // cudaFree the cached blocks whose last work has completed.
  Status release_cached();
  AllocatorStats stats() const;
  static size_t size_class(size_t bytes);

 private:
  struct FreeBlock {
    void* ptr;
    cudaStream_t stream;
    cudaEvent_t freed;  // recorded on `stream` at deallocate
  };
  Expected<void*> take_cached(size_t cls, cudaStream_t stream);  // with mu_ held; nullptr: none fits
  Status release_cached_locked();
  Expected<cudaEvent_t> event_locked();

  int device_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<FreeBlock>> free_;  // size class -> blocks
  std::unordered_map<void*, size_t> in_use_;       // ptr -> size class
  std::vector<cudaEvent_t> spare_events_;
  AllocatorStats stats_;
};

// A block of a CachingAllocator returned at scope exit (on the stream it was last used on).
class DeviceMemory {
 public:
  static Expected<DeviceMemory> create(CachingAllocator& alloc, size_t bytes, cudaStream_t stream);
  DeviceMemory() = default;
  DeviceMemory(DeviceMemory&& o) noexcept;
  DeviceMemory& operator=(DeviceMemory&& o) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() { reset(); }

  void* data() const { return ptr_; }
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }
  void set_stream(cudaStream_t stream) { stream_ = stream; }  // the stream whose work uses it last
  void reset();

 private:
  CachingAllocator* alloc_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  cudaStream_t stream_ = nullptr;
};

}  // namespace fulgur::cuda
