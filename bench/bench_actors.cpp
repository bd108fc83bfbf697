// Actor-runtime benchmark: actor-hop latency in one process and across processes, and serving
// tokens/s of the actor engine at 1, 8, 32 and 64 concurrent requests, for the bench_forward model
// shape (hidden 512, 8 layers, 8 experts), in one process and in three (attention, router, embed
// and head here; experts 0-3 on one `fulgur node`, 4-7 on another, hidden states over UCX). Also
// reports how often the routers had group g+1 in flight before group g's result was back.
//
//   build/bin/bench_actors [--prompt 32] [--gen 32] [--threads 2] [--group-tokens 32]
//                          [--processes 1,3] [--fulgur build/bin/fulgur] [--json FILE]
//
// The nodes are started by the benchmark on loopback (UCX_TLS=tcp unless set).
//
// Prints a table and writes JSON (stdout when no --json).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>
#include <mutex>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "bench/bench_model.h"
#include "orchestration/checkpoint/checkpoint.h"
#include "orchestration/generate.h"
#include "orchestration/init_model.h"
#include "orchestration/serving/actor_engine.h"
#include "orchestration/serving/local_nodes.h"
#include "protocols/serving/caf_config.h"

using namespace fulgur;
using clock_type = std::chrono::steady_clock;

namespace {

struct Args {
  bench::ModelShape shape;
  int64_t prompt = 32, gen = 32, group_tokens = 32, inflight = 4;
  size_t threads = 2;
  std::string json, processes = "1,3", fulgur_bin;
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

RunResult run_concurrent(const std::shared_ptr<const Model>& model, const Args& a, int64_t concurrency,
                         ActorEngineOptions ao) {
  EngineOptions o;
  o.max_running = 64;
  o.state_slots = 64;
  o.max_queued = 256;
  o.max_context = a.prompt + a.gen + 1;
  o.step_token_budget = 512;
  o.prefill_chunk = 256;
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
  a.fulgur_bin = (std::filesystem::path(argv[0]).parent_path() / "fulgur").string();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--prompt") a.prompt = std::stoll(v);
    else if (k == "--gen") a.gen = std::stoll(v);
    else if (k == "--threads") a.threads = std::stoul(v);
    else if (k == "--group-tokens") a.group_tokens = std::stoll(v);
    else if (k == "--inflight") a.inflight = std::stoll(v);
    else if (k == "--layers") a.shape.layers = std::stoll(v);
    else if (k == "--processes") a.processes = v;
    else if (k == "--fulgur") a.fulgur_bin = v;
    else if (k == "--json") a.json = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  const bool one = a.processes.find('1') != std::string::npos, three = a.processes.find('3') != std::string::npos;
  setenv("UCX_TLS", "tcp", /*overwrite=*/0);
  // The model goes through a checkpoint directory: the nodes load it from there.
  const ModelConfig cfg = bench::bench_model_config(a.shape);
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("fulgur-bench-actors-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "model");
  if (auto st = save_checkpoint((dir / "model").string(), random_model_weights(cfg, 1), cfg); !st.is_ok()) {
    std::fprintf(stderr, "%s\n", st.to_string().c_str());
    return 1;
  }
  auto loaded = load_model_dir((dir / "model").string(), /*need_tokenizer=*/false, nullptr);
  if (!loaded) {
    std::fprintf(stderr, "%s\n", loaded.error().to_string().c_str());
    return 1;
  }
  std::shared_ptr<const Model> model(std::move(loaded->model));
  nlohmann::json out;
  out["model"] = {{"hidden", cfg.hidden_size}, {"layers", cfg.num_hidden_layers}, {"experts", cfg.num_local_experts},
                  {"top_k", cfg.num_experts_per_tok}, {"intermediate", cfg.intermediate_size}, {"vocab", cfg.vocab_size},
                  {"compute", "f32"}};
  out["config"] = {{"prompt_tokens", a.prompt}, {"gen_tokens", a.gen}, {"caf_threads", a.threads},
                   {"group_tokens", a.group_tokens}, {"max_inflight_groups", a.inflight},
                   {"ucx_tls", std::getenv("UCX_TLS")}};
  const double hop = actor_hop_round_trip_seconds(a.threads, 20000);
  out["actor_round_trip_us"] = hop * 1e6;
  std::printf("actor->actor round trip (two plain actors, one process): %.2f us\n", hop * 1e6);

  ActorEngineOptions base;
  base.scheduler_threads = a.threads;
  base.placement.group_tokens = a.group_tokens;
  base.placement.max_inflight_groups = a.inflight;
  base.model_dir = (dir / "model").string();
  std::vector<std::unique_ptr<LocalNode>> nodes;
  ActorEngineOptions split = base;
  if (three) {
    for (const char* name : {"n1", "n2"}) {
      auto n = LocalNode::start(a.fulgur_bin, dir.string(), name, {"--threads", std::to_string(a.threads)});
      if (!n) {
        std::fprintf(stderr, "%s\n", n.error().to_string().c_str());
        return 1;
      }
      nodes.push_back(std::move(*n));
    }
    split.placement.nodes = {serving::NodeSpec{}, nodes[0]->spec(), nodes[1]->spec()};
    serving::ExpertActorSpec e1{"n1", {}}, e2{"n2", {}};
    for (int32_t e = 0; e < cfg.num_local_experts; ++e) (e < cfg.num_local_experts / 2 ? e1 : e2).experts.push_back(e);
    split.placement.expert_actors = {e1, e2};
  }
  struct Mode {
    int processes;
    ActorEngineOptions options;
    const char* node;  // where the hop target (first expert actor) lives
  };
  std::vector<Mode> modes;
  if (one) modes.push_back({1, base, "local"});
  if (three) modes.push_back({3, split, "n1"});
  for (const Mode& m : modes) {
    // Actor -> expert actor round trips through a real engine of this mode.
    EngineOptions o;
    o.max_context = 64;
    auto e = make_actor_engine(model, o, m.options);
    if (!e) {
      std::fprintf(stderr, "%s\n", e.error().to_string().c_str());
      return 1;
    }
    auto s = (*e)->actor_round_trip_seconds(m.node, 2000);
    const double thread_hop = (*e)->hop_round_trip_seconds(500);
    if (!s) {
      std::fprintf(stderr, "%s\n", s.error().to_string().c_str());
      return 1;
    }
    out["hops"].push_back({{"processes", m.processes}, {"actor_to_expert_round_trip_us", *s * 1e6},
                           {"thread_to_expert_round_trip_us", thread_hop * 1e6}});
    std::printf("%d process(es): actor->expert actor round trip %.2f us, thread->expert actor %.2f us\n", m.processes,
                *s * 1e6, thread_hop * 1e6);
  }
  std::printf("%-10s %-12s %14s %14s %12s %12s %10s\n", "processes", "concurrent", "gen tok/s", "all tok/s", "TTFT ms",
              "ITL ms", "overlap");
  for (int64_t c : {1, 8, 32, 64}) {
    for (const Mode& m : modes) {
      const RunResult r = run_concurrent(model, a, c, m.options);
      const double gen_tps = r.generated / r.seconds, all_tps = (r.generated + r.prompt_tokens) / r.seconds;
      out["serving"].push_back({{"processes", m.processes}, {"concurrent", c}, {"seconds", r.seconds},
                                {"generated_tokens", r.generated}, {"generated_tokens_per_s", gen_tps},
                                {"prompt_plus_generated_tokens_per_s", all_tps}, {"ttft_mean_ms", r.ttft_mean * 1e3},
                                {"itl_mean_ms", r.itl_mean * 1e3}, {"dispatch_overlap_fraction", r.overlap_fraction},
                                {"errors", r.errors}});
      std::printf("%-10d %-12lld %14.1f %14.1f %12.1f %12.2f %10.2f\n", m.processes, static_cast<long long>(c), gen_tps,
                  all_tps, r.ttft_mean * 1e3, r.itl_mean * 1e3, r.overlap_fraction);
    }
  }
  nodes.clear();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  const std::string text = out.dump(2);
  if (a.json.empty()) {
    std::printf("%s\n", text.c_str());
  } else {
    std::ofstream(a.json) << text << "\n";
  }
  return 0;
}
