// Actor-runtime benchmark (one process): actor-hop latency and serving tokens/s of the actor
// engine at 1, 8, 32 and 64 concurrent requests, for the bench_forward model shape (hidden 512,
// 8 layers, 8 experts). Also reports how often the routers had group g+1 in flight before group
// g's result was back (pipelined dispatch).
//
//   build/bin/bench_actors [--prompt 32] [--gen 32] [--threads 2] [--group-tokens 32] [--json FILE]
//
// Prints a table and writes JSON (stdout when no --json).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "bench/bench_model.h"
#include "orchestration/init_model.h"
#include "orchestration/serving/actor_engine.h"
#include "protocols/serving/caf_config.h"

using namespace fulgur;
using clock_type = std::chrono::steady_clock;

namespace {

struct Args {
  bench::ModelShape shape;
  int64_t prompt = 32, gen = 32, group_tokens = 32, inflight = 4;
  size_t threads = 2;
  std::string json;
};

// Actor-to-actor round trips: a pinger actor requests a ponger `count` times in sequence.
double actor_hop_round_trip_seconds(size_t threads, int64_t count) {
  caf::actor_system_config cfg;
  serving::configure(cfg, serving::RuntimeOptions{threads});
  caf::actor_system sys{cfg};
  auto ponger = sys.spawn([]() -> caf::behavior { return {[](int64_t x) { return x; }}; });
  auto pinger = sys.spawn([ponger, count](caf::event_based_actor* self) -> caf::behavior {
    return {[=](serving::ping_atom) {
      auto rp = self->make_response_promise();
      auto t0 = std::make_shared<clock_type::time_point>(clock_type::now());
      auto left = std::make_shared<int64_t>(count);
      auto step = std::make_shared<std::function<void()>>();
      *step = [=]() mutable {
        if ((*left)-- == 0) {
          rp.deliver(std::chrono::duration<double>(clock_type::now() - *t0).count());
          return;
        }
        self->request(ponger, caf::infinite, *left).then([=](int64_t) { (*step)(); });
      };
      (*step)();
      return rp;
    }};
  });
  caf::scoped_actor self{sys};
  double total = 0;
  self->request(pinger, caf::infinite, serving::ping_atom_v).receive([&](double s) { total = s; }, [](caf::error&) {});
  caf::anon_send_exit(pinger, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(ponger, caf::exit_reason::user_shutdown);
  return total / static_cast<double>(count);
}

struct RunResult {
  double seconds = 0;
  int64_t generated = 0, prompt_tokens = 0, errors = 0;
  double ttft_mean = 0, itl_mean = 0;
  double overlap_fraction = 0;
};

RunResult run_concurrent(const std::shared_ptr<const Model>& model, const Args& a, int64_t concurrency) {
  EngineOptions o;
  o.max_running = 64;
  o.state_slots = 64;
  o.max_queued = 256;
  o.max_context = a.prompt + a.gen + 1;
  o.step_token_budget = 512;
  o.prefill_chunk = 256;
  ActorEngineOptions ao;
  ao.scheduler_threads = a.threads;
  ao.placement.group_tokens = a.group_tokens;
  ao.placement.max_inflight_groups = a.inflight;
  auto engine_or = make_actor_engine(model, o, ao);
  if (!engine_or) {
    std::fprintf(stderr, "%s\n", engine_or.error().to_string().c_str());
    std::exit(1);
  }
  auto& engine = **engine_or;
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0;
  RunResult r;
  const auto t0 = clock_type::now();
  for (int64_t i = 0; i < concurrency; ++i) {
    CompletionRequest req;
    for (int64_t t = 0; t < a.prompt; ++t) req.prompt.push_back(static_cast<int32_t>((i * 131 + t * 7919) % model->config().vocab_size));
    req.max_tokens = a.gen;
    auto id = engine.submit(req, [&](const TokenEvent& ev) {
      if (!ev.finished) return;
      std::lock_guard<std::mutex> lock(mu);
      r.generated += ev.completion_tokens;
      r.prompt_tokens += ev.prompt_tokens;
      if (ev.finish_reason == "error") ++r.errors;
      ++done;
      cv.notify_all();
    });
    if (!id) {
      std::fprintf(stderr, "%s\n", id.error().to_string().c_str());
      std::exit(1);
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done == concurrency; });
  }
  r.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  const EngineStats s = engine.stats();
  r.ttft_mean = s.ttft_count ? s.ttft_sum / s.ttft_count : 0;
  r.itl_mean = s.itl_count ? s.itl_sum / s.itl_count : 0;
  // Overlap in the last step of every layer: groups sent before the previous group came back.
  int64_t pairs = 0, overlapped = 0;
  for (int64_t l = 0; l < model->config().num_hidden_layers; ++l) {
    const auto trace = engine.dispatch_trace(l);
    for (size_t g = 0; g + 1 < trace.size(); ++g, ++pairs) overlapped += trace[g + 1].send_ns < trace[g].receive_ns;
  }
  r.overlap_fraction = pairs ? static_cast<double>(overlapped) / pairs : 0;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--prompt") a.prompt = std::stoll(v);
    else if (k == "--gen") a.gen = std::stoll(v);
    else if (k == "--threads") a.threads = std::stoul(v);
    else if (k == "--group-tokens") a.group_tokens = std::stoll(v);
    else if (k == "--inflight") a.inflight = std::stoll(v);
    else if (k == "--layers") a.shape.layers = std::stoll(v);
    else if (k == "--json") a.json = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  const ModelConfig cfg = bench::bench_model_config(a.shape);
  auto model_or = Model::create(cfg, random_model_weights(cfg, 1));
  if (!model_or) {
    std::fprintf(stderr, "%s\n", model_or.error().to_string().c_str());
    return 1;
  }
  std::shared_ptr<const Model> model(std::move(model_or).value());
  nlohmann::json out;
  out["model"] = {{"hidden", cfg.hidden_size}, {"layers", cfg.num_hidden_layers}, {"experts", cfg.num_local_experts},
                  {"top_k", cfg.num_experts_per_tok}, {"intermediate", cfg.intermediate_size}, {"vocab", cfg.vocab_size},
                  {"compute", "f32"}};
  out["config"] = {{"prompt_tokens", a.prompt}, {"gen_tokens", a.gen}, {"caf_threads", a.threads},
                   {"group_tokens", a.group_tokens}, {"max_inflight_groups", a.inflight}, {"processes", 1}};
  const double hop = actor_hop_round_trip_seconds(a.threads, 20000);
  out["actor_round_trip_us"] = hop * 1e6;
  std::printf("actor->actor round trip (one process): %.2f us\n", hop * 1e6);
  {
    // Thread (scoped actor) -> expert actor round trip, through a real engine.
    EngineOptions o;
    o.max_context = 64;
    ActorEngineOptions ao;
    ao.scheduler_threads = a.threads;
    auto e = make_actor_engine(model, o, ao);
    const double s = (*e)->hop_round_trip_seconds(2000);
    out["thread_to_actor_round_trip_us"] = s * 1e6;
    std::printf("thread->expert actor round trip:       %.2f us\n", s * 1e6);
  }
  std::printf("%-12s %14s %14s %12s %12s %10s\n", "concurrent", "gen tok/s", "all tok/s", "TTFT ms", "ITL ms", "overlap");
  for (int64_t c : {1, 8, 32, 64}) {
    const RunResult r = run_concurrent(model, a, c);
    const double gen_tps = r.generated / r.seconds, all_tps = (r.generated + r.prompt_tokens) / r.seconds;
    out["serving"].push_back({{"concurrent", c}, {"seconds", r.seconds}, {"generated_tokens", r.generated},
                              {"generated_tokens_per_s", gen_tps}, {"prompt_plus_generated_tokens_per_s", all_tps},
                              {"ttft_mean_ms", r.ttft_mean * 1e3}, {"itl_mean_ms", r.itl_mean * 1e3},
                              {"dispatch_overlap_fraction", r.overlap_fraction}, {"errors", r.errors}});
    std::printf("%-12lld %14.1f %14.1f %12.1f %12.2f %10.2f\n", static_cast<long long>(c), gen_tps, all_tps,
                r.ttft_mean * 1e3, r.itl_mean * 1e3, r.overlap_fraction);
  }
  const std::string text = out.dump(2);
  if (a.json.empty()) {
    std::printf("%s\n", text.c_str());
  } else {
    std::ofstream(a.json) << text << "\n";
  }
  return 0;
}
