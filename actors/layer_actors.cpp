#include "actors/layer_actors.h"

#include "actors/layers/layers.h"

#include <algorithm>
#include <cstring>
#include <string>

#include <caf/all.hpp>

#include "actors/data_plane.h"
#include "kernels/embedding.h"
#include "kernels/sampling.h"
#include "protocols/serving/errors.h"

namespace fulgur::serving {

BatchLayout to_layout(const StepDescriptor& s) {
  BatchLayout b;
  b.num_tokens = s.num_tokens;
  b.cu_seqlens = s.cu_seqlens;
  b.positions = s.positions;
  b.state_slots = s.state_slots;
  b.context_lens = s.context_lens;
  b.block_tables = s.block_tables;
  b.max_blocks_per_seq = s.max_blocks_per_seq;
  b.kv_slot_mapping = s.kv_slot_mapping;
  return b;
}

namespace {

// ---- embed --------------------------------------------------------------------------------

// The node a reply goes to: the actor that asked (delegation keeps the original sender).
caf::node_id reply_node(caf::local_actor* self) {
  const auto& sender = self->current_sender();
  return sender ? sender->node() : caf::node_id{};
}

struct EmbedState {
  std::shared_ptr<const Model> model;
  std::shared_ptr<DataPlane> dp;
  attention_actor next;
  static inline const char* name = "fulgur.embed";
};

embed_actor::behavior_type embed_fn(embed_actor::stateful_pointer<EmbedState> self,
                                    std::shared_ptr<const Model> model, std::shared_ptr<DataPlane> dp,
                                    attention_actor next) {
  self->state.model = std::move(model);
  self->state.dp = std::move(dp);
  self->state.next = std::move(next);
  return {
      [self](embed_atom, StepDescriptor& step, std::vector<int32_t>& tokens) -> caf::result<StepResult> {
        const Model& m = *self->state.model;
        if (static_cast<int64_t>(tokens.size()) != step.num_tokens || step.num_tokens <= 0) {
          return to_caf_error(Status(Errc::invalid_argument, "embed: step " + std::to_string(step.step_id) +
                                                                 " has " + std::to_string(tokens.size()) +
                                                                 " tokens, descriptor says " +
                                                                 std::to_string(step.num_tokens)));
        }
        Tensor x = Tensor::empty(DType::f32, {step.num_tokens, m.config().hidden_size});
        if (auto st = m.embed(tokens, x); !st.is_ok()) return to_caf_error(st);
        auto out = ship(self->state.dp.get(), HiddenHandle::wrap(std::move(x)), self->state.next.node());
        if (!out) return to_caf_error(out.error());
        return self->delegate(self->state.next, forward_atom_v, std::move(step), std::move(*out));
      },
  };
}

// ---- attention ----------------------------------------------------------------------------

struct AttentionState {
  std::shared_ptr<const Model> model;
  std::shared_ptr<DataPlane> dp;
  int64_t layer_idx = 0;
  StatePools pools;  // only this layer's entry is allocated
  router_actor router;
  static inline const char* name = "fulgur.attention";
};

Status attention_step(AttentionState& s, const StepDescriptor& step, Tensor& x, Tensor& h2) {
  const ModelConfig& cfg = s.model->config();
  if (x.dim() != 2 || x.size(0) != step.num_tokens || x.size(1) != cfg.hidden_size) {
    return Status(Errc::invalid_argument, "attention layer " + std::to_string(s.layer_idx) + ": x is " +
                                              x.describe() + " for a step of " + std::to_string(step.num_tokens) +
                                              " tokens");
  }
  const BatchLayout layout = to_layout(step);
  FULGUR_TRY(layout.validate(s.pools.num_slots, s.pools.num_blocks, s.pools.page_size));
  for (int32_t slot : step.reset_slots) {
    if (slot < 0 || slot >= s.pools.num_slots) return Status(Errc::invalid_argument, "reset of a slot out of range");
    s.pools.reset_slot(slot);
  }
  return s.model->layer(s.layer_idx).attention_half(x, layout, s.pools, h2);
}

attention_actor::behavior_type attention_fn(attention_actor::stateful_pointer<AttentionState> self,
                                            std::shared_ptr<const Model> model, std::shared_ptr<DataPlane> dp,
                                            int64_t layer_idx, PoolSizes sizes, router_actor router) {
  auto& s = self->state;
  s.model = std::move(model);
  s.dp = std::move(dp);
  s.layer_idx = layer_idx;
  s.router = std::move(router);
  const ModelConfig& cfg = s.model->config();
  s.pools.num_slots = sizes.num_slots;
  s.pools.num_blocks = sizes.num_blocks;
  s.pools.page_size = sizes.page_size;
  s.pools.lightning.resize(cfg.num_hidden_layers);
  s.pools.k_cache.resize(cfg.num_hidden_layers);
  s.pools.v_cache.resize(cfg.num_hidden_layers);
  if (cfg.layer_types[layer_idx] == LayerKind::lightning) {
    s.pools.lightning[layer_idx] =
        Tensor::zeros(DType::f32, {sizes.num_slots, cfg.num_attention_heads, cfg.head_dim, cfg.head_dim});
  } else {
    for (Tensor* t : {&s.pools.k_cache[layer_idx], &s.pools.v_cache[layer_idx]}) {
      *t = Tensor::zeros(DType::f32, {sizes.num_blocks, sizes.page_size, cfg.num_key_value_heads, cfg.head_dim});
    }
  }
  return {
      [self](forward_atom, StepDescriptor& step, HiddenHandle& x) -> caf::result<StepResult> {
        auto& s = self->state;
        auto xt = receive(s.dp.get(), x, "attention input");
        if (!xt) return to_caf_error(xt.error());
        Tensor h2 = Tensor::empty(DType::f32, {step.num_tokens, s.model->config().hidden_size});
        if (auto st = attention_step(s, step, **xt, h2); !st.is_ok()) return to_caf_error(st);
        const caf::node_id dest = s.router.node();
        auto x_out = ship(s.dp.get(), x, dest);
        if (!x_out) return to_caf_error(x_out.error());
        auto h2_out = ship(s.dp.get(), HiddenHandle::wrap(std::move(h2)), dest);
        if (!h2_out) return to_caf_error(h2_out.error());
        return self->delegate(s.router, moe_atom_v, std::move(step), std::move(*x_out), std::move(*h2_out));
      },
  };
}

// ---- head ---------------------------------------------------------------------------------

struct HeadState {
  std::shared_ptr<const Model> model;
  std::shared_ptr<DataPlane> dp;
  std::vector<char> workspace;
  static inline const char* name = "fulgur.head";
};

Expected<StepResult> head_step(HeadState& s, const StepDescriptor& step, const Tensor& x) {
  const ModelConfig& cfg = s.model->config();
  const int64_t n = static_cast<int64_t>(step.logits_rows.size()), V = cfg.vocab_size;
  if (static_cast<int64_t>(step.sampling.size()) != n) {
    return Status(Errc::invalid_argument, "head: one sampling descriptor per logits row is needed");
  }
  StepResult r;
  r.step_id = step.step_id;
  if (n == 0) return r;
  Tensor logits = Tensor::empty(DType::f32, {n, V});
  FULGUR_TRY(s.model->head(x, step.logits_rows, logits));
  for (int64_t i = 0; i < n; ++i) {
    int32_t token = -1;
    const auto ks = kernels::sample_cpu(logits.data<float>() + i * V, V, from_desc(step.sampling[i]),
                                        s.workspace.data(), &token);
    if (!ks.ok()) {
      return Status(Errc::invalid_argument, "head: sampling row " + std::to_string(step.logits_rows[i]) + ": " + ks.error);
    }
    r.tokens.push_back(token);
  }
  if (step.return_logits) r.logits = HiddenHandle::wrap(std::move(logits));
  return r;
}

head_actor::behavior_type head_fn(head_actor::stateful_pointer<HeadState> self, std::shared_ptr<const Model> model,
                                  std::shared_ptr<DataPlane> dp) {
  self->state.model = std::move(model);
  self->state.dp = std::move(dp);
  self->state.workspace.resize(kernels::sample_workspace_bytes(self->state.model->config().vocab_size));
  return {
      [self](forward_atom, StepDescriptor& step, HiddenHandle& x) -> caf::result<StepResult> {
        auto xt = receive(self->state.dp.get(), x, "head input");
        if (!xt) return to_caf_error(xt.error());
        auto r = head_step(self->state, step, **xt);
        if (!r) return to_caf_error(r.error());
        if (r->logits.valid()) {
          auto logits = ship(self->state.dp.get(), r->logits, reply_node(self));
          if (!logits) return to_caf_error(logits.error());
          r->logits = std::move(*logits);
        }
        return std::move(r).value();
      },
  };
}

// ---- expert -------------------------------------------------------------------------------

struct ExpertState {
  std::shared_ptr<const Model> model;
  std::shared_ptr<DataPlane> dp;
  int32_t index = 0;
  std::vector<int32_t> experts;            // hosted expert ids, ascending
  std::vector<std::unique_ptr<MoeBlock>> moe;  // [layer] the layer's MoE pieces (weights shared with Model)
  static inline const char* name = "fulgur.expert";
};

Status expert_step(ExpertState& s, const TokenGroup& g, const Tensor& h2, Tensor& y) {
  const int64_t hidden = s.model->config().hidden_size;
  if (g.layer < 0 || g.layer >= static_cast<int32_t>(s.moe.size())) {
    return Status(Errc::invalid_argument, "expert actor: layer " + std::to_string(g.layer) + " out of range");
  }
  if (!std::binary_search(s.experts.begin(), s.experts.end(), g.expert)) {
    return Status(Errc::invalid_argument, "expert actor " + std::to_string(s.index) + " does not host expert " +
                                              std::to_string(g.expert));
  }
  const int64_t n = static_cast<int64_t>(g.rows.size());
  y = Tensor::empty(DType::f32, {n, hidden});
  // A group from another process arrives already gathered (rows 0..n-1 of its own tensor).
  bool identity = n == h2.size(0);
  for (int64_t i = 0; identity && i < n; ++i) identity = g.rows[i] == i;
  if (identity) return s.moe[g.layer]->expert_forward(g.expert, h2.data<float>(), n, y.data<float>());
  Tensor xg = Tensor::empty(DType::f32, {n, hidden});
  const auto ks = kernels::embedding_cpu({h2.data<float>(), g.rows.data(), xg.data<float>(), n, hidden, h2.size(0)});
  if (!ks.ok()) return Status(Errc::invalid_argument, std::string("token group row out of range: ") + ks.error);
  return s.moe[g.layer]->expert_forward(g.expert, xg.data<float>(), n, y.data<float>());
}

expert_actor::behavior_type expert_fn(expert_actor::stateful_pointer<ExpertState> self,
                                      std::shared_ptr<const Model> model, std::shared_ptr<DataPlane> dp,
                                      int32_t index, std::vector<int32_t> experts) {
  auto& s = self->state;
  s.model = std::move(model);
  s.dp = std::move(dp);
  s.index = index;
  std::sort(experts.begin(), experts.end());
  experts.erase(std::unique(experts.begin(), experts.end()), experts.end());
  s.experts = std::move(experts);
  const ModelConfig& cfg = s.model->config();
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    s.moe.push_back(std::make_unique<MoeBlock>(s.model->config(), l, s.model->weights().layers[l].moe));
  }
  return {
      [self](expert_atom, TokenGroup& g, HiddenHandle& h2) -> caf::result<GroupDone, HiddenHandle> {
        GroupDone done;
        done.group_idx = g.group_idx;
        done.expert_actor = self->state.index;
        done.compute_begin_ns = now_ns();
        auto h = receive(self->state.dp.get(), h2, "expert input");
        if (!h) return to_caf_error(h.error());
        Tensor y;
        if (auto st = expert_step(self->state, g, **h, y); !st.is_ok()) return to_caf_error(st);
        done.compute_end_ns = now_ns();
        auto out = ship(self->state.dp.get(), HiddenHandle::wrap(std::move(y)), reply_node(self));
        if (!out) return to_caf_error(out.error());
        return {done, std::move(*out)};
      },
      [](ping_atom, int64_t x) { return x; },
  };
}

}  // namespace

embed_actor spawn_embed(caf::actor_system& sys, std::shared_ptr<const Model> model, attention_actor first_layer,
                        std::shared_ptr<DataPlane> dp) {
  return sys.spawn(embed_fn, std::move(model), std::move(dp), std::move(first_layer));
}

attention_actor spawn_attention(caf::actor_system& sys, std::shared_ptr<const Model> model, int64_t layer_idx,
                                const PoolSizes& pools, router_actor router, std::shared_ptr<DataPlane> dp) {
  return sys.spawn(attention_fn, std::move(model), std::move(dp), layer_idx, pools, std::move(router));
}

head_actor spawn_head(caf::actor_system& sys, std::shared_ptr<const Model> model, std::shared_ptr<DataPlane> dp) {
  return sys.spawn(head_fn, std::move(model), std::move(dp));
}

expert_actor spawn_expert(caf::actor_system& sys, std::shared_ptr<const Model> model, int32_t index,
                          std::vector<int32_t> experts, std::shared_ptr<DataPlane> dp) {
  return sys.spawn(expert_fn, std::move(model), std::move(dp), index, std::move(experts));
}

}  // namespace fulgur::serving
