// Shared helpers of the actor-runtime tests: a tiny model and a collector of token events.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <random>
#include <vector>

#include "actors/layers/model.h"
#include "orchestration/init_model.h"
#include "orchestration/generate.h"
#include "orchestration/serving/actor_engine.h"
#include "orchestration/serving/engine.h"
#include "test_models.h"
#include "test_util.h"

namespace fulgur::test {


// Records every event per request; checks the "exactly one final event, nothing after" contract.
class EventLog {
 public:
  struct Record {
    std::vector<int32_t> tokens;
    int finals = 0;
    int events_after_final = 0;
    TokenEvent final_event;
  };

  TokenCallback callback_for(RequestId id, std::function<void(const TokenEvent&, size_t)> extra = {}) {
    return [this, id, extra](const TokenEvent& ev) {
      size_t count = 0;
      {
        std::lock_guard<std::mutex> lock(mu_);
        Record& r = records_[id];
        if (r.finals > 0) ++r.events_after_final;
        if (ev.finished) {
          ++r.finals;
          r.final_event = ev;
          ++finished_;
        } else {
          r.tokens.push_back(ev.token);
        }
        count = r.tokens.size();
      }
      cv_.notify_all();
      if (extra) extra(ev, count);
    };
  }

  // Registers an id before submit (so a request rejected later can be dropped from the count).
  bool wait_finished(size_t n, std::chrono::seconds timeout = std::chrono::seconds(60)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return finished_ >= n; });
  }

  Record get(RequestId id) {
    std::lock_guard<std::mutex> lock(mu_);
    return records_[id];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<RequestId, Record> records_;
  size_t finished_ = 0;
};

// ---- engine helpers shared by the in-process and multi-process engine tests --------------

inline std::vector<int32_t> reference_tokens(const Model& model, const CompletionRequest& r) {
  GenerateOptions opt;
  opt.max_tokens = r.max_tokens;
  opt.sampling = r.sampling;
  opt.stop_tokens = r.stop_tokens;
  auto out = generate(model, r.prompt, opt);
  EXPECT_TRUE(out.has_value()) << (out ? "" : out.error().to_string());
  return out ? out->tokens : std::vector<int32_t>{};
}

inline EngineOptions small_options() {
  EngineOptions o;
  o.max_running = 8;
  o.max_queued = 64;
  o.state_slots = 8;
  o.page_size = 8;
  o.step_token_budget = 24;  // forces mixed steps and chunked prefill
  o.prefill_chunk = 7;
  return o;
}

inline std::unique_ptr<ActorEngine> make_engine(std::shared_ptr<const Model> model, EngineOptions o = small_options(),
                                         ActorEngineOptions ao = {}) {
  auto e = make_actor_engine(std::move(model), o, ao);
  EXPECT_TRUE(e.has_value()) << (e ? "" : e.error().to_string());
  return std::move(e).value();
}

inline void expect_idle(const Engine& engine) {
  const EngineStats s = engine.stats();
  EXPECT_EQ(s.queued, 0);
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.state_slots_used, 0);
  EXPECT_EQ(s.kv_blocks_used, 0);
}

inline std::vector<CompletionRequest> mixed_requests(const ModelConfig& cfg) {
  std::vector<CompletionRequest> reqs;
  const std::vector<int64_t> lens = {1, 5, 17, 30, 9};
  for (size_t i = 0; i < lens.size(); ++i) {
    CompletionRequest r;
    r.prompt = test::random_prompt(lens[i], cfg.vocab_size, 50 + i);
    r.max_tokens = 6 + static_cast<int64_t>(i);
    reqs.push_back(r);
  }
  return reqs;
}

// Runs all requests concurrently; returns the generated tokens of each.
inline std::vector<std::vector<int32_t>> run_all(Engine& engine, const std::vector<CompletionRequest>& reqs) {
  EventLog log;
  std::vector<RequestId> ids;
  for (const auto& r : reqs) {
    // The id is known only after submit; route events through a slot filled before any event.
    auto slot = std::make_shared<std::atomic<RequestId>>(0);
    auto id = engine.submit(r, [&log, slot, cb = std::shared_ptr<TokenCallback>()](const TokenEvent& ev) mutable {
      while (slot->load() == 0) std::this_thread::yield();
      log.callback_for(slot->load())(ev);
    });
    EXPECT_TRUE(id.has_value()) << (id ? "" : id.error().to_string());
    slot->store(*id);
    ids.push_back(*id);
  }
  EXPECT_TRUE(log.wait_finished(ids.size()));
  std::vector<std::vector<int32_t>> out;
  for (RequestId id : ids) {
    auto rec = log.get(id);
    EXPECT_EQ(rec.finals, 1);
    EXPECT_EQ(rec.events_after_final, 0);
    EXPECT_EQ(rec.final_event.completion_tokens, static_cast<int64_t>(rec.tokens.size()));
    EXPECT_TRUE(rec.final_event.finish_reason == "length" || rec.final_event.finish_reason == "stop")
        << rec.final_event.finish_reason << " " << rec.final_event.error.to_string();
    out.push_back(rec.tokens);
  }
  return out;
}

}  // namespace fulgur::test
