// CPU forward benchmark: prefill and decode tokens/s of a random MiniMax-structured model, with
// the OpenBLAS sgemm rate measured in the same run as the ceiling.
//
//   build/bin/bench_forward [--hidden 512] [--layers 8] [--experts 8] [--threads N] [--json FILE]
//
// Prints a table and writes JSON (stdout when no --json). Median of --repeats runs after a warm-up.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/layers/model.h"
#include "kernels/gemm.h"
#include "bench/bench_model.h"
#include "orchestration/init_model.h"

using namespace fulgur;
using clock_type = std::chrono::steady_clock;

namespace {

struct Args {
  bench::ModelShape shape;
  int repeats = 3;
  std::string json;
};

double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// sgemm GFLOP/s on the shape the experts run: [n, hidden] x [I, hidden]^T.
double sgemm_gflops(int64_t m, int64_t n, int64_t k, int repeats) {
  std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
  kernels::GemmParams p{.a = a.data(), .b = b.data(), .c = c.data(), .m = m, .n = n, .k = k};
  (void)kernels::gemm_nt_cpu(p);
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = clock_type::now();
    (void)kernels::gemm_nt_cpu(p);
    times.push_back(seconds_since(t0));
  }
  return 2.0 * m * n * k / median(times) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--hidden") a.shape.hidden = std::stoll(v);
    else if (k == "--layers") a.shape.layers = std::stoll(v);
    else if (k == "--experts") a.shape.experts = std::stoll(v);
    else if (k == "--intermediate") a.shape.intermediate = std::stoll(v);
    else if (k == "--vocab") a.shape.vocab = std::stoll(v);
    else if (k == "--repeats") a.repeats = std::stoi(v);
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
  const Model& model = **model_or;
  nlohmann::json out;
  out["model"] = {{"hidden", cfg.hidden_size}, {"layers", cfg.num_hidden_layers}, {"heads", cfg.num_attention_heads},
                  {"head_dim", cfg.head_dim}, {"kv_heads", cfg.num_key_value_heads}, {"experts", cfg.num_local_experts},
                  {"top_k", cfg.num_experts_per_tok}, {"intermediate", cfg.intermediate_size}, {"vocab", cfg.vocab_size},
                  {"compute", "f32"}};
  const double ceiling = sgemm_gflops(512, cfg.intermediate_size, cfg.hidden_size, 5);
  out["sgemm_gflops_512x" + std::to_string(cfg.intermediate_size) + "x" + std::to_string(cfg.hidden_size)] = ceiling;

  std::printf("%-28s %12s %12s\n", "case", "tokens/s", "ms/step");
  for (int64_t T : {128, 512, 2048}) {
    std::vector<int32_t> tokens(T);
    for (int64_t i = 0; i < T; ++i) tokens[i] = static_cast<int32_t>((i * 7919) % cfg.vocab_size);
    std::vector<double> times;
    for (int r = 0; r <= a.repeats; ++r) {
      SingleSequence seq(model, T);
      Tensor logits;
      auto t0 = clock_type::now();
      if (auto st = seq.step(tokens, false, logits); !st.is_ok()) {
        std::fprintf(stderr, "%s\n", st.to_string().c_str());
        return 1;
      }
      if (r > 0) times.push_back(seconds_since(t0));  // r == 0 warms up
    }
    const double tps = T / median(times);
    out["prefill"].push_back({{"tokens", T}, {"tokens_per_s", tps}});
    std::printf("%-28s %12.1f %12.2f\n", ("prefill T=" + std::to_string(T)).c_str(), tps, 1e3 * median(times));
  }
  for (int64_t context : {128, 1024}) {
    const int64_t steps = 64;
    SingleSequence seq(model, context + steps + 1);
    std::vector<int32_t> prompt(context, 11);
    Tensor logits;
    (void)seq.step(prompt, false, logits);
    std::vector<double> times;
    for (int64_t s = 0; s < steps; ++s) {
      auto t0 = clock_type::now();
      (void)seq.step({static_cast<int32_t>(s % cfg.vocab_size)}, false, logits);
      times.push_back(seconds_since(t0));
    }
    const double tps = 1.0 / median(times);
    out["decode_batch1"].push_back({{"context", context}, {"tokens_per_s", tps}, {"ms_per_token", 1e3 * median(times)}});
    std::printf("%-28s %12.1f %12.2f\n", ("decode ctx=" + std::to_string(context)).c_str(), tps, 1e3 * median(times));
  }
  std::printf("%-28s %12.1f GFLOP/s (ceiling for the expert GEMMs)\n", "sgemm 512xIxH", ceiling);
  const std::string text = out.dump(2);
  if (a.json.empty()) {
    std::printf("%s\n", text.c_str());
  } else {
    std::ofstream(a.json) << text << "\n";
  }
  return 0;
}
