// ActorEngine: the Engine implemented by the actor runtime, every actor in this process.
//
// make_actor_engine builds a caf::actor_system (fulgur type-ID block, explicit scheduler size)
// and spawns, per the placement: the expert actors, the global router, the head, per layer a
// router and an attention actor (wired back to front), the embed actor and the scheduler.
// make_local_engine (engine_factory.h) is make_actor_engine with the default placement.
//
// Threading: token callbacks run on the scheduler actor's thread. cancel() is a plain send and
// may be called from a callback; submit(), stats() and topology() wait for an actor's answer and
// must not be (the scheduler cannot answer while it runs the callback: they would time out).
#pragma once

#include <memory>
#include <vector>

#include "orchestration/serving/engine_factory.h"
#include "orchestration/serving/scheduler_actor.h"
#include "protocols/serving/messages.h"
#include "protocols/serving/placement.h"

namespace fulgur {

struct ActorEngineOptions {
  serving::Placement placement;      // default: one expert actor per expert
  size_t scheduler_threads = 2;      // CAF scheduler.max-threads
  int64_t step_timeout_ms = 120000;  // a step not back by then fails its requests
  LogitsHook logits_hook;            // debug: logits of every sampled row
};

class ActorEngine : public Engine {
 public:
  ~ActorEngine() override = default;
  // The last step's dispatch trace of layer `layer_idx`'s router (empty on error).
  virtual std::vector<serving::GroupTrace> dispatch_trace(int64_t layer_idx) const = 0;
  // Round trips of a small message (ping) to expert actor 0; seconds per round trip.
  virtual double hop_round_trip_seconds(int64_t count) const = 0;
  virtual const serving::Placement& placement() const = 0;
};

// EngineOptions with its defaults resolved against the model (kv_blocks, max_context).
Expected<EngineOptions> resolve_engine_options(const ModelConfig& cfg, const EngineOptions& options);

Expected<std::unique_ptr<ActorEngine>> make_actor_engine(std::shared_ptr<const Model> model,
                                                         const EngineOptions& options,
                                                         const ActorEngineOptions& actor_options = {});

}  // namespace fulgur
