// Expert FFN of one MiniMax-Text-01 MoE layer (hidden 6144, 32 experts, intermediate 9216, top-2) on
// the production kernels of kernels/cuda/expert_ffn.h, against cuBLAS dense bf16 GEMMs of the same FLOPs
// in the same run:
//  - prefill: T = 4k, 16k, 64k tokens (2T grouped rows), routing uniform / zipf (p_e ~ 1/(e+1)) / half
//    (50 % of the rows on expert 0, the most top-2 allows); bf16 grouped (cublasGemmGroupedBatchedEx)
//    and per-expert (cublasGemmEx loop) modes, the loop also with its experts spread over 2 and 4
//    streams (side streams of ExpertFfnBf16Params), and the Hopper tile kernels (expert_ffn_bf16_tiles,
//    sizes on the device: no host round trip, which the cuBLAS modes' times leave out); FLOPs 6 * rows * hidden * inter; dense = one
//    [2T, hidden] x [hidden, 2 inter] + one [2T, inter] x [inter, hidden] GEMM.
//  - decode: 1, 4, 16, 64 rows per expert over all 32 experts, and one token's top-2 (2 experts x 1
//    row): bf16 vs int8 weight-only, us and weight bytes per second.
//  - the host round trip the bf16 path needs (expert offsets device -> host + stream sync).
// CUDA events, median of the repeats after 2 warm-ups; weights (10.9 GB bf16) far exceed L2.
// Correctness is the tests' job (tests/kernels/test_cuda_expert_ffn.cpp); printed cross-checks here
// (grouped vs per-expert, int8 vs bf16) only guard the timed configurations.
//
//   bench_expert_ffn [--quick] [--json FILE]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/expert_ffn.h"

namespace {

using fulgur::kernels::KernelStatus;
namespace cuda = fulgur::kernels::cuda;

#define CHECK_CUDA(x)                                                                                   \
  do {                                                                                                  \
    cudaError_t e = (x);                                                                                \
    if (e != cudaSuccess) {                                                                             \
      std::fprintf(stderr, "%s failed at %s:%d: %s\n", #x, __FILE__, __LINE__, cudaGetErrorString(e)); \
      std::exit(1);                                                                                     \
    }                                                                                                   \
  } while (0)
#define CHECK_CUBLAS(x)                                                                        \
  do {                                                                                         \
    cublasStatus_t e = (x);                                                                    \
    if (e != CUBLAS_STATUS_SUCCESS) {                                                          \
      std::fprintf(stderr, "%s failed at %s:%d: status %d\n", #x, __FILE__, __LINE__, int(e)); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)
#define CHECK_KERNEL(x)                                     \
  do {                                                      \
    KernelStatus s = (x);                                   \
    if (!s.ok()) {                                          \
      std::fprintf(stderr, "%s failed: %s\n", #x, s.error); \
      std::exit(1);                                         \
    }                                                       \
  } while (0)

constexpr int64_t kHidden = 6144, kExperts = 32, kInter = 9216;

__global__ void fill_bf16(__nv_bfloat16* x, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ static_cast<uint32_t>(i >> 32) * 97u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    x[i] = __float2bfloat16((static_cast<float>(h) * (1.f / 4294967296.f) * 2.f - 1.f) * scale);
  }
}

template <class T>
T* device(size_t n) {
  void* p;
  CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(n * sizeof(T), 256)));
  return static_cast<T*>(p);
}

template <class F>
// `inner` calls back to back per sample (time / inner): with inner > 1 the host work of a call (argument
// checks, tensor maps, cuBLAS launches) overlaps the GPU work of the previous one, as it does in a model step.
double median_ms(F&& f, int reps, int inner = 1) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < 2; ++i) f();
  std::vector<float> ms;
  for (int r = 0; r < reps; ++r) {
    CHECK_CUDA(cudaEventRecord(a));
    for (int i = 0; i < inner; ++i) f();
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float x;
    CHECK_CUDA(cudaEventElapsedTime(&x, a, b));
    ms.push_back(x / inner);
  }
  CHECK_CUDA(cudaGetLastError());
  cudaEventDestroy(a), cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

std::vector<int32_t> routing(const std::string& kind, int64_t rows) {
  std::vector<int32_t> c(kExperts, 0);
  if (kind == "uniform") {
    for (int64_t e = 0; e < kExperts; ++e) c[e] = static_cast<int32_t>(rows / kExperts + (e < rows % kExperts));
  } else if (kind == "zipf") {
    double hsum = 0;
    for (int64_t e = 0; e < kExperts; ++e) hsum += 1.0 / (e + 1);
    int64_t used = 0;
    for (int64_t e = 0; e < kExperts; ++e) used += c[e] = static_cast<int32_t>(rows / (hsum * (e + 1)));
    c[0] += static_cast<int32_t>(rows - used);
  } else {  // half
    c[0] = static_cast<int32_t>(rows / 2);
    const int64_t rest = rows - c[0];
    for (int64_t e = 1; e < kExperts; ++e) c[e] = static_cast<int32_t>(rest / 31 + (e - 1 < rest % 31));
  }
  return c;
}

std::vector<int32_t> offsets_of(const std::vector<int32_t>& c) {
  std::vector<int32_t> off(c.size() + 1, 0);
  for (size_t e = 0; e < c.size(); ++e) off[e + 1] = off[e] + c[e];
  return off;
}

double rel_diff(const __nv_bfloat16* a, const __nv_bfloat16* b, size_t n) {
  std::vector<__nv_bfloat16> ha(n), hb(n);
  CHECK_CUDA(cudaMemcpy(ha.data(), a, n * 2, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(hb.data(), b, n * 2, cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = __bfloat162float(ha[i]), y = __bfloat162float(hb[i]);
    num += (x - y) * (x - y), den += y * y;
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, tiles_only = false;
  const char* json_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    if (!std::strcmp(argv[i], "--tiles-only")) tiles_only = true;  // prefill: dense, the loop and tiles only
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  const int64_t H = kHidden, I = kInter, E = kExperts;
  const std::vector<int64_t> Ts = quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{4096, 16384, 65536};
  const int64_t max_rows = 2 * Ts.back();

  auto* w13 = device<__nv_bfloat16>(size_t(E) * 2 * I * H);
  auto* w2 = device<__nv_bfloat16>(size_t(E) * H * I);
  auto* q13 = device<int8_t>(size_t(E) * 2 * I * H);
  auto* q2 = device<int8_t>(size_t(E) * H * I);
  auto* s13 = device<float>(size_t(E) * 2 * I);
  auto* s2 = device<float>(size_t(E) * H);
  auto* x = device<__nv_bfloat16>(size_t(max_rows) * H);
  auto* y = device<__nv_bfloat16>(size_t(max_rows) * H);
  auto* y2 = device<__nv_bfloat16>(size_t(max_rows) * H);
  const size_t ws_bytes = std::max({cuda::expert_ffn_bf16_workspace_bytes(max_rows, E, I),
                                    cuda::expert_ffn_int8_workspace_bytes(max_rows, I),
                                    cuda::expert_ffn_bf16_tiles_workspace_bytes(max_rows, I)});
  auto* ws = device<char>(ws_bytes);
  auto* d_off = device<int32_t>(E + 1);
  fill_bf16<<<4096, 256>>>(w13, size_t(E) * 2 * I * H, 1, 1.f / std::sqrt(float(H)));
  fill_bf16<<<4096, 256>>>(w2, size_t(E) * H * I, 2, 1.f / std::sqrt(float(I)));
  fill_bf16<<<4096, 256>>>(x, size_t(max_rows) * H, 3, 1.f);
  CHECK_CUDA(cudaGetLastError());
  cublasHandle_t blas;
  CHECK_CUBLAS(cublasCreate(&blas));
  CHECK_CUBLAS(cublasSetStream(blas, nullptr));

  // int8 copies of the weights through the production quantiser (timed once: a load-time step).
  cudaEvent_t qa, qb;
  CHECK_CUDA(cudaEventCreate(&qa));
  CHECK_CUDA(cudaEventCreate(&qb));
  CHECK_CUDA(cudaEventRecord(qa));
  CHECK_KERNEL(cuda::quantize_rows_int8({reinterpret_cast<uint16_t*>(w13), q13, s13, E * 2 * I, H}, nullptr));
  CHECK_KERNEL(cuda::quantize_rows_int8({reinterpret_cast<uint16_t*>(w2), q2, s2, E * H, I}, nullptr));
  CHECK_CUDA(cudaEventRecord(qb));
  CHECK_CUDA(cudaEventSynchronize(qb));
  float quant_ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&quant_ms, qa, qb));
  std::printf("quantize_rows_int8, whole layer (10.9 GB bf16 -> 5.4 GB int8): %.2f ms\n", quant_ms);

  // Side streams (non-blocking, own cuBLAS handle each) for the multi-stream loop.
  constexpr int kSides = 3;
  cudaStream_t side_streams[kSides];
  cublasHandle_t side_blas[kSides];
  cudaEvent_t side_done[kSides], fork;
  CHECK_CUDA(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  for (int i = 0; i < kSides; ++i) {
    CHECK_CUDA(cudaStreamCreateWithFlags(&side_streams[i], cudaStreamNonBlocking));
    CHECK_CUDA(cudaEventCreateWithFlags(&side_done[i], cudaEventDisableTiming));
    CHECK_CUBLAS(cublasCreate(&side_blas[i]));
    CHECK_CUBLAS(cublasSetStream(side_blas[i], side_streams[i]));
  }
  auto with_sides = [&](cuda::ExpertFfnBf16Params p, int sides) {
    p.num_side_streams = sides, p.fork = fork;
    for (int i = 0; i < sides; ++i) p.side[i] = {side_streams[i], reinterpret_cast<cublasContext*>(side_blas[i]), side_done[i]};
    return p;
  };
  auto bf16_params = [&](const std::vector<int32_t>& off, cuda::ExpertGemmMode mode, __nv_bfloat16* out) {
    cuda::ExpertFfnBf16Params p;
    p.x = reinterpret_cast<uint16_t*>(x), p.w13 = reinterpret_cast<uint16_t*>(w13);
    p.w2 = reinterpret_cast<uint16_t*>(w2), p.y = reinterpret_cast<uint16_t*>(out);
    p.host_expert_offsets = off.data(), p.num_experts = E, p.hidden = H, p.inter = I;
    p.workspace = ws, p.workspace_bytes = ws_bytes, p.blas = reinterpret_cast<cublasContext*>(blas), p.mode = mode;
    return p;
  };
  auto int8_params = [&](int64_t rows, int64_t per_expert, __nv_bfloat16* out) {
    cuda::ExpertFfnInt8Params p;
    p.x = reinterpret_cast<uint16_t*>(x), p.expert_offsets = d_off, p.w13 = q13, p.w13_scale = s13, p.w2 = q2;
    p.w2_scale = s2, p.y = reinterpret_cast<uint16_t*>(out), p.max_rows = rows, p.max_rows_per_expert = per_expert;
    p.num_experts = E, p.hidden = H, p.inter = I, p.workspace = ws, p.workspace_bytes = ws_bytes;
    return p;
  };

  std::string json = "{\n  \"device\": \"" + std::string(prop.name) + "\",\n  \"sms\": " +
                     std::to_string(prop.multiProcessorCount) + ",\n  \"quantize_ms\": " + std::to_string(quant_ms) +
                     ",\n  \"prefill\": [\n";
  std::printf("\n%-6s %-8s %9s %9s %9s %9s %9s %9s %9s %9s %9s %9s %7s %7s %9s  %s  %s\n", "T", "routing", "grp ms", "grp TF/s",
              "loop ms", "loop TF/s", "loop2 ms", "loop4 ms", "tiles ms", "tiles TF", "dense ms", "dense TF", "tiles/d",
              "best/d", "int8 ms", "tiles vs loop", "tiles host us");
  bool first = true;
  constexpr int kInner = 3;  // prefill samples: 3 calls back to back
  for (int64_t T : Ts) {
    const int64_t rows = 2 * T;
    const double flops = 6.0 * rows * H * I;
    const int reps = T >= 65536 ? 5 : 10;
    const float one = 1.f, zero = 0.f;
    auto* h13 = reinterpret_cast<__nv_bfloat16*>(ws);
    const double dense_ms = median_ms(
        [&] {
          CHECK_CUBLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, 2 * I, rows, H, &one, w13, CUDA_R_16BF, H, x,
                                    CUDA_R_16BF, H, &zero, h13, CUDA_R_16BF, 2 * I, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
          CHECK_CUBLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, H, rows, I, &one, w2, CUDA_R_16BF, I, h13,
                                    CUDA_R_16BF, I, &zero, y, CUDA_R_16BF, H, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        },
        reps, kInner);
    const double dense_tf = flops / (dense_ms * 1e-3) / 1e12;
    for (const char* kind : {"uniform", "zipf", "half"}) {
      const std::vector<int32_t> off = offsets_of(routing(kind, rows));
      const auto pg = bf16_params(off, cuda::ExpertGemmMode::grouped, y);
      const auto pl = bf16_params(off, cuda::ExpertGemmMode::per_expert, y2);
      const double g_ms = tiles_only ? 1e9 : median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_bf16(pg, nullptr)); }, reps, kInner);
      const double l_ms = median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_bf16(pl, nullptr)); }, reps, kInner);
      const auto pl2 = with_sides(pl, 1), pl4 = with_sides(pl, 3);
      const double l2_ms = tiles_only ? 1e9 : median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_bf16(pl2, nullptr)); }, reps, kInner);
      const double l4_ms = tiles_only ? 1e9 : median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_bf16(pl4, nullptr)); }, reps, kInner);
      const double diff = T == Ts.front() && !tiles_only ? rel_diff(y, y2, size_t(rows) * H) : -1;
      // The Hopper tile kernels: sizes on the device, no host round trip (the loop's times exclude it).
      CHECK_CUDA(cudaMemcpy(d_off, off.data(), off.size() * 4, cudaMemcpyHostToDevice));
      cuda::ExpertFfnBf16DeviceParams pt;
      pt.x = reinterpret_cast<uint16_t*>(x), pt.expert_offsets = d_off, pt.w13 = reinterpret_cast<uint16_t*>(w13);
      pt.w2 = reinterpret_cast<uint16_t*>(w2), pt.y = reinterpret_cast<uint16_t*>(y), pt.max_rows = rows;
      pt.num_experts = E, pt.hidden = H, pt.inter = I, pt.workspace = ws, pt.workspace_bytes = ws_bytes;
      const double t_ms = median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_bf16_tiles(pt, nullptr)); }, reps, kInner);
      const double t_diff = rel_diff(y, y2, size_t(rows) * H);  // y: tiles, y2: the last loop run
      // Host cost of one call (checks, 6 tensor maps, 2 launches), enqueued behind GPU work.
      double t_host_us = 0;
      {
        CHECK_CUDA(cudaDeviceSynchronize());
        const auto h0 = std::chrono::steady_clock::now();
        for (int i = 0; i < 5; ++i) CHECK_KERNEL(cuda::expert_ffn_bf16_tiles(pt, nullptr));
        t_host_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - h0).count() / 5;
        CHECK_CUDA(cudaDeviceSynchronize());
      }
      const double t_tf = flops / (t_ms * 1e-3) / 1e12;
      double i8_ms = -1;
      if (T == 4096 && !tiles_only) {
        const auto pi = int8_params(rows, 0, y2);
        i8_ms = median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_int8(pi, nullptr)); }, 3);
      }
      int max_expert_rows = 0;
      for (int64_t e = 0; e < E; ++e) max_expert_rows = std::max(max_expert_rows, off[e + 1] - off[e]);
      const double g_tf = flops / (g_ms * 1e-3) / 1e12, l_tf = flops / (l_ms * 1e-3) / 1e12;
      const double l2_tf = flops / (l2_ms * 1e-3) / 1e12, l4_tf = flops / (l4_ms * 1e-3) / 1e12;
      const double ratio = std::max({g_tf, l_tf, l2_tf, l4_tf, t_tf}) / dense_tf;
      std::printf("%-6lld %-8s %9.3f %9.1f %9.3f %9.1f %9.3f %9.3f %9.3f %9.1f %9.3f %9.1f %6.0f%% %6.0f%% %9.3f  %.2g  %.1f%s\n",
                  (long long)T, kind, g_ms, g_tf, l_ms, l_tf, l2_ms, l4_ms, t_ms, t_tf, dense_ms, dense_tf,
                  100 * t_tf / dense_tf, 100 * ratio, i8_ms, t_diff, t_host_us,
                  diff >= 0 ? ("   (grouped vs loop rel diff " + std::to_string(diff) + ")").c_str() : "");
      char buf[1024];
      std::snprintf(buf, sizeof buf,
                    "%s    {\"T\": %lld, \"rows\": %lld, \"routing\": \"%s\", \"max_expert_rows\": %d, \"grouped_ms\": %.4f, "
                    "\"grouped_tflops\": %.2f, \"per_expert_ms\": %.4f, \"per_expert_tflops\": %.2f, \"streams2_ms\": %.4f, "
                    "\"streams2_tflops\": %.2f, \"streams4_ms\": %.4f, \"streams4_tflops\": %.2f, \"tiles_ms\": %.4f, "
                    "\"tiles_tflops\": %.2f, \"tiles_vs_loop_rel_diff\": %.3g, \"tiles_host_us\": %.1f, \"dense_ms\": %.4f, "
                    "\"dense_tflops\": %.2f, \"ratio_tiles_to_dense\": %.4f, \"ratio_best_to_dense\": %.4f, \"int8_ms\": %.4f}",
                    first ? "" : ",\n", (long long)T, (long long)rows, kind, max_expert_rows, g_ms, g_tf, l_ms, l_tf, l2_ms, l2_tf,
                    l4_ms, l4_tf, t_ms, t_tf, t_diff, t_host_us, dense_ms, dense_tf, t_tf / dense_tf, ratio, i8_ms);
      json += buf;
      first = false;
    }
  }
  json += "\n  ],\n";

  if (tiles_only) {
    json.resize(json.size() - 2);  // the prefill list's ",\n"
    json += "\n}\n";
    if (json_path != nullptr) {
      FILE* f = std::fopen(json_path, "w");
      if (f != nullptr) std::fputs(json.c_str(), f), std::fclose(f);
    }
    return 0;
  }
  // Host round trip of the offsets (what the bf16 path costs when they exist only on the device).
  int32_t* h_off;
  CHECK_CUDA(cudaMallocHost(&h_off, (E + 1) * 4));
  std::vector<double> rt;
  for (int i = 0; i < 200; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_CUDA(cudaMemcpyAsync(h_off, d_off, (E + 1) * 4, cudaMemcpyDeviceToHost, nullptr));
    CHECK_CUDA(cudaStreamSynchronize(nullptr));
    rt.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(rt.begin(), rt.end());
  std::printf("\noffsets device -> host + stream sync (idle stream): median %.1f us, p90 %.1f us\n", rt[100], rt[180]);
  json += "  \"offsets_roundtrip_us\": " + std::to_string(rt[100]) + ",\n  \"decode\": [\n";

  std::printf("\n%-22s %6s %10s %10s %10s %10s %10s %9s %9s %8s %s\n", "decode", "rows", "bf16 grp", "bf16 loop",
              "bf16 dev", "tiles", "int8 us", "bf16 TB/s", "int8 TB/s", "speedup", "int8 vs bf16 rel diff");
  first = true;
  struct Dec { const char* name; int experts; int per_expert; };
  for (const Dec d : {Dec{"1 token top-2", 2, 1}, Dec{"32 experts x 1", 32, 1}, Dec{"32 experts x 4", 32, 4},
                      Dec{"32 experts x 16", 32, 16}, Dec{"32 experts x 64", 32, 64},
                      Dec{"32 experts x 128", 32, 128}}) {
    std::vector<int32_t> c(E, 0);
    for (int e = 0; e < d.experts; ++e) c[e * (E / d.experts)] = d.per_expert;
    const std::vector<int32_t> off = offsets_of(c);
    const int64_t rows = off[E];
    CHECK_CUDA(cudaMemcpy(d_off, off.data(), off.size() * 4, cudaMemcpyHostToDevice));
    const auto pg = bf16_params(off, cuda::ExpertGemmMode::grouped, y);
    const auto pl = bf16_params(off, cuda::ExpertGemmMode::per_expert, y);
    const auto pi = int8_params(rows, d.per_expert, y2);
    const double g_ms = median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_bf16(pg, nullptr)); }, 20);
    const double l_ms = median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_bf16(pl, nullptr)); }, 20);
    const double i_ms = median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_int8(pi, nullptr)); }, 20);
    // The two device-sizes bf16 paths (no host round trip): the streaming kernels and the Hopper tiles.
    cuda::ExpertFfnBf16DeviceParams pd;
    pd.x = reinterpret_cast<uint16_t*>(x), pd.expert_offsets = d_off, pd.w13 = reinterpret_cast<uint16_t*>(w13);
    pd.w2 = reinterpret_cast<uint16_t*>(w2), pd.y = reinterpret_cast<uint16_t*>(y2), pd.max_rows = rows;
    pd.max_rows_per_expert = d.per_expert, pd.num_experts = E, pd.hidden = H, pd.inter = I;
    pd.workspace = ws, pd.workspace_bytes = ws_bytes;
    const double dv_ms = median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_bf16_device(pd, nullptr)); }, 20);
    const double t_ms = median_ms([&] { CHECK_KERNEL(cuda::expert_ffn_bf16_tiles(pd, nullptr)); }, 20);
    CHECK_KERNEL(cuda::expert_ffn_bf16(pg, nullptr));
    CHECK_KERNEL(cuda::expert_ffn_int8(pi, nullptr));
    CHECK_CUDA(cudaDeviceSynchronize());
    const double diff = rel_diff(y2, y, size_t(rows) * H);
    const double wbytes = double(d.experts) * 3 * H * I;  // weight elements of the active experts
    const double bf = std::min({g_ms, l_ms, dv_ms, t_ms});
    std::printf("%-22s %6lld %10.1f %10.1f %10.1f %10.1f %10.1f %9.2f %9.2f %7.2fx %.3g\n", d.name, (long long)rows,
                g_ms * 1e3, l_ms * 1e3, dv_ms * 1e3, t_ms * 1e3, i_ms * 1e3, wbytes * 2 / (bf * 1e-3) / 1e12,
                wbytes / (i_ms * 1e-3) / 1e12, bf / i_ms, diff);
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "%s    {\"case\": \"%s\", \"experts\": %d, \"rows_per_expert\": %d, \"bf16_grouped_us\": %.2f, "
                  "\"bf16_per_expert_us\": %.2f, \"bf16_device_us\": %.2f, \"bf16_tiles_us\": %.2f, \"int8_us\": %.2f, "
                  "\"int8_weight_TBps\": %.3f, \"int8_vs_bf16_rel_diff\": %.4g}",
                  first ? "" : ",\n", d.name, d.experts, d.per_expert, g_ms * 1e3, l_ms * 1e3, dv_ms * 1e3, t_ms * 1e3,
                  i_ms * 1e3, wbytes / (i_ms * 1e-3) / 1e12, diff);
    json += buf;
    first = false;
  }
  json += "\n  ]\n}\n";
  if (json_path != nullptr) {
    FILE* f = std::fopen(json_path, "w");
    if (f != nullptr) std::fputs(json.c_str(), f), std::fclose(f);
  }
  cublasDestroy(blas);
  return 0;
}
