#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.h"

namespace fulgur::kernels::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

int device_major() {
  int dev = 0, major = 0;
  if (device_count() == 0 || cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return major;
}

KernelStatus device_alloc(void** ptr, size_t bytes) {
  FULGUR_CUDA_CHECK(cudaMalloc(ptr, bytes));
  return kernel_ok();
}

KernelStatus device_free(void* ptr) {
  FULGUR_CUDA_CHECK(cudaFree(ptr));
  return kernel_ok();
}

KernelStatus copy_to_device(void* dst, const void* src, size_t bytes) {
  FULGUR_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  return kernel_ok();
}

KernelStatus copy_to_host(void* dst, const void* src, size_t bytes) {
  FULGUR_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return kernel_ok();
}

KernelStatus synchronize() {
  FULGUR_CUDA_CHECK(cudaDeviceSynchronize());
  return kernel_ok();
}

}  // namespace fulgur::kernels::cuda
