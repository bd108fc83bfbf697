// Shared helpers of the actor-runtime tests: a tiny model and a collector of token events.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "actors/layers/model.h"
#include "orchestration/init_model.h"
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

}  // namespace fulgur::test
