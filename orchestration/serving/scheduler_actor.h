// Scheduler actor: continuous batching over the actor pipeline (embed -> layers -> head).
//
// Requests join and leave at every step. A step mixes decode tokens (one per running sequence
// that finished its prompt) and prefill chunks (at most prefill_chunk tokens of one prompt) under
// step_token_budget. A request is admitted into the running batch when a state slot and all the
// KV pages its longest possible context needs are free (reserved up front: no preemption);
// until then it waits in a queue bounded by max_queued (submit answers Errc::overloaded past it).
// One step is in flight at a time; the step request carries a timeout, so a lost actor fails the
// step's requests (final event "error") instead of hanging them; watched actors (SchedulerConfig::
// watch) that go down fail it at once. Cancellation frees the slot and
// pages (after the in-flight step that uses them, if any) and sends the final "cancelled" event.
// Sampling: the head samples each sequence's row with its own SamplingParams, step = the index
// of the generated token — the same draws as orchestration/generate.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/typed_actor.hpp>

#include "orchestration/serving/engine.h"
#include "orchestration/serving/engine_factory.h"
#include "protocols/serving/interfaces.h"

namespace fulgur {

// A request as the engine hands it to the scheduler. Holds a callback: in-process only.
struct SubmitPayload {
  RequestId id = 0;
  CompletionRequest request;
  TokenCallback on_event;
};

// Debug hook: logits row of generated token `token_index` of request `id`.
using LogitsHook = std::function<void(RequestId id, int64_t token_index, const std::vector<float>& logits)>;

struct SchedulerConfig {
  EngineOptions options;          // resolved: kv_blocks and max_context filled in
  int64_t step_timeout_ms = 120000;
  LogitsHook logits_hook;         // when set, the head returns logits and the scheduler calls it
  // Pipeline actors (embed, attention, routers, head) to monitor: when one goes down the step in
  // flight and every request after it fail with Errc::unavailable naming watch_names[i].
  std::vector<caf::actor> watch;
  std::vector<std::string> watch_names;
};

}  // namespace fulgur

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(fulgur::SubmitPayload)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(fulgur::EngineStats)

namespace fulgur {

using scheduler_actor =
    caf::typed_actor<caf::replies_to<serving::submit_atom, SubmitPayload>::with<uint64_t>,
                     caf::reacts_to<serving::cancel_atom, uint64_t>,
                     caf::replies_to<serving::stats_atom>::with<EngineStats>,
                     caf::reacts_to<serving::step_atom>>;

scheduler_actor spawn_scheduler(caf::actor_system& sys, SchedulerConfig config, serving::embed_actor embed);

// An engine's side of the scheduler (from the engine's own threads, never an actor's): hand it a
// checked request (its answer is the id), ask for its statistics.
Expected<RequestId> scheduler_submit(caf::actor_system& sys, const scheduler_actor& scheduler, SubmitPayload payload);
EngineStats scheduler_stats(caf::actor_system& sys, const scheduler_actor& scheduler);

// Latency histogram bucket upper bounds (seconds) of EngineStats.
const std::vector<double>& latency_bucket_bounds();

}  // namespace fulgur
