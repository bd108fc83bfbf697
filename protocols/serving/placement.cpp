#include "protocols/serving/placement.h"

#include <algorithm>

namespace fulgur::serving {

Placement Placement::one_per_expert(int64_t num_experts) {
  Placement p;
  for (int64_t e = 0; e < num_experts; ++e) p.expert_actors.push_back({"local", {static_cast<int32_t>(e)}});
  return p;
}

Placement Placement::grouped(int64_t num_experts, int64_t num_actors) {
  Placement p;
  p.expert_actors.resize(std::max<int64_t>(1, num_actors));
  for (int64_t e = 0; e < num_experts; ++e) {
    p.expert_actors[e % p.expert_actors.size()].experts.push_back(static_cast<int32_t>(e));
  }
  return p;
}

Placement Placement::resolved(int64_t num_experts) const {
  if (!expert_actors.empty()) return *this;
  Placement p = one_per_expert(num_experts);
  p.nodes = nodes;
  p.group_tokens = group_tokens;
  p.max_inflight_groups = max_inflight_groups;
  return p;
}

Status Placement::validate(int64_t num_experts) const {
  auto bad = [](const std::string& m) { return Status(Errc::invalid_argument, "placement: " + m); };
  if (group_tokens < 1) return bad("group_tokens must be >= 1");
  if (max_inflight_groups < 1) return bad("max_inflight_groups must be >= 1");
  std::vector<int> hosted(num_experts, 0);
  for (size_t a = 0; a < expert_actors.size(); ++a) {
    const auto& spec = expert_actors[a];
    if (std::find(nodes.begin(), nodes.end(), spec.node) == nodes.end()) {
      return bad("expert actor " + std::to_string(a) + " is on unknown node '" + spec.node + "'");
    }
    if (spec.experts.empty()) return bad("expert actor " + std::to_string(a) + " hosts no expert");
    for (int32_t e : spec.experts) {
      if (e < 0 || e >= num_experts) {
        return bad("expert actor " + std::to_string(a) + " hosts expert " + std::to_string(e) +
                   ", outside [0, " + std::to_string(num_experts) + ")");
      }
      ++hosted[e];
    }
  }
  if (!expert_actors.empty()) {
    for (int64_t e = 0; e < num_experts; ++e) {
      if (hosted[e] == 0) return bad("expert " + std::to_string(e) + " is hosted by no expert actor");
    }
  }
  return Status::ok();
}

std::vector<std::vector<int32_t>> Placement::replicas(int64_t num_experts) const {
  std::vector<std::vector<int32_t>> r(num_experts);
  const Placement p = resolved(num_experts);
  for (size_t a = 0; a < p.expert_actors.size(); ++a) {
    for (int32_t e : p.expert_actors[a].experts) {
      if (e >= 0 && e < num_experts && (r[e].empty() || r[e].back() != static_cast<int32_t>(a))) {
        r[e].push_back(static_cast<int32_t>(a));
      }
    }
  }
  return r;
}

nlohmann::json to_json(const Placement& p) {
  nlohmann::json j;
  j["nodes"] = p.nodes;
  j["expert_actors"] = nlohmann::json::array();
  for (const auto& a : p.expert_actors) j["expert_actors"].push_back({{"node", a.node}, {"experts", a.experts}});
  j["group_tokens"] = p.group_tokens;
  j["max_inflight_groups"] = p.max_inflight_groups;
  return j;
}

Expected<Placement> placement_from_json(const nlohmann::json& j) {
  auto bad = [](const std::string& m) { return Status(Errc::parse_error, "placement: " + m); };
  if (!j.is_object()) return bad("expected a JSON object");
  Placement p;
  try {
    if (j.contains("nodes")) {
      if (!j["nodes"].is_array()) return bad("'nodes' must be an array of strings");
      p.nodes.clear();
      for (const auto& n : j["nodes"]) {
        if (!n.is_string()) return bad("'nodes' must be an array of strings");
        p.nodes.push_back(n.get<std::string>());
      }
    }
    if (j.contains("expert_actors")) {
      if (!j["expert_actors"].is_array()) return bad("'expert_actors' must be an array");
      for (const auto& a : j["expert_actors"]) {
        if (!a.is_object() || !a.contains("experts") || !a["experts"].is_array()) {
          return bad("each expert actor needs an 'experts' array");
        }
        ExpertActorSpec spec;
        if (a.contains("node")) {
          if (!a["node"].is_string()) return bad("'node' must be a string");
          spec.node = a["node"].get<std::string>();
        } else {
          spec.node = p.nodes.empty() ? "local" : p.nodes.front();
        }
        for (const auto& e : a["experts"]) {
          if (!e.is_number_integer()) return bad("expert ids must be integers");
          spec.experts.push_back(e.get<int32_t>());
        }
        p.expert_actors.push_back(std::move(spec));
      }
    }
    for (const char* key : {"group_tokens", "max_inflight_groups"}) {
      if (!j.contains(key)) continue;
      if (!j[key].is_number_integer()) return bad(std::string("'") + key + "' must be an integer");
      (std::string(key) == "group_tokens" ? p.group_tokens : p.max_inflight_groups) = j[key].get<int64_t>();
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  return p;
}

}  // namespace fulgur::serving
