#include "orchestration/serving/actor_engine.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <string>
#include <thread>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/data_plane.h"
#include "actors/layer_actors.h"
#include "actors/node_agent.h"
#include "actors/router_actor.h"
#include "protocols/serving/caf_config.h"

namespace fulgur {

using namespace serving;

namespace {

constexpr auto kControlTimeout = std::chrono::seconds(30);

// Asks and waits (the engine's own threads, never an actor's).
template <class T, class Handle, class... Ts>
Expected<T> ask(caf::actor_system& sys, const Handle& h, caf::timespan timeout, Ts&&... xs) {
  caf::scoped_actor self{sys};
  Expected<T> out = Status(Errc::internal, "no answer");
  self->request(h, timeout, std::forward<Ts>(xs)...)
      .receive([&](T& v) { out = std::move(v); }, [&](caf::error& err) { out = from_caf_error(err); });
  return out;
}

struct NodeHandle {
  NodeSpec spec;
  uint16_t process_index = 0;
  node_agent_actor agent;
  NodeInfo info;
  caf::node_id id;
};

class ClusterEngine final : public ActorEngine {
 public:
  static Expected<std::unique_ptr<ActorEngine>> create(std::shared_ptr<const Model> model, EngineOptions options,
                                                       ActorEngineOptions actor_options) {
    std::unique_ptr<ClusterEngine> e(new ClusterEngine(std::move(model), options, std::move(actor_options)));
    FULGUR_TRY(e->start());
    return std::unique_ptr<ActorEngine>(std::move(e));
  }

  ~ClusterEngine() override {
    ready_ = false;
    // The scheduler first, so its requests get their final events; then everything else.
    if (scheduler_) caf::anon_send_exit(scheduler_, caf::exit_reason::user_shutdown);
    for (auto& a : all_) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    if (local_agent_) caf::anon_send_exit(local_agent_, caf::exit_reason::user_shutdown);
    // Remote nodes see this process go away and shut their actors down; ~actor_system waits for
    // every local actor to terminate.
  }

  Expected<RequestId> submit(CompletionRequest request, TokenCallback on_event) override {
    FULGUR_TRY(check_completion_request(request, model_->config(), options_));
    const RequestId id = next_id_.fetch_add(1);
    return scheduler_submit(system_, scheduler_, SubmitPayload{id, std::move(request), std::move(on_event)});
  }

  void cancel(RequestId id) override { caf::anon_send(scheduler_, cancel_atom_v, static_cast<uint64_t>(id)); }

  bool ready() const override { return ready_; }

  EngineStats stats() const override { return scheduler_stats(system_, scheduler_); }

  nlohmann::json topology() const override {
    using nlohmann::json;
    const ModelConfig& cfg = model_->config();
    LoadSnapshot load;
    {
      caf::scoped_actor self{system_};
      self->request(global_, kControlTimeout, load_atom_v)
          .receive([&](LoadSnapshot& s) { load = std::move(s); }, [&](caf::error&) {});
    }
    std::vector<std::string> down_nodes;
    for (int32_t a : load.down_actors) {
      if (a >= 0 && a < static_cast<int32_t>(placement_.expert_actors.size())) {
        down_nodes.push_back(placement_.expert_actors[a].node);
      }
    }
    json j;
    j["nodes"] = json::array();
    for (const auto& n : nodes_) {
      const bool down = std::find(down_nodes.begin(), down_nodes.end(), n.spec.name) != down_nodes.end();
      json node = {{"name", n.spec.name},
                   {"host", n.info.host},
                   {"pid", n.info.pid},
                   {"state", down ? "down" : "up"},
                   {"devices", json::array({{{"kind", "cpu"}, {"index", 0}}})}};
      if (!n.spec.is_local()) node["address"] = n.spec.address();
      j["nodes"].push_back(std::move(node));
    }
    json actors = json::array();
    actors.push_back({{"kind", "scheduler"}, {"node", kLocalNode}});
    actors.push_back({{"kind", "embed"}, {"node", kLocalNode}});
    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
      const std::string node = placement_.attention_node(l);
      actors.push_back({{"kind", "attention"}, {"layer", l}, {"node", node},
                        {"attention", cfg.layer_types[l] == LayerKind::lightning ? "lightning" : "softmax"}});
      actors.push_back({{"kind", "router"}, {"layer", l}, {"node", node}});
    }
    actors.push_back({{"kind", "global_router"}, {"node", kLocalNode}});
    for (size_t a = 0; a < placement_.expert_actors.size(); ++a) {
      json e = {{"kind", "expert"}, {"index", a}, {"node", placement_.expert_actors[a].node},
                {"experts", placement_.expert_actors[a].experts}};
      if (a < load.pending_per_actor.size()) {
        e["pending_tokens"] = load.pending_per_actor[a];
        e["tokens_computed"] = load.tokens_per_actor[a];
      }
      e["state"] = std::find(load.down_actors.begin(), load.down_actors.end(), static_cast<int32_t>(a)) !=
                           load.down_actors.end()
                       ? "down"
                       : "up";
      actors.push_back(std::move(e));
    }
    actors.push_back({{"kind", "head"}, {"node", kLocalNode}});
    j["actors"] = std::move(actors);
    json per_expert = json::array();
    for (size_t e = 0; e < load.tokens_per_expert.size(); ++e) {
      per_expert.push_back({{"expert", e}, {"tokens_routed", load.tokens_per_expert[e]}});
    }
    j["expert_load"] = std::move(per_expert);
    j["placement"] = to_json(placement_);
    if (data_plane_) {
      const auto st = data_plane_->stats();
      j["data_plane"] = {{"transport", "ucx"},         {"sends", st.sends},
                         {"receives", st.receives},    {"bytes_sent", st.bytes_sent},
                         {"bytes_received", st.bytes_received}, {"failed", st.failed}};
    }
    return j;
  }

  int64_t max_context() const override { return options_.max_context; }

  std::vector<GroupTrace> dispatch_trace(int64_t layer_idx) const override {
    std::vector<GroupTrace> out;
    if (layer_idx < 0 || layer_idx >= static_cast<int64_t>(routers_.size())) return out;
    caf::scoped_actor self{system_};
    self->request(routers_[layer_idx], kControlTimeout, trace_atom_v)
        .receive([&](std::vector<GroupTrace>& t) { out = std::move(t); }, [&](caf::error&) {});
    return out;
  }

  double hop_round_trip_seconds(int64_t count) const override {
    caf::scoped_actor self{system_};
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < count; ++i) {
      self->request(experts_.front(), kControlTimeout, ping_atom_v, i).receive([](int64_t) {}, [](caf::error&) {});
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / std::max<int64_t>(1, count);
  }

  Expected<double> actor_round_trip_seconds(const std::string& node, int64_t count) const override {
    // The first expert actor on `node`, pinged by an actor of this process (actor -> actor).
    int64_t target = -1;
    for (size_t a = 0; a < placement_.expert_actors.size(); ++a) {
      if (placement_.expert_actors[a].node == node) {
        target = static_cast<int64_t>(a);
        break;
      }
    }
    if (target < 0) return Status(Errc::invalid_argument, "no expert actor on node '" + node + "'");
    expert_actor pong = experts_[target];
    auto pinger = system_.spawn([pong, count](caf::event_based_actor* self) -> caf::behavior {
      return {[=](ping_atom) {
        auto rp = self->make_response_promise();
        auto t0 = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
        auto left = std::make_shared<int64_t>(count);
        auto step = std::make_shared<std::function<void()>>();
        *step = [=]() mutable {
          if ((*left)-- == 0) {
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - *t0).count();
            rp.deliver(static_cast<int64_t>(s * 1e9));
            *step = nullptr;  // break the cycle
            return;
          }
          self->request(pong, kControlTimeout, ping_atom_v, *left)
              .then([=](int64_t) { (*step)(); }, [=](caf::error& err) mutable { rp.deliver(err); });
        };
        (*step)();
        return rp;
      }};
    });
    auto ns = ask<int64_t>(system_, pinger, kControlTimeout, ping_atom_v);
    caf::anon_send_exit(pinger, caf::exit_reason::user_shutdown);
    if (!ns) return ns.error();
    return static_cast<double>(*ns) * 1e-9 / static_cast<double>(std::max<int64_t>(1, count));
  }

  const Placement& placement() const override { return placement_; }

 private:
  ClusterEngine(std::shared_ptr<const Model> model, EngineOptions options, ActorEngineOptions actor_options)
      : model_(std::move(model)),
        options_(options),
        actor_options_(std::move(actor_options)),
        placement_(actor_options_.placement.resolved(model_->config().num_local_experts)),
        config_(make_config(actor_options_, placement_.multi_process())),
        system_(*config_) {}

  static std::unique_ptr<caf::actor_system_config> make_config(const ActorEngineOptions& o, bool multi_process) {
    auto cfg = std::make_unique<caf::actor_system_config>();
    configure(*cfg, RuntimeOptions{o.scheduler_threads});
    if (multi_process) enable_middleman(*cfg);
    return cfg;
  }

  Expected<caf::actor> spawn_on(const std::string& node, SpawnSpec spec) {
    for (const auto& n : nodes_) {
      if (n.spec.name != node) continue;
      auto a = ask<caf::actor>(system_, n.agent, kSpawnTimeout, spawn_atom_v, std::move(spec));
      if (!a) return Status(a.error().code(), "node '" + node + "': " + a.error().message());
      all_.push_back(*a);
      return a;
    }
    return Status(Errc::invalid_argument, "placement: unknown node '" + node + "'");
  }

  Status connect_nodes() {
    const ModelConfig& cfg = model_->config();
    const std::string fingerprint = model_fingerprint(*model_);
    if (placement_.multi_process()) {
      if (actor_options_.model_dir.empty()) {
        return Status(Errc::invalid_argument,
                      "a placement with remote nodes needs the model directory (the nodes load it themselves)");
      }
      FULGUR_ASSIGN_OR_RETURN(data_plane_, DataPlane::create(system_.node(), 0, actor_options_.receive_timeout));
    }
    NodeAgentOptions lo;
    lo.name = kLocalNode;
    lo.model = model_;
    lo.data_plane = data_plane_;
    lo.receive_timeout = actor_options_.receive_timeout;
    local_agent_ = spawn_node_agent(system_, std::move(lo));
    uint16_t next_index = 1;
    for (const auto& spec : placement_.nodes) {
      NodeHandle h;
      h.spec = spec;
      if (spec.is_local()) {
        h.agent = local_agent_;
        h.id = system_.node();
      } else {
        // Nodes may still be starting: retry until the connect timeout.
        const auto deadline = std::chrono::steady_clock::now() + actor_options_.connect_timeout;
        std::string last;
        while (true) {
          auto r = system_.middleman().remote_actor<node_agent_actor>(spec.host, spec.port);
          if (r) {
            h.agent = std::move(*r);
            break;
          }
          last = caf::to_string(r.error());
          if (std::chrono::steady_clock::now() >= deadline) {
            return Status(Errc::unavailable, "node '" + spec.name + "' (" + spec.address() +
                                                 "): cannot connect: " + last + " (is `fulgur node --listen " +
                                                 spec.address() + "` running?)");
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        h.id = h.agent.node();
      }
      const uint16_t index = spec.is_local() ? 0 : next_index++;
      h.process_index = index;
      auto info = ask<NodeInfo>(system_, h.agent, kLoadTimeout, hello_atom_v, index, actor_options_.model_dir,
                                caf::actor_cast<caf::actor>(local_agent_));
      if (!info) return Status(info.error().code(), "node '" + spec.name + "': " + info.error().message());
      h.info = std::move(*info);
      if (h.info.model_fingerprint != fingerprint || h.info.num_layers != cfg.num_hidden_layers ||
          h.info.hidden_size != cfg.hidden_size || h.info.num_experts != cfg.num_local_experts ||
          h.info.vocab_size != cfg.vocab_size) {
        return Status(Errc::invalid_argument, "node '" + spec.name + "' loaded a different model than this process (" +
                                                  std::to_string(h.info.num_layers) + " layers, fingerprint " +
                                                  h.info.model_fingerprint + " vs " + fingerprint + ")");
      }
      nodes_.push_back(std::move(h));
    }
    if (!data_plane_) return Status::ok();
    PeerTable table;
    for (const auto& n : nodes_) {
      table.nodes.push_back(n.id);
      table.addresses.push_back(n.info.ucx_address);
      table.names.push_back(n.spec.is_local() ? std::string("the serving process") : "node '" + n.spec.name + "'");
      table.process_indices.push_back(n.process_index);
    }
    for (const auto& n : nodes_) {
      auto r = ask<int64_t>(system_, n.agent, kControlTimeout, peers_atom_v, table);
      if (!r) return Status(r.error().code(), "node '" + n.spec.name + "': data-plane peers: " + r.error().message());
    }
    return Status::ok();
  }

  Status start() {
    FULGUR_TRY(connect_nodes());
    const ModelConfig& cfg = model_->config();
    std::vector<caf::actor> expert_handles;
    std::vector<std::string> expert_names;
    for (size_t a = 0; a < placement_.expert_actors.size(); ++a) {
      const std::string& node = placement_.expert_actors[a].node;
      const NodeSpec* ns = placement_.find_node(node);
      expert_names.push_back("expert actor " + std::to_string(a) + " on node '" + node + "'" +
                             (ns && !ns->is_local() ? " (" + ns->address() + ")" : std::string()));
      SpawnSpec spec;
      spec.kind = static_cast<uint8_t>(ActorKind::expert);
      spec.index = static_cast<int32_t>(a);
      spec.experts = placement_.expert_actors[a].experts;
      FULGUR_ASSIGN_OR_RETURN(caf::actor e, spawn_on(placement_.expert_actors[a].node, std::move(spec)));
      experts_.push_back(caf::actor_cast<expert_actor>(e));
      expert_handles.push_back(e);
    }
    global_ = spawn_global_router(system_, placement_.replicas(cfg.num_local_experts), experts_, expert_names);
    all_.push_back(caf::actor_cast<caf::actor>(global_));
    SchedulerConfig sc;
    SpawnSpec head;
    head.kind = static_cast<uint8_t>(ActorKind::head);
    FULGUR_ASSIGN_OR_RETURN(caf::actor next, spawn_on(kLocalNode, std::move(head)));
    sc.watch.push_back(next);
    sc.watch_names.push_back("the head actor");
    PoolSizes pools{options_.state_slots, options_.kv_blocks, options_.page_size};
    routers_.resize(cfg.num_hidden_layers);
    for (int64_t l = cfg.num_hidden_layers - 1; l >= 0; --l) {
      const std::string node = placement_.attention_node(l);
      SpawnSpec r;
      r.kind = static_cast<uint8_t>(ActorKind::router);
      r.layer = l;
      r.group_tokens = placement_.group_tokens;
      r.max_inflight_groups = placement_.max_inflight_groups;
      r.next = next;
      r.global = caf::actor_cast<caf::actor>(global_);
      r.expert_actors = expert_handles;
      r.expert_names = expert_names;
      FULGUR_ASSIGN_OR_RETURN(caf::actor router, spawn_on(node, std::move(r)));
      routers_[l] = caf::actor_cast<router_actor>(router);
      SpawnSpec at;
      at.kind = static_cast<uint8_t>(ActorKind::attention);
      at.layer = l;
      at.num_slots = pools.num_slots;
      at.num_blocks = pools.num_blocks;
      at.page_size = pools.page_size;
      at.next = router;
      FULGUR_ASSIGN_OR_RETURN(next, spawn_on(node, std::move(at)));
      const std::string where = node == kLocalNode ? "" : " on node '" + node + "'";
      sc.watch.push_back(router);
      sc.watch_names.push_back("the router of layer " + std::to_string(l) + where);
      sc.watch.push_back(next);
      sc.watch_names.push_back("the attention actor of layer " + std::to_string(l) + where);
    }
    SpawnSpec em;
    em.kind = static_cast<uint8_t>(ActorKind::embed);
    em.next = next;
    FULGUR_ASSIGN_OR_RETURN(caf::actor embed, spawn_on(kLocalNode, std::move(em)));
    embed_ = caf::actor_cast<embed_actor>(embed);
    sc.options = options_;
    sc.step_timeout_ms = actor_options_.step_timeout_ms;
    sc.logits_hook = actor_options_.logits_hook;
    scheduler_ = spawn_scheduler(system_, std::move(sc), embed_);
    ready_ = true;
    return Status::ok();
  }

  static constexpr auto kSpawnTimeout = std::chrono::seconds(60);
  static constexpr auto kLoadTimeout = std::chrono::minutes(30);  // a node loading a large checkpoint

  std::shared_ptr<const Model> model_;
  EngineOptions options_;
  ActorEngineOptions actor_options_;
  Placement placement_;
  std::unique_ptr<caf::actor_system_config> config_;
  mutable caf::actor_system system_;
  std::shared_ptr<DataPlane> data_plane_;
  node_agent_actor local_agent_;
  std::vector<NodeHandle> nodes_;
  std::vector<expert_actor> experts_;
  global_router_actor global_;
  std::vector<router_actor> routers_;
  embed_actor embed_;
  scheduler_actor scheduler_;
  std::vector<caf::actor> all_;
  std::atomic<bool> ready_{false};
  std::atomic<RequestId> next_id_{1};
};

}  // namespace

Status check_completion_request(const CompletionRequest& r, const ModelConfig& cfg, const EngineOptions& opt) {
  auto bad = [](const std::string& m) { return Status(Errc::invalid_argument, m); };
  if (r.prompt.empty()) return bad("the prompt is empty");
  if (static_cast<int64_t>(r.prompt.size()) > opt.max_context) {
    return bad("the prompt has " + std::to_string(r.prompt.size()) + " tokens, more than the context of " +
               std::to_string(opt.max_context));
  }
  if (r.max_tokens < 0) return bad("max_tokens must be >= 0");
  for (int32_t t : r.prompt) {
    if (t < 0 || t >= cfg.vocab_size) {
      return bad("prompt token " + std::to_string(t) + " is outside the vocabulary [0, " +
                 std::to_string(cfg.vocab_size) + ")");
    }
  }
  if (auto ks = kernels::check_sampling_params(r.sampling); !ks.ok()) return bad(ks.error);
  const int64_t max_len = std::min<int64_t>(static_cast<int64_t>(r.prompt.size()) + r.max_tokens, opt.max_context);
  const int64_t pages = (max_len + opt.page_size - 1) / opt.page_size;
  if (pages > opt.kv_blocks) {
    return bad("the request needs " + std::to_string(pages) + " KV pages; the engine has " +
               std::to_string(opt.kv_blocks));
  }
  return Status::ok();
}

Expected<EngineOptions> resolve_engine_options(const ModelConfig& cfg, const EngineOptions& options) {
  EngineOptions o = options;
  auto bad = [](const std::string& m) { return Status(Errc::invalid_argument, "engine options: " + m); };
  if (o.max_context <= 0) o.max_context = cfg.max_position_embeddings > 0 ? cfg.max_position_embeddings : 4096;
  if (cfg.max_position_embeddings > 0 && o.max_context > cfg.max_position_embeddings) {
    o.max_context = cfg.max_position_embeddings;
  }
  if (o.page_size < 1) return bad("page_size must be >= 1");
  if (o.state_slots < 1) return bad("state_slots must be >= 1");
  if (o.max_running < 1) return bad("max_running must be >= 1");
  if (o.max_queued < 0) return bad("max_queued must be >= 0");
  if (o.step_token_budget < 1) return bad("step_token_budget must be >= 1");
  if (o.prefill_chunk < 1) return bad("prefill_chunk must be >= 1");
  if (o.kv_blocks <= 0) o.kv_blocks = o.state_slots * ((o.max_context + o.page_size - 1) / o.page_size);
  return o;
}

Expected<std::unique_ptr<ActorEngine>> make_actor_engine(std::shared_ptr<const Model> model,
                                                         const EngineOptions& options,
                                                         const ActorEngineOptions& actor_options) {
  if (!model) return Status(Errc::invalid_argument, "make_actor_engine: no model");
  FULGUR_ASSIGN_OR_RETURN(EngineOptions opt, resolve_engine_options(model->config(), options));
  FULGUR_TRY(actor_options.placement.resolved(model->config().num_local_experts)
                 .validate(model->config().num_local_experts, model->config().num_hidden_layers));
  if (actor_options.scheduler_threads < 1) {
    return Status(Errc::invalid_argument, "engine options: scheduler_threads must be >= 1");
  }
  return ClusterEngine::create(std::move(model), opt, actor_options);
}

Expected<std::unique_ptr<Engine>> make_local_engine(std::shared_ptr<const Model> model, const EngineOptions& options) {
  FULGUR_ASSIGN_OR_RETURN(auto engine, make_actor_engine(std::move(model), options));
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace fulgur
