// The CUDA model forward (actors/layers/cuda_model.h, bf16) at MiniMax-Text-01's shapes on one GPU:
// hidden 6144, 64 heads x 128 (GQA 8 kv heads, rotary 64), 32 experts x 9216 top-2, vocab 200064,
// DeepNorm alpha 3.5566, a slice of the 80 layers (default 4: three lightning, one softmax, the
// model's 7:1 kinds), random weights generated on the device.
//  - prefill: one sequence of T tokens and its first generated token (greedy), tokens/s;
//  - decode: B sequences with C cached tokens each, one greedy token per sequence per step, each step
//    fed the tokens of the previous one (a real greedy loop).
// Wall clock around CudaModel::forward_greedy (it returns with the token ids on the host), median of the
// repeats after one warm-up. Compare with bench/gpu/torch_cuda_model.py (transformers' MiniMaxForCausalLM, same
// config and machine) run beside it by bench/gpu/run.sh (ONLY=model).
//
// --experts names the variants run one after another (one model at a time on the device): bf16 (the defaults:
// decode-size experts through the device-sizes kernels, up to 64 rows per expert the sm_90 tiles, cuBLAS above),
// bf16-cublas (cuBLAS at every size), bf16-tiles (the sm_90 tiles at every size above decode), int8 (weight-only experts),
// bf16-mma-attn (the default experts, softmax prefill on the mma.sync kernel instead of the Hopper one).
//
//   bench_cuda_model [--layers 0,0,0,1] [--experts bf16,bf16-cublas,int8] [--quick] [--decode-only] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "actors/layers/cuda_model.h"
#include "minimax_config.h"

using namespace fulgur;

namespace {

template <class F>
double median_ms(F&& f, int reps) {
  std::vector<double> t;
  for (int i = 0; i < reps + 1; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
    if (i > 0) t.push_back(ms);  // the first run warms up
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void check(const Status& st, const char* what) {
  if (!st.is_ok()) {
    std::fprintf(stderr, "%s: %s\n", what, st.to_string().c_str());
    std::exit(1);
  }
}

// Prefill and decode runs of one model (bf16 or int8 experts); its JSON member.
// variant: "bf16" (decode experts through the device-sizes kernels, the default), "bf16-cublas" (cuBLAS at
// every size, a host round trip per layer), "int8".
std::string run_model(const ModelConfig& cfg, const std::string& layers, const std::string& variant, bool quick,
                      bool decode_only) {
  const auto t0 = std::chrono::steady_clock::now();
  CudaModelOptions opt;
  opt.int8_experts = variant == "int8";
  if (variant == "bf16-cublas") opt.bf16_device_sizes_max_rows = 0, opt.bf16_tiles_max_rows = 0;
  if (variant == "bf16-tiles") opt.bf16_tiles_max_rows = int64_t(1) << 30;
  if (variant == "bf16-mma-attn") opt.softmax_prefill_kernel = 1;  // softmax prefill on mma.sync, not wgmma
  auto model = CudaModel::create_random(cfg, 0, opt, 1234);
  if (!model) check(model.error(), "create_random");
  std::printf("\nmodel: layers [%s], %s experts, %.1f GB of weights on the device, made in %.1f s\n", layers.c_str(),
              variant.c_str(), (*model)->weight_bytes() / 1e9,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  const int64_t L = cfg.num_hidden_layers, V = cfg.vocab_size, page = 64;
  std::string json = "  \"" + variant + "\": {\n  \"weight_GB\": " +
                     std::to_string((*model)->weight_bytes() / 1e9) + ",\n  \"prefill\": [\n";

  std::printf("\n%-8s %10s %12s %14s\n", "prefill", "ms", "tokens/s", "ms per layer");
  std::vector<int64_t> Ts = quick ? std::vector<int64_t>{1024, 4096} : std::vector<int64_t>{1024, 4096, 16384};
  if (decode_only) Ts.clear();
  for (size_t k = 0; k < Ts.size(); ++k) {
    const int64_t T = Ts[k], pps = (T + page - 1) / page;
    check((*model)->allocate_state(1, pps, page), "allocate_state");
    std::vector<int32_t> tokens(T);
    for (int64_t i = 0; i < T; ++i) tokens[i] = static_cast<int32_t>((i * 7919) % V);
    const BatchLayout bl = uniform_batch_layout(1, 0, T, pps, page);
    std::vector<int32_t> first;
    const double ms = median_ms([&] {
      check((*model)->reset_slot(0), "reset_slot");
      check((*model)->forward_greedy(tokens, bl, {T - 1}, first), "prefill");
    }, T >= 16384 ? 3 : 5);
    std::printf("%-8lld %10.2f %12.0f %14.3f\n", (long long)T, ms, T / (ms * 1e-3), ms / L);
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s    {\"T\": %lld, \"ms\": %.3f, \"tokens_per_s\": %.1f}", k ? ",\n" : "",
                  (long long)T, ms, T / (ms * 1e-3));
    json += buf;
  }
  json += "\n  ],\n  \"decode\": [\n";

  const int64_t C = 1024, steps = 8;
  std::printf("\n%-8s %8s %10s %12s %14s\n", "decode B", "context", "ms/step", "tokens/s", "ms per layer");
  const std::vector<int64_t> Bs = quick ? std::vector<int64_t>{1, 32} : std::vector<int64_t>{1, 8, 32, 64};
  for (size_t k = 0; k < Bs.size(); ++k) {
    const int64_t B = Bs[k], pps = (C + steps + 2 + page - 1) / page;
    check((*model)->allocate_state(B, B * pps, page), "allocate_state");
    std::vector<int32_t> prompt(B * C);
    for (int64_t i = 0; i < B * C; ++i) prompt[i] = static_cast<int32_t>((i * 104729) % V);
    Tensor logits;
    check((*model)->forward(prompt, uniform_batch_layout(B, 0, C, pps, page), {}, logits), "decode prefill");
    int64_t past = C;
    std::vector<int64_t> rows(B);
    for (int64_t b = 0; b < B; ++b) rows[b] = b;
    std::vector<int32_t> next(B, 17);
    const double ms = median_ms([&] {
      std::vector<int32_t> chosen;
      check((*model)->forward_greedy(next, uniform_batch_layout(B, past, 1, pps, page), rows, chosen), "decode step");
      next = chosen;
      ++past;
    }, steps);
    std::printf("%-8lld %8lld %10.3f %12.0f %14.3f\n", (long long)B, (long long)C, ms, B / (ms * 1e-3), ms / L);
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s    {\"batch\": %lld, \"context\": %lld, \"ms_per_step\": %.3f, \"tokens_per_s\": %.1f}",
                  k ? ",\n" : "", (long long)B, (long long)C, ms, B / (ms * 1e-3));
    json += buf;
  }
  json += "\n  ]\n  }";
  return json;
}

}  // namespace

int main(int argc, char** argv) {
  std::string layers = "0,0,0,1", experts = "bf16,bf16-cublas,int8";
  bool quick = false, decode_only = false;
  const char* json_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--layers") && i + 1 < argc) layers = argv[++i];
    else if (!std::strcmp(argv[i], "--experts") && i + 1 < argc) experts = argv[++i];
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--decode-only")) decode_only = true;
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
  }
  auto cfg = parse_model_config(minimax_config_json(layers), "bench config");
  if (!cfg) return check(cfg.error(), "config"), 1;
  std::string json = "{\n  \"layers\": \"" + layers + "\"";
  std::string rest = experts + ",";
  for (size_t at = rest.find(','); at != std::string::npos; rest = rest.substr(at + 1), at = rest.find(',')) {
    const std::string variant = rest.substr(0, at);
    if (variant.empty()) continue;
    if (variant != "bf16" && variant != "bf16-cublas" && variant != "bf16-tiles" && variant != "int8" &&
        variant != "bf16-mma-attn") {
      std::fprintf(stderr, "--experts: unknown variant '%s' (bf16, bf16-cublas, bf16-tiles, int8, bf16-mma-attn)\n",
                   variant.c_str());
      return 1;
    }
    json += ",\n" + run_model(*cfg, layers, variant, quick, decode_only);
  }
  json += "\n}\n";

  if (json_path != nullptr) {
    if (FILE* f = std::fopen(json_path, "w")) std::fputs(json.c_str(), f), std::fclose(f);
  }
  return 0;
}
