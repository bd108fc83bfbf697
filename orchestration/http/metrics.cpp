#include "orchestration/http/metrics.h"

#include <cmath>
#include <cstdio>
#include <vector>

namespace fulgur::http {

namespace {

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, const char* type, const char* name, const char* help, int64_t value) {
  family(out, name, type, help);
  out += name;
  out += ' ';
  out += std::to_string(value);
  out += '\n';
}

void histogram(std::string& out, const char* name, const char* help, const std::vector<double>& bounds,
               const std::vector<uint64_t>& buckets, double sum, uint64_t count) {
  family(out, name, "histogram", help);
  const std::string base(name);
  if (buckets.size() == bounds.size() + 1) {
    for (size_t i = 0; i < bounds.size(); ++i) {
      out += base + "_bucket{le=\"" + number(bounds[i]) + "\"} " + std::to_string(buckets[i]) + "\n";
    }
  }
  out += base + "_bucket{le=\"+Inf\"} " + std::to_string(count) + "\n";
  out += base + "_sum " + number(sum) + "\n";
  out += base + "_count " + std::to_string(count) + "\n";
}

}  // namespace

std::string format_prometheus(const EngineStats& s, const GatewayCounters& g) {
  std::string out;
  sample(out, "gauge", "fulgur_queue_length", "Requests admitted and waiting for a state slot or KV blocks.", s.queued);
  sample(out, "gauge", "fulgur_running_sequences", "Sequences in the running batch.", s.running);
  sample(out, "gauge", "fulgur_state_slots_used", "Lightning state slots in use.", s.state_slots_used);
  sample(out, "gauge", "fulgur_state_slots_total", "Lightning state slots in all.", s.state_slots_total);
  sample(out, "gauge", "fulgur_kv_blocks_used", "Softmax KV-cache blocks in use.", s.kv_blocks_used);
  sample(out, "gauge", "fulgur_kv_blocks_total", "Softmax KV-cache blocks in all.", s.kv_blocks_total);
  sample(out, "counter", "fulgur_tokens_generated_total", "Tokens generated since start.", s.tokens_generated_total);
  sample(out, "counter", "fulgur_requests_total", "Generation requests submitted to the engine.", s.requests_total);
  sample(out, "counter", "fulgur_requests_rejected_total", "Generation requests refused by admission control.",
         s.requests_rejected_total);
  histogram(out, "fulgur_time_to_first_token_seconds", "Time from submission to the first generated token.",
            s.bucket_bounds, s.ttft_buckets, s.ttft_sum, s.ttft_count);
  histogram(out, "fulgur_inter_token_latency_seconds", "Time between consecutive generated tokens of a sequence.",
            s.bucket_bounds, s.itl_buckets, s.itl_sum, s.itl_count);
  sample(out, "gauge", "fulgur_http_connections_open", "Open HTTP connections.", g.connections_open);
  sample(out, "counter", "fulgur_http_requests_total", "HTTP requests read.", g.http_requests_total);
  sample(out, "counter", "fulgur_http_errors_total", "HTTP responses with a 4xx or 5xx status.", g.http_errors_total);
  sample(out, "counter", "fulgur_http_client_disconnects_total",
         "Generations cancelled because the client went away.", g.client_disconnects_total);
  return out;
}

}  // namespace fulgur::http
