#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>

#include "orchestration/cli/commands.h"
#include "orchestration/generate.h"
#include "orchestration/tokenizer/chat_template.h"

namespace fulgur::cli {

namespace {
struct GenerateArgs {
  std::string model_dir, prompt, system;
  bool chat = false, show_stats = false;
  int64_t max_tokens = 64;
  float temperature = 0.f, top_p = 1.f;
  int64_t top_k = 0;
  uint64_t seed = 0;
};

int run_generate(const GenerateArgs& a) {
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
  auto result = generate(*loaded->model, *prompt, opt, on_token);
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
  return [a] { return run_generate(*a); };
}

}  // namespace fulgur::cli
