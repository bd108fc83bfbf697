// The CUDA device layer (devices/cuda): check macros, allocator reuse and stats, stream/event
// ordering, pinned copies, cuBLAS handles. GPU cases skip (with the reason) without a device.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "devices/cuda/allocator.h"
#include "devices/cuda/blas.h"
#include "devices/cuda/check.h"
#include "devices/cuda/stream.h"

namespace fulgur::cuda {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine: GPU test skipped"

template <class T>
T must(Expected<T> e) {
  EXPECT_TRUE(e.has_value()) << (e.has_value() ? "" : e.error().to_string());
  if (!e.has_value()) throw std::runtime_error("aborting test");
  return std::move(e).value();
}

Status failing_cuda_call() {
  FULGUR_CUDA_TRY(cudaSetDevice(1 << 20));
  return Status::ok();
}
Status failing_cublas_call() {
  FULGUR_CUBLAS_TRY(cublasSetStream(nullptr, nullptr));  // no handle: CUBLAS_STATUS_NOT_INITIALIZED
  return Status::ok();
}

// Runs without a GPU too: the failing call fails either way.
TEST(CudaCheck, MacrosCarryStatementFileAndLine) {
  const Status s = failing_cuda_call();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("cudaSetDevice(1 << 20)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("test_cuda_devices.cpp:"), std::string::npos) << s.message();
  const Status b = failing_cublas_call();
  ASSERT_FALSE(b.is_ok());
  EXPECT_NE(b.message().find("cublasSetStream(nullptr, nullptr)"), std::string::npos) << b.message();
  EXPECT_NE(b.message().find("CUBLAS_STATUS_NOT_INITIALIZED"), std::string::npos) << b.message();
}

TEST(CudaAllocator, SizeClasses) {
  EXPECT_EQ(CachingAllocator::size_class(1), 512u);
  EXPECT_EQ(CachingAllocator::size_class(512), 512u);
  EXPECT_EQ(CachingAllocator::size_class(513), 768u);
  EXPECT_EQ(CachingAllocator::size_class(769), 1024u);
  EXPECT_EQ(CachingAllocator::size_class(1000), 1024u);
  EXPECT_EQ(CachingAllocator::size_class(3u << 20), 3u << 20);
  EXPECT_EQ(CachingAllocator::size_class((64u << 20) + 1), 66u << 20);
  for (size_t b = 1; b < (1u << 22); b = b * 3 / 2 + 7) {
    const size_t c = CachingAllocator::size_class(b);
    EXPECT_GE(c, b);
    EXPECT_LE(c, std::max<size_t>(512, b * 3 / 2 + 1)) << b;
  }
}

TEST(CudaAllocator, ReuseAndStats) {
  SKIP_WITHOUT_GPU();
  CudaStream s = must(CudaStream::create());
  CachingAllocator alloc;
  void* a = must(alloc.allocate(1000, s.handle()));
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 256, 0u);
  AllocatorStats st = alloc.stats();
  EXPECT_EQ(st.bytes_in_use, 1024u);
  EXPECT_EQ(st.bytes_reserved, 1024u);
  EXPECT_EQ(st.num_device_allocs, 1u);
  ASSERT_TRUE(cudaMemsetAsync(a, 0, 1000, s.handle()) == cudaSuccess);
  ASSERT_TRUE(alloc.deallocate(a, s.handle()).is_ok());
  EXPECT_EQ(alloc.stats().bytes_in_use, 0u);
  EXPECT_EQ(alloc.stats().bytes_reserved, 1024u);  // cached
  void* b = must(alloc.allocate(900, s.handle()));  // same class, same stream: reused at once
  EXPECT_EQ(b, a);
  void* c = must(alloc.allocate(5000, s.handle()));  // other class: new block
  EXPECT_NE(c, a);
  st = alloc.stats();
  EXPECT_EQ(st.num_device_allocs, 2u);
  EXPECT_EQ(st.num_reuses, 1u);
  EXPECT_EQ(st.bytes_in_use, 1024u + 6144u);
  EXPECT_EQ(st.bytes_reserved, 1024u + 6144u);
  EXPECT_EQ(st.peak_bytes_in_use, 1024u + 6144u);
  ASSERT_TRUE(alloc.deallocate(b, s.handle()).is_ok());
  ASSERT_TRUE(alloc.deallocate(c, s.handle()).is_ok());
  EXPECT_FALSE(alloc.deallocate(c, s.handle()).is_ok());  // double free is an error value
  ASSERT_TRUE(s.synchronize().is_ok());
  ASSERT_TRUE(alloc.release_cached().is_ok());
  st = alloc.stats();
  EXPECT_EQ(st.bytes_in_use, 0u);
  EXPECT_EQ(st.bytes_reserved, 0u);
  {  // RAII handle
    DeviceMemory m = must(DeviceMemory::create(alloc, 1 << 20, s.handle()));
    EXPECT_EQ(alloc.stats().bytes_in_use, size_t{1} << 20);
  }
  EXPECT_EQ(alloc.stats().bytes_in_use, 0u);
}

// A host callback that blocks `stream` until the flag is set: makes "work still pending" certain.
void CUDART_CB wait_for_flag(void* flag) {
  auto* f = static_cast<std::atomic<bool>*>(flag);
  while (!f->load()) std::this_thread::sleep_for(std::chrono::microseconds(50));
}

TEST(CudaAllocator, CrossStreamReuseWaitsForFreeingStream) {
  SKIP_WITHOUT_GPU();
  CudaStream s1 = must(CudaStream::create()), s2 = must(CudaStream::create());
  CachingAllocator alloc;
  std::atomic<bool> go{false};
  void* a = must(alloc.allocate(4096, s1.handle()));
  ASSERT_EQ(cudaLaunchHostFunc(s1.handle(), wait_for_flag, &go), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(a, 1, 4096, s1.handle()), cudaSuccess);  // still queued behind the callback
  ASSERT_TRUE(alloc.deallocate(a, s1.handle()).is_ok());
  void* b = must(alloc.allocate(4096, s2.handle()));  // s1's work pending: must not get `a`
  EXPECT_NE(b, a);
  go = true;
  ASSERT_TRUE(s1.synchronize().is_ok());
  void* c = must(alloc.allocate(4096, s2.handle()));  // now complete: reused
  EXPECT_EQ(c, a);
  EXPECT_EQ(alloc.stats().num_reuses, 1u);
  ASSERT_TRUE(alloc.deallocate(b, s2.handle()).is_ok());
  ASSERT_TRUE(alloc.deallocate(c, s2.handle()).is_ok());
  ASSERT_TRUE(s2.synchronize().is_ok());
}

TEST(CudaStreamEvent, EventOrdersWorkAcrossStreams) {
  SKIP_WITHOUT_GPU();
  CudaStream s1 = must(CudaStream::create()), s2 = must(CudaStream::create());
  CachingAllocator alloc;
  constexpr size_t kBytes = size_t{8} << 20;
  PinnedBuffer src = must(PinnedBuffer::create(kBytes)), dst = must(PinnedBuffer::create(kBytes));
  for (size_t i = 0; i < kBytes / 4; ++i) src.as<uint32_t>()[i] = static_cast<uint32_t>(i * 2654435761u);
  std::memset(dst.data(), 0, kBytes);
  DeviceMemory dev = must(DeviceMemory::create(alloc, kBytes, s1.handle()));
  CudaEvent written = must(CudaEvent::create());
  std::atomic<bool> go{false};
  ASSERT_EQ(cudaLaunchHostFunc(s1.handle(), wait_for_flag, &go), cudaSuccess);
  ASSERT_TRUE(copy_async(dev.data(), src.data(), kBytes, s1.handle()).is_ok());
  ASSERT_TRUE(written.record(s1.handle()).is_ok());
  ASSERT_TRUE(written.make_wait(s2.handle()).is_ok());
  ASSERT_TRUE(copy_async(dst.data(), dev.data(), kBytes, s2.handle()).is_ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(must(written.query()));  // s1 blocked: the event and s2's copy are still pending
  EXPECT_EQ(dst.as<uint32_t>()[1], 0u);
  go = true;
  ASSERT_TRUE(s2.synchronize().is_ok());
  EXPECT_TRUE(must(written.query()));
  EXPECT_EQ(std::memcmp(src.data(), dst.data(), kBytes), 0);
  dev.set_stream(s2.handle());
}

TEST(CudaPinned, AsyncRoundTripAndTiming) {
  SKIP_WITHOUT_GPU();
  CudaStream s = must(CudaStream::create());
  CachingAllocator alloc;
  constexpr size_t kBytes = size_t{256} << 20;
  PinnedBuffer h = must(PinnedBuffer::create(kBytes)), back = must(PinnedBuffer::create(kBytes));
  EXPECT_EQ(h.bytes(), kBytes);
  for (size_t i = 0; i < kBytes / 8; ++i) h.as<uint64_t>()[i] = i * 0x9E3779B97F4A7C15ull;
  DeviceMemory d = must(DeviceMemory::create(alloc, kBytes, s.handle()));
  CudaEvent t0 = must(CudaEvent::create(true)), t1 = must(CudaEvent::create(true)), t2 = must(CudaEvent::create(true));
  ASSERT_TRUE(t0.record(s.handle()).is_ok());
  ASSERT_TRUE(copy_async(d.data(), h.data(), kBytes, s.handle()).is_ok());
  ASSERT_TRUE(t1.record(s.handle()).is_ok());
  ASSERT_TRUE(copy_async(back.data(), d.data(), kBytes, s.handle()).is_ok());
  ASSERT_TRUE(t2.record(s.handle()).is_ok());
  ASSERT_TRUE(t2.synchronize().is_ok());
  EXPECT_EQ(std::memcmp(h.data(), back.data(), kBytes), 0);
  const float up = must(t1.elapsed_ms_since(t0)), down = must(t2.elapsed_ms_since(t1));
  std::printf("[pinned] 256 MiB host->device %.2f GB/s, device->host %.2f GB/s\n", kBytes / (up * 1e6),
              kBytes / (down * 1e6));
  EXPECT_GT(up, 0.f);
}

TEST(CudaBlas, HandlesUseAllocatorWorkspace) {
  SKIP_WITHOUT_GPU();
  CudaStream s = must(CudaStream::create());
  CachingAllocator alloc;
  BlasHandles h = must(BlasHandles::create(alloc, s.handle()));
  EXPECT_NE(h.blas(), nullptr);
  EXPECT_NE(h.lt(), nullptr);
  EXPECT_EQ(alloc.stats().bytes_in_use, CachingAllocator::size_class(BlasHandles::kDefaultWorkspaceBytes));
  // C = A B for 2x2 column-major matrices, on the handle's stream.
  const float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
  DeviceMemory d = must(DeviceMemory::create(alloc, 12 * sizeof(float), s.handle()));
  float* da = d.as<float>();
  ASSERT_TRUE(copy_async(da, a, sizeof a, s.handle()).is_ok());
  ASSERT_TRUE(copy_async(da + 4, b, sizeof b, s.handle()).is_ok());
  const float one = 1.f, zero = 0.f;
  ASSERT_EQ(cublasSgemm(h.blas(), CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, da, 2, da + 4, 2, &zero, da + 8, 2),
            CUBLAS_STATUS_SUCCESS);
  float c[4] = {};
  ASSERT_TRUE(copy_async(c, da + 8, sizeof c, s.handle()).is_ok());
  ASSERT_TRUE(s.synchronize().is_ok());
  EXPECT_FLOAT_EQ(c[0], 1 * 5 + 3 * 6);
  EXPECT_FLOAT_EQ(c[1], 2 * 5 + 4 * 6);
  EXPECT_FLOAT_EQ(c[2], 1 * 7 + 3 * 8);
  EXPECT_FLOAT_EQ(c[3], 2 * 7 + 4 * 8);
}

}  // namespace
}  // namespace fulgur::cuda
