// Softmax attention benchmark (CUDA issue "softmax attention"): MiniMax shapes, 64 q heads, 8 kv heads,
// head_dim 128, rotary_dim 64, bf16, paged cache (page 64, pages in order).
//  - prefill, batch 1, causal, T = 4k, 16k, 64k, 128k: ms of the whole entry (roped cache write + attention)
//    and TFLOP/s counting the causal FLOPs as 2 * 2 * T^2/2 * 64 * 128 (Q K^T and P V, half the square;
//    the same count as the torch script's, whose time has no RoPE and no cache write);
//  - decode, batch 1 / 16 / 64 at context 4k / 32k: us per call (cache write + split-K attention +
//    combine, CUDA-graph replay of 20 calls) and KV bytes read per second against the device-to-device
//    copy bandwidth (bytes read + written) measured in the same run. The caches rotate over >= 256 MB so
//    small cases do not run from L2.
// Calls the production kernels (kernels/cuda/softmax_attention.cu). Output: a JSON object.
//
//   bench_softmax_attention [--json FILE] [--quick]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cuda/softmax_attention.h"

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

constexpr int kH = 64, kKV = 8, kD = 128, kRot = 64, kPage = 64;

__global__ void fill_bf16(__nv_bfloat16* x, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    x[i] = __float2bfloat16((static_cast<float>(h) * (1.f / 4294967296.f) * 2.f - 1.f) * scale);
  }
}
__global__ void iota_i32(int32_t* x, int n, int start) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = start + i;
}
__global__ void iota_i64(int64_t* x, int n, int64_t start) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = start + i;
}
__global__ void count_nonfinite(const __nv_bfloat16* x, size_t n, unsigned long long* bad) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    if (!isfinite(__bfloat162float(x[i]))) atomicAdd(bad, 1ull);
  }
}

template <class T>
T* dalloc(size_t n) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(n * sizeof(T), 16)));
  return static_cast<T*>(p);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double time_ms(F&& f, int warmup, int reps) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) f(i);
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(a));
    f(i);
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  return median(t);
}

double copy_bandwidth_TBps() {
  const size_t bytes = size_t(2) << 30;
  void *x = dalloc<char>(bytes), *y = dalloc<char>(bytes);
  CHECK_CUDA(cudaMemset(x, 1, bytes));
  const double ms = time_ms([&](int) { CHECK_CUDA(cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice)); }, 2, 10);
  CHECK_CUDA(cudaFree(x));
  CHECK_CUDA(cudaFree(y));
  return 2.0 * bytes / (ms * 1e-3) / 1e12;
}

struct Problem {
  int64_t T = 0, num_seqs = 0, ctx = 0;
  __nv_bfloat16* qkv = nullptr;
  int32_t *pos = nullptr, *cu = nullptr, *ctx_lens = nullptr, *table = nullptr;
  int64_t* slots = nullptr;
  std::vector<__nv_bfloat16*> k_cache, v_cache;
  __nv_bfloat16* out = nullptr;
  void* ws = nullptr;
  int64_t blocks_per_seq = 0, num_blocks = 0;
};

cuda::SoftmaxAttentionCudaParams params(const Problem& p, int copy) {
  cuda::SoftmaxAttentionCudaParams g;
  const int64_t row = (kH + 2 * kKV) * kD;
  g.q = reinterpret_cast<const uint16_t*>(p.qkv), g.k = g.q + kH * kD, g.v = g.k + kKV * kD;
  g.q_token_stride = row, g.kv_token_stride = row;
  g.positions = p.pos, g.slot_mapping = p.slots;
  g.k_cache = reinterpret_cast<uint16_t*>(p.k_cache[copy]), g.v_cache = reinterpret_cast<uint16_t*>(p.v_cache[copy]);
  g.num_blocks = p.num_blocks, g.page_size = kPage, g.block_tables = p.table, g.max_blocks_per_seq = p.blocks_per_seq;
  g.cu_seqlens_q = p.cu, g.context_lens = p.ctx_lens;
  g.num_tokens = p.T, g.num_seqs = p.num_seqs, g.num_heads = kH, g.num_kv_heads = kKV, g.head_dim = kD;
  g.rotary_dim = kRot, g.theta = 1e7, g.scale = static_cast<float>(1.0 / std::sqrt(double(kD)));
  g.out = reinterpret_cast<uint16_t*>(p.out), g.max_context = p.ctx;
  return g;
}

void free_problem(Problem& p) {
  for (void* x : {static_cast<void*>(p.qkv), static_cast<void*>(p.pos), static_cast<void*>(p.cu),
                  static_cast<void*>(p.ctx_lens), static_cast<void*>(p.table), static_cast<void*>(p.slots),
                  static_cast<void*>(p.out), p.ws}) {
    if (x) CHECK_CUDA(cudaFree(x));
  }
  for (auto* x : p.k_cache) CHECK_CUDA(cudaFree(x));
  for (auto* x : p.v_cache) CHECK_CUDA(cudaFree(x));
}

// Sequences of `ctx` cached tokens each (pages in order); `T` new tokens per step in all (prefill: one
// sequence of T; decode: one per sequence). `copies` caches to rotate over.
Problem make_problem(int64_t num_seqs, int64_t ctx, int64_t T, int copies) {
  Problem p;
  p.T = T, p.num_seqs = num_seqs, p.ctx = ctx;
  p.blocks_per_seq = (ctx + kPage - 1) / kPage;
  p.num_blocks = num_seqs * p.blocks_per_seq;
  const size_t row = (kH + 2 * kKV) * kD;
  p.qkv = dalloc<__nv_bfloat16>(T * row);
  fill_bf16<<<1024, 256>>>(p.qkv, T * row, 7, 1.f);
  p.pos = dalloc<int32_t>(T);
  p.slots = dalloc<int64_t>(T);
  if (num_seqs == 1) {  // prefill: positions ctx - T .. ctx - 1
    iota_i32<<<256, 256>>>(p.pos, static_cast<int>(T), static_cast<int>(ctx - T));
    iota_i64<<<256, 256>>>(p.slots, static_cast<int>(T), ctx - T);
  } else {  // decode: sequence b's new token at position ctx - 1, slot b * blocks_per_seq * page + ctx - 1
    std::vector<int32_t> pos(num_seqs, static_cast<int32_t>(ctx - 1));
    std::vector<int64_t> slots(num_seqs);
    for (int64_t b = 0; b < num_seqs; ++b) slots[b] = b * p.blocks_per_seq * kPage + ctx - 1;
    CHECK_CUDA(cudaMemcpy(p.pos, pos.data(), pos.size() * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(p.slots, slots.data(), slots.size() * 8, cudaMemcpyHostToDevice));
  }
  std::vector<int32_t> cu(num_seqs + 1), ctx_lens(num_seqs, static_cast<int32_t>(ctx));
  for (int64_t b = 0; b <= num_seqs; ++b) cu[b] = static_cast<int32_t>(b * (T / num_seqs));
  p.cu = dalloc<int32_t>(num_seqs + 1);
  p.ctx_lens = dalloc<int32_t>(num_seqs);
  CHECK_CUDA(cudaMemcpy(p.cu, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(p.ctx_lens, ctx_lens.data(), ctx_lens.size() * 4, cudaMemcpyHostToDevice));
  p.table = dalloc<int32_t>(p.num_blocks);
  iota_i32<<<256, 256>>>(p.table, static_cast<int>(p.num_blocks), 0);
  const size_t cache = static_cast<size_t>(p.num_blocks) * kPage * kKV * kD;
  for (int c = 0; c < copies; ++c) {
    p.k_cache.push_back(dalloc<__nv_bfloat16>(cache));
    p.v_cache.push_back(dalloc<__nv_bfloat16>(cache));
    fill_bf16<<<1024, 256>>>(p.k_cache.back(), cache, 11 + c, 1.f);
    fill_bf16<<<1024, 256>>>(p.v_cache.back(), cache, 13 + c, 1.f);
  }
  p.out = dalloc<__nv_bfloat16>(T * kH * kD);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaDeviceSynchronize());
  return p;
}

unsigned long long nonfinite(const __nv_bfloat16* x, size_t n) {
  unsigned long long* d = dalloc<unsigned long long>(1);
  CHECK_CUDA(cudaMemset(d, 0, 8));
  count_nonfinite<<<1024, 256>>>(x, n, d);
  unsigned long long h = 0;
  CHECK_CUDA(cudaMemcpy(&h, d, 8, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaFree(d));
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    if (a == "--quick") quick = true;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const double copy_bw = copy_bandwidth_TBps();
  std::fprintf(stderr, "%s, %d SMs, copy %.3f TB/s\n", prop.name, prop.multiProcessorCount, copy_bw);
  std::string js = "{\n  \"device\": \"" + std::string(prop.name) + "\",\n  \"sms\": " +
                   std::to_string(prop.multiProcessorCount) + ",\n";
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "  \"copy_bandwidth_TBps\": %.4f,\n  \"flops_note\": \"causal prefill FLOPs = 2 * 2 * T^2/2 * 64 * 128 "
                "(Q K^T + P V over half the square); time includes the roped cache write\",\n  \"prefill\": [\n",
                copy_bw);
  js += buf;

  const std::vector<int64_t> lengths = quick ? std::vector<int64_t>{4096, 16384}
                                             : std::vector<int64_t>{4096, 16384, 65536, 131072};
  bool first_prefill = true;
  for (size_t li = 0; li < lengths.size(); ++li) {
    for (int64_t rows_per_warp : {16, 32, 0}) {  // 0: the Hopper kernel (wgmma + TMA)
      const int64_t T = lengths[li];
      Problem p = make_problem(1, T, T, 1);
      auto g = params(p, 0);
      g.prefill_rows_per_warp = rows_per_warp;
      g.prefill_kernel = rows_per_warp == 0 ? cuda::kPrefillSm90 : cuda::kPrefillMma;
      const char* kernel = rows_per_warp == 0 ? "sm90" : "mma.sync";
      const int reps = T >= 65536 ? 3 : 10;
      const double ms = time_ms([&](int) { CHECK_KERNEL(cuda::softmax_attention_prefill(g, nullptr)); }, 1, reps);
      const double write_ms = time_ms([&](int) { CHECK_KERNEL(cuda::softmax_kv_cache_write(g, nullptr)); }, 1, reps);
      const unsigned long long bad = nonfinite(p.out, static_cast<size_t>(T) * kH * kD);
      const double flops = 2.0 * 2.0 * double(T) * double(T) / 2.0 * kH * kD;
      const double tflops = flops / (ms * 1e-3) / 1e12;
      std::fprintf(stderr, "prefill T=%lld %s rows/warp %lld: %.3f ms (%.1f TFLOP/s), cache write %.3f ms, non-finite %llu\n",
                   (long long)T, kernel, (long long)rows_per_warp, ms, tflops, write_ms, bad);
      std::snprintf(buf, sizeof buf,
                    "%s    {\"T\": %lld, \"kernel\": \"%s\", \"rows_per_warp\": %lld, \"ms\": %.4f, \"tflops\": %.2f, "
                    "\"cache_write_ms\": %.4f, \"nonfinite\": %llu}",
                    first_prefill ? "" : ",\n", (long long)T, kernel, (long long)rows_per_warp, ms, tflops, write_ms, bad);
      first_prefill = false;
      js += buf;
      free_problem(p);
    }
  }
  js += "\n  ],\n  \"decode\": [\n";

  const std::vector<int64_t> batches{1, 16, 64}, contexts{4096, 32768};
  bool first = true;
  for (int64_t ctx : contexts) {
    for (int64_t B : batches) {
      const double kv_bytes = double(B) * ctx * kKV * kD * 2 * 2;
      const int copies = static_cast<int>(std::max(1.0, std::ceil(256e6 / kv_bytes)));
      Problem p = make_problem(B, ctx, B, copies);
      std::vector<cuda::SoftmaxAttentionCudaParams> gs;
      size_t ws = 0;
      for (int c = 0; c < copies; ++c) {
        gs.push_back(params(p, c));
        gs.back().cu_seqlens_q = nullptr;
        ws = std::max(ws, cuda::softmax_decode_workspace_bytes(gs.back()));
      }
      p.ws = dalloc<char>(ws);
      for (auto& g : gs) g.workspace = p.ws, g.workspace_bytes = ws;
      const int64_t splits = cuda::softmax_decode_num_splits(gs[0]);
      // 20 calls (rotating caches) captured in one graph; the graph's replay time / 20.
      constexpr int kCalls = 20;
      cudaStream_t stream;
      CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      for (auto& g : gs) CHECK_KERNEL(cuda::softmax_attention_decode(g, stream));  // warm-up, sets attributes
      CHECK_CUDA(cudaStreamSynchronize(stream));
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      bool graphed = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
      if (graphed) {
        for (int i = 0; i < kCalls; ++i) CHECK_KERNEL(cuda::softmax_attention_decode(gs[i % copies], stream));
        graphed = cudaStreamEndCapture(stream, &graph) == cudaSuccess &&
                  cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
      }
      (void)cudaGetLastError();
      cudaEvent_t a, b;
      CHECK_CUDA(cudaEventCreate(&a));
      CHECK_CUDA(cudaEventCreate(&b));
      std::vector<double> t;
      for (int r = 0; r < 12; ++r) {
        CHECK_CUDA(cudaEventRecord(a, stream));
        if (graphed) {
          CHECK_CUDA(cudaGraphLaunch(exec, stream));
        } else {
          for (int i = 0; i < kCalls; ++i) CHECK_KERNEL(cuda::softmax_attention_decode(gs[i % copies], stream));
        }
        CHECK_CUDA(cudaEventRecord(b, stream));
        CHECK_CUDA(cudaEventSynchronize(b));
        float ms = 0;
        CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
        if (r >= 2) t.push_back(ms);
      }
      const double us = median(t) * 1e3 / kCalls;
      const double tbps = kv_bytes / (us * 1e-6) / 1e12;
      const unsigned long long bad = nonfinite(p.out, static_cast<size_t>(B) * kH * kD);
      std::fprintf(stderr, "decode B=%lld ctx=%lld: %.2f us, KV %.3f TB/s (%.0f%% of copy), splits %lld, graph %d, non-finite %llu\n",
                   (long long)B, (long long)ctx, us, tbps, 100 * tbps / copy_bw, (long long)splits, int(graphed), bad);
      std::snprintf(buf, sizeof buf,
                    "%s    {\"batch\": %lld, \"context\": %lld, \"us\": %.3f, \"kv_bytes\": %.0f, \"kv_TBps\": %.4f, "
                    "\"fraction_of_copy_bw\": %.4f, \"splits\": %lld, \"graph\": %s, \"nonfinite\": %llu}",
                    first ? "" : ",\n", (long long)B, (long long)ctx, us, kv_bytes, tbps, tbps / copy_bw,
                    (long long)splits, graphed ? "true" : "false", bad);
      js += buf;
      first = false;
      if (exec) CHECK_CUDA(cudaGraphExecDestroy(exec));
      if (graph) CHECK_CUDA(cudaGraphDestroy(graph));
      CHECK_CUDA(cudaEventDestroy(a));
      CHECK_CUDA(cudaEventDestroy(b));
      CHECK_CUDA(cudaStreamDestroy(stream));
      free_problem(p);
    }
  }
  js += "\n  ]\n}\n";
  std::printf("%s", js.c_str());
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f) {
      std::fputs(js.c_str(), f);
      std::fclose(f);
    }
  }
  return 0;
}
