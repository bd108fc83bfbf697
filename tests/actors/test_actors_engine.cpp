// The actor engine end to end: it equals the plain model (tokens and logits), placement does
// not change results, continuous batching with random arrivals and cancellations cleans up,
// admission control answers overloaded / invalid_argument, dispatch is pipelined, and a step that
// fails fails its requests with a final event instead of hanging them.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "orchestration/generate.h"
#include "orchestration/serving/actor_engine.h"
#include "orchestration/serving/cuda_engine.h"
#include "test_actors_util.h"

namespace fulgur {
namespace {

using test::EventLog;

using test::expect_idle;
using test::make_engine;
using test::mixed_requests;
using test::reference_tokens;
using test::run_all;
using test::small_options;

TEST(ActorEngine, ConcurrentGreedyRequestsEqualGenerateAlone) {
  auto model = test::make_test_model(7);
  auto engine = make_engine(model);
  ASSERT_TRUE(engine->ready());
  auto reqs = mixed_requests(model->config());
  reqs[2].sampling = {.temperature = 0.9f, .top_k = 20, .top_p = 0.95f, .seed = 1234};  // seeded sampling too
  reqs[3].stop_tokens = {reference_tokens(*model, reqs[3]).at(2)};                        // stops early
  const auto got = run_all(*engine, reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(got[i], reference_tokens(*model, reqs[i])) << "request " << i;
  }
  EXPECT_EQ(got[3].size(), 3u);
  expect_idle(*engine);
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.requests_total, 5);
  EXPECT_EQ(s.ttft_count, 5u);
  EXPECT_GT(s.itl_count, 0u);
  EXPECT_EQ(s.ttft_buckets.size(), s.bucket_bounds.size() + 1);
  EXPECT_GT(s.tokens_generated_total, 0);
}

TEST(ActorEngine, HeadLogitsOfAPrefillMatchThePlainModel) {
  auto model = test::make_test_model(8);
  std::mutex mu;
  std::map<RequestId, std::vector<float>> first_logits;
  ActorEngineOptions ao;
  ao.logits_hook = [&](RequestId id, int64_t idx, const std::vector<float>& l) {
    std::lock_guard<std::mutex> lock(mu);
    if (idx == 0) first_logits[id] = l;
  };
  auto engine = make_engine(model, small_options(), ao);
  auto reqs = mixed_requests(model->config());
  for (auto& r : reqs) r.max_tokens = 1;
  EventLog log;
  std::vector<RequestId> ids;
  for (const auto& r : reqs) {
    // A fresh engine hands out ids 1, 2, ...
    auto id = engine->submit(r, log.callback_for(ids.size() + 1));
    ASSERT_TRUE(id.has_value());
    ids.push_back(*id);
  }
  ASSERT_TRUE(log.wait_finished(ids.size()));
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(ids[i], i + 1);
    SingleSequence seq(*model, static_cast<int64_t>(reqs[i].prompt.size()));
    Tensor want;
    ASSERT_TRUE(seq.step(reqs[i].prompt, false, want).is_ok());
    std::lock_guard<std::mutex> lock(mu);
    const auto& got = first_logits[ids[i]];
    ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel());
    double max_diff = 0;
    for (int64_t v = 0; v < want.numel(); ++v) {
      max_diff = std::max(max_diff, std::abs(static_cast<double>(got[v]) - want.data<float>()[v]));
    }
    EXPECT_LE(max_diff, 1e-5) << "request " << i << " prompt length " << reqs[i].prompt.size();
  }
}

TEST(ActorEngine, PlacementDoesNotChangeTokens) {
  auto model = test::make_test_model(9);
  const int64_t E = model->config().num_local_experts;
  auto reqs = mixed_requests(model->config());
  std::vector<std::vector<int32_t>> want;
  for (const auto& r : reqs) want.push_back(reference_tokens(*model, r));
  serving::Placement replicated = serving::Placement::one_per_expert(E);
  for (int32_t e = 0; e < E; ++e) replicated.expert_actors.push_back({"local", {e}});  // every expert twice
  replicated.group_tokens = 2;
  serving::Placement all_in_one = serving::Placement::grouped(E, 1);
  all_in_one.group_tokens = 3;
  serving::Placement pairs = serving::Placement::grouped(E, 2);
  pairs.max_inflight_groups = 1;  // no pipelining: still the same result
  for (const auto& placement : {serving::Placement{}, all_in_one, pairs, replicated}) {
    ActorEngineOptions ao;
    ao.placement = placement;
    auto engine = make_engine(model, small_options(), ao);
    EXPECT_EQ(run_all(*engine, reqs), want) << to_json(placement).dump();
    expect_idle(*engine);
    const auto topo = engine->topology();
    int64_t pending = 0, computed = 0;
    for (const auto& a : topo["actors"]) {
      if (a["kind"] != "expert") continue;
      pending += a["pending_tokens"].get<int64_t>();
      computed += a["tokens_computed"].get<int64_t>();
    }
    EXPECT_EQ(pending, 0);
    EXPECT_GT(computed, 0);
    if (placement.expert_actors.size() == static_cast<size_t>(2 * E)) {
      // Load-based replica choice spreads an expert's groups over both of its replicas.
      int replicas_used_both = 0;
      for (int32_t e = 0; e < E; ++e) {
        const auto& a0 = topo["actors"];
        int64_t t0 = 0, t1 = 0;
        for (const auto& a : a0) {
          if (a["kind"] != "expert") continue;
          if (a["index"].get<int64_t>() == e) t0 = a["tokens_computed"];
          if (a["index"].get<int64_t>() == e + E) t1 = a["tokens_computed"];
        }
        if (t0 > 0 && t1 > 0) ++replicas_used_both;
      }
      EXPECT_GT(replicas_used_both, 0);
    }
  }
}

TEST(ActorEngine, ContinuousBatchingWithRandomArrivalsAndCancellations) {
  auto model = test::make_test_model(10);
  const ModelConfig& cfg = model->config();
  EngineOptions o = small_options();
  o.state_slots = 4;  // fewer slots than requests: some wait in the queue
  o.max_running = 4;
  auto engine = make_engine(model, o);
  std::mt19937_64 rng(2024);
  constexpr int kRequests = 24;
  struct Plan {
    CompletionRequest req;
    int cancel_after_tokens = -1;  // cancel from the callback after this many tokens
    int cancel_after_ms = -1;      // cancel from the test thread after submitting
  };
  std::vector<Plan> plans(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    Plan& p = plans[i];
    p.req.prompt = test::random_prompt(1 + rng() % 40, cfg.vocab_size, 1000 + i);
    p.req.max_tokens = 1 + rng() % 12;
    if (i % 3 == 0) p.req.sampling = {.temperature = 0.8f, .top_p = 0.9f, .seed = static_cast<uint64_t>(i)};
    if (i % 5 == 1) p.cancel_after_tokens = static_cast<int>(rng() % 4);
    if (i % 7 == 2) p.cancel_after_ms = static_cast<int>(rng() % 20);
  }
  EventLog log;
  std::vector<RequestId> ids(kRequests);
  std::vector<std::thread> cancellers;
  Engine* eng = engine.get();
  for (int i = 0; i < kRequests; ++i) {
    auto slot = std::make_shared<std::atomic<RequestId>>(0);
    const int cancel_after = plans[i].cancel_after_tokens;
    auto id = engine->submit(plans[i].req, [&log, slot, cancel_after, eng](const TokenEvent& ev) {
      while (slot->load() == 0) std::this_thread::yield();
      const RequestId rid = slot->load();
      log.callback_for(rid, [&](const TokenEvent& e, size_t count) {
        if (!e.finished && cancel_after >= 0 && static_cast<int>(count) == cancel_after + 1) eng->cancel(rid);
      })(ev);
    });
    ASSERT_TRUE(id.has_value()) << id.error().to_string();
    slot->store(*id);
    ids[i] = *id;
    if (plans[i].cancel_after_ms >= 0) {
      cancellers.emplace_back([eng, rid = *id, ms = plans[i].cancel_after_ms] {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        eng->cancel(rid);
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 8));
  }
  for (auto& t : cancellers) t.join();
  ASSERT_TRUE(log.wait_finished(kRequests));
  int cancelled = 0;
  for (int i = 0; i < kRequests; ++i) {
    const auto rec = log.get(ids[i]);
    EXPECT_EQ(rec.finals, 1) << i;
    EXPECT_EQ(rec.events_after_final, 0) << i;
    const std::string& reason = rec.final_event.finish_reason;
    EXPECT_TRUE(reason == "length" || reason == "stop" || reason == "cancelled") << i << ": " << reason << " "
                                                                                   << rec.final_event.error.to_string();
    EXPECT_EQ(rec.final_event.completion_tokens, static_cast<int64_t>(rec.tokens.size()));
    // Every token stream, cancelled or not, is a prefix of generate()'s for the same seed.
    const auto want = reference_tokens(*model, plans[i].req);
    ASSERT_LE(rec.tokens.size(), want.size()) << i;
    EXPECT_TRUE(std::equal(rec.tokens.begin(), rec.tokens.end(), want.begin())) << "request " << i;
    if (reason == "cancelled") {
      ++cancelled;
    } else {
      EXPECT_EQ(rec.tokens.size(), want.size()) << i;
    }
  }
  EXPECT_GT(cancelled, 0);
  expect_idle(*engine);
}

TEST(ActorEngine, AdmissionControlAndBadRequests) {
  auto model = test::make_test_model(11);
  EngineOptions o = small_options();
  o.state_slots = 1;
  o.max_running = 1;
  o.max_queued = 2;
  o.max_context = 64;
  auto engine = make_engine(model, o);
  EXPECT_EQ(engine->max_context(), 64);
  EventLog log;
  CompletionRequest longer;
  longer.prompt = test::random_prompt(10, model->config().vocab_size, 1);
  longer.max_tokens = 50;
  std::vector<RequestId> ids;
  for (int i = 0; i < 3; ++i) {
    const RequestId expect_id = static_cast<RequestId>(i + 1);
    auto id = engine->submit(longer, log.callback_for(expect_id));
    ASSERT_TRUE(id.has_value()) << id.error().to_string();
    ASSERT_EQ(*id, expect_id);
    ids.push_back(*id);
  }
  // One running, two waiting: the queue is full.
  auto over = engine->submit(longer, log.callback_for(99));
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code(), Errc::overloaded);
  EXPECT_EQ(engine->stats().requests_rejected_total, 1);
  EXPECT_EQ(engine->stats().queued, 2);
  // Bad requests: invalid_argument, whatever the load.
  auto expect_invalid = [&](CompletionRequest r, const char* what) {
    auto id = engine->submit(std::move(r), [](const TokenEvent&) {});
    ASSERT_FALSE(id.has_value()) << what;
    EXPECT_EQ(id.error().code(), Errc::invalid_argument) << what << ": " << id.error().to_string();
  };
  CompletionRequest r = longer;
  r.prompt.clear();
  expect_invalid(r, "empty prompt");
  r = longer;
  r.prompt = test::random_prompt(65, model->config().vocab_size, 2);
  expect_invalid(r, "prompt longer than max_context");
  r = longer;
  r.prompt[3] = 5000;
  expect_invalid(r, "token outside the vocabulary");
  r = longer;
  r.max_tokens = -1;
  expect_invalid(r, "negative max_tokens");
  r = longer;
  r.sampling.temperature = -1;
  expect_invalid(r, "negative temperature");
  r = longer;
  r.sampling.top_p = 0;
  expect_invalid(r, "top_p 0");
  r = longer;
  r.sampling.top_p = std::nanf("");
  expect_invalid(r, "top_p NaN");
  r = longer;
  r.sampling.top_k = -2;
  expect_invalid(r, "negative top_k");
  // Cancelling frees everything; the queued ones get "cancelled" too.
  for (RequestId id : ids) engine->cancel(id);
  ASSERT_TRUE(log.wait_finished(3));
  for (RequestId id : ids) {
    auto rec = log.get(id);
    EXPECT_EQ(rec.finals, 1);
    EXPECT_TRUE(rec.final_event.finish_reason == "cancelled" || rec.final_event.finish_reason == "length");
  }
  EXPECT_EQ(log.get(ids[2]).final_event.finish_reason, "cancelled");
  EXPECT_EQ(log.get(ids[2]).tokens.size(), 0u);
  expect_idle(*engine);
  // A zero-token request finishes at once.
  r = longer;
  r.max_tokens = 0;
  auto z = engine->submit(r, log.callback_for(4));
  ASSERT_TRUE(z.has_value());
  ASSERT_TRUE(log.wait_finished(4));
  EXPECT_EQ(log.get(4).final_event.finish_reason, "length");
}

TEST(ActorEngine, TokenGroupDispatchIsPipelined) {
  auto model = test::make_test_model(12);
  ActorEngineOptions ao;
  ao.placement = serving::Placement::grouped(model->config().num_local_experts, 2);
  ao.placement.group_tokens = 4;
  ao.placement.max_inflight_groups = 3;
  EngineOptions o = small_options();
  o.step_token_budget = 512;  // the whole prompt in one step
  o.prefill_chunk = 256;
  auto engine = make_engine(model, o, ao);
  CompletionRequest r;
  r.prompt = test::random_prompt(20, model->config().vocab_size, 3);
  r.max_tokens = 1;
  EventLog log;
  ASSERT_TRUE(engine->submit(r, log.callback_for(1)).has_value());
  ASSERT_TRUE(log.wait_finished(1));
  for (int64_t layer = 0; layer < model->config().num_hidden_layers; ++layer) {
    const auto trace = engine->dispatch_trace(layer);
    ASSERT_GE(trace.size(), 4u) << "layer " << layer;  // 20 tokens * top-2 in groups of <= 4
    bool overlapped = false;
    int64_t tokens = 0;
    for (size_t g = 0; g < trace.size(); ++g) {
      const auto& t = trace[g];
      tokens += t.num_tokens;
      EXPECT_LE(t.send_ns, t.compute_begin_ns);
      EXPECT_LE(t.compute_begin_ns, t.compute_end_ns);
      EXPECT_LE(t.compute_end_ns, t.receive_ns);
      EXPECT_LE(t.num_tokens, 4);
      if (g + 1 < trace.size() && trace[g + 1].send_ns < t.receive_ns) overlapped = true;
    }
    EXPECT_EQ(tokens, 20 * model->config().num_experts_per_tok);
    EXPECT_TRUE(overlapped) << "group g+1 should be sent before group g's result is back";
  }
}

TEST(ActorEngine, AFailingActorFailsItsRequestsWithAFinalEvent) {
  // A NaN in lm_head makes the head's sampler fail every step: the requests must end with a final
  // "error" event carrying the head's Status, and give back their slots and pages.
  const ModelConfig cfg = test::actor_test_config();
  ModelWeights w = random_model_weights(cfg, 13);
  w.lm_head.data<float>()[5] = std::nanf("");
  auto created = Model::create(cfg, std::move(w));
  ASSERT_TRUE(created.has_value());
  std::shared_ptr<const Model> model(std::move(created).value());
  auto engine = make_engine(model);
  EventLog log;
  CompletionRequest r;
  r.prompt = test::random_prompt(12, cfg.vocab_size, 4);
  r.max_tokens = 4;
  for (RequestId i = 1; i <= 3; ++i) ASSERT_TRUE(engine->submit(r, log.callback_for(i)).has_value());
  ASSERT_TRUE(log.wait_finished(3));
  for (RequestId i = 1; i <= 3; ++i) {
    const auto rec = log.get(i);
    EXPECT_EQ(rec.finals, 1);
    EXPECT_EQ(rec.final_event.finish_reason, "error");
    EXPECT_FALSE(rec.final_event.error.is_ok());
    EXPECT_NE(rec.final_event.error.message().find("sampling"), std::string::npos) << rec.final_event.error.to_string();
  }
  expect_idle(*engine);
}

TEST(ActorEngine, AStepTimeoutFailsItsRequestsInsteadOfHanging) {
  auto model = test::make_test_model(15);
  ActorEngineOptions ao;
  ao.step_timeout_ms = 1;  // far shorter than a 200-token prefill through 4 layers
  EngineOptions o = small_options();
  o.step_token_budget = 512;
  o.prefill_chunk = 256;
  auto engine = make_engine(model, o, ao);
  EventLog log;
  CompletionRequest r;
  r.prompt = test::random_prompt(200, model->config().vocab_size, 4);
  r.max_tokens = 2;
  ASSERT_TRUE(engine->submit(r, log.callback_for(1)).has_value());
  ASSERT_TRUE(log.wait_finished(1));
  const auto rec = log.get(1);
  EXPECT_EQ(rec.final_event.finish_reason, "error");
  EXPECT_EQ(rec.final_event.error.code(), Errc::unavailable) << rec.final_event.error.to_string();
  expect_idle(*engine);
}

TEST(ActorEngine, TopologyNamesEveryActor) {
  auto model = test::make_test_model(14);
  auto engine = make_engine(model);
  const auto topo = engine->topology();
  std::map<std::string, int> kinds;
  for (const auto& a : topo["actors"]) kinds[a["kind"].get<std::string>()]++;
  const int L = static_cast<int>(model->config().num_hidden_layers);
  EXPECT_EQ(kinds["attention"], L);
  EXPECT_EQ(kinds["router"], L);
  EXPECT_EQ(kinds["expert"], model->config().num_local_experts);
  EXPECT_EQ(kinds["head"], 1);
  EXPECT_EQ(kinds["embed"], 1);
  EXPECT_EQ(kinds["scheduler"], 1);
  EXPECT_EQ(topo["nodes"].size(), 1u);
  EXPECT_EQ(topo["expert_load"].size(), static_cast<size_t>(model->config().num_local_experts));
  EXPECT_GT(engine->hop_round_trip_seconds(10), 0.0);
  auto plain = make_local_engine(model, small_options());
  ASSERT_TRUE(plain.has_value());
  EXPECT_TRUE((*plain)->ready());
}

// The CUDA engine's refusals need no GPU: a build without the backend says so, a machine without the
// device or a bad dtype gets an error naming it, never a crash.
TEST(CudaEngineOptions, BadDeviceOrDtypeIsAnErrorNotACrash) {
  auto model = test::make_test_model(3);
  auto e = make_cuda_engine(model, small_options(), {.device = 977});
  ASSERT_FALSE(e.has_value());
  EXPECT_FALSE(e.error().message().empty());
  auto d = make_cuda_engine(model, small_options(), {.dtype = "fp8"});
  ASSERT_FALSE(d.has_value());
#ifndef FULGUR_HAVE_CUDA
  EXPECT_EQ(d.error().code(), Errc::unsupported);
#endif
}

}  // namespace
}  // namespace fulgur
