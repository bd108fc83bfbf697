#include "actors/router_actor.h"

#include <algorithm>
#include <chrono>
#include <string>

#include <caf/all.hpp>

#include "kernels/rmsnorm.h"
#include "protocols/serving/errors.h"

namespace fulgur::serving {

namespace {

// One step's dispatch at one router.
struct Dispatch {
  StepDescriptor step;
  HiddenHandle x, h2;
  std::vector<TokenGroup> groups;
  std::vector<std::vector<float>> weights;  // [group][row] router weight of that (token, expert)
  std::vector<int32_t> actors;              // [group] expert actor chosen by the global router
  std::vector<HiddenHandle> outputs;        // [group]
  std::vector<GroupTrace> trace;            // [group]
  size_t next_to_send = 0, in_flight = 0, received = 0;
  bool failed = false;
  caf::typed_response_promise<StepResult> rp;
};

struct RouterState {
  std::shared_ptr<const Model> model;
  int64_t layer_idx = 0;
  RouterOptions options;
  global_router_actor global;
  std::vector<expert_actor> expert_actors;
  hidden_sink_actor next;
  std::unique_ptr<MoeBlock> moe;
  std::vector<GroupTrace> last_trace;
  static inline const char* name = "fulgur.router";
};

using router_ptr = router_actor::stateful_pointer<RouterState>;

// Token groups in (expert ascending, tokens ascending) order, cut every group_tokens rows.
void build_groups(const RouterState& s, const MoeBlock::Routing& r, Dispatch& d) {
  const ModelConfig& cfg = s.model->config();
  const int64_t T = d.step.num_tokens, E = cfg.num_local_experts, K = cfg.num_experts_per_tok;
  std::vector<std::vector<int32_t>> rows(E);
  std::vector<std::vector<float>> w(E);
  for (int64_t a = 0; a < T * K; ++a) {
    rows[r.topk_idx[a]].push_back(static_cast<int32_t>(a / K));
    w[r.topk_idx[a]].push_back(r.topk_weight[a]);
  }
  for (int64_t e = 0; e < E; ++e) {
    for (size_t begin = 0; begin < rows[e].size(); begin += s.options.group_tokens) {
      const size_t end = std::min(rows[e].size(), begin + static_cast<size_t>(s.options.group_tokens));
      TokenGroup g;
      g.step_id = d.step.step_id;
      g.layer = static_cast<int32_t>(s.layer_idx);
      g.expert = static_cast<int32_t>(e);
      g.group_idx = static_cast<int32_t>(d.groups.size());
      g.rows.assign(rows[e].begin() + begin, rows[e].begin() + end);
      d.weights.emplace_back(w[e].begin() + begin, w[e].begin() + end);
      d.groups.push_back(std::move(g));
    }
  }
}

// x = mlp_alpha*h2 + mlp_beta*sum_groups(weight * y), accumulated in group order.
Status combine(const RouterState& s, Dispatch& d) {
  const ModelConfig& cfg = s.model->config();
  const int64_t T = d.step.num_tokens, hidden = cfg.hidden_size;
  FULGUR_ASSIGN_OR_RETURN(Tensor * x, resolve(d.x, "router x"));
  FULGUR_ASSIGN_OR_RETURN(Tensor * h2, resolve(d.h2, "router h2"));
  Tensor m = Tensor::zeros(DType::f32, {T, hidden});
  for (size_t g = 0; g < d.groups.size(); ++g) {
    FULGUR_ASSIGN_OR_RETURN(Tensor * y, resolve(d.outputs[g], "expert output"));
    const auto& rows = d.groups[g].rows;
    if (y->numel() != static_cast<int64_t>(rows.size()) * hidden) {
      return Status(Errc::internal, "expert output of group " + std::to_string(g) + " has shape " + y->describe());
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      const float wt = d.weights[g][i];
      float* dst = m.data<float>() + rows[i] * hidden;
      const float* src = y->data<float>() + i * hidden;
      for (int64_t c = 0; c < hidden; ++c) dst[c] += wt * src[c];
    }
  }
  kernels::scale_add_cpu(h2->data<float>(), m.data<float>(), x->data<float>(), T * hidden,
                         static_cast<float>(cfg.mlp_alpha), static_cast<float>(cfg.mlp_beta));
  return Status::ok();
}

void fail(router_ptr self, const std::shared_ptr<Dispatch>& d, const caf::error& err) {
  if (d->failed) return;
  d->failed = true;
  // Groups never sent will not come back: drain their pending counts at the global router.
  for (size_t g = d->next_to_send; g < d->groups.size(); ++g) {
    self->send(self->state.global, done_atom_v, d->actors[g], static_cast<int64_t>(d->groups[g].rows.size()));
  }
  d->next_to_send = d->groups.size();
  d->rp.deliver(err);
}

void finish(router_ptr self, const std::shared_ptr<Dispatch>& d) {
  self->state.last_trace = d->trace;
  if (auto st = combine(self->state, *d); !st.is_ok()) {
    fail(self, d, to_caf_error(st));
    return;
  }
  d->rp.delegate(self->state.next, forward_atom_v, std::move(d->step), std::move(d->x));
}

void send_more(router_ptr self, const std::shared_ptr<Dispatch>& d) {
  auto& s = self->state;
  while (!d->failed && d->next_to_send < d->groups.size() &&
         d->in_flight < static_cast<size_t>(s.options.max_inflight_groups)) {
    const size_t g = d->next_to_send++;
    ++d->in_flight;
    const int32_t actor = d->actors[g];
    d->trace[g].send_ns = now_ns();
    self->request(s.expert_actors[actor], std::chrono::milliseconds(s.options.expert_timeout_ms), expert_atom_v,
                  d->groups[g], d->h2)
        .then(
            [self, d, g, actor](GroupDone& done, HiddenHandle& y) {
              auto& tr = d->trace[g];
              tr.receive_ns = now_ns();
              tr.compute_begin_ns = done.compute_begin_ns;
              tr.compute_end_ns = done.compute_end_ns;
              self->send(self->state.global, done_atom_v, actor, static_cast<int64_t>(d->groups[g].rows.size()));
              --d->in_flight;
              if (d->failed) return;
              d->outputs[g] = std::move(y);
              if (++d->received == d->groups.size()) {
                finish(self, d);
              } else {
                send_more(self, d);
              }
            },
            [self, d, g, actor](caf::error& err) {
              self->send(self->state.global, done_atom_v, actor, static_cast<int64_t>(d->groups[g].rows.size()));
              --d->in_flight;
              fail(self, d, err);
            });
  }
}

router_actor::behavior_type router_fn(router_ptr self, std::shared_ptr<const Model> model, int64_t layer_idx,
                                      RouterOptions options, global_router_actor global,
                                      std::vector<expert_actor> expert_actors, hidden_sink_actor next) {
  auto& s = self->state;
  s.model = std::move(model);
  s.layer_idx = layer_idx;
  s.options = options;
  s.global = std::move(global);
  s.expert_actors = std::move(expert_actors);
  s.next = std::move(next);
  s.moe = std::make_unique<MoeBlock>(s.model->config(), layer_idx, s.model->weights().layers[layer_idx].moe);
  return {
      [self](moe_atom, StepDescriptor& step, HiddenHandle& x, HiddenHandle& h2) -> caf::result<StepResult> {
        auto& s = self->state;
        auto h = resolve(h2, "router h2");
        if (!h) return to_caf_error(h.error());
        auto routing = s.moe->route(**h);
        if (!routing) return to_caf_error(routing.error());
        auto d = std::make_shared<Dispatch>();
        d->step = std::move(step);
        d->x = std::move(x);
        d->h2 = std::move(h2);
        build_groups(s, *routing, *d);
        d->outputs.resize(d->groups.size());
        d->trace.resize(d->groups.size());
        d->rp = self->make_response_promise<StepResult>();
        DispatchPlanRequest plan;
        plan.layer = static_cast<int32_t>(s.layer_idx);
        for (const auto& g : d->groups) {
          plan.group_experts.push_back(g.expert);
          plan.group_tokens.push_back(static_cast<int64_t>(g.rows.size()));
        }
        self->request(s.global, std::chrono::milliseconds(s.options.expert_timeout_ms), plan_atom_v, std::move(plan))
            .then(
                [self, d](std::vector<int32_t>& actors) {
                  if (actors.size() != d->groups.size()) {
                    fail(self, d, to_caf_error(Status(Errc::internal, "global router: plan size mismatch")));
                    return;
                  }
                  d->actors = std::move(actors);
                  for (size_t g = 0; g < d->groups.size(); ++g) {
                    auto& tr = d->trace[g];
                    tr.step_id = d->step.step_id;
                    tr.layer = static_cast<int32_t>(self->state.layer_idx);
                    tr.expert = d->groups[g].expert;
                    tr.group_idx = static_cast<int32_t>(g);
                    tr.expert_actor = d->actors[g];
                    tr.num_tokens = static_cast<int32_t>(d->groups[g].rows.size());
                    if (d->actors[g] < 0 || d->actors[g] >= static_cast<int32_t>(self->state.expert_actors.size())) {
                      fail(self, d, to_caf_error(Status(Errc::internal, "global router: bad expert actor index")));
                      return;
                    }
                  }
                  send_more(self, d);
                },
                [self, d](caf::error& err) {
                  d->next_to_send = d->groups.size();  // nothing was planned: nothing to drain
                  d->failed = true;
                  d->rp.deliver(err);
                });
        return d->rp;
      },
      [self](trace_atom) { return self->state.last_trace; },
  };
}

// ---- global router ------------------------------------------------------------------------

struct GlobalRouterState {
  std::vector<std::vector<int32_t>> replicas;  // [expert] -> actor indices
  LoadSnapshot load;
  static inline const char* name = "fulgur.global_router";
};

global_router_actor::behavior_type global_router_fn(global_router_actor::stateful_pointer<GlobalRouterState> self,
                                                    std::vector<std::vector<int32_t>> replicas,
                                                    int64_t num_expert_actors) {
  auto& s = self->state;
  s.load.tokens_per_expert.assign(replicas.size(), 0);
  s.replicas = std::move(replicas);
  s.load.pending_per_actor.assign(num_expert_actors, 0);
  s.load.tokens_per_actor.assign(num_expert_actors, 0);
  return {
      [self](plan_atom, DispatchPlanRequest& req) -> caf::result<std::vector<int32_t>> {
        auto& s = self->state;
        if (req.group_experts.size() != req.group_tokens.size()) {
          return to_caf_error(Status(Errc::invalid_argument, "plan: experts and token counts differ in length"));
        }
        std::vector<int32_t> chosen;
        chosen.reserve(req.group_experts.size());
        for (size_t g = 0; g < req.group_experts.size(); ++g) {
          const int32_t e = req.group_experts[g];
          if (e < 0 || e >= static_cast<int32_t>(s.replicas.size()) || s.replicas[e].empty()) {
            return to_caf_error(Status(Errc::unavailable, "plan: expert " + std::to_string(e) + " has no host"));
          }
          int32_t best = s.replicas[e].front();
          for (int32_t a : s.replicas[e]) {
            if (s.load.pending_per_actor[a] < s.load.pending_per_actor[best]) best = a;
          }
          s.load.pending_per_actor[best] += req.group_tokens[g];
          s.load.tokens_per_expert[e] += req.group_tokens[g];
          chosen.push_back(best);
        }
        return chosen;
      },
      [self](done_atom, int32_t actor, int64_t tokens) {
        auto& s = self->state;
        if (actor < 0 || actor >= static_cast<int32_t>(s.load.pending_per_actor.size())) return;
        s.load.pending_per_actor[actor] -= tokens;
        s.load.tokens_per_actor[actor] += tokens;
      },
      [self](load_atom) { return self->state.load; },
  };
}

}  // namespace

router_actor spawn_router(caf::actor_system& sys, std::shared_ptr<const Model> model, int64_t layer_idx,
                          const RouterOptions& options, global_router_actor global,
                          std::vector<expert_actor> expert_actors, hidden_sink_actor next) {
  return sys.spawn(router_fn, std::move(model), layer_idx, options, std::move(global), std::move(expert_actors),
                   std::move(next));
}

global_router_actor spawn_global_router(caf::actor_system& sys, std::vector<std::vector<int32_t>> replicas,
                                        int64_t num_expert_actors) {
  return sys.spawn(global_router_fn, std::move(replicas), num_expert_actors);
}

}  // namespace fulgur::serving
