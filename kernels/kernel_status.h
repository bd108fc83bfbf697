// KernelStatus: what a kernel entry returns. Kernels depend on nothing of ours (no Status type),
// so they report a static message; the caller wraps it into a Status naming the layer/tensor.
#pragma once

namespace fulgur::kernels {

struct [[nodiscard]] KernelStatus {
  const char* error = nullptr;  // static string; nullptr on success
  bool ok() const { return error == nullptr; }
};

inline KernelStatus kernel_ok() { return {}; }
inline KernelStatus kernel_error(const char* what) { return {what}; }

}  // namespace fulgur::kernels
