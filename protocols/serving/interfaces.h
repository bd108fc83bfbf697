// Typed actor interfaces of the serving runtime (one typed_actor per actor kind).
//
// Message flow of one step (request/response; each hop `delegate`s, so the answer — a
// StepResult or an error — returns straight to the scheduler that asked):
//
//   scheduler --(embed, step, tokens)--> embed --(fwd, step, x)--> attention[0]
//   attention[l] --(moe, step, x, h2)--> router[l] ==(expert, group g, h2)==> expert actors
//   router[l] --(fwd, step, x)--> attention[l+1] ... router[L-1] --(fwd, step, x)--> head
//   head --StepResult--> scheduler
//
// The router asks the global router for a dispatch plan (plan) before sending groups and reports
// each finished group (done). See actors/router_actor.h for the pipelined dispatch.
#pragma once

#include <vector>

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "protocols/serving/messages.h"
#include "protocols/serving/type_ids.h"

namespace fulgur::serving {

// Anything that takes a step's hidden states x [num_tokens, hidden] onward: an attention-layer
// actor or the head (final norm, lm_head, sampler).
using hidden_sink_actor =
    caf::typed_actor<caf::replies_to<forward_atom, StepDescriptor, HiddenHandle>::with<StepResult>>;

using attention_actor = hidden_sink_actor;
using head_actor = hidden_sink_actor;

using embed_actor =
    caf::typed_actor<caf::replies_to<embed_atom, StepDescriptor, std::vector<int32_t>>::with<StepResult>>;

// Router of one MoE layer: (x, h2) -> x = mlp_alpha*h2 + mlp_beta*moe(h2), onward.
using router_actor =
    caf::typed_actor<caf::replies_to<moe_atom, StepDescriptor, HiddenHandle, HiddenHandle>::with<StepResult>,
                     caf::replies_to<trace_atom>::with<std::vector<GroupTrace>>>;

// Expert actor: SwiGLU of one hosted expert of one layer over the rows of h2 a group names;
// answers the output [n, hidden] in group row order.
using expert_actor =
    caf::typed_actor<caf::replies_to<expert_atom, TokenGroup, HiddenHandle>::with<GroupDone, HiddenHandle>,
                     caf::replies_to<ping_atom, int64_t>::with<int64_t>>;

// Global router of one expert-parallel group.
using global_router_actor =
    caf::typed_actor<caf::replies_to<plan_atom, DispatchPlanRequest>::with<std::vector<int32_t>>,
                     caf::reacts_to<done_atom, int32_t, int64_t>,  // (expert actor, tokens) finished
                     caf::replies_to<load_atom>::with<LoadSnapshot>>;

// Node agent: one per process (actors/node_agent.h). `fulgur node --listen` publishes one; the
// serving process has its own in-process agent for the actors it hosts.
using node_agent_actor =
    caf::typed_actor<caf::replies_to<hello_atom, uint16_t, std::string, caf::actor>::with<NodeInfo>,  // (process
                     // index, model dir, owner: the serving process's agent, watched by the node)
                     caf::replies_to<peers_atom, PeerTable>::with<int64_t>,               // peers connected
                     caf::replies_to<spawn_atom, SpawnSpec>::with<caf::actor>,
                     caf::replies_to<ping_atom, int64_t>::with<int64_t>>;

}  // namespace fulgur::serving
