// Placement: which actors exist and what they host. JSON (nlohmann) so that `fulgur serve
// --placement plan.json` can read the same struct later.
//
//   {
//     "nodes": ["local"],                       // node names; a local engine has one
//     "expert_actors": [                        // each entry is one expert actor
//       {"node": "local", "experts": [0, 1]},   // hosts experts 0 and 1 of every MoE layer
//       {"node": "local", "experts": [1, 2, 3]} // an expert hosted twice is replicated: the
//     ],                                        //   global router picks a replica by load
//     "group_tokens": 32,                       // tokens per dispatched token group
//     "max_inflight_groups": 4                  // groups a router keeps in flight per layer
//   }
//
// An empty "expert_actors" means one expert actor per expert. Every expert must be hosted at
// least once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "devices/status.h"

namespace fulgur::serving {

struct ExpertActorSpec {
  std::string node = "local";
  std::vector<int32_t> experts;  // expert ids hosted (of every MoE layer)
};

struct Placement {
  std::vector<std::string> nodes = {"local"};
  std::vector<ExpertActorSpec> expert_actors;  // empty: one per expert
  int64_t group_tokens = 32;
  int64_t max_inflight_groups = 4;

  static Placement one_per_expert(int64_t num_experts);
  // `num_actors` actors, expert e on actor e % num_actors.
  static Placement grouped(int64_t num_experts, int64_t num_actors);
  // The placement with its defaults filled in (one actor per expert when none are named).
  Placement resolved(int64_t num_experts) const;
  Status validate(int64_t num_experts) const;
  // [expert] -> expert actor indices hosting it, ascending.
  std::vector<std::vector<int32_t>> replicas(int64_t num_experts) const;
};

nlohmann::json to_json(const Placement& p);
Expected<Placement> placement_from_json(const nlohmann::json& j);

}  // namespace fulgur::serving
