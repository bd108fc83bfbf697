#include "orchestration/serving/cuda_engine.h"

#ifdef FULGUR_HAVE_CUDA

#include <atomic>
#include <string>

#include <caf/all.hpp>

#include "actors/cuda_model_actor.h"
#include "actors/layers/cuda_model.h"
#include "orchestration/serving/actor_engine.h"
#include "orchestration/serving/gpu_memory_plan.h"
#include "protocols/serving/caf_config.h"

namespace fulgur {

namespace {

class CudaEngine final : public Engine {
 public:
  static Expected<std::unique_ptr<Engine>> create(std::shared_ptr<const Model> model, const EngineOptions& options,
                                                  const CudaEngineOptions& cuda_options) {
    FULGUR_TRY(check_options(cuda_options));
    FULGUR_ASSIGN_OR_RETURN(CudaComputeDtype dtype, parse_cuda_compute_dtype(cuda_options.dtype));
    CudaModelOptions mo;
    mo.dtype = dtype;
    mo.int8_experts = cuda_options.int8_experts;
    FULGUR_ASSIGN_OR_RETURN(std::unique_ptr<CudaModel> cuda_model, CudaModel::create(*model, cuda_options.device, mo));
    return create(std::shared_ptr<CudaModel>(std::move(cuda_model)), options, cuda_options);
  }

  static Expected<std::unique_ptr<Engine>> create(std::shared_ptr<CudaModel> model, const EngineOptions& options,
                                                  CudaEngineOptions cuda_options) {
    FULGUR_TRY(check_options(cuda_options));
    FULGUR_ASSIGN_OR_RETURN(EngineOptions opt, resolve_engine_options(model->config(), options));
    if (options.kv_blocks > 0 && cuda_options.kv_cache_bytes > 0) {
      return Status(Errc::invalid_argument, "--kv-blocks and --kv-cache-gib both size the KV cache: give one");
    }
    if (options.kv_blocks <= 0) {
      // No page count asked for: as many as the free memory holds beside the slots, up to every slot at the
      // full context; the context shrinks to what the pages hold when they cannot hold it.
      FULGUR_ASSIGN_OR_RETURN(auto mem, model->device_memory());
      GpuMemoryAsk ask;
      ask.free_bytes = mem.first, ask.total_bytes = mem.second;
      ask.slot_bytes = model->slot_state_bytes(), ask.page_bytes = model->kv_page_bytes(opt.page_size);
      ask.slots = opt.state_slots, ask.page_size = opt.page_size, ask.max_context = opt.max_context;
      ask.context_asked = options.max_context > 0;
      ask.kv_cache_limit = cuda_options.kv_cache_bytes;
      auto plan = plan_gpu_state(ask);
      if (!plan) return Status(plan.error().code(), "sizing the serving state on the GPU: " + plan.error().message());
      opt.kv_blocks = plan->kv_blocks, opt.max_context = plan->max_context;
    }
    if (Status st = model->allocate_state(opt.state_slots, opt.kv_blocks, opt.page_size); !st.is_ok()) {
      return Status(st.code(), "allocating the serving state on the GPU (" + std::to_string(opt.state_slots) +
                                   " state slots, " + std::to_string(opt.kv_blocks) + " KV pages of " +
                                   std::to_string(opt.page_size) + " tokens for a context of " +
                                   std::to_string(opt.max_context) +
                                   "): " + st.message() + " (lower --max-running, --max-context or --kv-blocks)");
    }
    cuda_options.device = model->device();  // the topology reports what the model is, not what was asked
    cuda_options.dtype = model->dtype() == CudaComputeDtype::f32 ? "f32" : "bf16";
    std::unique_ptr<CudaEngine> e(new CudaEngine(model->config(), opt, cuda_options, model->weight_bytes()));
    e->start(std::move(model));
    return std::unique_ptr<Engine>(std::move(e));
  }

  static Status check_options(const CudaEngineOptions& o) {
    if (o.scheduler_threads < 1) return Status(Errc::invalid_argument, "engine options: scheduler_threads must be >= 1");
    return Status::ok();
  }

  ~CudaEngine() override {
    ready_ = false;
    // The scheduler first, so its requests get their final events; ~actor_system waits for both.
    caf::anon_send_exit(scheduler_, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(model_actor_, caf::exit_reason::user_shutdown);
  }

  Expected<RequestId> submit(CompletionRequest request, TokenCallback on_event) override {
    FULGUR_TRY(check_completion_request(request, cfg_, options_));
    const RequestId id = next_id_.fetch_add(1);
    return scheduler_submit(system_, scheduler_, SubmitPayload{id, std::move(request), std::move(on_event)});
  }
  void cancel(RequestId id) override {
    caf::anon_send(scheduler_, serving::cancel_atom_v, static_cast<uint64_t>(id));
  }
  bool ready() const override { return ready_; }
  EngineStats stats() const override { return scheduler_stats(system_, scheduler_); }
  int64_t max_context() const override { return options_.max_context; }

  nlohmann::json topology() const override {
    using nlohmann::json;
    const std::string device = "cuda:" + std::to_string(cuda_options_.device);
    json j;
    j["nodes"] = json::array({{{"name", "local"},
                               {"state", "up"},
                               {"devices", json::array({{{"kind", "cuda"}, {"index", cuda_options_.device}}})}}});
    json layers = json::array();
    for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
      layers.push_back(cfg_.layer_types[l] == LayerKind::lightning ? "lightning" : "softmax");
    }
    j["actors"] = json::array({{{"kind", "scheduler"}, {"node", "local"}},
                               {{"kind", "cuda_model"},
                                {"node", "local"},
                                {"device", device},
                                {"dtype", cuda_options_.dtype},
                                {"int8_experts", cuda_options_.int8_experts},
                                {"weight_bytes", weight_bytes_},
                                {"layers", std::move(layers)},
                                {"experts_per_layer", cfg_.num_local_experts}}});
    return j;
  }

 private:
  CudaEngine(const ModelConfig& cfg, const EngineOptions& options, const CudaEngineOptions& cuda_options,
             size_t weight_bytes)
      : cfg_(cfg),
        options_(options),
        cuda_options_(cuda_options),
        weight_bytes_(weight_bytes),
        config_(make_config(cuda_options)),
        system_(*config_) {}

  static std::unique_ptr<caf::actor_system_config> make_config(const CudaEngineOptions& o) {
    auto cfg = std::make_unique<caf::actor_system_config>();
    serving::configure(*cfg, serving::RuntimeOptions{o.scheduler_threads});
    return cfg;
  }

  void start(std::shared_ptr<CudaModel> model) {
    model_actor_ = serving::spawn_cuda_model(system_, std::move(model),
                                             serving::PoolSizes{options_.state_slots, options_.kv_blocks, options_.page_size});
    SchedulerConfig sc;
    sc.options = options_;
    sc.step_timeout_ms = cuda_options_.step_timeout_ms;
    sc.logits_hook = cuda_options_.logits_hook;
    sc.watch.push_back(caf::actor_cast<caf::actor>(model_actor_));
    sc.watch_names.push_back("the CUDA model actor");
    scheduler_ = spawn_scheduler(system_, std::move(sc), model_actor_);
    ready_ = true;
  }

  ModelConfig cfg_;
  EngineOptions options_;
  CudaEngineOptions cuda_options_;
  size_t weight_bytes_ = 0;
  std::unique_ptr<caf::actor_system_config> config_;
  mutable caf::actor_system system_;
  serving::embed_actor model_actor_;
  scheduler_actor scheduler_;
  std::atomic<bool> ready_{false};
  std::atomic<RequestId> next_id_{1};
};

}  // namespace

Expected<std::unique_ptr<Engine>> make_cuda_engine(std::shared_ptr<const Model> model, const EngineOptions& options,
                                                   const CudaEngineOptions& cuda_options) {
  if (!model) return Status(Errc::invalid_argument, "make_cuda_engine: no model");
  return CudaEngine::create(std::move(model), options, cuda_options);
}

Expected<std::unique_ptr<Engine>> make_cuda_engine(std::shared_ptr<CudaModel> model, const EngineOptions& options,
                                                   const CudaEngineOptions& cuda_options) {
  if (!model) return Status(Errc::invalid_argument, "make_cuda_engine: no model");
  return CudaEngine::create(std::move(model), options, cuda_options);
}

}  // namespace fulgur

#else  // no CUDA backend in this build

namespace fulgur {

Expected<std::unique_ptr<Engine>> make_cuda_engine(std::shared_ptr<const Model>, const EngineOptions&,
                                                   const CudaEngineOptions&) {
  return Status(Errc::unsupported, "this build has no CUDA backend (configure with nvcc on the PATH)");
}

Expected<std::unique_ptr<Engine>> make_cuda_engine(std::shared_ptr<CudaModel>, const EngineOptions&,
                                                   const CudaEngineOptions&) {
  return Status(Errc::unsupported, "this build has no CUDA backend (configure with nvcc on the PATH)");
}

}  // namespace fulgur

#endif
