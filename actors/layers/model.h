// Model: a loaded MiniMax model (config + weights + decoder layers) and its forward step over a
// packed batch. Plain C++, no actors: the CLI and tests call it directly; the actors of the
// serving runtime wrap the same DecoderLayer objects.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "actors/layers/batch.h"
#include "actors/layers/layers.h"
#include "actors/layers/weights.h"

namespace fulgur {

class Model {
 public:
  // Takes ownership; checks that the weights match the config.
  static Expected<std::unique_ptr<Model>> create(ModelConfig cfg, ModelWeights weights);

  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return weights_; }
  const DecoderLayer& layer(int64_t idx) const { return *layers_[idx]; }

  // One step: embeds `tokens` [num_tokens], runs every layer (reading and writing the sequences'
  // state in `pools`), and writes logits [logits_rows.size(), vocab] for the step tokens listed in
  // logits_rows.
  Status forward(const std::vector<int32_t>& tokens, const BatchLayout& batch, StatePools& pools,
                 const std::vector<int64_t>& logits_rows, Tensor& logits) const;

  // Pieces of forward, for actors: embedding and the final norm + lm_head.
  Status embed(const std::vector<int32_t>& tokens, Tensor& x) const;
  Status head(const Tensor& x, const std::vector<int64_t>& rows, Tensor& logits) const;

 private:
  Model(ModelConfig cfg, ModelWeights weights);
  ModelConfig cfg_;
  ModelWeights weights_;
  std::vector<std::unique_ptr<DecoderLayer>> layers_;
};

// One sequence fed step by step (the CLI and tests): one state slot, an identity page table.
class SingleSequence {
 public:
  SingleSequence(const Model& model, int64_t max_tokens, int64_t page_size = 16);
  // Appends `tokens` to the sequence; logits [n, vocab] for every new token (all_logits) or
  // [1, vocab] for the last one.
  Status step(const std::vector<int32_t>& tokens, bool all_logits, Tensor& logits);
  int64_t length() const { return length_; }
  int64_t max_tokens() const { return max_tokens_; }

 private:
  const Model& model_;
  int64_t max_tokens_;
  int64_t page_size_;
  int64_t length_ = 0;
  StatePools pools_;
};

// How `fulgur forward` feeds a prompt; every mode gives the same logits (up to rounding).
struct ForwardOptions {
  int64_t chunk_size = 0;   // > 0: prefill in chunks of this many tokens, state carried between them
  int64_t decode_from = -1; // >= 0: prefill tokens [0, K) then one decode step per later token
};
// logits [T, vocab] for every token of `tokens`.
Expected<Tensor> forward_all_logits(const Model& model, const std::vector<int32_t>& tokens, const ForwardOptions& opt);

// The pieces both devices share. The layout of one step of a single sequence: n new tokens after
// `length` earlier ones, state slot 0, the identity page table over num_blocks pages.
BatchLayout single_sequence_layout(int64_t length, int64_t n, int64_t num_blocks);
// The step rows whose logits a single-sequence step returns: all n, or the last one.
std::vector<int64_t> step_logits_rows(int64_t n, bool all_logits);
// Appends tokens to one sequence and returns the logits of all of them ([n, vocab]).
using SequenceStep = std::function<Status(const std::vector<int32_t>& tokens, Tensor& logits)>;
// Feeds `tokens` through `step` as `opt` says and gathers logits [T, vocab].
Expected<Tensor> forward_all_logits(int64_t vocab, const std::vector<int32_t>& tokens, const ForwardOptions& opt,
                                    const SequenceStep& step);

}  // namespace fulgur
