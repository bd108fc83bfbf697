#include "kernels/cuda/tma.h"

#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <mutex>

namespace fulgur::kernels::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found) ==
            cudaSuccess &&
        found == cudaDriverEntryPointSuccess) {
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
    } else {
      (void)cudaGetLastError();
    }
  });
  return fn;
}

}  // namespace

KernelStatus make_tensor_map_bf16_sw128(CUtensorMap* map, const void* base, int rank, const uint64_t* dims,
                                        const uint64_t* strides_bytes, const uint32_t* box) {
  if (rank < 2 || rank > 5) return kernel_error("make_tensor_map_bf16_sw128: rank out of [2, 5]");
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return kernel_error("make_tensor_map_bf16_sw128: base not 16-byte aligned");
  if (box[0] * 2 > 128) return kernel_error("make_tensor_map_bf16_sw128: box inner dimension above 64 elements");
  for (int i = 0; i < rank - 1; ++i) {
    if (strides_bytes[i] % 16 != 0) return kernel_error("make_tensor_map_bf16_sw128: stride not a multiple of 16 bytes");
  }
  const auto encode = encoder();
  if (encode == nullptr) return kernel_error("make_tensor_map_bf16_sw128: the driver has no cuTensorMapEncodeTiled");
  cuuint64_t d[5], s[4];
  cuuint32_t b[5], e[5];
  for (int i = 0; i < rank; ++i) d[i] = dims[i], b[i] = box[i], e[i] = 1;
  for (int i = 0; i < rank - 1; ++i) s[i] = strides_bytes[i];
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, static_cast<cuuint32_t>(rank), const_cast<void*>(base),
                            d, s, b, e, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return kernel_error("make_tensor_map_bf16_sw128: cuTensorMapEncodeTiled refused the tensor");
  return kernel_ok();
}

}  // namespace fulgur::kernels::cuda
