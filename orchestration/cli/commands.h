// The `fulgur` subcommands. Each registers its options on the CLI11 app and returns the function
// that runs it; a command returns the process exit code (0 ok, 1 failure with a message on stderr).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "devices/status.h"
#include "devices/tensor.h"

namespace CLI {
class App;
}

namespace fulgur::cli {

using Run = std::function<int()>;

Run add_forward(CLI::App& app);
Run add_generate(CLI::App& app);
Run add_init_model(CLI::App& app);
Run add_serve(CLI::App& app);
Run add_node(CLI::App& app);

// "1,2,3" -> {1, 2, 3}; an empty item, a non-number or a value outside int32 is an error naming it.
Expected<std::vector<int32_t>> parse_token_list(const std::string& text);
// Prints "fulgur <command>: <message>" to stderr and returns 1.
int fail(const std::string& command, const Status& status);

// The compute options of `forward` and `generate`: --dtype bf16|f32 and --int8-experts. They choose the
// CUDA model's mode; the CPU computes in f32 and has no int8 experts, so there --int8-experts is an error.
struct ComputeOptions {
  std::string dtype = "bf16";
  bool int8_experts = false;
};
void add_compute_options(CLI::App& app, ComputeOptions& opt);
// Checks the options against the device (a bad dtype, int8 experts on the CPU).
Status check_compute_options(Device device, const ComputeOptions& opt);

}  // namespace fulgur::cli
