// Tensor: a typed, shaped, strided view of memory plus a reference to whatever owns it
// (a heap buffer, a memory-mapped checkpoint file, a device allocation later).
//
// Views share the owner; copying a Tensor never copies data. Strides are in elements.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "devices/status.h"

namespace fulgur {

enum class DType : uint8_t { f32, bf16, f16, i8, i32, i64 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);                       // "f32", "bf16", ...
const char* dtype_safetensors_name(DType dt);           // "F32", "BF16", ...
Expected<DType> dtype_from_safetensors(std::string_view name);
Expected<DType> dtype_from_name(std::string_view name);  // "f32" | "bf16" | ...

enum class DeviceKind : uint8_t { cpu, cuda };
struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;
  bool operator==(const Device&) const = default;
};
std::string device_name(Device d);  // "cpu", "cuda:0"

class Tensor {
 public:
  Tensor() = default;
  // A view over `data`, kept alive by `owner` (may be null for borrowed memory).
  Tensor(DType dtype, std::vector<int64_t> shape, void* data, std::shared_ptr<void> owner,
         Device device = {});

  // Fresh zero-filled host memory (64-byte aligned).
  static Tensor empty(DType dtype, std::vector<int64_t> shape);
  static Tensor zeros(DType dtype, std::vector<int64_t> shape) { return empty(dtype, std::move(shape)); }

  bool defined() const { return data_ != nullptr || numel() == 0; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int dim() const { return static_cast<int>(shape_.size()); }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t size(int d) const { return shape_.at(d < 0 ? d + dim() : d); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  const std::shared_ptr<void>& owner() const { return owner_; }

  void* raw() const { return data_; }
  template <class T> T* data() const { return static_cast<T*>(data_); }

  // Views (no copy). Narrow along dim 0: rows [begin, begin+count).
  Tensor rows(int64_t begin, int64_t count) const;
  Tensor reshape(std::vector<int64_t> shape) const;  // contiguous tensors only

  // A contiguous f32 copy (converts bf16/f16/i8/i32/i64), or `this` when already f32-contiguous.
  Tensor to_f32() const;
  // Converting copy into a new contiguous tensor of `dtype` (floats only).
  Expected<Tensor> cast(DType dtype) const;

  // "[2, 3] f32"
  std::string describe() const;

 private:
  DType dtype_ = DType::f32;
  Device device_{};
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace fulgur
