#include <CLI/CLI.hpp>
#include <charconv>
#include <iostream>

#include "orchestration/cli/commands.h"

namespace fulgur::cli {

Expected<std::vector<int32_t>> parse_token_list(const std::string& text) {
  std::vector<int32_t> ids;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(begin, end - begin);
    int32_t value = 0;
    auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size()) {
      return Status(Errc::invalid_argument, "--tokens: item " + std::to_string(ids.size()) + " ('" + item +
                                                "') is not a 32-bit integer");
    }
    ids.push_back(value);
    begin = end + 1;
  }
  return ids;
}

void add_compute_options(CLI::App& app, ComputeOptions& opt) {
  app.add_option("--dtype", opt.dtype,
                 "CUDA compute dtype: bf16 (weights and activations, the serving path) or f32 (everything in f32, "
                 "for checking); the CPU always computes in f32");
  app.add_flag("--int8-experts", opt.int8_experts,
               "CUDA, bf16: quantise the experts to int8 weight-only at load (hidden and intermediate sizes multiples "
               "of 64)");
}

Status check_compute_options(Device device, const ComputeOptions& opt) {
  if (opt.dtype != "bf16" && opt.dtype != "f32") {
    return Status(Errc::invalid_argument, "--dtype '" + opt.dtype + "': expected bf16 or f32");
  }
  if (device.kind == DeviceKind::cpu && opt.int8_experts) {
    return Status(Errc::invalid_argument, "--int8-experts needs --device cuda");
  }
  if (opt.dtype == "f32" && opt.int8_experts) {
    return Status(Errc::invalid_argument, "--int8-experts is a bf16 option, not --dtype f32");
  }
  return Status::ok();
}

int fail(const std::string& command, const Status& status) {
  std::cerr << "fulgur " << command << ": " << status.to_string() << "\n";
  return 1;
}

}  // namespace fulgur::cli
