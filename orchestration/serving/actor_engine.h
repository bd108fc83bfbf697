// ActorEngine: the Engine implemented by the actor runtime, in one process or across several.
//
// make_actor_engine builds a caf::actor_system (fulgur type-ID block, explicit scheduler size;
// with remote nodes also the CAF middleman and a UCX data plane), connects to the node agents
// the placement names (`fulgur node --listen`; each loads the checkpoint itself and must load
// the same model), tells every process the UCX address of every other one, and spawns through
// the agents, per the placement: the expert actors, the global router, the head, per layer a
// router and an attention actor (wired back to front), the embed actor and the scheduler.
// make_local_engine (engine_factory.h) is make_actor_engine with the default placement.
//
// A node that dies or disconnects: its actors go down; steps with work in flight there fail at
// once with Errc::unavailable, an expert with a live replica elsewhere keeps being served, and
// a pipeline actor (attention, router) that is gone fails every later request.
//
// Threading: token callbacks run on the scheduler actor's thread. cancel() is a plain send and
// may be called from a callback; submit(), stats() and topology() wait for an actor's answer and
// must not be (the scheduler cannot answer while it runs the callback: they would time out).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "orchestration/serving/engine_factory.h"
#include "orchestration/serving/scheduler_actor.h"
#include "protocols/serving/messages.h"
#include "protocols/serving/placement.h"

namespace fulgur {

struct ActorEngineOptions {
  serving::Placement placement;      // default: one expert actor per expert, all in this process
  size_t scheduler_threads = 2;      // CAF scheduler.max-threads
  int64_t step_timeout_ms = 120000;  // a step not back by then fails its requests
  LogitsHook logits_hook;            // debug: logits of every sampled row
  // Placements with remote nodes: the checkpoint directory each node loads (same path on every
  // host), how long to keep trying to reach a node that is still starting, and how long an
  // actor waits for the bytes of a hidden state another process announced.
  std::string model_dir;
  std::chrono::milliseconds connect_timeout{30000};
  std::chrono::milliseconds receive_timeout{30000};
};

class ActorEngine : public Engine {
 public:
  ~ActorEngine() override = default;
  // The last step's dispatch trace of layer `layer_idx`'s router (empty on error).
  virtual std::vector<serving::GroupTrace> dispatch_trace(int64_t layer_idx) const = 0;
  // Round trips of a small message (ping) to expert actor 0; seconds per round trip.
  virtual double hop_round_trip_seconds(int64_t count) const = 0;
  // Actor -> actor round trips (sequential pings) from an actor of this process to the first
  // expert actor on `node`; seconds per round trip.
  virtual Expected<double> actor_round_trip_seconds(const std::string& node, int64_t count) const = 0;
  virtual const serving::Placement& placement() const = 0;
};

// EngineOptions with its defaults resolved against the model (kv_blocks, max_context).
Expected<EngineOptions> resolve_engine_options(const ModelConfig& cfg, const EngineOptions& options);

Expected<std::unique_ptr<ActorEngine>> make_actor_engine(std::shared_ptr<const Model> model,
                                                         const EngineOptions& options,
                                                         const ActorEngineOptions& actor_options = {});

}  // namespace fulgur
