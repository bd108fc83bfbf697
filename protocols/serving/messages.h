// Messages of the serving runtime's control plane: step descriptors, token-group descriptors and
// tensor handles. Every type here is registered in the fulgur CAF type-ID block (type_ids.h) and
// has an inspect() naming its fields.
//
// The float rule (architecture.md §3): CAF 0.17 mis-serialises floats across processes, so no
// message type in this file carries a float field. Sampling parameters travel as IEEE bit
// patterns (SamplingDesc::*_bits), latency sums as integer nanoseconds.
//
// Tensors: hidden states never travel inside a message. A message carries a HiddenHandle: a
// TensorRef descriptor (buffer id, owner node, shape, dtype — all integers, serialisable) plus,
// in-process only, the ref-counted std::shared_ptr<Tensor> it refers to (zero-copy hand-off).
// inspect() serialises the descriptor only, so a HiddenHandle that crossed a process boundary
// arrives with `local == nullptr`: the sender shipped its bytes over UCX under the tag
// `ref.buffer_id`, and the receiver fetches them (actors/data_plane.h). `resolve()` below is the
// in-process view: it fails with Errc::unavailable instead of dereferencing a null handle.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/node_id.hpp>

#include "devices/status.h"
#include "devices/tensor.h"
#include "kernels/sampling.h"

namespace fulgur::serving {

// ---- tensors ------------------------------------------------------------------------------

// Where a tensor lives; enough for a data-plane transfer to find it later.
struct TensorRef {
  uint64_t buffer_id = 0;      // unique within the owner process; across processes: the UCX tag
  uint32_t owner_node = 0;     // process index of the sender (0 = the serving process)
  std::vector<int64_t> shape;  // row-major
  uint8_t dtype = 0;           // fulgur::DType
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, TensorRef& x) {
  return f(caf::meta::type_name("TensorRef"), x.buffer_id, x.owner_node, x.shape, x.dtype);
}

// A descriptor plus (in-process) the tensor itself. See the rule in the file comment.
struct HiddenHandle {
  TensorRef ref;
  std::shared_ptr<Tensor> local;  // not serialised

  static HiddenHandle wrap(Tensor t, uint32_t node = 0);
  bool valid() const { return local != nullptr; }
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, HiddenHandle& x) {
  return f(caf::meta::type_name("HiddenHandle"), x.ref);
}
// The tensor behind a handle, or Errc::unavailable when it was not transferred into this process.
Expected<Tensor*> resolve(const HiddenHandle& h, const char* what);

// ---- steps --------------------------------------------------------------------------------

// kernels::SamplingParams without float fields (bit patterns instead).
struct SamplingDesc {
  uint32_t temperature_bits = 0;
  int64_t top_k = 0;
  uint32_t top_p_bits = 0x3f800000u;  // 1.0f
  uint64_t seed = 0;
  uint64_t step = 0;  // index of the generated token this draw produces
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, SamplingDesc& x) {
  return f(caf::meta::type_name("SamplingDesc"), x.temperature_bits, x.top_k, x.top_p_bits, x.seed, x.step);
}
SamplingDesc to_desc(const kernels::SamplingParams& p);
kernels::SamplingParams from_desc(const SamplingDesc& d);

// One scheduler step: a packed batch of prefill chunks and decode tokens (BatchLayout's fields,
// see actors/layers/batch.h) plus who they belong to and which rows the head samples.
struct StepDescriptor {
  uint64_t step_id = 0;
  std::vector<uint64_t> seq_ids;        // [num_seqs] request ids
  int64_t num_tokens = 0;
  std::vector<int32_t> cu_seqlens;      // [num_seqs + 1]
  std::vector<int32_t> positions;       // [num_tokens]
  std::vector<int32_t> state_slots;     // [num_seqs]
  std::vector<int32_t> context_lens;    // [num_seqs]
  std::vector<int32_t> block_tables;    // [num_seqs, max_blocks_per_seq]
  int64_t max_blocks_per_seq = 0;
  std::vector<int64_t> kv_slot_mapping; // [num_tokens]
  std::vector<int32_t> reset_slots;     // lightning slots to zero before the step (sequences starting)
  std::vector<int64_t> logits_rows;     // [num_samples] step rows whose next token is sampled
  std::vector<SamplingDesc> sampling;   // [num_samples]
  bool return_logits = false;           // debug: the head also returns the logits rows
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, StepDescriptor& x) {
  return f(caf::meta::type_name("StepDescriptor"), x.step_id, x.seq_ids, x.num_tokens, x.cu_seqlens, x.positions,
           x.state_slots, x.context_lens, x.block_tables, x.max_blocks_per_seq, x.kv_slot_mapping, x.reset_slots,
           x.logits_rows, x.sampling, x.return_logits);
}

// What the head returns for a step.
struct StepResult {
  uint64_t step_id = 0;
  std::vector<int32_t> tokens;  // [num_samples], one per logits row
  HiddenHandle logits;          // [num_samples, vocab] when return_logits, else empty
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, StepResult& x) {
  return f(caf::meta::type_name("StepResult"), x.step_id, x.tokens, x.logits);
}

// ---- MoE dispatch -------------------------------------------------------------------------

// One token group for one expert: rows of the layer's h2 (the step's token indices) that the
// router sends to the expert actor hosting `expert`.
struct TokenGroup {
  uint64_t step_id = 0;
  int32_t layer = 0;
  int32_t expert = 0;
  int32_t group_idx = 0;      // dispatch order within the (step, layer)
  std::vector<int32_t> rows;  // [n] token indices into h2, ascending
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, TokenGroup& x) {
  return f(caf::meta::type_name("TokenGroup"), x.step_id, x.layer, x.expert, x.group_idx, x.rows);
}

// The expert's answer for a group (its output travels as a HiddenHandle [n, hidden] beside it).
struct GroupDone {
  int32_t group_idx = 0;
  int32_t expert_actor = 0;     // which replica computed it
  int64_t compute_begin_ns = 0; // steady clock, this process
  int64_t compute_end_ns = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, GroupDone& x) {
  return f(caf::meta::type_name("GroupDone"), x.group_idx, x.expert_actor, x.compute_begin_ns, x.compute_end_ns);
}

// One group's timeline as the router saw it (for the overlap test and benchmark).
struct GroupTrace {
  uint64_t step_id = 0;
  int32_t layer = 0, expert = 0, group_idx = 0, expert_actor = 0, num_tokens = 0;
  int64_t send_ns = 0, compute_begin_ns = 0, compute_end_ns = 0, receive_ns = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, GroupTrace& x) {
  return f(caf::meta::type_name("GroupTrace"), x.step_id, x.layer, x.expert, x.group_idx, x.expert_actor,
           x.num_tokens, x.send_ns, x.compute_begin_ns, x.compute_end_ns, x.receive_ns);
}

// Global router: a router announces its groups (expert, tokens) before dispatch; the answer names
// the expert actor (replica) chosen for each group by pending load.
struct DispatchPlanRequest {
  int32_t layer = 0;
  std::vector<int32_t> group_experts;  // [num_groups]
  std::vector<int64_t> group_tokens;   // [num_groups]
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, DispatchPlanRequest& x) {
  return f(caf::meta::type_name("DispatchPlanRequest"), x.layer, x.group_experts, x.group_tokens);
}

// Load counters of the global router (topology / admin console).
struct LoadSnapshot {
  std::vector<int64_t> pending_per_actor;          // [num_expert_actors] tokens dispatched, not yet done
  std::vector<int64_t> tokens_per_actor;           // [num_expert_actors] total tokens computed
  std::vector<int64_t> tokens_per_expert;          // [num_experts] total tokens routed (all layers)
  std::vector<int32_t> down_actors;                // expert actors seen going down (ascending)
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, LoadSnapshot& x) {
  return f(caf::meta::type_name("LoadSnapshot"), x.pending_per_actor, x.tokens_per_actor, x.tokens_per_expert,
           x.down_actors);
}

// ---- nodes --------------------------------------------------------------------------------
// A node agent (one per process, actors/node_agent.h) hosts the actors the placement puts on its
// process. The serving process says hello to every node (process index, model directory), sends
// every node the table of peers for the data plane, then asks for actors (SpawnSpec).

// A node's answer to hello.
struct NodeInfo {
  std::string host;
  int64_t pid = 0;
  std::vector<uint8_t> ucx_address;  // the node's UCX worker address (data plane)
  // The model the node loaded, to check that every node serves the same one.
  int64_t num_layers = 0, hidden_size = 0, num_experts = 0, vocab_size = 0;
  std::string model_fingerprint;     // config + tensor names/shapes/dtypes, hashed
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeInfo& x) {
  return f(caf::meta::type_name("NodeInfo"), x.host, x.pid, x.ucx_address, x.num_layers, x.hidden_size,
           x.num_experts, x.vocab_size, x.model_fingerprint);
}

// Data-plane peers: process `nodes[i]` (a CAF node id) listens at UCX address `addresses[i]`.
struct PeerTable {
  std::vector<caf::node_id> nodes;
  std::vector<std::vector<uint8_t>> addresses;
  std::vector<std::string> names;
  std::vector<uint16_t> process_indices;  // the high 16 bits of the tags each process sends
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, PeerTable& x) {
  return f(caf::meta::type_name("PeerTable"), x.nodes, x.addresses, x.names, x.process_indices);
}

enum class ActorKind : uint8_t { embed = 0, attention = 1, router = 2, expert = 3, head = 4 };

// One actor for a node agent to spawn. Handles travel as caf::actor (typed on both ends).
struct SpawnSpec {
  uint8_t kind = 0;                     // ActorKind
  int64_t layer = 0;                    // attention, router
  int32_t index = 0;                    // expert: its expert-actor index
  std::vector<int32_t> experts;         // expert: the expert ids it hosts
  int64_t num_slots = 0, num_blocks = 0, page_size = 16;                    // attention: state pools
  int64_t group_tokens = 32, max_inflight_groups = 4, expert_timeout_ms = 60000;  // router
  caf::actor next;                      // embed: layer 0; attention: its router; router: next sink
  caf::actor global;                    // router: the global router
  std::vector<caf::actor> expert_actors;  // router: every expert actor, by index
  std::vector<std::string> expert_names;  // router: how errors name them ("expert actor 3 on node 'b'")
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, SpawnSpec& x) {
  return f(caf::meta::type_name("SpawnSpec"), x.kind, x.layer, x.index, x.experts, x.num_slots, x.num_blocks,
           x.page_size, x.group_tokens, x.max_inflight_groups, x.expert_timeout_ms, x.next, x.global,
           x.expert_actors, x.expert_names);
}

// Monotonic nanoseconds (steady clock) for traces.
int64_t now_ns();

}  // namespace fulgur::serving
