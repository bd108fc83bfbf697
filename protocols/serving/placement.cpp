#include "protocols/serving/placement.h"

#include <algorithm>

namespace fulgur::serving {

Expected<std::pair<std::string, uint16_t>> parse_host_port(const std::string& s) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) {
    return Status(Errc::invalid_argument, "'" + s + "' is not host:port");
  }
  const std::string host = s.substr(0, colon), port = s.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) {
    return Status(Errc::invalid_argument, "'" + s + "': the port must be a number in [1, 65535]");
  }
  const long v = std::stol(port);
  if (v < 1 || v > 65535) return Status(Errc::invalid_argument, "'" + s + "': the port must be in [1, 65535]");
  return std::make_pair(host, static_cast<uint16_t>(v));
}

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
  Placement p = *this;
  if (!p.find_node(kLocalNode)) p.nodes.insert(p.nodes.begin(), NodeSpec{});
  if (p.expert_actors.empty()) p.expert_actors = one_per_expert(num_experts).expert_actors;
  return p;
}

const NodeSpec* Placement::find_node(const std::string& name) const {
  for (const auto& n : nodes) {
    if (n.name == name) return &n;
  }
  return nullptr;
}

std::string Placement::attention_node(int64_t layer) const {
  for (const auto& a : attention) {
    if (std::find(a.layers.begin(), a.layers.end(), layer) != a.layers.end()) return a.node;
  }
  return kLocalNode;
}

bool Placement::multi_process() const {
  for (const auto& n : nodes) {
    if (!n.is_local()) return true;
  }
  return false;
}

Status Placement::validate(int64_t num_experts, int64_t num_layers) const {
  auto bad = [](const std::string& m) { return Status(Errc::invalid_argument, "placement: " + m); };
  if (group_tokens < 1) return bad("group_tokens must be >= 1");
  if (max_inflight_groups < 1) return bad("max_inflight_groups must be >= 1");
  for (size_t i = 0; i < nodes.size(); ++i) {
    const auto& n = nodes[i];
    if (n.name.empty()) return bad("node " + std::to_string(i) + " has no name");
    for (size_t k = 0; k < i; ++k) {
      if (nodes[k].name == n.name) return bad("node '" + n.name + "' is named twice");
    }
    if (n.name == kLocalNode && !n.is_local()) return bad("node 'local' is the serving process: it takes no address");
    if (n.name != kLocalNode && n.is_local()) return bad("node '" + n.name + "' needs an address (host:port)");
    if (!n.is_local() && n.port == 0) return bad("node '" + n.name + "' has port 0");
  }
  const auto known = [&](const std::string& name) { return name == kLocalNode || find_node(name) != nullptr; };
  std::vector<int> placed(num_layers > 0 ? num_layers : 0, 0);
  for (const auto& a : attention) {
    if (!known(a.node)) return bad("attention layers are on unknown node '" + a.node + "'");
    for (int64_t l : a.layers) {
      if (l < 0 || (num_layers >= 0 && l >= num_layers)) {
        return bad("attention layer " + std::to_string(l) + " is outside [0, " + std::to_string(num_layers) + ")");
      }
      if (num_layers >= 0 && placed[l]++) return bad("attention layer " + std::to_string(l) + " is placed twice");
    }
  }
  std::vector<int> hosted(num_experts, 0);
  for (size_t a = 0; a < expert_actors.size(); ++a) {
    const auto& spec = expert_actors[a];
    if (!known(spec.node)) {
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
  j["nodes"] = nlohmann::json::array();
  for (const auto& n : p.nodes) {
    if (n.is_local()) {
      j["nodes"].push_back(n.name);
    } else {
      j["nodes"].push_back({{"name", n.name}, {"address", n.address()}});
    }
  }
  if (!p.attention.empty()) {
    j["attention"] = nlohmann::json::array();
    for (const auto& a : p.attention) j["attention"].push_back({{"node", a.node}, {"layers", a.layers}});
  }
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
      if (!j["nodes"].is_array()) return bad("'nodes' must be an array");
      p.nodes.clear();
      for (const auto& n : j["nodes"]) {
        NodeSpec spec;
        std::string address;
        if (n.is_string()) {
          spec.name = n.get<std::string>();
          if (spec.name != kLocalNode) address = spec.name;
        } else if (n.is_object()) {
          if (!n.contains("name") || !n["name"].is_string()) return bad("each node object needs a string 'name'");
          spec.name = n["name"].get<std::string>();
          if (n.contains("address")) {
            if (!n["address"].is_string()) return bad("node '" + spec.name + "': 'address' must be a string");
            address = n["address"].get<std::string>();
          }
        } else {
          return bad("each node is \"local\", \"host:port\" or {\"name\": ..., \"address\": \"host:port\"}");
        }
        if (!address.empty()) {
          auto hp = parse_host_port(address);
          if (!hp) return bad("node '" + spec.name + "': " + hp.error().message());
          spec.host = hp->first;
          spec.port = hp->second;
        }
        p.nodes.push_back(std::move(spec));
      }
    }
    if (j.contains("attention")) {
      if (!j["attention"].is_array()) return bad("'attention' must be an array");
      for (const auto& a : j["attention"]) {
        if (!a.is_object() || !a.contains("node") || !a["node"].is_string() || !a.contains("layers") ||
            !a["layers"].is_array()) {
          return bad("each 'attention' entry needs a string 'node' and a 'layers' array");
        }
        AttentionPlacement spec;
        spec.node = a["node"].get<std::string>();
        for (const auto& l : a["layers"]) {
          if (!l.is_number_integer()) return bad("attention layer ids must be integers");
          spec.layers.push_back(l.get<int64_t>());
        }
        p.attention.push_back(std::move(spec));
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
          spec.node = kLocalNode;
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
