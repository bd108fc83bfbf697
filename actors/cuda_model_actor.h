// The whole model on one CUDA device as one actor: it answers the scheduler's steps exactly as the
// embed actor of the CPU pipeline does (serving::embed_actor: a step in, the sampled tokens out), so
// the same scheduler actor batches for it. One actor, not one per layer: on one GPU the layers run
// back to back on one stream, and per-layer messages would only add host round trips.
//
// It owns the CudaModel (weights, lightning state slots, the paged KV cache) and runs detached (the
// CUDA device is current per thread). Sampling happens on the device (kernels/cuda/sampling.h): the
// same token the CPU head would draw from the same logits. A step that asks for its logits rows
// (return_logits, a debug hook) brings them to the host and samples there, with the same result.
#pragma once

#include <memory>

#include <caf/actor_system.hpp>

#include "actors/layer_actors.h"
#include "actors/layers/cuda_model.h"
#include "protocols/serving/interfaces.h"

namespace fulgur::serving {

// `model` must already hold the state for `pools` (CudaModel::allocate_state); the actor becomes its
// only user.
embed_actor spawn_cuda_model(caf::actor_system& sys, std::shared_ptr<CudaModel> model, const PoolSizes& pools);

}  // namespace fulgur::serving
