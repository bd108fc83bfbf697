// The fulgur CAF type-ID block: every message type and atom of the serving protocol, in one
// place. An actor_system_config loads it with `cfg.add_message_types<caf::id_block::fulgur>()`
// (see protocols/serving/caf_config.h). Appending is safe; reordering changes the wire ids.
#pragma once

#include <caf/atom.hpp>
#include <caf/type_id.hpp>

#include "protocols/serving/messages.h"

CAF_BEGIN_TYPE_ID_BLOCK(fulgur, caf::first_custom_type_id)

  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::TensorRef))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::HiddenHandle))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::SamplingDesc))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::StepDescriptor))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::StepResult))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::TokenGroup))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::GroupDone))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::GroupTrace))
  CAF_ADD_TYPE_ID(fulgur, (std::vector<fulgur::serving::GroupTrace>))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::DispatchPlanRequest))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::LoadSnapshot))
  CAF_ADD_TYPE_ID(fulgur, (std::vector<int32_t>))
  CAF_ADD_TYPE_ID(fulgur, (std::vector<int64_t>))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::NodeInfo))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::PeerTable))
  CAF_ADD_TYPE_ID(fulgur, (fulgur::serving::SpawnSpec))

  // Atoms (at most 10 characters each in CAF 0.17).
  CAF_ADD_ATOM(fulgur, fulgur::serving, forward_atom, "fwd")      // a step's hidden states, onward
  CAF_ADD_ATOM(fulgur, fulgur::serving, embed_atom, "embed")      // a step's token ids -> embed actor
  CAF_ADD_ATOM(fulgur, fulgur::serving, moe_atom, "moe")          // (x, h2) -> router
  CAF_ADD_ATOM(fulgur, fulgur::serving, expert_atom, "expert")    // a token group -> expert actor
  CAF_ADD_ATOM(fulgur, fulgur::serving, plan_atom, "plan")        // router -> global router
  CAF_ADD_ATOM(fulgur, fulgur::serving, done_atom, "done")        // router -> global router: group back
  CAF_ADD_ATOM(fulgur, fulgur::serving, load_atom, "load")        // load counters
  CAF_ADD_ATOM(fulgur, fulgur::serving, trace_atom, "trace")      // a router's last dispatch trace
  CAF_ADD_ATOM(fulgur, fulgur::serving, submit_atom, "submit")    // scheduler: new request
  CAF_ADD_ATOM(fulgur, fulgur::serving, cancel_atom, "cancel")    // scheduler: cancel request
  CAF_ADD_ATOM(fulgur, fulgur::serving, stats_atom, "stats")      // scheduler: counters
  CAF_ADD_ATOM(fulgur, fulgur::serving, step_atom, "step")        // scheduler: run the next step
  CAF_ADD_ATOM(fulgur, fulgur::serving, ping_atom, "ping")        // hop-latency probe
  CAF_ADD_ATOM(fulgur, fulgur::serving, hello_atom, "hello")      // serve -> node: join, load the model
  CAF_ADD_ATOM(fulgur, fulgur::serving, peers_atom, "peers")      // serve -> node: data-plane peers
  CAF_ADD_ATOM(fulgur, fulgur::serving, spawn_atom, "spawn")      // serve -> node: host an actor

CAF_END_TYPE_ID_BLOCK(fulgur)
