#include "devices/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/half.h"

namespace fulgur {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i8: return 1;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i8: return "i8";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}

const char* dtype_safetensors_name(DType dt) {
  switch (dt) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i8: return "I8";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
  }
  return "?";
}

Expected<DType> dtype_from_safetensors(std::string_view name) {
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::i8, DType::i32, DType::i64}) {
    if (name == dtype_safetensors_name(dt)) return dt;
  }
  return Status(Errc::unsupported, "unsupported safetensors dtype '" + std::string(name) + "'");
}

Expected<DType> dtype_from_name(std::string_view name) {
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::i8, DType::i32, DType::i64}) {
    if (name == dtype_name(dt)) return dt;
  }
  return Status(Errc::invalid_argument,
                "unknown dtype '" + std::string(name) + "' (expected f32, bf16, f16, i8, i32 or i64)");
}

std::string device_name(Device d) {
  return d.kind == DeviceKind::cpu ? "cpu" : "cuda:" + std::to_string(d.index);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape, void* data, std::shared_ptr<void> owner,
               Device device)
    : dtype_(dtype), device_(device), shape_(std::move(shape)), data_(data), owner_(std::move(owner)) {
  strides_.assign(shape_.size(), 1);
  for (int i = static_cast<int>(shape_.size()) - 2; i >= 0; --i) {
    strides_[i] = strides_[i + 1] * shape_[i + 1];
  }
}

Tensor Tensor::empty(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
  size_t alloc = (bytes + 63) / 64 * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, alloc);
  std::shared_ptr<void> owner(p, [](void* q) { std::free(q); });
  return Tensor(dtype, std::move(shape), p, std::move(owner));
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape_) n *= s;
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != expect) return false;
    expect *= shape_[i];
  }
  return true;
}

Tensor Tensor::rows(int64_t begin, int64_t count) const {
  Tensor t = *this;
  t.shape_[0] = count;
  t.data_ = static_cast<char*>(data_) + begin * strides_[0] * static_cast<int64_t>(dtype_size(dtype_));
  return t;
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  Tensor t(dtype_, std::move(shape), data_, owner_, device_);
  return t;
}

Tensor Tensor::to_f32() const {
  if (dtype_ == DType::f32 && is_contiguous()) return *this;
  auto r = cast(DType::f32);
  return std::move(r).value();
}

namespace {
float load_as_f32(const void* base, DType dt, int64_t i) {
  switch (dt) {
    case DType::f32: return static_cast<const float*>(base)[i];
    case DType::bf16: return kernels::bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::f16: return kernels::f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::i8: return static_cast<float>(static_cast<const int8_t*>(base)[i]);
    case DType::i32: return static_cast<float>(static_cast<const int32_t*>(base)[i]);
    case DType::i64: return static_cast<float>(static_cast<const int64_t*>(base)[i]);
  }
  return 0.f;
}
void store_from_f32(void* base, DType dt, int64_t i, float v) {
  switch (dt) {
    case DType::f32: static_cast<float*>(base)[i] = v; break;
    case DType::bf16: static_cast<uint16_t*>(base)[i] = kernels::f32_to_bf16(v); break;
    case DType::f16: static_cast<uint16_t*>(base)[i] = kernels::f32_to_f16(v); break;
    default: break;
  }
}
}  // namespace

Expected<Tensor> Tensor::cast(DType dtype) const {
  if (dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::f16) {
    return Status(Errc::unsupported, std::string("cast to ") + dtype_name(dtype) + " is not supported");
  }
  Tensor out = Tensor::empty(dtype, shape_);
  const int64_t n = numel();
  if (is_contiguous()) {
    if (dtype_ == dtype) {
      std::memcpy(out.raw(), data_, nbytes());
    } else {
      for (int64_t i = 0; i < n; ++i) store_from_f32(out.raw(), dtype, i, load_as_f32(data_, dtype_, i));
    }
    return out;
  }
  // General strided walk.
  std::vector<int64_t> idx(shape_.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * strides_[d];
    store_from_f32(out.raw(), dtype, i, load_as_f32(data_, dtype_, off));
    for (int d = dim() - 1; d >= 0; --d) {
      if (++idx[d] < shape_[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

std::string Tensor::describe() const {
  return shape_string(shape_) + " " + dtype_name(dtype_);
}

}  // namespace fulgur
