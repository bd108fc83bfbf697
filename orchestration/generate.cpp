#include "orchestration/generate.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <limits>

#include "orchestration/checkpoint/checkpoint.h"

namespace fulgur {

Expected<LoadedModel> load_model_dir(const std::string& dir, bool need_tokenizer, const ProgressCallback& progress) {
  if (!std::filesystem::is_directory(dir)) return Status(Errc::not_found, dir + ": not a directory");
  FULGUR_ASSIGN_OR_RETURN(ModelConfig cfg, load_model_config(dir + "/config.json"));
  FULGUR_ASSIGN_OR_RETURN(CheckpointFiles files, CheckpointFiles::open(dir, progress));
  FULGUR_ASSIGN_OR_RETURN(ModelWeights weights, load_model_weights(files, cfg));
  LoadedModel loaded;
  const std::string tok_path = dir + "/tokenizer.json";
  if (std::filesystem::exists(tok_path)) {
    FULGUR_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::load(tok_path));
    if (tok.vocab_size() > cfg.vocab_size) {
      return Status(Errc::invalid_config, tok_path + ": tokenizer has " + std::to_string(tok.vocab_size()) +
                                              " ids but config.json vocab_size is " + std::to_string(cfg.vocab_size));
    }
    loaded.tokenizer.emplace(std::move(tok));
  } else if (need_tokenizer) {
    return Status(Errc::not_found, tok_path + ": no tokenizer.json in the model directory");
  }
  FULGUR_ASSIGN_OR_RETURN(loaded.model, Model::create(std::move(cfg), std::move(weights)));
  return loaded;
}

std::vector<int32_t> default_stop_tokens(const ModelConfig& cfg, const Tokenizer* tokenizer) {
  if (cfg.eos_token_id >= 0) return {static_cast<int32_t>(cfg.eos_token_id)};
  if (tokenizer != nullptr) {
    if (auto id = tokenizer->token_to_id("<end_of_sentence>")) return {*id};
  }
  return {};
}

Expected<int64_t> generation_length(const ModelConfig& cfg, size_t prompt_len, const GenerateOptions& opt) {
  if (prompt_len == 0) return Status(Errc::invalid_argument, "the prompt is empty");
  if (opt.max_tokens < 0) return Status(Errc::invalid_argument, "max_tokens must be >= 0");
  const int64_t room = std::numeric_limits<int64_t>::max() - static_cast<int64_t>(prompt_len);
  const int64_t capacity = static_cast<int64_t>(prompt_len) + std::min(opt.max_tokens, room);
  if (cfg.max_position_embeddings > 0 && static_cast<int64_t>(prompt_len) > cfg.max_position_embeddings) {
    return Status(Errc::invalid_argument, "the prompt has " + std::to_string(prompt_len) +
                                              " tokens, more than the model's context of " +
                                              std::to_string(cfg.max_position_embeddings));
  }
  return cfg.max_position_embeddings > 0 ? std::min(capacity, cfg.max_position_embeddings) : capacity;
}

Expected<GenerateResult> generate_tokens(int64_t max_len, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                                         const NextTokenStep& next, const std::function<void(int32_t)>& on_token) {
  using clock = std::chrono::steady_clock;
  GenerateResult result;
  result.finish_reason = "length";
  if (opt.max_tokens <= 0) {  // prefill only
    const auto t0 = clock::now();
    FULGUR_ASSIGN_OR_RETURN(const int32_t unused, next(prompt, opt.sampling));
    (void)unused;
    result.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
    return result;
  }
  auto t0 = clock::now();
  std::vector<int32_t> feed = prompt;
  int64_t length = static_cast<int64_t>(prompt.size());
  for (int64_t i = 0; i < opt.max_tokens; ++i) {
    kernels::SamplingParams sp = opt.sampling;
    sp.step = static_cast<uint64_t>(i);
    FULGUR_ASSIGN_OR_RETURN(const int32_t token, next(feed, sp));
    if (i == 0) {
      result.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
      t0 = clock::now();
    } else {
      ++length;
    }
    result.tokens.push_back(token);
    if (on_token) on_token(token);
    if (std::find(opt.stop_tokens.begin(), opt.stop_tokens.end(), token) != opt.stop_tokens.end()) {
      result.finish_reason = "stop";
      break;
    }
    if (length >= max_len) break;
    feed = {token};
  }
  result.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return result;
}

Expected<GenerateResult> generate_with(const ModelConfig& cfg, int64_t max_len, const std::vector<int32_t>& prompt,
                                       const GenerateOptions& opt, const SequenceStep& step,
                                       const std::function<void(int32_t)>& on_token) {
  std::vector<char> workspace(kernels::sample_workspace_bytes(cfg.vocab_size));
  Tensor logits;
  auto next = [&](const std::vector<int32_t>& tokens, const kernels::SamplingParams& sp) -> Expected<int32_t> {
    FULGUR_TRY(step(tokens, logits));
    if (logits.numel() < cfg.vocab_size) return Status(Errc::internal, "generate: a step returned no logits");
    const float* last = logits.data<float>() + (logits.numel() - cfg.vocab_size);  // the last token's row
    int32_t token = -1;
    if (auto ks = kernels::sample_cpu(last, cfg.vocab_size, sp, workspace.data(), &token); !ks.ok()) {
      return Status(Errc::invalid_argument, ks.error);
    }
    return token;
  };
  return generate_tokens(max_len, prompt, opt, next, on_token);
}

Expected<GenerateResult> generate(const Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                                  const std::function<void(int32_t)>& on_token) {
  FULGUR_ASSIGN_OR_RETURN(const int64_t max_len, generation_length(model.config(), prompt.size(), opt));
  SingleSequence seq(model, max_len);
  return generate_with(model.config(), max_len, prompt, opt,
                       [&](const std::vector<int32_t>& t, Tensor& l) { return seq.step(t, false, l); }, on_token);
}

}  // namespace fulgur
