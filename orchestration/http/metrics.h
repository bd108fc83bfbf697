// GET /metrics: EngineStats (and the gateway's own counters) in Prometheus text format 0.0.4.
#pragma once

#include <cstdint>
#include <string>

#include "orchestration/serving/engine.h"

namespace fulgur::http {

// Counted by the server itself.
struct GatewayCounters {
  int64_t connections_open = 0;
  int64_t http_requests_total = 0;    // requests read off the wire (any route)
  int64_t http_errors_total = 0;      // answered with a 4xx/5xx status
  int64_t client_disconnects_total = 0;  // generations cancelled because the client went away
};

// Every family has # HELP and # TYPE lines. Gauges: fulgur_queue_length,
// fulgur_running_sequences, fulgur_state_slots_used/total, fulgur_kv_blocks_used/total,
// fulgur_http_connections_open. Counters: fulgur_tokens_generated_total, fulgur_requests_total,
// fulgur_requests_rejected_total, fulgur_http_requests_total, fulgur_http_errors_total,
// fulgur_http_client_disconnects_total. Histograms (cumulative _bucket{le} series ending in
// le="+Inf", _sum, _count): fulgur_time_to_first_token_seconds,
// fulgur_inter_token_latency_seconds. A histogram whose bucket vector does not match
// bucket_bounds is written with the +Inf bucket only.
std::string format_prometheus(const EngineStats& stats, const GatewayCounters& gateway);

}  // namespace fulgur::http
