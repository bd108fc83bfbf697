#include "devices/device.h"

#include <charconv>

#ifdef FULGUR_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace fulgur {

std::vector<DeviceInfo> available_devices() {
  std::vector<DeviceInfo> out = {{Device{DeviceKind::cpu, 0}, "cpu", true}};
#ifdef FULGUR_HAVE_CUDA
  const int n = kernels::cuda::device_count();
  for (int i = 0; i < n; ++i) out.push_back({Device{DeviceKind::cuda, i}, "cuda:" + std::to_string(i), true});
#endif
  return out;
}

Expected<Device> select_device(const std::string& spec) {
  Device want;
  if (spec == "cpu") {
    want = {DeviceKind::cpu, 0};
  } else if (spec.rfind("cuda", 0) == 0) {
    want.kind = DeviceKind::cuda;
    if (spec.size() > 4) {
      const char* first = spec.data() + 5;
      const char* last = spec.data() + spec.size();
      auto [ptr, ec] = std::from_chars(first, last, want.index);
      if (spec[4] != ':' || ec != std::errc() || ptr != last || want.index < 0) {
        return Status(Errc::invalid_argument, "device '" + spec + "': expected cpu, cuda or cuda:N");
      }
    }
  } else {
    return Status(Errc::invalid_argument, "device '" + spec + "': expected cpu, cuda or cuda:N");
  }
  for (const DeviceInfo& d : available_devices()) {
    if (d.device == want) {
      if (!d.can_run_model) {
        return Status(Errc::unsupported, "device " + d.name + ": the model forward runs on the cpu device only "
                                                              "in this version (the CUDA backend is not done yet)");
      }
      return want;
    }
  }
#ifdef FULGUR_HAVE_CUDA
  return Status(Errc::not_found, "device " + spec + ": no such CUDA device on this machine");
#else
  return Status(Errc::unsupported, "device " + spec + ": this build has no CUDA backend (built without nvcc)");
#endif
}

}  // namespace fulgur
