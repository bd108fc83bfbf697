// Engine: what the HTTP gateway (and any other front end) needs from the serving runtime.
//
// The actor runtime (scheduler actor + attention/router/expert actors) implements it; the
// gateway only sees this interface, so it can be tested against a test double and served by
// any placement. All methods are thread-safe; callbacks run on runtime threads and must not
// block (the gateway hands events to its own I/O executor).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "devices/status.h"
#include "kernels/sampling.h"

namespace fulgur {

using RequestId = uint64_t;

struct CompletionRequest {
  std::vector<int32_t> prompt;       // token ids, non-empty
  int64_t max_tokens = 16;           // >= 0
  kernels::SamplingParams sampling;  // seed set by the caller (step is filled per token)
  std::vector<int32_t> stop_tokens;  // generation ends after emitting one (it is reported)
};

// One event per generated token, then exactly one final event (finished = true) — also after
// an error or a cancellation; no event follows the final one.
struct TokenEvent {
  bool finished = false;
  int32_t token = -1;                // valid when !finished
  std::string finish_reason;         // final: "stop" | "length" | "cancelled" | "error"
  Status error;                      // final with finish_reason "error": why
  int64_t prompt_tokens = 0;         // final: usage
  int64_t completion_tokens = 0;     // final: usage
};

using TokenCallback = std::function<void(const TokenEvent&)>;

struct EngineStats {
  int64_t queued = 0;                 // admitted, waiting for a state slot / KV blocks
  int64_t running = 0;                // sequences in the running batch
  int64_t state_slots_used = 0, state_slots_total = 0;
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  int64_t tokens_generated_total = 0;
  int64_t requests_total = 0, requests_rejected_total = 0;
  // Latency histograms in seconds: Prometheus-style cumulative buckets.
  std::vector<double> bucket_bounds;  // upper bounds, ascending; +Inf implied
  std::vector<uint64_t> ttft_buckets, itl_buckets;  // [bucket_bounds.size() + 1]
  double ttft_sum = 0, itl_sum = 0;
  uint64_t ttft_count = 0, itl_count = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;
  // Errc::overloaded when the bounded wait queue is full (HTTP 429), Errc::invalid_argument for
  // a bad request (prompt longer than the context, bad sampling parameters, ...).
  virtual Expected<RequestId> submit(CompletionRequest request, TokenCallback on_event) = 0;
  // Frees everything the request holds; its final event has finish_reason "cancelled".
  // Unknown or finished ids are ignored.
  virtual void cancel(RequestId id) = 0;
  virtual bool ready() const = 0;         // false while loading (GET /health -> 503)
  virtual EngineStats stats() const = 0;
  virtual nlohmann::json topology() const = 0;  // GET /v1/admin/topology
  virtual int64_t max_context() const = 0;      // longest prompt + completion accepted
};

}  // namespace fulgur
