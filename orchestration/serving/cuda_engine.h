// The serving engine on one CUDA device: the scheduler actor (continuous batching, admission,
// streaming, cancellation; scheduler_actor.h) driving one CUDA model actor (actors/cuda_model_actor.h)
// that holds every layer's weights and state on the GPU and samples there. The same Engine as the
// CPU actor pipeline (engine.h), so `fulgur serve --device cuda` serves the same HTTP API.
#pragma once

#include <memory>
#include <string>

#include "actors/layers/model.h"
#include "orchestration/serving/engine_factory.h"
#include "orchestration/serving/scheduler_actor.h"

namespace fulgur {

struct CudaEngineOptions {
  int device = 0;
  std::string dtype = "bf16";  // CudaComputeDtype: "bf16" | "f32"
  bool int8_experts = false;
  size_t kv_cache_bytes = 0;         // KV pages sized from free memory (EngineOptions::kv_blocks 0): at most this
                                     // many bytes of them; 0 = as many as fit
  size_t scheduler_threads = 2;      // CAF scheduler threads (the model actor has its own thread)
  int64_t step_timeout_ms = 120000;  // a step not back by then fails its requests
  LogitsHook logits_hook;            // debug: logits of every sampled row (they then cross to the host
                                     // and the CPU sampler draws: the same tokens)
};

// Uploads `model` to the device (the host copy may be dropped afterwards) and allocates the state the
// options ask for (state slots, KV pages). Errc::unsupported in a build without the CUDA backend.
Expected<std::unique_ptr<Engine>> make_cuda_engine(std::shared_ptr<const Model> model, const EngineOptions& options,
                                                   const CudaEngineOptions& cuda_options);

class CudaModel;
// The same over a model already on the device (cuda_options' device, dtype and int8_experts are the
// model's own then): it allocates its state there, replacing any earlier state; the model may serve
// another engine once this one is gone.
Expected<std::unique_ptr<Engine>> make_cuda_engine(std::shared_ptr<CudaModel> model, const EngineOptions& options,
                                                   const CudaEngineOptions& cuda_options);

}  // namespace fulgur
