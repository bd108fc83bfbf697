// Helpers for the GPU kernel tests: a device buffer freed at scope exit, uploads and downloads,
// bf16 conversions of whole vectors, and the skip line for machines without a GPU.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cuda/runtime.h"
#include "kernels/half.h"

#define FULGUR_SKIP_WITHOUT_GPU()                                                        \
  do {                                                                                   \
    if (::fulgur::kernels::cuda::device_count() == 0) {                                  \
      GTEST_SKIP() << "no CUDA device on this machine: GPU test skipped";                \
    }                                                                                    \
  } while (0)

// For the sm_90 kernels (TMA, wgmma): skip on machines without a GPU or with another architecture.
#define FULGUR_SKIP_WITHOUT_HOPPER()                                                     \
  do {                                                                                   \
    FULGUR_SKIP_WITHOUT_GPU();                                                           \
    if (::fulgur::kernels::cuda::device_major() != 9) {                                  \
      GTEST_SKIP() << "the GPU is not a Hopper (sm_90): sm_90 kernel test skipped";      \
    }                                                                                    \
  } while (0)

namespace fulgur::test {

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { EXPECT_TRUE(kernels::cuda::device_alloc(&ptr, std::max<size_t>(bytes, 16)).ok()); }
  ~DeviceBuffer() { (void)kernels::cuda::device_free(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(ptr); }
};

template <class T>
void upload(DeviceBuffer& d, const std::vector<T>& h) {
  ASSERT_TRUE(kernels::cuda::copy_to_device(d.ptr, h.data(), h.size() * sizeof(T)).ok());
}
template <class T>
void download(std::vector<T>& h, const DeviceBuffer& d) {
  ASSERT_TRUE(kernels::cuda::copy_to_host(h.data(), d.ptr, h.size() * sizeof(T)).ok());
}
// A device buffer holding a copy of h.
template <class T>
std::unique_ptr<DeviceBuffer> to_device(const std::vector<T>& h) {
  auto d = std::make_unique<DeviceBuffer>(h.size() * sizeof(T));
  upload(*d, h);
  return d;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = kernels::f32_to_bf16(v[i]);
  return r;
}
inline std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = kernels::bf16_to_f32(v[i]);
  return r;
}

}  // namespace fulgur::test
