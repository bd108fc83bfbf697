// Placement: which processes (nodes) exist, which actors live on each and what they host. JSON
// (nlohmann), read by `fulgur serve --placement plan.json` and shown by /v1/admin/topology.
//
//   {
//     "nodes": [                                  // the processes; "local" is the serving process
//       "local",                                  //   itself (always present, added when omitted)
//       {"name": "a", "address": "10.0.0.5:7101"} //   a `fulgur node --listen 10.0.0.5:7101`
//     ],                                          //   ("host:port" alone names a node by its address)
//     "attention": [                              // attention actor (+ its router) per layer;
//       {"node": "local", "layers": [0, 1, 2]}    //   layers not listed run on "local"
//     ],
//     "expert_actors": [                          // each entry is one expert actor
//       {"node": "a", "experts": [0, 1]},         // hosts experts 0 and 1 of every MoE layer
//       {"node": "local", "experts": [1, 2, 3]}   // an expert hosted twice is replicated: the
//     ],                                          //   global router picks a replica by load
//     "group_tokens": 32,                         // tokens per dispatched token group
//     "max_inflight_groups": 4                    // groups a router keeps in flight per layer
//   }
//
// An empty "expert_actors" means one expert actor per expert, on "local". Every expert must be
// hosted at least once. The embed and head actors, the global router and the scheduler run in
// the serving process.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "devices/status.h"

namespace fulgur::serving {

inline constexpr const char* kLocalNode = "local";

struct NodeSpec {
  std::string name = kLocalNode;
  std::string host;   // empty: the serving process
  uint16_t port = 0;
  bool is_local() const { return host.empty(); }
  std::string address() const { return host + ":" + std::to_string(port); }
};

struct AttentionPlacement {
  std::string node = kLocalNode;
  std::vector<int64_t> layers;
};

struct ExpertActorSpec {
  std::string node = kLocalNode;
  std::vector<int32_t> experts;  // expert ids hosted (of every MoE layer)
};

struct Placement {
  std::vector<NodeSpec> nodes = {NodeSpec{}};
  std::vector<AttentionPlacement> attention;   // layers not listed: "local"
  std::vector<ExpertActorSpec> expert_actors;  // empty: one per expert
  int64_t group_tokens = 32;
  int64_t max_inflight_groups = 4;

  static Placement one_per_expert(int64_t num_experts);
  // `num_actors` actors, expert e on actor e % num_actors.
  static Placement grouped(int64_t num_experts, int64_t num_actors);
  // The placement with its defaults filled in (one actor per expert when none are named).
  Placement resolved(int64_t num_experts) const;
  // num_layers < 0: attention layers are not checked against the model.
  Status validate(int64_t num_experts, int64_t num_layers = -1) const;
  const NodeSpec* find_node(const std::string& name) const;
  // The node hosting layer `layer`'s attention actor and router.
  std::string attention_node(int64_t layer) const;
  bool multi_process() const;
  // [expert] -> expert actor indices hosting it, ascending.
  std::vector<std::vector<int32_t>> replicas(int64_t num_experts) const;
};

nlohmann::json to_json(const Placement& p);
// "host:port" -> (host, port); port in [1, 65535].
Expected<std::pair<std::string, uint16_t>> parse_host_port(const std::string& s);
Expected<Placement> placement_from_json(const nlohmann::json& j);

}  // namespace fulgur::serving
