#include "actors/router_actor.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include <caf/all.hpp>

#include "actors/data_plane.h"
#include "kernels/embedding.h"
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
  std::vector<uint8_t> in_flight_to;        // [group] 1 while sent and not back
  std::vector<GroupTrace> trace;            // [group]
  size_t next_to_send = 0, in_flight = 0, received = 0;
  bool failed = false;
  caf::typed_response_promise<StepResult> rp;
};

struct RouterState {
  std::shared_ptr<const Model> model;
  std::shared_ptr<DataPlane> dp;
  int64_t layer_idx = 0;
  RouterOptions options;
  global_router_actor global;
  std::vector<expert_actor> expert_actors;
  std::vector<std::string> down_reason;  // [expert actor] non-empty once it went down
  std::vector<std::shared_ptr<Dispatch>> active;  // dispatches not finished or failed
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

void forget(router_ptr self, const std::shared_ptr<Dispatch>& d) {
  auto& a = self->state.active;
  a.erase(std::remove(a.begin(), a.end(), d), a.end());
}

void fail(router_ptr self, const std::shared_ptr<Dispatch>& d, const caf::error& err) {
  if (d->failed) return;
  d->failed = true;
  forget(self, d);
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
  auto x = ship(self->state.dp.get(), d->x, self->state.next.node());
  if (!x) {
    fail(self, d, to_caf_error(x.error()));
    return;
  }
  forget(self, d);
  d->rp.delegate(self->state.next, forward_atom_v, std::move(d->step), std::move(*x));
}

std::string describe_actor(const std::vector<std::string>& names, int32_t actor) {
  if (actor >= 0 && actor < static_cast<int32_t>(names.size())) return names[actor];
  return "expert actor " + std::to_string(actor);
}

// The group's message to expert actor `actor`: in process, the whole h2 and the row list
// (zero-copy); to another process, only the group's rows, gathered, so the data plane moves
// n x hidden floats instead of all of h2.
Expected<std::pair<TokenGroup, HiddenHandle>> group_message(RouterState& s, Dispatch& d, size_t g, int32_t actor) {
  const caf::node_id dest = s.expert_actors[actor].node();
  if (!s.dp || dest == s.dp->node()) return std::make_pair(d.groups[g], d.h2);
  FULGUR_ASSIGN_OR_RETURN(Tensor * h2, resolve(d.h2, "router h2"));
  const auto& rows = d.groups[g].rows;
  const int64_t hidden = h2->size(1), n = static_cast<int64_t>(rows.size());
  Tensor xg = Tensor::empty(DType::f32, {n, hidden});
  const auto ks = kernels::embedding_cpu({h2->data<float>(), rows.data(), xg.data<float>(), n, hidden, h2->size(0)});
  if (!ks.ok()) return Status(Errc::internal, "router: gathering group " + std::to_string(g) + ": " + ks.error);
  TokenGroup tg = d.groups[g];
  for (int64_t i = 0; i < n; ++i) tg.rows[i] = static_cast<int32_t>(i);
  FULGUR_ASSIGN_OR_RETURN(HiddenHandle h, s.dp->ship(HiddenHandle::wrap(std::move(xg)), dest));
  return std::make_pair(std::move(tg), std::move(h));
}

void send_more(router_ptr self, const std::shared_ptr<Dispatch>& d) {
  auto& s = self->state;
  while (!d->failed && d->next_to_send < d->groups.size() &&
         d->in_flight < static_cast<size_t>(s.options.max_inflight_groups)) {
    const size_t g = d->next_to_send++;
    const int32_t actor = d->actors[g];
    if (!s.down_reason[actor].empty()) {
      d->next_to_send = g;  // group g was not sent: fail() drains it with the rest
      fail(self, d, to_caf_error(Status(Errc::unavailable, "layer " + std::to_string(s.layer_idx) + ": " +
                                                               s.down_reason[actor])));
      return;
    }
    auto msg = group_message(s, *d, g, actor);
    if (!msg) {
      d->next_to_send = g;
      fail(self, d, to_caf_error(msg.error()));
      return;
    }
    ++d->in_flight;
    d->in_flight_to[g] = 1;
    d->trace[g].send_ns = now_ns();
    self->request(s.expert_actors[actor], std::chrono::milliseconds(s.options.expert_timeout_ms), expert_atom_v,
                  std::move(msg->first), std::move(msg->second))
        .then(
            [self, d, g, actor](GroupDone& done, HiddenHandle& y) {
              auto& tr = d->trace[g];
              tr.receive_ns = now_ns();
              tr.compute_begin_ns = done.compute_begin_ns;
              tr.compute_end_ns = done.compute_end_ns;
              self->send(self->state.global, done_atom_v, actor, static_cast<int64_t>(d->groups[g].rows.size()));
              --d->in_flight;
              d->in_flight_to[g] = 0;
              // Take the bytes off the data plane even when the dispatch already failed.
              auto yt = receive(self->state.dp.get(), y, "expert output");
              if (d->failed) return;
              if (!yt) {
                fail(self, d, to_caf_error(Status(yt.error().code(), "layer " + std::to_string(self->state.layer_idx) +
                                                                         ": " +
                                                                         describe_actor(self->state.options.expert_names,
                                                                                        actor) +
                                                                         ": " + yt.error().message())));
                return;
              }
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
              d->in_flight_to[g] = 0;
              fail(self, d, err);
            });
  }
}

router_actor::behavior_type router_fn(router_ptr self, std::shared_ptr<const Model> model,
                                      std::shared_ptr<DataPlane> dp, int64_t layer_idx, RouterOptions options,
                                      global_router_actor global, std::vector<expert_actor> expert_actors,
                                      hidden_sink_actor next) {
  auto& s = self->state;
  s.model = std::move(model);
  s.dp = std::move(dp);
  s.layer_idx = layer_idx;
  s.options = options;
  s.global = std::move(global);
  s.expert_actors = std::move(expert_actors);
  s.next = std::move(next);
  s.moe = std::make_unique<MoeBlock>(s.model->config(), layer_idx, s.model->weights().layers[layer_idx].moe);
  // An expert actor that goes down (its process died or disconnected) fails every dispatch with a
  // group in flight to it at once, instead of waiting for the expert timeout; later dispatches
  // that the global router still sends there fail at send time.
  s.down_reason.assign(s.expert_actors.size(), std::string());
  for (const auto& e : s.expert_actors) self->monitor(e);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& s = self->state;
    for (size_t a = 0; a < s.expert_actors.size(); ++a) {
      if (caf::actor_cast<caf::actor_addr>(s.expert_actors[a]) != dm.source) continue;
      s.down_reason[a] =
          describe_actor(s.options.expert_names, static_cast<int32_t>(a)) + " is down (" + caf::to_string(dm.reason) + ")";
      const auto active = s.active;
      for (const auto& d : active) {
        for (size_t g = 0; g < d->groups.size(); ++g) {
          if (d->in_flight_to[g] && d->actors[g] == static_cast<int32_t>(a)) {
            fail(self, d, to_caf_error(Status(Errc::unavailable, "layer " + std::to_string(s.layer_idx) + ": " +
                                                                     s.down_reason[a])));
            break;
          }
        }
      }
    }
  });
  return {
      [self](moe_atom, StepDescriptor& step, HiddenHandle& x, HiddenHandle& h2) -> caf::result<StepResult> {
        auto& s = self->state;
        auto xt = receive(s.dp.get(), x, "router x");
        auto h = receive(s.dp.get(), h2, "router h2");
        if (!xt) return to_caf_error(xt.error());
        if (!h) return to_caf_error(h.error());
        auto routing = s.moe->route(**h);
        if (!routing) return to_caf_error(routing.error());
        auto d = std::make_shared<Dispatch>();
        d->step = std::move(step);
        d->x = std::move(x);
        d->h2 = std::move(h2);
        build_groups(s, *routing, *d);
        d->outputs.resize(d->groups.size());
        d->in_flight_to.assign(d->groups.size(), 0);
        d->trace.resize(d->groups.size());
        s.active.push_back(d);
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
                  forget(self, d);
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
  std::vector<expert_actor> actors;            // monitored: a replica that goes down is not chosen
  std::vector<uint8_t> down;                   // [actor]
  std::vector<std::string> names;              // [actor] for errors and logs
  LoadSnapshot load;
  static inline const char* name = "fulgur.global_router";
};

global_router_actor::behavior_type global_router_fn(global_router_actor::stateful_pointer<GlobalRouterState> self,
                                                    std::vector<std::vector<int32_t>> replicas,
                                                    std::vector<expert_actor> actors,
                                                    std::vector<std::string> names) {
  auto& s = self->state;
  s.names = std::move(names);
  const size_t num_expert_actors = actors.size();
  s.load.tokens_per_expert.assign(replicas.size(), 0);
  s.replicas = std::move(replicas);
  s.actors = std::move(actors);
  s.down.assign(num_expert_actors, 0);
  s.load.pending_per_actor.assign(num_expert_actors, 0);
  s.load.tokens_per_actor.assign(num_expert_actors, 0);
  for (const auto& a : s.actors) self->monitor(a);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& s = self->state;
    for (size_t a = 0; a < s.actors.size(); ++a) {
      if (caf::actor_cast<caf::actor_addr>(s.actors[a]) != dm.source || s.down[a]) continue;
      s.down[a] = 1;
      s.load.down_actors.push_back(static_cast<int32_t>(a));
      std::sort(s.load.down_actors.begin(), s.load.down_actors.end());
      std::fprintf(stderr, "fulgur: %s is down: %s\n", describe_actor(s.names, static_cast<int32_t>(a)).c_str(),
                   caf::to_string(dm.reason).c_str());
    }
  });
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
          int32_t best = -1;
          for (int32_t a : s.replicas[e]) {
            if (s.down[a]) continue;
            if (best < 0 || s.load.pending_per_actor[a] < s.load.pending_per_actor[best]) best = a;
          }
          if (best < 0) {
            // Undo this plan's counts: none of its groups will be sent.
            for (size_t h = 0; h < chosen.size(); ++h) {
              s.load.pending_per_actor[chosen[h]] -= req.group_tokens[h];
              s.load.tokens_per_expert[req.group_experts[h]] -= req.group_tokens[h];
            }
            std::string hosts;
            for (int32_t a : s.replicas[e]) hosts += (hosts.empty() ? "" : ", ") + describe_actor(s.names, a);
            return to_caf_error(Status(Errc::unavailable, "expert " + std::to_string(e) + " of layer " +
                                                              std::to_string(req.layer) +
                                                              ": every expert actor hosting it is down (" + hosts +
                                                              "); restarting and re-placing are not supported yet"));
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
                          std::vector<expert_actor> expert_actors, hidden_sink_actor next,
                          std::shared_ptr<DataPlane> dp) {
  return sys.spawn(router_fn, std::move(model), std::move(dp), layer_idx, options, std::move(global),
                   std::move(expert_actors), std::move(next));
}

global_router_actor spawn_global_router(caf::actor_system& sys, std::vector<std::vector<int32_t>> replicas,
                                        std::vector<expert_actor> expert_actors,
                                        std::vector<std::string> expert_names) {
  return sys.spawn(global_router_fn, std::move(replicas), std::move(expert_actors), std::move(expert_names));
}

}  // namespace fulgur::serving
