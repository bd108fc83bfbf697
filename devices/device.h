// Devices a process can compute on. The CPU device is always present; CUDA devices appear when
// the build has the CUDA backend and the machine has GPUs.
#pragma once

#include <string>
#include <vector>

#include "devices/tensor.h"

namespace fulgur {

struct DeviceInfo {
  Device device;
  std::string name;         // "cpu", "cuda:0"
  bool can_run_model = false;  // whether the model forward is implemented on it in this build
};

// Every device of this process, the CPU first.
std::vector<DeviceInfo> available_devices();

// Parses "cpu" / "cuda" / "cuda:N" and checks the device exists and can run the model.
Expected<Device> select_device(const std::string& spec);

// Host memory for the CPU device: zero-filled, 64-byte aligned (Tensor::empty).
inline Tensor cpu_alloc(DType dtype, std::vector<int64_t> shape) { return Tensor::empty(dtype, std::move(shape)); }

}  // namespace fulgur
