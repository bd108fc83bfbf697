#include "actors/cuda_model_actor.h"

#include <exception>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "kernels/sampling.h"
#include "protocols/serving/errors.h"

namespace fulgur::serving {

namespace {

struct CudaModelState {
  std::shared_ptr<CudaModel> model;
  PoolSizes pools;
  std::vector<char> workspace;  // CPU sampling of steps that return their logits
  static inline const char* name = "fulgur.cuda_model";
};

Expected<StepResult> cuda_step(CudaModelState& s, const StepDescriptor& step, const std::vector<int32_t>& tokens) {
  const ModelConfig& cfg = s.model->config();
  const int64_t n = static_cast<int64_t>(step.logits_rows.size());
  if (static_cast<int64_t>(tokens.size()) != step.num_tokens || step.num_tokens <= 0) {
    return Status(Errc::invalid_argument, "cuda model: step " + std::to_string(step.step_id) + " has " +
                                              std::to_string(tokens.size()) + " tokens, descriptor says " +
                                              std::to_string(step.num_tokens));
  }
  if (static_cast<int64_t>(step.sampling.size()) != n) {
    return Status(Errc::invalid_argument, "cuda model: one sampling descriptor per logits row is needed");
  }
  const BatchLayout layout = to_layout(step);
  FULGUR_TRY(layout.validate(s.pools.num_slots, s.pools.num_blocks, s.pools.page_size));
  std::vector<kernels::SamplingParams> sampling;
  for (const SamplingDesc& d : step.sampling) {
    sampling.push_back(from_desc(d));
    if (auto ks = kernels::check_sampling_params(sampling.back()); !ks.ok()) {
      return Status(Errc::invalid_argument, std::string("cuda model: ") + ks.error);
    }
  }
  for (int32_t slot : step.reset_slots) FULGUR_TRY(s.model->reset_slot(slot));
  StepResult r;
  r.step_id = step.step_id;
  if (!step.return_logits) {
    FULGUR_TRY(s.model->forward_sample(tokens, layout, step.logits_rows, sampling, r.tokens));
    return r;
  }
  Tensor logits;
  FULGUR_TRY(s.model->forward(tokens, layout, step.logits_rows, logits));
  const int64_t V = cfg.vocab_size;
  for (int64_t i = 0; i < n; ++i) {
    int32_t token = -1;
    const auto ks = kernels::sample_cpu(logits.data<float>() + i * V, V, sampling[i], s.workspace.data(), &token);
    if (!ks.ok()) {
      return Status(Errc::internal, "cuda model: sampling row " + std::to_string(step.logits_rows[i]) + ": " + ks.error);
    }
    r.tokens.push_back(token);
  }
  r.logits = HiddenHandle::wrap(std::move(logits));
  return r;
}

embed_actor::behavior_type cuda_model_fn(embed_actor::stateful_pointer<CudaModelState> self,
                                         std::shared_ptr<CudaModel> model, PoolSizes pools) {
  auto& s = self->state;
  s.model = std::move(model);
  s.pools = pools;
  s.workspace.resize(kernels::sample_workspace_bytes(s.model->config().vocab_size));
  return {
      [self](embed_atom, StepDescriptor& step, std::vector<int32_t>& tokens) -> caf::result<StepResult> {
        try {  // nothing throws across the actor boundary: a host allocation failing fails this step only
          auto r = cuda_step(self->state, step, tokens);
          if (!r) return to_caf_error(r.error());
          return std::move(r).value();
        } catch (const std::exception& e) {
          return to_caf_error(Status(Errc::internal, std::string("cuda model: step failed: ") + e.what()));
        }
      },
  };
}

}  // namespace

embed_actor spawn_cuda_model(caf::actor_system& sys, std::shared_ptr<CudaModel> model, const PoolSizes& pools) {
  return sys.spawn<caf::detached>(cuda_model_fn, std::move(model), pools);
}

}  // namespace fulgur::serving
