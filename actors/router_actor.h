// Router actor (one per MoE layer) and the global router (one per expert-parallel group).
//
// Router, per step: gate -> top-k (MoeBlock::route) -> per-expert token lists (tokens ascending)
// -> cut into token groups of at most `group_tokens` rows, ordered by (expert, chunk) ->
// ask the global router for a replica per group (plan) -> pipelined dispatch: keep up to
// `max_inflight_groups` groups in flight, sending group g+1 while the experts still compute
// group g; each returning group sends the next one -> when all are back, combine in the fixed
// (expert, chunk, row) order — the order MoeBlock::forward accumulates in, so the result does not
// depend on arrival order — then x = mlp_alpha*h2 + mlp_beta*moe(h2) and hand x to `next`.
// Every group's send/compute/receive times are kept (the last step's, bounded) for the trace.
//
// Global router: holds the pending-token count of every expert actor (tokens dispatched and not
// yet done, summed over all routers). A router's plan request announces its per-group expert
// and token counts before it dispatches; the global router assigns each group to the replica of
// its expert with the fewest pending tokens (ties: lowest actor index), adds the tokens to that
// replica's count, and the router reports each finished group (done) so the count drains.
//
// Failure: both monitor the expert actors. A replica that goes down is skipped by later plans
// (an expert with no live replica fails the plan: Errc::unavailable), and the router fails at
// once every dispatch that has a group in flight to it.
#pragma once

#include <memory>
#include <vector>

#include <caf/actor_system.hpp>

#include "actors/layers/model.h"
#include "protocols/serving/interfaces.h"

namespace fulgur::serving {

class DataPlane;  // actors/data_plane.h; null: every actor in one process

struct RouterOptions {
  int64_t group_tokens = 32;
  int64_t max_inflight_groups = 4;
  int64_t expert_timeout_ms = 60000;  // a group not back by then fails the step
  std::vector<std::string> expert_names;  // [expert actor] for errors; default "expert actor i"
};

// experts_by_actor[a] is expert actor a; the plan answers indices into it.
router_actor spawn_router(caf::actor_system& sys, std::shared_ptr<const Model> model, int64_t layer_idx,
                          const RouterOptions& options, global_router_actor global,
                          std::vector<expert_actor> expert_actors, hidden_sink_actor next,
                          std::shared_ptr<DataPlane> dp = nullptr);

// replicas[e] = expert actor indices hosting expert e (non-empty for every expert); the global
// router monitors `expert_actors` and never plans a group onto one that went down.
global_router_actor spawn_global_router(caf::actor_system& sys, std::vector<std::vector<int32_t>> replicas,
                                        std::vector<expert_actor> expert_actors,
                                        std::vector<std::string> expert_names = {});

}  // namespace fulgur::serving
