#include <CLI/CLI.hpp>
#include <memory>

#include "devices/device.h"
#include "orchestration/checkpoint/safetensors.h"
#include "orchestration/cli/commands.h"
#include "orchestration/generate.h"
#ifdef FULGUR_HAVE_CUDA
#include "actors/layers/cuda_model.h"
#endif

namespace fulgur::cli {

namespace {
struct ForwardArgs {
  std::string model_dir, tokens, out, device = "cpu";
  int64_t chunk_size = 0;
  int64_t decode_from = -1;
  ComputeOptions compute;
};

Expected<Tensor> forward_on(Device device, const ComputeOptions& compute, const Model& model,
                            const std::vector<int32_t>& tokens, const ForwardOptions& opt) {
  FULGUR_TRY(check_compute_options(device, compute));
  if (device.kind == DeviceKind::cpu) return forward_all_logits(model, tokens, opt);  // the CPU computes in f32
#ifdef FULGUR_HAVE_CUDA
  FULGUR_ASSIGN_OR_RETURN(CudaComputeDtype dtype, parse_cuda_compute_dtype(compute.dtype));
  const CudaModelOptions options{.dtype = dtype, .int8_experts = compute.int8_experts};
  FULGUR_ASSIGN_OR_RETURN(std::unique_ptr<CudaModel> cuda_model, CudaModel::create(model, device.index, options));
  return forward_all_logits_cuda(*cuda_model, tokens, opt);
#else
  return Status(Errc::unsupported, "this build has no CUDA backend");
#endif
}

int run_forward(const ForwardArgs& a) {
  auto device = select_device(a.device);
  if (!device) return fail("forward", device.error());
  auto tokens = parse_token_list(a.tokens);
  if (!tokens) return fail("forward", tokens.error());
  auto loaded = load_model_dir(a.model_dir, false);
  if (!loaded) return fail("forward", loaded.error());
  ForwardOptions opt{.chunk_size = a.chunk_size, .decode_from = a.decode_from};
  auto logits = forward_on(*device, a.compute, *loaded->model, *tokens, opt);
  if (!logits) return fail("forward", logits.error());
  if (auto st = write_safetensors(a.out, {{"logits", *logits}}); !st.is_ok()) return fail("forward", st);
  return 0;
}
}  // namespace

Run add_forward(CLI::App& app) {
  auto a = std::make_shared<ForwardArgs>();
  app.add_option("--model", a->model_dir, "Model directory (config.json + safetensors)")->required();
  app.add_option("--tokens", a->tokens, "Comma-separated token ids, e.g. 1,2,3")->required();
  app.add_option("--out", a->out, "Output .safetensors file; receives F32 'logits' [T, vocab]")->required();
  app.add_option("--chunk-size", a->chunk_size, "Prefill in chunks of N tokens, carrying state")
      ->check(CLI::PositiveNumber);
  app.add_option("--decode-from", a->decode_from, "Prefill tokens [0, K), then decode one token at a time")
      ->check(CLI::PositiveNumber);
  app.add_option("--device", a->device, "Device to run on: cpu, cuda or cuda:N");
  add_compute_options(app, a->compute);
  return [a] { return run_forward(*a); };
}

}  // namespace fulgur::cli
