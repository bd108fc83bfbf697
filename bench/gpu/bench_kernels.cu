// One timing line per MoE-path kernel at MiniMax-Text-01 shapes (hidden 6144, 32 experts, top-2,
// vocab 200064), T = 4096 and 65536 tokens: the production kernels of kernels/cuda (deepnorm_rmsnorm,
// moe_router, moe_permute, moe_unpermute, embedding, sample_greedy, sample). CUDA events, median of 20 runs
// after 3 warm-ups; the effective bandwidth counts each kernel's compulsory HBM bytes once.
// Correctness is the tests' job (tests/kernels/test_cuda_*.cpp); this prints timings only.
//
//   bench_kernels            (a few seconds on an H100 / H200)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/cuda/embedding.h"
#include "kernels/cuda/moe_permute.h"
#include "kernels/cuda/moe_router.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/sampling.h"

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
#define CHECK_KERNEL(x)                                         \
  do {                                                          \
    KernelStatus s = (x);                                       \
    if (!s.ok()) {                                              \
      std::fprintf(stderr, "%s failed: %s\n", #x, s.error);     \
      std::exit(1);                                             \
    }                                                           \
  } while (0)

__global__ void fill_bf16(__nv_bfloat16* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    x[i] = __float2bfloat16(static_cast<float>(h) * (1.f / 4294967296.f) * 2.f - 1.f);
  }
}
__global__ void fill_f32(float* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2246822519u ^ seed;
    h ^= h >> 15, h *= 2654435761u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    x[i] = (static_cast<float>(h) * (1.f / 4294967296.f) * 2.f - 1.f) * 4.f;
  }
}

template <class T>
T* device(size_t n) {
  void* p;
  CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(n * sizeof(T), 16)));
  return static_cast<T*>(p);
}

template <class F>
double median_ms(F&& f) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) f();
  std::vector<float> ms;
  for (int r = 0; r < 20; ++r) {
    CHECK_CUDA(cudaEventRecord(a));
    f();
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float x;
    CHECK_CUDA(cudaEventElapsedTime(&x, a, b));
    ms.push_back(x);
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void line(const char* name, long long T, double ms, double bytes) {
  std::printf("%-34s T=%-6lld %9.1f us  %7.2f TB/s\n", name, T, ms * 1e3, bytes / (ms * 1e-3) / 1e12);
}

}  // namespace

int main() {
  constexpr int64_t kHidden = 6144, kExperts = 32, kTopK = 2, kVocab = 200064;
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  for (int64_t T : {int64_t(4096), int64_t(65536)}) {
    const size_t n = size_t(T) * kHidden;
    auto* h = device<__nv_bfloat16>(n);
    auto* a = device<__nv_bfloat16>(n);
    auto* w = device<__nv_bfloat16>(kHidden);
    auto* out = device<__nv_bfloat16>(n);
    fill_bf16<<<1024, 256>>>(h, n, 1), fill_bf16<<<1024, 256>>>(a, n, 2), fill_bf16<<<64, 256>>>(w, kHidden, 3);

    cuda::DeepNormRmsNormCudaParams dn;
    dn.residual = reinterpret_cast<uint16_t*>(h), dn.x = reinterpret_cast<uint16_t*>(a);
    dn.weight = reinterpret_cast<uint16_t*>(w), dn.out = reinterpret_cast<uint16_t*>(out);
    dn.rows = T, dn.dim = kHidden, dn.alpha = 3.5565588f, dn.beta = 1.f;
    line("deepnorm_rmsnorm (bf16, 6144)", T, median_ms([&] { CHECK_KERNEL(cuda::deepnorm_rmsnorm(dn, nullptr)); }),
         3.0 * n * 2);

    auto* logits = device<float>(size_t(T) * kExperts);
    auto* idx = device<int32_t>(size_t(T) * kTopK);
    auto* wt = device<float>(size_t(T) * kTopK);
    fill_f32<<<1024, 256>>>(logits, size_t(T) * kExperts, 4);
    cuda::MoeRouterCudaParams rp{.logits = logits, .topk_idx = idx, .topk_weight = wt, .num_tokens = T,
                                 .num_experts = kExperts, .k = kTopK};
    line("moe_router (E=32, k=2)", T, median_ms([&] { CHECK_KERNEL(cuda::moe_router(rp, nullptr)); }),
         double(T) * (kExperts * 4 + kTopK * 8));

    auto* perm = device<__nv_bfloat16>(n * kTopK);
    auto* off = device<int32_t>(kExperts + 1);
    auto* inv = device<int32_t>(size_t(T) * kTopK);
    auto* tok = device<int32_t>(size_t(T) * kTopK);
    const size_t ws_bytes = cuda::moe_permute_workspace_bytes(T, kTopK, kExperts);
    void* ws;
    CHECK_CUDA(cudaMalloc(&ws, std::max<size_t>(ws_bytes, 16)));
    CHECK_KERNEL(cuda::moe_router(rp, nullptr));  // realistic ids
    cuda::MoePermuteCudaParams pp;
    pp.topk_idx = idx, pp.h = reinterpret_cast<uint16_t*>(h), pp.permuted = reinterpret_cast<uint16_t*>(perm);
    pp.expert_offsets = off, pp.permuted_token = tok, pp.inverse = inv;
    pp.num_tokens = T, pp.k = kTopK, pp.num_experts = kExperts, pp.hidden = kHidden;
    pp.workspace = ws, pp.workspace_bytes = ws_bytes;
    line("moe_permute (4 kernels, k=2)", T, median_ms([&] { CHECK_KERNEL(cuda::moe_permute(pp, nullptr)); }),
         double(n) * 2 * (1 + kTopK));
    fulgur::kernels::MoeUnpermuteParams up{.expert_out = reinterpret_cast<uint16_t*>(perm), .inverse = inv,
                                           .topk_idx = idx, .topk_weight = wt, .out = reinterpret_cast<uint16_t*>(out),
                                           .num_tokens = T, .k = kTopK, .hidden = kHidden};
    line("moe_unpermute (k=2)", T, median_ms([&] { CHECK_KERNEL(cuda::moe_unpermute(up, nullptr)); }),
         double(n) * 2 * (1 + kTopK));

    // Embedding: a table of the real vocabulary, ids spread over it.
    auto* table = device<__nv_bfloat16>(size_t(kVocab) * kHidden);
    CHECK_CUDA(cudaMemset(table, 0x3c, size_t(kVocab) * kHidden * 2));
    std::vector<int32_t> ids_h(T);
    std::mt19937 rng(5);
    for (auto& id : ids_h) id = static_cast<int32_t>(rng() % kVocab);
    auto* ids = device<int32_t>(T);
    CHECK_CUDA(cudaMemcpy(ids, ids_h.data(), T * 4, cudaMemcpyHostToDevice));
    cuda::EmbeddingCudaParams ep{.table = reinterpret_cast<uint16_t*>(table), .ids = ids, .ids_host = nullptr,
                                 .out = reinterpret_cast<uint16_t*>(out), .num_tokens = T, .hidden = kHidden,
                                 .vocab = kVocab};
    line("embedding (vocab 200064)", T, median_ms([&] { CHECK_KERNEL(cuda::embedding(ep, nullptr)); }), 2.0 * n * 2);
    ep.ids_host = ids_h.data();
    line("embedding + host id check", T, median_ms([&] { CHECK_KERNEL(cuda::embedding(ep, nullptr)); }), 2.0 * n * 2);

    CHECK_CUDA(cudaDeviceSynchronize());
    for (void* p : {(void*)h, (void*)a, (void*)w, (void*)out, (void*)logits, (void*)idx, (void*)wt, (void*)perm,
                    (void*)off, (void*)inv, (void*)tok, ws, (void*)table, (void*)ids}) {
      CHECK_CUDA(cudaFree(p));
    }
  }
  // Greedy sampling over the vocabulary: decode batches.
  for (int64_t rows : {int64_t(1), int64_t(64), int64_t(256)}) {
    auto* logits = device<float>(size_t(rows) * kVocab);
    fill_f32<<<1024, 256>>>(logits, size_t(rows) * kVocab, 9);
    auto* tok = device<int32_t>(rows);
    const size_t ws_bytes = cuda::sample_greedy_workspace_bytes(rows, kVocab);
    void* ws;
    CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
    cuda::SampleGreedyCudaParams sp{.logits = logits, .out_token = tok, .num_rows = rows, .vocab = kVocab,
                                    .workspace = ws, .workspace_bytes = ws_bytes};
    const double ms = median_ms([&] { CHECK_KERNEL(cuda::sample_greedy(sp, nullptr)); });
    std::printf("%-34s B=%-6lld %9.1f us  %7.2f TB/s\n", "sample_greedy (vocab 200064)", (long long)rows, ms * 1e3,
                double(rows) * kVocab * 4 / (ms * 1e-3) / 1e12);
    // Temperature / top-k / top-p sampling of the same rows (each row its own parameters, all alike here).
    struct Case {
      const char* name;
      fulgur::kernels::SamplingParams p;
    };
    for (const Case& c : {Case{"sample t=1", {.temperature = 1.f}},
                          Case{"sample t=0.7 top_k=50 top_p=0.9", {.temperature = 0.7f, .top_k = 50, .top_p = 0.9f}},
                          Case{"sample t=1 top_p=0.95", {.temperature = 1.f, .top_p = 0.95f}}}) {
      std::vector<fulgur::kernels::SamplingParams> params(rows, c.p);
      for (int64_t r = 0; r < rows; ++r) params[r].seed = r, params[r].step = 17;
      auto* d_params = device<fulgur::kernels::SamplingParams>(rows);
      CHECK_CUDA(cudaMemcpy(d_params, params.data(), rows * sizeof(params[0]), cudaMemcpyHostToDevice));
      cuda::SampleCudaParams cp{.logits = logits, .params = d_params, .out_token = tok, .num_rows = rows, .vocab = kVocab};
      const double t = median_ms([&] { CHECK_KERNEL(cuda::sample(cp, nullptr)); });
      std::printf("%-34s B=%-6lld %9.1f us  %7.2f TB/s\n", c.name, (long long)rows, t * 1e3,
                  double(rows) * kVocab * 4 / (t * 1e-3) / 1e12);
      CHECK_CUDA(cudaFree(d_params));
    }
    CHECK_CUDA(cudaFree(logits));
    CHECK_CUDA(cudaFree(tok));
    CHECK_CUDA(cudaFree(ws));
  }
  return 0;
}
