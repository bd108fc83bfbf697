#include "devices/cuda/allocator.h"

#include <bit>
#include <utility>

#include "devices/cuda/check.h"

namespace fulgur::cuda {

size_t CachingAllocator::size_class(size_t bytes) {
  constexpr size_t kMin = 512, kLarge = size_t{64} << 20, kLargeStep = size_t{2} << 20;
  if (bytes <= kMin) return kMin;
  if (bytes >= kLarge) return (bytes + kLargeStep - 1) / kLargeStep * kLargeStep;
  const size_t p = std::bit_ceil(bytes);  // 2^k >= bytes; 1.5 * 2^(k-1) when that suffices
  return bytes <= p / 4 * 3 ? p / 4 * 3 : p;
}

CachingAllocator::~CachingAllocator() {
  int prev = 0;
  if (cudaGetDevice(&prev) != cudaSuccess) return;
  (void)cudaSetDevice(device_);
  for (auto& [cls, blocks] : free_) {
    for (const FreeBlock& b : blocks) {
      (void)cudaEventSynchronize(b.freed);
      (void)cudaEventDestroy(b.freed);
      (void)cudaFree(b.ptr);
    }
  }
  for (auto& [ptr, cls] : in_use_) (void)cudaFree(ptr);
  for (cudaEvent_t e : spare_events_) (void)cudaEventDestroy(e);
  (void)cudaSetDevice(prev);
}

Expected<cudaEvent_t> CachingAllocator::event_locked() {
  if (!spare_events_.empty()) {
    cudaEvent_t e = spare_events_.back();
    spare_events_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  FULGUR_CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

Expected<void*> CachingAllocator::take_cached(size_t cls, cudaStream_t stream) {
  auto it = free_.find(cls);
  if (it == free_.end() || it->second.empty()) return static_cast<void*>(nullptr);
  std::vector<FreeBlock>& blocks = it->second;
  size_t pick = blocks.size();
  for (size_t i = blocks.size(); i-- > 0;) {  // most recently freed first
    if (blocks[i].stream == stream) {
      pick = i;
      break;
    }
  }
  if (pick == blocks.size()) {
    for (size_t i = blocks.size(); i-- > 0;) {
      const cudaError_t q = cudaEventQuery(blocks[i].freed);
      if (q == cudaSuccess) {
        pick = i;
        break;
      }
      if (q != cudaErrorNotReady) return cuda_status(q, "cudaEventQuery(freed)", __FILE__, __LINE__);
      (void)cudaGetLastError();
    }
  }
  if (pick == blocks.size()) return static_cast<void*>(nullptr);
  const FreeBlock b = blocks[pick];
  blocks.erase(blocks.begin() + static_cast<std::ptrdiff_t>(pick));
  spare_events_.push_back(b.freed);
  return b.ptr;
}

Expected<void*> CachingAllocator::allocate(size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return static_cast<void*>(nullptr);
  const size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  FULGUR_ASSIGN_OR_RETURN(void* ptr, take_cached(cls, stream));
  if (ptr) {
    ++stats_.num_reuses;
  } else {
    FULGUR_CUDA_TRY(cudaSetDevice(device_));
    cudaError_t err = cudaMalloc(&ptr, cls);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      FULGUR_TRY(release_cached_locked());
      err = cudaMalloc(&ptr, cls);
    }
    if (err != cudaSuccess) return cuda_status(err, "cudaMalloc(&ptr, cls)", __FILE__, __LINE__);
    ++stats_.num_device_allocs;
    stats_.bytes_reserved += cls;
  }
  in_use_.emplace(ptr, cls);
  stats_.bytes_in_use += cls;
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  return ptr;
}

Status CachingAllocator::deallocate(void* ptr, cudaStream_t stream) {
  if (!ptr) return Status::ok();
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = in_use_.find(ptr);
  if (it == in_use_.end()) return Status(Errc::invalid_argument, "CachingAllocator::deallocate: unknown pointer");
  const size_t cls = it->second;
  FULGUR_ASSIGN_OR_RETURN(cudaEvent_t e, event_locked());
  if (const cudaError_t err = cudaEventRecord(e, stream); err != cudaSuccess) {
    spare_events_.push_back(e);
    return cuda_status(err, "cudaEventRecord(e, stream)", __FILE__, __LINE__);
  }
  in_use_.erase(it);
  stats_.bytes_in_use -= cls;
  free_[cls].push_back(FreeBlock{ptr, stream, e});
  return Status::ok();
}

Status CachingAllocator::release_cached_locked() {
  for (auto& [cls, blocks] : free_) {
    for (size_t i = 0; i < blocks.size();) {
      const cudaError_t q = cudaEventQuery(blocks[i].freed);
      if (q == cudaErrorNotReady) {
        (void)cudaGetLastError();
        ++i;
        continue;
      }
      if (q != cudaSuccess) return cuda_status(q, "cudaEventQuery(freed)", __FILE__, __LINE__);
      FULGUR_CUDA_TRY(cudaFree(blocks[i].ptr));
      stats_.bytes_reserved -= cls;
      spare_events_.push_back(blocks[i].freed);
      blocks.erase(blocks.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  return Status::ok();
}

Status CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  return release_cached_locked();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

// ---- DeviceMemory ----
Expected<DeviceMemory> DeviceMemory::create(CachingAllocator& alloc, size_t bytes, cudaStream_t stream) {
  FULGUR_ASSIGN_OR_RETURN(void* p, alloc.allocate(bytes, stream));
  DeviceMemory m;
  m.alloc_ = &alloc, m.ptr_ = p, m.bytes_ = bytes, m.stream_ = stream;
  return m;
}
DeviceMemory::DeviceMemory(DeviceMemory&& o) noexcept
    : alloc_(std::exchange(o.alloc_, nullptr)), ptr_(std::exchange(o.ptr_, nullptr)),
      bytes_(std::exchange(o.bytes_, 0)), stream_(o.stream_) {}
DeviceMemory& DeviceMemory::operator=(DeviceMemory&& o) noexcept {
  if (this != &o) {
    reset();
    alloc_ = std::exchange(o.alloc_, nullptr), ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0), stream_ = o.stream_;
  }
  return *this;
}
void DeviceMemory::reset() {
  if (alloc_ && ptr_) (void)alloc_->deallocate(ptr_, stream_);
  alloc_ = nullptr, ptr_ = nullptr, bytes_ = 0;
}

}  // namespace fulgur::cuda
