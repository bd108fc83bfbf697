// Loading a model directory and generating from it on one sequence (`fulgur generate`).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/layers/model.h"
#include "kernels/sampling.h"
#include "orchestration/checkpoint/safetensors.h"
#include "orchestration/tokenizer/tokenizer.h"

namespace fulgur {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::optional<Tokenizer> tokenizer;  // when the directory has a tokenizer.json
};

// Reads DIR/config.json, the weights (single file or sharded) and DIR/tokenizer.json if present.
// `need_tokenizer`: a missing tokenizer.json is an error naming it.
Expected<LoadedModel> load_model_dir(const std::string& dir, bool need_tokenizer,
                                     const ProgressCallback& progress = stderr_progress());

struct GenerateOptions {
  int64_t max_tokens = 64;
  kernels::SamplingParams sampling;  // step is set per draw
  std::vector<int32_t> stop_tokens;  // generation ends after emitting one of these
};

struct GenerateResult {
  std::vector<int32_t> tokens;       // generated, stop token included when hit
  std::string finish_reason;         // "stop" | "length"
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Prefills `prompt`, then samples up to max_tokens, calling on_token(id) as each one is chosen.
// The sequence is capped by the model's max_position_embeddings (when set).
Expected<GenerateResult> generate(const Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                                  const std::function<void(int32_t)>& on_token = {});

// The pieces, for any device. The tokens one sequence needs room for (prompt + max_tokens, capped by
// the context); an empty or too long prompt is an error.
Expected<int64_t> generation_length(const ModelConfig& cfg, size_t prompt_len, const GenerateOptions& opt);
// Appends `tokens` to one sequence and returns the next token, drawn with `sampling` (step set per draw).
using NextTokenStep =
    std::function<Expected<int32_t>(const std::vector<int32_t>& tokens, const kernels::SamplingParams& sampling)>;
// The loop of generate over `next` on one sequence of capacity max_len: prefill, then one token at a time
// until a stop token, max_tokens or max_len. prefill_seconds includes the first draw.
Expected<GenerateResult> generate_tokens(int64_t max_len, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                                         const NextTokenStep& next, const std::function<void(int32_t)>& on_token = {});
// generate_tokens over `step`, which returns logits whose last row is the last token's: the CPU sampler
// draws from it.
Expected<GenerateResult> generate_with(const ModelConfig& cfg, int64_t max_len, const std::vector<int32_t>& prompt,
                                       const GenerateOptions& opt, const SequenceStep& step,
                                       const std::function<void(int32_t)>& on_token = {});

// The ids generation should stop at: config eos_token_id, else the tokenizer's <end_of_sentence>.
std::vector<int32_t> default_stop_tokens(const ModelConfig& cfg, const Tokenizer* tokenizer);

}  // namespace fulgur
