#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>

#include "devices/device.h"
#include "orchestration/cli/commands.h"
#include "orchestration/generate.h"
#include "orchestration/tokenizer/chat_template.h"
#ifdef FULGUR_HAVE_CUDA
#include "actors/layers/cuda_model.h"
#endif

namespace fulgur::cli {

namespace {
struct GenerateArgs {
  std::string model_dir, prompt, system, device = "cpu";
  bool chat = false, show_stats = false;
  ComputeOptions compute;
  int64_t max_tokens = 64;
  float temperature = 0.f, top_p = 1.f;
  int64_t top_k = 0;
  uint64_t seed = 0;
};

// generate on the chosen device: the CPU model, or the CUDA model, which draws on the device the token the
// CPU sampler would (kernels/sampling_math.h), so seeds mean the same on both.
Expected<GenerateResult> generate_on(Device device, const ComputeOptions& compute, const Model& model,
                                     const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                                     const std::function<void(int32_t)>& on_token) {
  FULGUR_TRY(check_compute_options(device, compute));
  if (device.kind == DeviceKind::cpu) return generate(model, prompt, opt, on_token);
#ifdef FULGUR_HAVE_CUDA
  FULGUR_ASSIGN_OR_RETURN(CudaComputeDtype dtype, parse_cuda_compute_dtype(compute.dtype));
  const CudaModelOptions options{.dtype = dtype, .int8_experts = compute.int8_experts};
  FULGUR_ASSIGN_OR_RETURN(std::unique_ptr<CudaModel> cuda_model, CudaModel::create(model, device.index, options));
  FULGUR_ASSIGN_OR_RETURN(const int64_t max_len, generation_length(model.config(), prompt.size(), opt));
  FULGUR_ASSIGN_OR_RETURN(CudaSingleSequence seq, CudaSingleSequence::create(*cuda_model, max_len));
  return generate_tokens(
      max_len, prompt, opt,
      [&](const std::vector<int32_t>& t, const kernels::SamplingParams& sp) { return seq.step_sample(t, sp); },
      on_token);
#else
  return Status(Errc::unsupported, "this build has no CUDA backend");
#endif
}

int run_generate(const GenerateArgs& a) {
  auto device = select_device(a.device);
  if (!device) return fail("generate", device.error());
  auto loaded = load_model_dir(a.model_dir, true);
  if (!loaded) return fail("generate", loaded.error());
  const Tokenizer& tok = *loaded->tokenizer;
  std::string text = a.prompt;
  if (a.chat) {
    std::vector<ChatMessage> messages;
    if (!a.system.empty()) messages.push_back({"system", a.system});
    messages.push_back({"user", a.prompt});
    auto rendered = render_chat(messages, true);
    if (!rendered) return fail("generate", rendered.error());
    text = *rendered;
  }
  auto prompt = tok.encode(text);
  if (!prompt) return fail("generate", prompt.error());
  GenerateOptions opt;
  opt.max_tokens = a.max_tokens;
  opt.sampling = {.temperature = a.temperature, .top_k = a.top_k, .top_p = a.top_p, .seed = a.seed};
  opt.stop_tokens = default_stop_tokens(loaded->model->config(), &tok);
  auto on_token = [&](int32_t id) {
    if (tok.is_special(id)) return;
    auto piece = tok.decode_token(id);
    if (!piece) return;
    std::fwrite(piece->data(), 1, piece->size(), stdout);
    std::fflush(stdout);
  };
  auto result = generate_on(*device, a.compute, *loaded->model, *prompt, opt, on_token);
  std::fputc('\n', stdout);
  if (!result) return fail("generate", result.error());
  if (a.show_stats) {
    const double n_dec = static_cast<double>(result->tokens.size() > 1 ? result->tokens.size() - 1 : 0);
    std::fprintf(stderr, "prompt %zu tokens in %.3f s (%.1f tok/s); generated %zu tokens, %.1f tok/s decode; finish: %s\n",
                 prompt->size(), result->prefill_seconds, prompt->size() / result->prefill_seconds,
                 result->tokens.size(), n_dec > 0 ? n_dec / result->decode_seconds : 0.0,
                 result->finish_reason.c_str());
  }
  return 0;
}
}  // namespace

Run add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  app.add_option("--model", a->model_dir, "Model directory (config.json, safetensors, tokenizer.json)")->required();
  app.add_option("--prompt", a->prompt, "Prompt text")->required();
  app.add_flag("--chat", a->chat, "Wrap the prompt in MiniMax's chat template as a user message");
  app.add_option("--system", a->system, "System message (with --chat)");
  app.add_option("--max-tokens", a->max_tokens, "Most tokens to generate")->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", a->temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-p", a->top_p, "Nucleus sampling mass in (0, 1]")->check(CLI::Range(1e-6, 1.0));
  app.add_option("--top-k", a->top_k, "Keep the k most likely tokens (0 = off)")->check(CLI::NonNegativeNumber);
  app.add_option("--seed", a->seed, "Sampling seed");
  app.add_flag("--stats", a->show_stats, "Print prefill/decode speed to stderr");
  app.add_option("--device", a->device, "Device to run on: cpu, cuda or cuda:N");
  add_compute_options(app, a->compute);
  return [a] { return run_generate(*a); };
}

}  // namespace fulgur::cli
