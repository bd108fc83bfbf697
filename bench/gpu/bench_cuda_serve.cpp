// Serving on one GPU (orchestration/serving/cuda_engine.h) against the bare model step it is built on, at
// MiniMax-Text-01's shapes (a slice of its layers, random weights made on the device; minimax_config.h).
//
// For each concurrency N: N requests submitted at once (random prompts of P tokens, G generated tokens
// each, temperature 0.8 / top-p 0.95 drawn on the device), through the scheduler actor and the CUDA model
// actor, as `fulgur serve --device cuda` runs them (no HTTP). Reported: generated tokens/s over the
// whole run, mean time to first token, mean inter-token latency (ITL) once every request decodes, and
// the same model's bare decode step at batch N and context P (CudaModel::forward_sample in a loop, no
// actors): ITL / bare step is what the runtime adds per token.
//
//   bench_cuda_serve [--layers 0,0,0,0,0,0,0,1] [--prompt 512] [--generate 64] [--json FILE]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "actors/layers/cuda_model.h"
#include "minimax_config.h"
#include "orchestration/serving/cuda_engine.h"

using namespace fulgur;
using clock_type = std::chrono::steady_clock;

namespace {

void check(const Status& st, const char* what) {
  if (!st.is_ok()) {
    std::fprintf(stderr, "%s: %s\n", what, st.to_string().c_str());
    std::exit(1);
  }
}

const kernels::SamplingParams kSampling{.temperature = 0.8f, .top_p = 0.95f};

// The bare decode step at batch n after a prompt of p tokens each: median ms of `steps` steps.
double bare_step_ms(CudaModel& model, int64_t n, int64_t p, int steps) {
  const int64_t page = 16, pps = (p + steps + 2 + page - 1) / page, V = model.config().vocab_size;
  check(model.allocate_state(n, n * pps, page), "allocate_state");
  std::vector<int32_t> prompt(n * p);
  for (int64_t i = 0; i < n * p; ++i) prompt[i] = static_cast<int32_t>((i * 104729) % V);
  Tensor logits;
  check(model.forward(prompt, uniform_batch_layout(n, 0, p, pps, page), {}, logits), "bare prefill");
  std::vector<int64_t> rows(n);
  std::vector<kernels::SamplingParams> sampling(n, kSampling);
  for (int64_t b = 0; b < n; ++b) rows[b] = b, sampling[b].seed = b;
  std::vector<int32_t> next(n, 17);
  std::vector<double> t;
  for (int s = 0; s < steps + 1; ++s) {
    for (auto& sp : sampling) sp.step = s;
    std::vector<int32_t> chosen;
    const auto a = clock_type::now();
    check(model.forward_sample(next, uniform_batch_layout(n, p + s, 1, pps, page), rows, sampling, chosen), "bare step");
    if (s > 0) t.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - a).count());
    next = chosen;
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Served {
  double seconds = 0, tokens_per_s = 0, ttft_ms = 0, itl_ms = 0;
  int64_t tokens = 0, failed = 0;
};

Served serve(std::shared_ptr<CudaModel> model, int64_t n, int64_t p, int64_t g) {
  EngineOptions eo;
  eo.max_running = n;
  eo.state_slots = n;
  eo.max_queued = n;
  eo.max_context = p + g;  // KV pages for this, not the model's 1M positions
  eo.step_token_budget = 2048;
  eo.prefill_chunk = 512;
  auto engine = make_cuda_engine(model, eo, CudaEngineOptions{});
  if (!engine) check(engine.error(), "make_cuda_engine");
  std::mutex mu;
  std::condition_variable cv;
  int64_t finished = 0;
  struct Times {
    clock_type::time_point submit;
    std::vector<clock_type::time_point> tokens;
  };
  std::vector<Times> times(n);
  Served out;
  const int64_t V = model->config().vocab_size;
  const auto t0 = clock_type::now();
  for (int64_t r = 0; r < n; ++r) {
    CompletionRequest req;
    req.prompt.resize(p);
    for (int64_t i = 0; i < p; ++i) req.prompt[i] = static_cast<int32_t>(((r + 1) * 7919 + i * 104729) % V);
    req.max_tokens = g;
    req.sampling = kSampling;
    req.sampling.seed = r;
    times[r].submit = clock_type::now();
    auto id = (*engine)->submit(req, [&, r](const TokenEvent& ev) {
      std::lock_guard<std::mutex> lock(mu);
      const auto now = clock_type::now();
      if (ev.finished) {
        if (ev.finish_reason == "error") ++out.failed;
        ++finished;
        cv.notify_all();
        return;
      }
      times[r].tokens.push_back(now);
    });
    if (!id) check(id.error(), "submit");
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finished == n; });
  }
  out.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  // ITL over the steady part: gaps between tokens that both came after every request's first token
  // (before that, decode steps share the GPU with other requests' prefill chunks).
  clock_type::time_point all_started = t0;
  for (const Times& t : times) {
    if (!t.tokens.empty()) all_started = std::max(all_started, t.tokens.front());
  }
  double ttft = 0, itl = 0;
  int64_t itl_count = 0;
  for (const Times& t : times) {
    out.tokens += static_cast<int64_t>(t.tokens.size());
    if (!t.tokens.empty()) ttft += std::chrono::duration<double, std::milli>(t.tokens.front() - t.submit).count();
    for (size_t i = 1; i < t.tokens.size(); ++i) {
      if (t.tokens[i - 1] < all_started) continue;
      itl += std::chrono::duration<double, std::milli>(t.tokens[i] - t.tokens[i - 1]).count();
      ++itl_count;
    }
  }
  out.tokens_per_s = static_cast<double>(out.tokens) / out.seconds;
  out.ttft_ms = ttft / static_cast<double>(n);
  out.itl_ms = itl_count ? itl / static_cast<double>(itl_count) : 0;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string layers = "0,0,0,0,0,0,0,1";
  int64_t p = 512, g = 64;
  const char* json_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--layers") && i + 1 < argc) layers = argv[++i];
    else if (!std::strcmp(argv[i], "--prompt") && i + 1 < argc) p = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--generate") && i + 1 < argc) g = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
  }
  auto cfg = parse_model_config(minimax_config_json(layers), "bench config");
  if (!cfg) check(cfg.error(), "config");
  auto made = CudaModel::create_random(*cfg, 0, {}, 1234);
  if (!made) check(made.error(), "create_random");
  std::shared_ptr<CudaModel> model(std::move(*made));
  std::printf("serving on one GPU: layers [%s], bf16, %.1f GB of weights; prompts of %lld tokens, %lld generated\n",
              layers.c_str(), model->weight_bytes() / 1e9, (long long)p, (long long)g);
  std::printf("%6s %10s %12s %10s %10s %14s %12s\n", "N", "wall s", "tokens/s", "TTFT ms", "ITL ms", "bare step ms",
              "ITL / bare");
  std::string json = "{\n  \"layers\": \"" + layers + "\", \"prompt\": " + std::to_string(p) +
                     ", \"generate\": " + std::to_string(g) + ", \"weight_GB\": " +
                     std::to_string(model->weight_bytes() / 1e9) + ",\n  \"runs\": [\n";
  bool first = true;
  for (int64_t n : {1, 8, 32, 64}) {
    const double bare = bare_step_ms(*model, n, p, 8);
    const Served s = serve(model, n, p, g);
    std::printf("%6lld %10.2f %12.1f %10.1f %10.2f %14.2f %12.2f%s\n", (long long)n, s.seconds, s.tokens_per_s, s.ttft_ms,
                s.itl_ms, bare, s.itl_ms / bare, s.failed ? "  (requests failed)" : "");
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "%s    {\"concurrency\": %lld, \"wall_s\": %.3f, \"tokens\": %lld, \"tokens_per_s\": %.1f, "
                  "\"ttft_ms\": %.2f, \"itl_ms\": %.3f, \"bare_step_ms\": %.3f, \"itl_over_bare\": %.3f, "
                  "\"failed\": %lld}",
                  first ? "" : ",\n", (long long)n, s.seconds, (long long)s.tokens, s.tokens_per_s, s.ttft_ms, s.itl_ms,
                  bare, s.itl_ms / bare, (long long)s.failed);
    json += buf;
    first = false;
  }
  json += "\n  ]\n}\n";
  if (json_path != nullptr) {
    if (FILE* f = std::fopen(json_path, "w")) std::fputs(json.c_str(), f), std::fclose(f);
  }
  return 0;
}
