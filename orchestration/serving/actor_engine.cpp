#include "orchestration/serving/actor_engine.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <unistd.h>

#include <caf/all.hpp>

#include "actors/layer_actors.h"
#include "actors/router_actor.h"
#include "protocols/serving/caf_config.h"

namespace fulgur {

using namespace serving;

namespace {

constexpr auto kControlTimeout = std::chrono::seconds(30);

Status check_request(const CompletionRequest& r, const ModelConfig& cfg, const EngineOptions& opt) {
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
  const auto& s = r.sampling;
  if (!std::isfinite(s.temperature) || s.temperature < 0) return bad("temperature must be finite and >= 0");
  if (!std::isfinite(s.top_p) || s.top_p <= 0 || s.top_p > 1) return bad("top_p must be in (0, 1]");
  if (s.top_k < 0) return bad("top_k must be >= 0");
  const int64_t max_len = std::min<int64_t>(static_cast<int64_t>(r.prompt.size()) + r.max_tokens, opt.max_context);
  const int64_t pages = (max_len + opt.page_size - 1) / opt.page_size;
  if (pages > opt.kv_blocks) {
    return bad("the request needs " + std::to_string(pages) + " KV pages; the engine has " +
               std::to_string(opt.kv_blocks));
  }
  return Status::ok();
}

class LocalActorEngine final : public ActorEngine {
 public:
  LocalActorEngine(std::shared_ptr<const Model> model, EngineOptions options, ActorEngineOptions actor_options)
      : model_(std::move(model)),
        options_(options),
        actor_options_(std::move(actor_options)),
        placement_(actor_options_.placement.resolved(model_->config().num_local_experts)),
        config_(make_config(actor_options_)),
        system_(*config_) {
    spawn_all();
  }

  ~LocalActorEngine() override {
    ready_ = false;
    // The scheduler first, so its requests get their final events; then everything else.
    caf::anon_send_exit(scheduler_, caf::exit_reason::user_shutdown);
    for (auto& a : all_) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    // ~actor_system waits for every actor to terminate.
  }

  Expected<RequestId> submit(CompletionRequest request, TokenCallback on_event) override {
    FULGUR_TRY(check_request(request, model_->config(), options_));
    const RequestId id = next_id_.fetch_add(1);
    SubmitPayload payload{id, std::move(request), std::move(on_event)};
    caf::scoped_actor self{system_};
    Expected<RequestId> out = Status(Errc::internal, "scheduler did not answer");
    self->request(scheduler_, kControlTimeout, submit_atom_v, std::move(payload))
        .receive([&](uint64_t got) { out = got; }, [&](caf::error& err) { out = from_caf_error(err); });
    return out;
  }

  void cancel(RequestId id) override { caf::anon_send(scheduler_, cancel_atom_v, static_cast<uint64_t>(id)); }

  bool ready() const override { return ready_; }

  EngineStats stats() const override {
    caf::scoped_actor self{system_};
    EngineStats out;
    self->request(scheduler_, kControlTimeout, stats_atom_v)
        .receive([&](EngineStats& s) { out = std::move(s); }, [&](caf::error&) {});
    return out;
  }

  nlohmann::json topology() const override {
    using nlohmann::json;
    const ModelConfig& cfg = model_->config();
    json j;
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    j["nodes"] = json::array();
    for (const auto& n : placement_.nodes) {
      j["nodes"].push_back({{"name", n}, {"host", host}, {"pid", static_cast<int64_t>(getpid())},
                            {"devices", json::array({{{"kind", "cpu"}, {"index", 0}}})}});
    }
    json actors = json::array();
    const std::string node = placement_.nodes.empty() ? "local" : placement_.nodes.front();
    actors.push_back({{"kind", "scheduler"}, {"node", node}});
    actors.push_back({{"kind", "embed"}, {"node", node}});
    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
      actors.push_back({{"kind", "attention"}, {"layer", l}, {"node", node},
                        {"attention", cfg.layer_types[l] == LayerKind::lightning ? "lightning" : "softmax"}});
      actors.push_back({{"kind", "router"}, {"layer", l}, {"node", node}});
    }
    actors.push_back({{"kind", "global_router"}, {"node", node}});
    LoadSnapshot load;
    {
      caf::scoped_actor self{system_};
      self->request(global_, kControlTimeout, load_atom_v)
          .receive([&](LoadSnapshot& s) { load = std::move(s); }, [&](caf::error&) {});
    }
    for (size_t a = 0; a < placement_.expert_actors.size(); ++a) {
      json e = {{"kind", "expert"}, {"index", a}, {"node", placement_.expert_actors[a].node},
                {"experts", placement_.expert_actors[a].experts}};
      if (a < load.pending_per_actor.size()) {
        e["pending_tokens"] = load.pending_per_actor[a];
        e["tokens_computed"] = load.tokens_per_actor[a];
      }
      actors.push_back(std::move(e));
    }
    actors.push_back({{"kind", "head"}, {"node", node}});
    j["actors"] = std::move(actors);
    json per_expert = json::array();
    for (size_t e = 0; e < load.tokens_per_expert.size(); ++e) {
      per_expert.push_back({{"expert", e}, {"tokens_routed", load.tokens_per_expert[e]}});
    }
    j["expert_load"] = std::move(per_expert);
    j["placement"] = to_json(placement_);
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

  const Placement& placement() const override { return placement_; }

 private:
  static std::unique_ptr<caf::actor_system_config> make_config(const ActorEngineOptions& o) {
    auto cfg = std::make_unique<caf::actor_system_config>();
    configure(*cfg, RuntimeOptions{o.scheduler_threads});
    return cfg;
  }

  void spawn_all() {
    const ModelConfig& cfg = model_->config();
    for (size_t a = 0; a < placement_.expert_actors.size(); ++a) {
      experts_.push_back(spawn_expert(system_, model_, static_cast<int32_t>(a), placement_.expert_actors[a].experts));
      all_.push_back(caf::actor_cast<caf::actor>(experts_.back()));
    }
    global_ = spawn_global_router(system_, placement_.replicas(cfg.num_local_experts),
                                  static_cast<int64_t>(experts_.size()));
    all_.push_back(caf::actor_cast<caf::actor>(global_));
    hidden_sink_actor next = spawn_head(system_, model_);
    all_.push_back(caf::actor_cast<caf::actor>(next));
    RouterOptions ro;
    ro.group_tokens = placement_.group_tokens;
    ro.max_inflight_groups = placement_.max_inflight_groups;
    PoolSizes pools{options_.state_slots, options_.kv_blocks, options_.page_size};
    routers_.resize(cfg.num_hidden_layers);
    for (int64_t l = cfg.num_hidden_layers - 1; l >= 0; --l) {
      routers_[l] = spawn_router(system_, model_, l, ro, global_, experts_, next);
      all_.push_back(caf::actor_cast<caf::actor>(routers_[l]));
      next = spawn_attention(system_, model_, l, pools, routers_[l]);
      all_.push_back(caf::actor_cast<caf::actor>(next));
    }
    embed_ = spawn_embed(system_, model_, next);
    all_.push_back(caf::actor_cast<caf::actor>(embed_));
    SchedulerConfig sc;
    sc.options = options_;
    sc.step_timeout_ms = actor_options_.step_timeout_ms;
    sc.logits_hook = actor_options_.logits_hook;
    scheduler_ = spawn_scheduler(system_, std::move(sc), embed_);
    ready_ = true;
  }

  std::shared_ptr<const Model> model_;
  EngineOptions options_;
  ActorEngineOptions actor_options_;
  Placement placement_;
  std::unique_ptr<caf::actor_system_config> config_;
  mutable caf::actor_system system_;
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
                 .validate(model->config().num_local_experts));
  if (actor_options.scheduler_threads < 1) {
    return Status(Errc::invalid_argument, "engine options: scheduler_threads must be >= 1");
  }
  return std::unique_ptr<ActorEngine>(new LocalActorEngine(std::move(model), opt, actor_options));
}

Expected<std::unique_ptr<Engine>> make_local_engine(std::shared_ptr<const Model> model, const EngineOptions& options) {
  FULGUR_ASSIGN_OR_RETURN(auto engine, make_actor_engine(std::move(model), options));
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace fulgur
