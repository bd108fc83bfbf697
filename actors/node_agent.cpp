#include "actors/node_agent.h"

#include <cstdio>
#include <unistd.h>

#include <caf/all.hpp>

#include "actors/data_plane.h"
#include "actors/layer_actors.h"
#include "actors/router_actor.h"
#include "protocols/serving/errors.h"

namespace fulgur::serving {

namespace {

// FNV-1a, 64 bit.
struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  void tensor(const Tensor& t) {
    for (int64_t d : t.shape()) bytes(&d, sizeof d);
    const uint8_t dt = static_cast<uint8_t>(t.dtype());
    bytes(&dt, 1);
    if (!t.is_contiguous() || t.raw() == nullptr) return;
    // 256 bytes from the start, the middle and the end: cheap on a 456B checkpoint, and any two
    // different random initialisations differ there.
    const size_t n = t.nbytes(), k = std::min<size_t>(256, n);
    const auto* p = static_cast<const uint8_t*>(t.raw());
    bytes(p, k);
    bytes(p + (n - k) / 2, k);
    bytes(p + n - k, k);
  }
};

struct NodeAgentState {
  NodeAgentOptions options;
  std::shared_ptr<const Model> model;
  std::string model_dir;
  caf::actor_addr owner;           // the serving process's actor that said hello
  std::vector<caf::actor> spawned;  // for the current owner
  static inline const char* name = "fulgur.node_agent";
};

using agent_ptr = node_agent_actor::stateful_pointer<NodeAgentState>;

void drop_spawned(agent_ptr self, const char* why) {
  auto& s = self->state;
  if (!s.spawned.empty()) {
    std::fprintf(stderr, "fulgur node %s: shutting down %zu actors (%s)\n", s.options.name.c_str(), s.spawned.size(),
                 why);
  }
  for (auto& a : s.spawned) self->send_exit(a, caf::exit_reason::user_shutdown);
  s.spawned.clear();
}

Expected<caf::actor> spawn_one(agent_ptr self, SpawnSpec& spec) {
  auto& s = self->state;
  if (!s.model) return Status(Errc::unavailable, "node " + s.options.name + ": no model loaded (hello first)");
  caf::actor_system& sys = self->system();
  const ModelConfig& cfg = s.model->config();
  const auto layer_ok = [&] {
    return spec.layer >= 0 && spec.layer < cfg.num_hidden_layers;
  };
  auto dp = s.options.data_plane;
  switch (static_cast<ActorKind>(spec.kind)) {
    case ActorKind::embed:
      return caf::actor_cast<caf::actor>(
          spawn_embed(sys, s.model, caf::actor_cast<attention_actor>(spec.next), dp));
    case ActorKind::head:
      return caf::actor_cast<caf::actor>(spawn_head(sys, s.model, dp));
    case ActorKind::attention: {
      if (!layer_ok()) return Status(Errc::invalid_argument, "spawn attention: layer out of range");
      if (spec.num_slots < 1 || spec.num_blocks < 1 || spec.page_size < 1) {
        return Status(Errc::invalid_argument, "spawn attention: state pool sizes must be >= 1");
      }
      PoolSizes pools{spec.num_slots, spec.num_blocks, spec.page_size};
      return caf::actor_cast<caf::actor>(
          spawn_attention(sys, s.model, spec.layer, pools, caf::actor_cast<router_actor>(spec.next), dp));
    }
    case ActorKind::router: {
      if (!layer_ok()) return Status(Errc::invalid_argument, "spawn router: layer out of range");
      if (spec.expert_actors.empty()) return Status(Errc::invalid_argument, "spawn router: no expert actors");
      RouterOptions ro;
      ro.group_tokens = spec.group_tokens;
      ro.max_inflight_groups = spec.max_inflight_groups;
      ro.expert_timeout_ms = spec.expert_timeout_ms;
      ro.expert_names = spec.expert_names;
      std::vector<expert_actor> experts;
      for (auto& e : spec.expert_actors) experts.push_back(caf::actor_cast<expert_actor>(e));
      return caf::actor_cast<caf::actor>(spawn_router(sys, s.model, spec.layer, ro,
                                                      caf::actor_cast<global_router_actor>(spec.global),
                                                      std::move(experts),
                                                      caf::actor_cast<hidden_sink_actor>(spec.next), dp));
    }
    case ActorKind::expert: {
      for (int32_t e : spec.experts) {
        if (e < 0 || e >= cfg.num_local_experts) {
          return Status(Errc::invalid_argument, "spawn expert: expert " + std::to_string(e) + " out of range");
        }
      }
      return caf::actor_cast<caf::actor>(spawn_expert(sys, s.model, spec.index, spec.experts, dp));
    }
  }
  return Status(Errc::invalid_argument, "spawn: unknown actor kind " + std::to_string(spec.kind));
}

}  // namespace

std::string model_fingerprint(const Model& model) {
  Fnv f;
  const std::string cfg = model_config_to_json(model.config());
  f.bytes(cfg.data(), cfg.size());
  const ModelWeights& w = model.weights();
  f.tensor(w.embed);
  f.tensor(w.final_norm);
  f.tensor(w.lm_head);
  for (const auto& l : w.layers) {
    for (const Tensor* t : {&l.input_norm, &l.post_norm, &l.lightning.qkv, &l.lightning.output_gate,
                            &l.lightning.out_proj, &l.lightning.norm, &l.softmax.q_proj, &l.softmax.k_proj,
                            &l.softmax.v_proj, &l.softmax.o_proj, &l.moe.gate}) {
      f.tensor(*t);
    }
    for (const auto& e : l.moe.experts) {
      f.tensor(e.w1);
      f.tensor(e.w2);
      f.tensor(e.w3);
    }
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(f.h));
  return buf;
}

node_agent_actor spawn_node_agent(caf::actor_system& sys, NodeAgentOptions options) {
  auto fn = [](agent_ptr self, NodeAgentOptions opt) -> node_agent_actor::behavior_type {
    self->state.options = std::move(opt);
    self->state.model = self->state.options.model;
    self->set_down_handler([self](caf::down_msg& dm) {
      if (dm.source == self->state.owner) {
        drop_spawned(self, "the serving process went away");
        self->state.owner = caf::actor_addr{};
      }
    });
    return {
        [self](hello_atom, uint16_t process_index, std::string& model_dir, caf::actor& owner) -> caf::result<NodeInfo> {
          auto& s = self->state;
          // A new serving process replaces the previous one. Only an owner in another process is
          // watched: the serving process's own agent lives as long as its engine.
          const auto owner_addr = caf::actor_cast<caf::actor_addr>(owner);
          if (owner_addr != s.owner) {
            drop_spawned(self, "a new serving process said hello");
            if (s.owner) self->demonitor(s.owner);
            s.owner = owner_addr;
            if (owner && owner.node() != self->system().node()) self->monitor(owner);
          }
          if (!s.model || (s.options.load && model_dir != s.model_dir)) {
            if (!s.options.load) {
              return to_caf_error(Status(Errc::unavailable, "node " + s.options.name + ": no model and no loader"));
            }
            std::fprintf(stderr, "fulgur node %s: loading %s\n", s.options.name.c_str(), model_dir.c_str());
            auto m = s.options.load(model_dir);
            if (!m) {
              return to_caf_error(Status(m.error().code(), "node " + s.options.name + ": " + m.error().message()));
            }
            s.model = std::move(*m);
            s.model_dir = model_dir;
          }
          if (!s.options.data_plane) {
            auto dp = DataPlane::create(self->system().node(), process_index, s.options.receive_timeout);
            if (!dp) return to_caf_error(dp.error());
            s.options.data_plane = std::move(*dp);
          } else if (auto st = s.options.data_plane->set_process_index(process_index); !st.is_ok()) {
            return to_caf_error(st);
          }
          NodeInfo info;
          char host[256] = {0};
          gethostname(host, sizeof host - 1);
          info.host = host;
          info.pid = static_cast<int64_t>(getpid());
          info.ucx_address = s.options.data_plane->address();
          const ModelConfig& cfg = s.model->config();
          info.num_layers = cfg.num_hidden_layers;
          info.hidden_size = cfg.hidden_size;
          info.num_experts = cfg.num_local_experts;
          info.vocab_size = cfg.vocab_size;
          info.model_fingerprint = model_fingerprint(*s.model);
          return info;
        },
        [self](peers_atom, PeerTable& t) -> caf::result<int64_t> {
          auto& s = self->state;
          if (!s.options.data_plane) return to_caf_error(Status(Errc::unavailable, "peers before hello"));
          if (t.nodes.size() != t.addresses.size() || t.nodes.size() != t.names.size() ||
              t.nodes.size() != t.process_indices.size()) {
            return to_caf_error(Status(Errc::invalid_argument, "peer table: lengths differ"));
          }
          int64_t n = 0;
          for (size_t i = 0; i < t.nodes.size(); ++i) {
            if (t.nodes[i] == self->system().node()) continue;
            if (auto st = s.options.data_plane->add_peer(t.nodes[i], t.addresses[i], t.names[i], t.process_indices[i]);
                !st.is_ok()) {
              return to_caf_error(st);
            }
            ++n;
          }
          return n;
        },
        [self](spawn_atom, SpawnSpec& spec) -> caf::result<caf::actor> {
          auto a = spawn_one(self, spec);
          if (!a) return to_caf_error(a.error());
          self->state.spawned.push_back(*a);
          return *a;
        },
        [](ping_atom, int64_t x) { return x; },
    };
  };
  return sys.spawn(fn, std::move(options));
}

}  // namespace fulgur::serving
