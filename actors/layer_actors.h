// The actors that wrap the plain model pieces of actors/layers (one implementation of each
// layer; the actors only move data between them):
//  - embed:      token ids -> x [T, hidden]                        (Model::embed)
//  - attention:  one per layer; owns the layer's state pool (lightning slots or paged KV) and
//                runs norm -> attention -> DeepNorm residual -> post-norm (attention_half)
//  - head:       final norm, lm_head, per-sequence sampler          (Model::head, sample_cpu)
//  - expert:     hosts experts (of every MoE layer) per the placement; SwiGLU on token groups
// The router and the global router are in router_actor.h. Each spawn function returns the typed
// handle; failures inside a handler become caf::error values (protocols/serving/errors.h).
#pragma once

#include <memory>
#include <vector>

#include <caf/actor_system.hpp>

#include "actors/layers/model.h"
#include "protocols/serving/interfaces.h"

namespace fulgur::serving {

class DataPlane;  // actors/data_plane.h; null: every actor in one process

// The BatchLayout (actors/layers/batch.h) a step descriptor describes.
BatchLayout to_layout(const StepDescriptor& s);

struct PoolSizes {
  int64_t num_slots = 0;   // lightning state slots
  int64_t num_blocks = 0;  // KV pages
  int64_t page_size = 16;
};

embed_actor spawn_embed(caf::actor_system& sys, std::shared_ptr<const Model> model, attention_actor first_layer,
                        std::shared_ptr<DataPlane> dp = nullptr);

attention_actor spawn_attention(caf::actor_system& sys, std::shared_ptr<const Model> model, int64_t layer_idx,
                                const PoolSizes& pools, router_actor router, std::shared_ptr<DataPlane> dp = nullptr);

head_actor spawn_head(caf::actor_system& sys, std::shared_ptr<const Model> model,
                      std::shared_ptr<DataPlane> dp = nullptr);

// `index` names the actor in traces and load counters; `experts` are the expert ids it hosts.
expert_actor spawn_expert(caf::actor_system& sys, std::shared_ptr<const Model> model, int32_t index,
                          std::vector<int32_t> experts, std::shared_ptr<DataPlane> dp = nullptr);

}  // namespace fulgur::serving
