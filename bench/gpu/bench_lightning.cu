// Lightning attention benchmark (issue 4): prefill for batch 1, 64 heads x 128, T = 4k..128k, against
// the HBM roofline (1 KiB per token and head: q, k, v read and o written in bf16) taken at the
// device-to-device copy bandwidth measured in the same run; decode for batch 1..256 (state traffic
// in TB/s, microseconds per layer step replayed from a CUDA graph); and the exactness of prefill to
// the fp32 token-by-token recurrence at every token (so at every chunk and segment boundary).
// Calls the production kernels (kernels/cuda/lightning_attention.cu). Output: a JSON object.
//
//   bench_lightning [--json FILE] [--quick]   |   bench_lightning --profile BLOCKS_PER_SM SPLIT (for ncu)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cuda/lightning_attention.h"

namespace {

using fulgur::kernels::KernelStatus;
namespace cuda = fulgur::kernels::cuda;

#define CHECK_CUDA(x)                                                                          \
  do {                                                                                         \
    cudaError_t e = (x);                                                                       \
    if (e != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "%s failed at %s:%d: %s\n", #x, __FILE__, __LINE__, cudaGetErrorString(e)); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)
#define CHECK_KERNEL(x)                                                                        \
  do {                                                                                         \
    KernelStatus s = (x);                                                                      \
    if (!s.ok()) {                                                                             \
      std::fprintf(stderr, "%s failed: %s\n", #x, s.error);                                    \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

// Deterministic pseudo-random bf16 in [-scale, scale] (silu-like magnitudes do not matter for timing).
__global__ void fill_bf16(__nv_bfloat16* x, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    x[i] = __float2bfloat16((static_cast<float>(h) * (1.f / 4294967296.f) * 2.f - 1.f) * scale);
  }
}
__global__ void fill_f32(float* x, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2246822519u ^ seed;
    h ^= h >> 15, h *= 2654435761u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    x[i] = (static_cast<float>(h) * (1.f / 4294967296.f) * 2.f - 1.f) * scale;
  }
}

// fp32 reference: the exact recurrence, one thread per (head, value dim) holding a state column.
template <int kD>
__global__ void recurrence_ref(const __nv_bfloat16* qkv, int T, int H, const float* slopes, const float* state0,
                               float* out, float* state_out) {
  const int h = blockIdx.x, dv = threadIdx.x;
  float S[kD];
  for (int i = 0; i < kD; ++i) S[i] = state0[(size_t(h) * kD + i) * kD + dv];
  const float decay = expf(-slopes[h]);
  for (int t = 0; t < T; ++t) {
    const __nv_bfloat16* row = qkv + (size_t(t) * H + h) * 3 * kD;
    const float v = __bfloat162float(row[2 * kD + dv]);
    float o = 0.f;
#pragma unroll
    for (int i = 0; i < kD; ++i) {
      S[i] = decay * S[i] + __bfloat162float(row[kD + i]) * v;
      o += __bfloat162float(row[i]) * S[i];
    }
    out[(size_t(t) * H + h) * kD + dv] = o;
  }
  for (int i = 0; i < kD; ++i) state_out[(size_t(h) * kD + i) * kD + dv] = S[i];
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    CHECK_CUDA(cudaEventCreate(&a));
    CHECK_CUDA(cudaEventCreate(&b));
  }
  ~Timer() { cudaEventDestroy(a), cudaEventDestroy(b); }
  template <class F>
  double median_ms(F&& f, int reps) {  // f enqueues the work on stream 0
    std::vector<float> ms;
    for (int r = 0; r < reps; ++r) {
      CHECK_CUDA(cudaEventRecord(a));
      f();
      CHECK_CUDA(cudaEventRecord(b));
      CHECK_CUDA(cudaEventSynchronize(b));
      float x;
      CHECK_CUDA(cudaEventElapsedTime(&x, a, b));
      ms.push_back(x);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }
};

double copy_bandwidth_tbps(Timer& timer) {
  const size_t bytes = size_t(2) << 30;
  void *src, *dst;
  CHECK_CUDA(cudaMalloc(&src, bytes));
  CHECK_CUDA(cudaMalloc(&dst, bytes));
  CHECK_CUDA(cudaMemset(src, 1, bytes));
  for (int i = 0; i < 3; ++i) CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice));
  const double ms = timer.median_ms([&] { CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); }, 15);
  CHECK_CUDA(cudaFree(src));
  CHECK_CUDA(cudaFree(dst));
  return 2.0 * bytes / (ms * 1e-3) / 1e12;
}

struct PrefillSetup {
  int T, H, D;
  __nv_bfloat16* qkv = nullptr;
  void* out = nullptr;
  float *states = nullptr, *slopes = nullptr;
  int32_t *cu = nullptr, *slot = nullptr;
  void* ws = nullptr;
  cuda::LightningPrefillCudaParams p;
  PrefillSetup(int T_, int H_, int D_, cuda::LightningOutDtype dt, int64_t target_ctas = 0, int64_t blocks_per_sm = 0,
               bool split_state = true)
      : T(T_), H(H_), D(D_) {
    const size_t n_qkv = size_t(T) * H * 3 * D;
    CHECK_CUDA(cudaMalloc(&qkv, n_qkv * 2));
    CHECK_CUDA(cudaMalloc(&out, size_t(T) * H * D * 4));
    CHECK_CUDA(cudaMalloc(&states, size_t(H) * D * D * 4));
    CHECK_CUDA(cudaMalloc(&slopes, H * 4));
    CHECK_CUDA(cudaMalloc(&cu, 8));
    CHECK_CUDA(cudaMalloc(&slot, 4));
    fill_bf16<<<1024, 256>>>(qkv, n_qkv, 1234u + T, 0.5f);
    fill_f32<<<1024, 256>>>(states, size_t(H) * D * D, 77u, 0.3f);
    std::vector<float> s(H);
    for (int h = 0; h < H; ++h) s[h] = static_cast<float>(std::pow(2.0, -(h + 1) / 8.0));  // layer 0 slopes, spec §3.2
    CHECK_CUDA(cudaMemcpy(slopes, s.data(), H * 4, cudaMemcpyHostToDevice));
    const int32_t cu_h[2] = {0, T}, slot_h = 0;
    CHECK_CUDA(cudaMemcpy(cu, cu_h, 8, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(slot, &slot_h, 4, cudaMemcpyHostToDevice));
    auto* q = reinterpret_cast<const uint16_t*>(qkv);
    p.q = q, p.k = q + D, p.v = q + 2 * D, p.qkv_token_stride = 3LL * H * D, p.qkv_head_stride = 3LL * D;
    p.out = out, p.out_dtype = dt, p.states = states, p.slopes = slopes, p.cu_seqlens = cu, p.slot_idx = slot;
    p.num_tokens = T, p.num_seqs = 1, p.num_slots = 1, p.num_heads = H, p.head_dim = D, p.target_ctas = target_ctas;
    p.blocks_per_sm = blocks_per_sm, p.split_state = split_state;
    p.workspace_bytes = cuda::lightning_prefill_workspace_bytes(p);
    CHECK_CUDA(cudaMalloc(&ws, p.workspace_bytes));
    p.workspace = ws;
    CHECK_CUDA(cudaDeviceSynchronize());
  }
  ~PrefillSetup() {
    cudaFree(qkv), cudaFree(out), cudaFree(states), cudaFree(slopes), cudaFree(cu), cudaFree(slot), cudaFree(ws);
  }
  void run() { CHECK_KERNEL(cuda::lightning_prefill(p, nullptr)); }
};

// Exactness: prefill (f32 output) against the fp32 recurrence at every token, and the final state.
std::string exactness(int T, int H, bool split_state) {
  constexpr int kD = 128;
  PrefillSetup s(T, H, kD, cuda::LightningOutDtype::kF32, 0, 0, split_state);
  float *ref_out, *ref_state, *state0;
  CHECK_CUDA(cudaMalloc(&ref_out, size_t(T) * H * kD * 4));
  CHECK_CUDA(cudaMalloc(&ref_state, size_t(H) * kD * kD * 4));
  CHECK_CUDA(cudaMalloc(&state0, size_t(H) * kD * kD * 4));
  CHECK_CUDA(cudaMemcpy(state0, s.states, size_t(H) * kD * kD * 4, cudaMemcpyDeviceToDevice));
  recurrence_ref<kD><<<H, kD>>>(s.qkv, T, H, s.slopes, state0, ref_out, ref_state);
  CHECK_CUDA(cudaGetLastError());
  s.run();
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> got(size_t(T) * H * kD), ref(got.size()), gs(size_t(H) * kD * kD), rs(gs.size());
  CHECK_CUDA(cudaMemcpy(got.data(), s.out, got.size() * 4, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(ref.data(), ref_out, ref.size() * 4, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(gs.data(), s.states, gs.size() * 4, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(rs.data(), ref_state, rs.size() * 4, cudaMemcpyDeviceToHost));
  double num = 0, den = 0, worst_boundary = 0, snum = 0, sden = 0;
  int worst_t = -1;
  bool finite = true;
  for (int t = 0; t < T; ++t) {
    double tn = 0, td = 0;
    for (size_t i = size_t(t) * H * kD; i < size_t(t + 1) * H * kD; ++i) {
      if (!std::isfinite(got[i])) finite = false;
      const double d = double(got[i]) - ref[i];
      tn += d * d, td += double(ref[i]) * ref[i];
    }
    num += tn, den += td;
    const bool boundary = t % 64 == 0 || t % 64 == 63;  // first and last token of every chunk
    if (boundary && std::sqrt(tn / td) > worst_boundary) worst_boundary = std::sqrt(tn / td), worst_t = t;
  }
  for (size_t i = 0; i < gs.size(); ++i) {
    const double d = double(gs[i]) - rs[i];
    snum += d * d, sden += double(rs[i]) * rs[i];
  }
  cudaFree(ref_out), cudaFree(ref_state), cudaFree(state0);
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "{\"T\": %d, \"heads\": %d, \"split_state\": %s, \"rel_l2_out\": %.3e, \"worst_chunk_boundary_token_rel_l2\": %.3e, "
                "\"worst_token\": %d, \"rel_l2_final_state\": %.3e, \"all_finite\": %s}",
                T, H, split_state ? "true" : "false", std::sqrt(num / den), worst_boundary, worst_t, std::sqrt(snum / sden), finite ? "true" : "false");
  return buf;
}

__global__ void touch() {}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    if (a == "--quick") quick = true;
    if (a == "--profile" && i + 2 < argc) {  // for ncu: two 128k prefills with blocks_per_sm, split_state
      PrefillSetup s(131072, 64, 128, cuda::LightningOutDtype::kBf16, 0, std::atoi(argv[i + 1]), std::atoi(argv[i + 2]));
      s.run(), s.run();
      CHECK_CUDA(cudaDeviceSynchronize());
      return 0;
    }
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  Timer timer;
  touch<<<1, 1>>>();
  CHECK_CUDA(cudaDeviceSynchronize());
  const double copy_tbps = copy_bandwidth_tbps(timer);
  std::fprintf(stderr, "device %s, %d SMs, copy bandwidth %.3f TB/s\n", prop.name, prop.multiProcessorCount, copy_tbps);
  std::string json = "{\n  \"device\": \"" + std::string(prop.name) + "\",\n";
  char buf[512];
  std::snprintf(buf, sizeof buf, "  \"copy_bandwidth_TBps\": %.4f,\n", copy_tbps);
  json += buf;

  // ---- exactness to the recurrence -------------------------------------------------------------
  const std::string ex = exactness(quick ? 4096 : 16384, 8, true);
  std::fprintf(stderr, "exactness %s\n", ex.c_str());
  json += "  \"exactness_vs_fp32_recurrence\": " + ex + ",\n";
  const std::string ex_hi = exactness(quick ? 4096 : 16384, 8, false);
  std::fprintf(stderr, "exactness (split_state off) %s\n", ex_hi.c_str());
  json += "  \"exactness_vs_fp32_recurrence_split_state_off\": " + ex_hi + ",\n";

  // ---- prefill ---------------------------------------------------------------------------------
  json += "  \"prefill\": [\n";
  const int H = 64, D = 128;
  std::vector<int> lengths = {4096, 16384, 65536, 131072};
  if (quick) lengths = {4096, 16384};
  bool first = true;
  struct Config {
    int64_t blocks_per_sm;  // 0 = default
    bool split_state;
  };
  for (int T : lengths) {
    std::vector<Config> configs = {{0, true}};
    if (T >= 65536) configs = {{0, true}, {1, true}, {2, true}, {1, false}, {2, false}};
    for (const Config& cfg : configs) {
      const int64_t target = 0;
      PrefillSetup s(T, H, D, cuda::LightningOutDtype::kBf16, target, cfg.blocks_per_sm, cfg.split_state);
      for (int w = 0; w < 3; ++w) s.run();
      CHECK_CUDA(cudaDeviceSynchronize());
      const double ms = timer.median_ms([&] { s.run(); }, T >= 65536 ? 10 : 30);
      const double bytes = double(T) * H * 1024.0;
      const double roof_ms = bytes / (copy_tbps * 1e12) * 1e3;
      std::snprintf(buf, sizeof buf,
                    "%s    {\"T\": %d, \"heads\": %d, \"head_dim\": %d, \"blocks_per_sm\": %lld, \"split_state\": %s, "
                    "\"ms\": %.4f, "
                    "\"roofline_ms\": %.4f, \"ratio_to_roofline\": %.3f, \"us_per_1k_tokens\": %.2f}",
                    first ? "" : ",\n", T, H, D, (long long)cfg.blocks_per_sm, cfg.split_state ? "true" : "false", ms, roof_ms,
                    ms / roof_ms, ms * 1e3 / (T / 1024.0));
      json += buf;
      first = false;
      std::fprintf(stderr, "prefill T=%6d blocks_per_sm=%lld split=%d  %.3f ms  roofline %.3f ms  ratio %.2f\n", T,
                   (long long)cfg.blocks_per_sm, int(cfg.split_state), ms, roof_ms, ms / roof_ms);
    }
  }
  json += "\n  ],\n";

  // ---- decode ----------------------------------------------------------------------------------
  json += "  \"decode\": [\n";
  first = true;
  for (int B : {1, 16, 64, 256}) {
    const size_t state_bytes = size_t(B) * H * D * D * 4;                        // one layer
    const int layers = static_cast<int>(std::max<size_t>(2, (size_t(512) << 20) / state_bytes));  // > 10x L2
    float *states, *slopes, *out;
    __nv_bfloat16* qkv;
    int32_t* slots;
    CHECK_CUDA(cudaMalloc(&states, state_bytes * layers));
    CHECK_CUDA(cudaMalloc(&qkv, size_t(B) * H * 3 * D * 2));
    CHECK_CUDA(cudaMalloc(&out, size_t(B) * H * D * 4));
    CHECK_CUDA(cudaMalloc(&slopes, H * 4));
    CHECK_CUDA(cudaMalloc(&slots, B * 4));
    fill_f32<<<1024, 256>>>(states, state_bytes * layers / 4, 5u, 0.3f);
    fill_bf16<<<64, 256>>>(qkv, size_t(B) * H * 3 * D, 9u, 0.5f);
    fill_f32<<<1, 64>>>(slopes, H, 3u, 0.5f);
    std::vector<int32_t> sl(B);
    for (int b = 0; b < B; ++b) sl[b] = (b * 7) % B;  // a permutation when B is not a multiple of 7
    if (B % 7 == 0) for (int b = 0; b < B; ++b) sl[b] = b;
    CHECK_CUDA(cudaMemcpy(slots, sl.data(), B * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaDeviceSynchronize());
    cudaStream_t stream;
    CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    auto* q = reinterpret_cast<const uint16_t*>(qkv);
    cuda::LightningDecodeCudaParams p;
    p.q = q, p.k = q + D, p.v = q + 2 * D, p.qkv_token_stride = 3LL * H * D, p.qkv_head_stride = 3LL * D;
    p.out = out, p.out_dtype = cuda::LightningOutDtype::kBf16, p.slopes = slopes, p.slot_idx = slots;
    p.num_seqs = B, p.num_slots = B, p.num_heads = H, p.head_dim = D;
    // One graph = one step through `layers` layers, each with its own state buffer.
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int l = 0; l < layers; ++l) {
      p.states = states + size_t(l) * state_bytes / 4;
      CHECK_KERNEL(cuda::lightning_decode(p, reinterpret_cast<cuda::Stream>(stream)));
    }
    CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
    CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int w = 0; w < 3; ++w) CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    std::vector<float> per_step;
    cudaEvent_t e0, e1;
    CHECK_CUDA(cudaEventCreate(&e0));
    CHECK_CUDA(cudaEventCreate(&e1));
    for (int r = 0; r < 20; ++r) {
      CHECK_CUDA(cudaEventRecord(e0, stream));
      CHECK_CUDA(cudaGraphLaunch(exec, stream));
      CHECK_CUDA(cudaEventRecord(e1, stream));
      CHECK_CUDA(cudaEventSynchronize(e1));
      float ms;
      CHECK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
      per_step.push_back(ms * 1e3f / layers);
    }
    std::sort(per_step.begin(), per_step.end());
    const double us = per_step[per_step.size() / 2];
    const double tbps = 2.0 * state_bytes / (us * 1e-6) / 1e12;
    std::snprintf(buf, sizeof buf,
                  "%s    {\"batch\": %d, \"layers_in_graph\": %d, \"us_per_layer_step\": %.3f, \"state_TBps\": %.3f, "
                  "\"fraction_of_copy_bw\": %.3f}",
                  first ? "" : ",\n", B, layers, us, tbps, tbps / copy_tbps);
    json += buf;
    first = false;
    std::fprintf(stderr, "decode B=%3d  %.2f us/layer-step  %.3f TB/s (%.0f%% of copy)\n", B, us, tbps,
                 100 * tbps / copy_tbps);
    cudaGraphExecDestroy(exec), cudaGraphDestroy(graph), cudaStreamDestroy(stream);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFree(states), cudaFree(qkv), cudaFree(out), cudaFree(slopes), cudaFree(slots);
  }
  json += "\n  ]\n}\n";
  std::printf("%s", json.c_str());
  if (!json_path.empty()) {
    if (FILE* f = std::fopen(json_path.c_str(), "w")) std::fputs(json.c_str(), f), std::fclose(f);
  }
  return 0;
}
