// `fulgur init-model`: a random-weight MiniMax checkpoint (config.json, safetensors, tokenizer.json)
// for demos, tests and benchmarks.
#pragma once

#include <cstdint>
#include <string>

#include "actors/layers/weights.h"
#include "orchestration/checkpoint/checkpoint.h"
#include "protocols/model_config.h"

namespace fulgur {

// The embedded default model: small enough to generate on 2 CPU cores, same structure as
// MiniMax-Text-01 (7 lightning : 1 softmax, partial RoPE, GQA, top-2 of 8 experts, DeepNorm).
ModelConfig demo_model_config();

// The special tokens init-model's tokenizer ends with; eos is "<end_of_sentence>" (spec §8).
const std::vector<std::string>& minimax_special_tokens();

// Seeded random weights (f32): linear weights N(0, 1/fan_in), embeddings N(0, 1), norm weights
// 1 + N(0, 0.1^2) so that activations stay O(1) through the layers. Same seed, same weights.
ModelWeights random_model_weights(const ModelConfig& cfg, uint64_t seed);

struct InitModelOptions {
  uint64_t seed = 0;
  DType dtype = DType::bf16;
  WeightNaming naming = WeightNaming::official;
  uint64_t max_shard_bytes = 0;  // 0: a single model.safetensors
};

// Writes config.json, the weights and a byte-level BPE tokenizer.json with cfg.vocab_size ids
// (the last ones MiniMax's special tokens; cfg.eos_token_id is set to <end_of_sentence>).
// Creates `out_dir` if needed.
Status init_model(ModelConfig cfg, const std::string& out_dir, const InitModelOptions& options);

}  // namespace fulgur
