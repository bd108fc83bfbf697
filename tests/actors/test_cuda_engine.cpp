// Serving on one GPU (orchestration/serving/cuda_engine.h): the scheduler actor driving the CUDA model
// actor. The tokens must be the CPU's: f32 compute against `generate` on the CPU model (greedy and
// seeded sampling with top-k / top-p), and the GPU sampler against the CPU sampler on the very same
// GPU logits (bf16). Skips (with the reason) where no CUDA device exists.
#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "actors/layers/cuda_model.h"
#include "kernels/cuda_test_util.h"
#include "kernels/sampling.h"
#include "orchestration/serving/cuda_engine.h"
#include "test_actors_util.h"

namespace fulgur {
namespace {

using test::mixed_requests;
using test::reference_tokens;
using test::run_all;
using test::small_options;

std::unique_ptr<Engine> make_gpu_engine(std::shared_ptr<const Model> model, CudaEngineOptions o,
                                        EngineOptions eo = small_options()) {
  auto e = make_cuda_engine(std::move(model), eo, o);
  EXPECT_TRUE(e.has_value()) << (e ? "" : e.error().to_string());
  return e ? std::move(e).value() : nullptr;
}

std::vector<CompletionRequest> sampled_requests(const ModelConfig& cfg) {
  auto reqs = mixed_requests(cfg);
  reqs[1].sampling = {.temperature = 0.9f, .top_k = 20, .top_p = 0.95f, .seed = 1234};
  reqs[2].sampling = {.temperature = 1.3f, .seed = 99};
  reqs[4].sampling = {.temperature = 0.7f, .top_p = 0.8f, .seed = 7};
  return reqs;
}

TEST(CudaEngine, F32TokensEqualGenerateOnTheCpu) {
  FULGUR_SKIP_WITHOUT_GPU();
  auto model = test::make_test_model(7);
  auto engine = make_gpu_engine(model, {.dtype = "f32"});
  ASSERT_NE(engine, nullptr);
  ASSERT_TRUE(engine->ready());
  auto reqs = sampled_requests(model->config());
  reqs[3].stop_tokens = {reference_tokens(*model, reqs[3]).at(2)};  // stops early
  const auto got = run_all(*engine, reqs);
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(got[i], reference_tokens(*model, reqs[i])) << "request " << i;
  EXPECT_EQ(got[3].size(), 3u);
  test::expect_idle(*engine);
  EXPECT_EQ(engine->stats().requests_total, 5);
}

TEST(CudaEngine, DeviceSamplingEqualsTheCpuSamplerOnTheSameLogits) {
  FULGUR_SKIP_WITHOUT_GPU();
  auto model = test::make_test_model(11);
  auto reqs = sampled_requests(model->config());
  for (auto& r : reqs) r.max_tokens = 12;
  // With a logits hook the actor brings the logits to the host and sample_cpu draws; without, the GPU does.
  std::mutex mu;
  int64_t hooked = 0;
  CudaEngineOptions with_hook{.dtype = "bf16"};
  with_hook.logits_hook = [&](RequestId, int64_t, const std::vector<float>&) {
    std::lock_guard<std::mutex> lock(mu);
    ++hooked;
  };
  auto cpu_sampled = make_gpu_engine(model, with_hook);
  auto gpu_sampled = make_gpu_engine(model, {.dtype = "bf16"});
  ASSERT_NE(cpu_sampled, nullptr);
  ASSERT_NE(gpu_sampled, nullptr);
  // One request at a time: the same steps in both engines, so the same logits (concurrent arrivals would
  // batch by timing, and another batch shape may round bf16 differently).
  std::vector<std::vector<int32_t>> a, b;
  for (const auto& r : reqs) {
    a.push_back(run_all(*cpu_sampled, {r}).at(0));
    b.push_back(run_all(*gpu_sampled, {r}).at(0));
  }
  EXPECT_GT(hooked, 0);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(b[i], a[i]) << "request " << i;
    EXPECT_EQ(static_cast<int64_t>(a[i].size()), reqs[i].max_tokens) << "request " << i;
  }
}

// No --kv-blocks: the pages come from the free memory (orchestration/serving/gpu_memory_plan.h). The test model is
// tiny, so every slot gets the model's full context; the arithmetic of the capped cases is test_actors'
// GpuMemoryPlan.*.
TEST(CudaEngine, KvCacheSizedFromFreeMemory) {
  FULGUR_SKIP_WITHOUT_GPU();
  auto model = test::make_test_model(3);
  auto made = CudaModel::create(*model, 0, {.dtype = CudaComputeDtype::bf16});
  ASSERT_TRUE(made.has_value()) << made.error().to_string();
  std::shared_ptr<CudaModel> cuda(std::move(made).value());
  EngineOptions eo = small_options();
  eo.kv_blocks = 0, eo.max_context = 0;
  const int64_t max_pos = model->config().max_position_embeddings;
  const int64_t ctx = max_pos > 0 ? max_pos : 4096;  // resolve_engine_options' default
  const int64_t pages_per_seq = (ctx + eo.page_size - 1) / eo.page_size;
  const size_t page = cuda->kv_page_bytes(eo.page_size);
  ASSERT_GT(page, 0u) << "the test model needs a softmax layer for this test";
  {
    // The tiny model's pages are small: the free memory holds every slot at the full context.
    auto engine = make_cuda_engine(cuda, eo, {});
    ASSERT_TRUE(engine.has_value()) << engine.error().to_string();
    EXPECT_EQ((*engine)->max_context(), ctx);
    EXPECT_EQ((*engine)->stats().kv_blocks_total, eo.state_slots * pages_per_seq);
    EXPECT_EQ((*engine)->stats().state_slots_total, eo.state_slots);
  }
  // Capped at 10 pages and a half: 10 pages, and the default context drops to one slot's share (one page of 8
  // slots' 10), so that one request cannot hold the pages the other slots need.
  CudaEngineOptions capped;
  capped.kv_cache_bytes = 10 * page + page / 2;
  ASSERT_LT(10, eo.state_slots * pages_per_seq);
  {
    auto engine = make_cuda_engine(cuda, eo, capped);
    ASSERT_TRUE(engine.has_value()) << engine.error().to_string();
    EXPECT_EQ((*engine)->stats().kv_blocks_total, 10);
    EXPECT_EQ((*engine)->max_context(), std::max<int64_t>(1, 10 / eo.state_slots) * eo.page_size);
    // A request longer than that is refused at once, not left waiting.
    CompletionRequest r;
    r.prompt = std::vector<int32_t>(static_cast<size_t>((*engine)->max_context() + 1), 1);
    EXPECT_FALSE((*engine)->submit(r, [](const TokenEvent&) {}).has_value());
  }
  // An asked-for context stays while one sequence reaches it, and is an error naming it when none can.
  EngineOptions asked = eo;
  asked.max_context = 10 * eo.page_size;
  {
    auto engine = make_cuda_engine(cuda, asked, capped);
    ASSERT_TRUE(engine.has_value()) << engine.error().to_string();
    EXPECT_EQ((*engine)->max_context(), 10 * eo.page_size);
  }
  asked.max_context = 11 * eo.page_size;
  auto refused = make_cuda_engine(cuda, asked, capped);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), Errc::out_of_memory);
  EXPECT_NE(refused.error().message().find("--max-context"), std::string::npos) << refused.error().to_string();
  // --kv-blocks and a byte cap together are refused: two answers to one question.
  EngineOptions both = eo;
  both.kv_blocks = 64;
  auto twice = make_cuda_engine(cuda, both, capped);
  ASSERT_FALSE(twice.has_value());
  EXPECT_EQ(twice.error().code(), Errc::invalid_argument);
}

TEST(CudaEngine, BadRequestsAreRefusedAndTopologyNamesTheDevice) {
  FULGUR_SKIP_WITHOUT_GPU();
  auto model = test::make_test_model(3);
  auto engine = make_gpu_engine(model, {.dtype = "bf16"});
  ASSERT_NE(engine, nullptr);
  CompletionRequest r;
  r.prompt = {1, 2, 3};
  r.sampling.top_p = 0.f;
  auto id = engine->submit(r, [](const TokenEvent&) {});
  ASSERT_FALSE(id.has_value());
  EXPECT_EQ(id.error().code(), Errc::invalid_argument);
  r.sampling.top_p = 1.f;
  r.prompt = std::vector<int32_t>(static_cast<size_t>(engine->max_context() + 1), 1);
  EXPECT_FALSE(engine->submit(r, [](const TokenEvent&) {}).has_value());
  const auto topo = engine->topology();
  ASSERT_EQ(topo["actors"].size(), 2u);
  EXPECT_EQ(topo["actors"][1]["kind"], "cuda_model");
  EXPECT_EQ(topo["actors"][1]["layers"].size(), static_cast<size_t>(model->config().num_hidden_layers));
  // A long request cancelled while it runs ends with "cancelled" and frees its slot.
  test::EventLog log;
  r.prompt = {5, 6, 7};
  r.max_tokens = 200;
  auto slot = std::make_shared<std::atomic<RequestId>>(0);
  auto started = std::make_shared<std::atomic<bool>>(false);
  auto rid = engine->submit(r, [&log, slot, started](const TokenEvent& ev) {
    while (slot->load() == 0) std::this_thread::yield();
    started->store(true);
    log.callback_for(slot->load())(ev);
  });
  ASSERT_TRUE(rid.has_value());
  slot->store(*rid);
  while (!started->load()) std::this_thread::yield();
  engine->cancel(*rid);
  ASSERT_TRUE(log.wait_finished(1));
  const auto rec = log.get(*rid);
  EXPECT_EQ(rec.final_event.finish_reason, "cancelled");
  EXPECT_LT(rec.tokens.size(), 200u);
  test::expect_idle(*engine);
}

}  // namespace
}  // namespace fulgur
