// Building an Engine over a loaded model. The actor runtime implements make_local_engine (every
// actor in this process); `fulgur serve` and the tests call it.
#pragma once

#include <memory>

#include "actors/layers/model.h"
#include "orchestration/serving/engine.h"

namespace fulgur {

struct EngineOptions {
  int64_t max_running = 64;         // sequences in one running batch
  int64_t max_queued = 256;         // admitted but waiting; beyond this submit() -> Errc::overloaded
  int64_t state_slots = 64;         // lightning state slots (one per running sequence)
  int64_t kv_blocks = 0;            // softmax KV pages; 0 = enough for state_slots full contexts
  int64_t page_size = 16;           // tokens per KV page
  int64_t step_token_budget = 512;  // tokens (prefill chunks + decodes) per scheduler step
  int64_t prefill_chunk = 256;      // longest prefill piece of one sequence in one step
  int64_t max_context = 0;          // 0 = the model's max_position_embeddings (or 4096 if unset)
};

// The checks every engine makes on a request before admitting it (invalid_argument: empty or too long
// prompt, ids outside the vocabulary, bad sampling parameters, more KV pages than the engine has).
// `options` resolved (resolve_engine_options).
Status check_completion_request(const CompletionRequest& request, const ModelConfig& cfg, const EngineOptions& options);

Expected<std::unique_ptr<Engine>> make_local_engine(std::shared_ptr<const Model> model, const EngineOptions& options);

}  // namespace fulgur
