// GPU expert FFN (kernels/cuda/expert_ffn.h) against the CPU reference expert_ffn_cpu (kernels/expert_ffn.h,
// the SwiGLU of MoeBlock::expert_forward) on fresh random inputs: experts with 0, 1, 255, 256, 257 rows,
// odd hidden sizes (16, 257), a 6144 hidden with a small intermediate, skewed routing (one expert holds
// most rows). bf16 weights in both GEMM modes and through the device-sizes kernels; int8 weight-only
// experts against the reference on the dequantised weights. Skips (with the reason) where no CUDA device exists.
//
// Tolerances. The reference sums in double and rounds to bf16 exactly where the GPU stores bf16 (gate
// and up after the first GEMM, the activation, the output), so what is left is the fp32-vs-double
// accumulation noise (~1e-6 relative) and the rare bf16 rounding flip it causes when a value lies
// within that noise of a rounding boundary: one flip moves an element by one bf16 ulp (2^-8
// relative), and a flipped activation moves each output by ~2^-8 of one term of its sum. So
//   rel L2 (GPU vs reference) <= 1e-3  (a quarter of a bf16 ulp over the whole output; expected ~1e-4,
//                                       while a wrong row, tile or scale gives O(1)),
//   every element |d| <= 2^-6 (|ref| + rms(ref))  (a few ulps, and absolute room near zero).
// Against the unrounded f32 semantics (MoeBlock) the four bf16 roundings add ~2^-9 RMS each: <= 1e-2.
// Quantiser: bit-exact with quantize_rows_int8_cpu (same IEEE division and rounding).
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cuda/expert_ffn.h"
#include "kernels/expert_ffn.h"
#include "kernels/half.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

constexpr double kRelL2Tol = 1e-3;
constexpr double kElemTol = 1.0 / 64;
constexpr double kF32SemanticsTol = 1e-2;

struct FfnCase {
  int64_t hidden, inter;
  std::vector<int32_t> counts;  // rows per expert
  std::string name;
};

std::vector<int32_t> offsets_of(const std::vector<int32_t>& counts) {
  std::vector<int32_t> off(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) off[e + 1] = off[e] + counts[e];
  return off;
}

// Skewed routing: expert `hot` holds `hot_rows`, the others 0..max_other rows (some none).
std::vector<int32_t> skewed_counts(int64_t E, int hot, int32_t hot_rows, int32_t max_other, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> c(E);
  for (auto& v : c) v = static_cast<int32_t>(rng() % (max_other + 1));
  c[hot] = hot_rows;
  c[(hot + 1) % E] = 0;
  return c;
}

struct Compare {
  double rel_l2 = 0, rel_l2_f32 = 0;
};

// Compares the GPU bf16 output with bf16(ref); prints the first mismatches with indices.
Compare compare(const std::vector<uint16_t>& got_bits, const std::vector<float>& ref, const std::vector<float>& ref_f32,
                int64_t hidden) {
  const std::vector<float> got = test::from_bf16(got_bits);
  std::vector<float> ref_b(ref.size());
  double ss = 0;
  for (size_t i = 0; i < ref.size(); ++i) ref_b[i] = bf16_to_f32(f32_to_bf16(ref[i])), ss += double(ref[i]) * ref[i];
  const double rms = std::sqrt(ss / std::max<size_t>(ref.size(), 1));
  int shown = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::abs(double(got[i]) - ref_b[i]);
    if (!(d <= kElemTol * (std::abs(ref_b[i]) + rms))) {
      if (shown++ < 5) {
        ADD_FAILURE() << "y[" << i / hidden << ", " << i % hidden << "] got " << got[i] << " want " << ref_b[i]
                      << " (rms " << rms << ")";
      }
    }
  }
  Compare c;
  c.rel_l2 = test::rel_l2(got, ref_b);
  c.rel_l2_f32 = test::rel_l2(got, ref_f32);
  EXPECT_LE(c.rel_l2, kRelL2Tol);
  EXPECT_LE(c.rel_l2_f32, kF32SemanticsTol);
  return c;
}

struct Weights {
  std::vector<uint16_t> w13, w2;  // bf16 bits
};

Weights random_weights(int64_t E, int64_t H, int64_t I, uint64_t seed) {
  Weights w;
  w.w13 = test::to_bf16(test::random_floats(E * 2 * I * H, seed, 1.f / std::sqrt(float(H))));
  w.w2 = test::to_bf16(test::random_floats(E * H * I, seed + 1, 1.f / std::sqrt(float(I))));
  return w;
}

void reference(const std::vector<float>& x, const std::vector<float>& w13, const std::vector<float>& w2,
               const std::vector<int32_t>& off, int64_t H, int64_t I, std::vector<float>& y, std::vector<float>& y_f32) {
  const int64_t E = static_cast<int64_t>(off.size()) - 1;
  y.assign(std::max<int64_t>(off[E], 1) * H, 0.f);
  y_f32 = y;
  ExpertFfnRefParams rp{.x = x.data(), .w13 = w13.data(), .w2 = w2.data(), .expert_offsets = off.data(),
                        .y = y.data(), .num_experts = E, .hidden = H, .inter = I};
  ASSERT_TRUE(expert_ffn_cpu(rp).ok());
  rp.y = y_f32.data(), rp.round_intermediates = false;
  ASSERT_TRUE(expert_ffn_cpu(rp).ok());
  y.resize(off[E] * H), y_f32.resize(off[E] * H);
}

struct BlasHandle {
  cublasHandle_t h = nullptr;
  BlasHandle() { EXPECT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS); }
  ~BlasHandle() { cublasDestroy(h); }
};

// ---- bf16 ------------------------------------------------------------------------------------------

void run_bf16_case(const FfnCase& c, cuda::ExpertGemmMode mode, cublasHandle_t blas, double& worst, double& worst_f32) {
  const char* mode_name = mode == cuda::ExpertGemmMode::grouped      ? "grouped"
                          : mode == cuda::ExpertGemmMode::per_expert ? "per_expert"
                                                                     : "automatic";
  SCOPED_TRACE(c.name + " hidden=" + std::to_string(c.hidden) + " inter=" + std::to_string(c.inter) + " " + mode_name);
  const int64_t E = static_cast<int64_t>(c.counts.size()), H = c.hidden, I = c.inter;
  const std::vector<int32_t> off = offsets_of(c.counts);
  const int64_t rows = off[E];
  const uint64_t seed = rows * 31 + H * 7 + I + E * 1009;
  const std::vector<uint16_t> x = test::to_bf16(test::random_floats(std::max<int64_t>(rows, 1) * H, seed));
  const Weights w = random_weights(E, H, I, seed + 1);
  std::vector<float> y_ref, y_f32;
  reference(test::from_bf16(x), test::from_bf16(w.w13), test::from_bf16(w.w2), off, H, I, y_ref, y_f32);

  auto dx = test::to_device(x);
  auto dw13 = test::to_device(w.w13);
  auto dw2 = test::to_device(w.w2);
  test::DeviceBuffer dy(std::max<int64_t>(rows, 1) * H * 2);
  const size_t ws_bytes = cuda::expert_ffn_bf16_workspace_bytes(rows, E, I);
  test::DeviceBuffer dws(ws_bytes);
  test::upload(dy, std::vector<uint16_t>(std::max<int64_t>(rows, 1) * H, 0x7fc1));  // NaN poison
  test::upload(dws, std::vector<uint16_t>(std::max<size_t>(ws_bytes / 2, 1), 0x7fc1));
  cuda::ExpertFfnBf16Params p;
  p.x = dx->as<uint16_t>(), p.w13 = dw13->as<uint16_t>(), p.w2 = dw2->as<uint16_t>(), p.y = dy.as<uint16_t>();
  p.host_expert_offsets = off.data(), p.num_experts = E, p.hidden = H, p.inter = I;
  p.workspace = dws.ptr, p.workspace_bytes = ws_bytes, p.blas = reinterpret_cast<cublasContext*>(blas), p.mode = mode;
  const KernelStatus s = cuda::expert_ffn_bf16(p, nullptr);
  ASSERT_TRUE(s.ok()) << s.error;
  ASSERT_TRUE(cuda::synchronize().ok());
  if (rows == 0) return;
  std::vector<uint16_t> y(rows * H);
  test::download(y, dy);
  const Compare cmp = compare(y, y_ref, y_f32, H);
  std::printf("expert_ffn_bf16 %-10s %-14s H=%-5lld I=%-4lld rows=%-5lld rel L2 %.3g (f32 semantics %.3g)\n", mode_name,
              c.name.c_str(), (long long)H, (long long)I, (long long)rows, cmp.rel_l2, cmp.rel_l2_f32);
  worst = std::max(worst, cmp.rel_l2), worst_f32 = std::max(worst_f32, cmp.rel_l2_f32);
}

std::vector<FfnCase> bf16_cases() {
  return {
      {64, 32, {0, 1, 255, 256, 257}, "counts"},
      {257, 48, {3, 0, 130}, "odd-hidden"},
      {16, 16, {1, 17}, "tiny"},
      {96, 40, {7, 0, 33, 1}, "odd-inter"},
      {6144, 64, {65, 1}, "wide-hidden"},
      {128, 64, skewed_counts(32, 3, 1500, 20, 7), "skewed-32"},
      {64, 32, {0, 0, 0}, "all-empty"},
  };
}

TEST(CudaExpertFfn, Bf16MatchesCpuReference) {
  FULGUR_SKIP_WITHOUT_GPU();
  BlasHandle blas;
  double worst = 0, worst_f32 = 0;
  for (const FfnCase& c : bf16_cases()) {
    for (auto mode : {cuda::ExpertGemmMode::grouped, cuda::ExpertGemmMode::per_expert, cuda::ExpertGemmMode::automatic}) {
      run_bf16_case(c, mode, blas.h, worst, worst_f32);
    }
  }
  std::printf("expert_ffn_bf16: worst rel L2 %.3g (tol %.3g); vs f32 semantics %.3g (tol %.3g)\n", worst, kRelL2Tol,
              worst_f32, kF32SemanticsTol);
}

// Experts spread over side streams run the same GEMM calls and the same SwiGLU per row: the output
// must be bit-identical to the one-stream per-expert mode, also when the caller's stream is busy.
TEST(CudaExpertFfn, Bf16SideStreamsAreBitIdentical) {
  FULGUR_SKIP_WITHOUT_GPU();
  BlasHandle blas;
  constexpr int kSides = 3;
  cudaStream_t main_stream, sides[kSides];
  cudaEvent_t fork, done[kSides];
  BlasHandle side_blas[kSides];
  ASSERT_EQ(cudaStreamCreateWithFlags(&main_stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming), cudaSuccess);
  for (int i = 0; i < kSides; ++i) {
    ASSERT_EQ(cudaStreamCreateWithFlags(&sides[i], cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming), cudaSuccess);
  }
  for (const FfnCase& c : bf16_cases()) {
    SCOPED_TRACE(c.name);
    const int64_t E = static_cast<int64_t>(c.counts.size()), H = c.hidden, I = c.inter;
    const std::vector<int32_t> off = offsets_of(c.counts);
    const int64_t rows = std::max<int64_t>(off[E], 1);
    const std::vector<uint16_t> x = test::to_bf16(test::random_floats(rows * H, 77 + H));
    const Weights w = random_weights(E, H, I, 78 + I);
    auto dx = test::to_device(x);
    auto dw13 = test::to_device(w.w13);
    auto dw2 = test::to_device(w.w2);
    const size_t ws_bytes = cuda::expert_ffn_bf16_workspace_bytes(rows, E, I);
    test::DeviceBuffer dws(ws_bytes), dy(rows * H * 2);
    std::vector<uint16_t> y_one(rows * H), y_side(rows * H);
    for (int sides_used : {0, kSides}) {
      test::upload(dy, std::vector<uint16_t>(rows * H, 0x7fc1));
      cuda::ExpertFfnBf16Params p;
      p.x = dx->as<uint16_t>(), p.w13 = dw13->as<uint16_t>(), p.w2 = dw2->as<uint16_t>(), p.y = dy.as<uint16_t>();
      p.host_expert_offsets = off.data(), p.num_experts = E, p.hidden = H, p.inter = I;
      p.workspace = dws.ptr, p.workspace_bytes = ws_bytes, p.blas = reinterpret_cast<cublasContext*>(blas.h);
      p.mode = cuda::ExpertGemmMode::per_expert;
      p.num_side_streams = sides_used, p.fork = fork;
      for (int i = 0; i < sides_used; ++i) {
        p.side[i] = {sides[i], reinterpret_cast<cublasContext*>(side_blas[i].h), done[i]};
      }
      const KernelStatus s = cuda::expert_ffn_bf16(p, main_stream);
      ASSERT_TRUE(s.ok()) << s.error;
      ASSERT_EQ(cudaStreamSynchronize(main_stream), cudaSuccess);  // the join: main waits for the sides
      test::download(sides_used == 0 ? y_one : y_side, dy);
    }
    EXPECT_EQ(y_one, y_side);
  }
  // A side stream sharing the caller's cuBLAS handle would race on its workspace: refused.
  cuda::ExpertFfnBf16Params bad;
  const std::vector<int32_t> off = {0, 1};
  bad.host_expert_offsets = off.data(), bad.num_experts = 1, bad.hidden = 16, bad.inter = 16;
  bad.blas = reinterpret_cast<cublasContext*>(blas.h), bad.num_side_streams = 1, bad.fork = fork;
  bad.side[0] = {sides[0], reinterpret_cast<cublasContext*>(blas.h), done[0]};
  EXPECT_FALSE(cuda::expert_ffn_bf16(bad, main_stream).ok());
  for (int i = 0; i < kSides; ++i) cudaStreamDestroy(sides[i]), cudaEventDestroy(done[i]);
  cudaEventDestroy(fork), cudaStreamDestroy(main_stream);
}

// ---- int8 ------------------------------------------------------------------------------------------

struct Int8Case {
  FfnCase ffn;
  std::vector<int64_t> hints;  // max_rows_per_expert values to run (0 = none)
};

void run_int8_case(const Int8Case& ic, double& worst, double& worst_f32) {
  const FfnCase& c = ic.ffn;
  SCOPED_TRACE(c.name + " hidden=" + std::to_string(c.hidden) + " inter=" + std::to_string(c.inter));
  const int64_t E = static_cast<int64_t>(c.counts.size()), H = c.hidden, I = c.inter;
  const std::vector<int32_t> off = offsets_of(c.counts);
  const int64_t rows = off[E];
  const uint64_t seed = rows * 37 + H * 11 + I + E * 997;
  const std::vector<uint16_t> x = test::to_bf16(test::random_floats(std::max<int64_t>(rows, 1) * H, seed));
  const Weights w = random_weights(E, H, I, seed + 1);
  const std::vector<float> w13f = test::from_bf16(w.w13), w2f = test::from_bf16(w.w2);

  // Quantise on the device; bit-exact with the CPU quantiser.
  auto dw13 = test::to_device(w.w13);
  auto dw2 = test::to_device(w.w2);
  test::DeviceBuffer dq13(E * 2 * I * H), dq2(E * H * I), ds13(E * 2 * I * 4), ds2(E * H * 4);
  ASSERT_TRUE(cuda::quantize_rows_int8({dw13->as<uint16_t>(), dq13.as<int8_t>(), ds13.as<float>(), E * 2 * I, H}, nullptr).ok());
  ASSERT_TRUE(cuda::quantize_rows_int8({dw2->as<uint16_t>(), dq2.as<int8_t>(), ds2.as<float>(), E * H, I}, nullptr).ok());
  std::vector<int8_t> q13(E * 2 * I * H), q2(E * H * I), rq13(q13.size()), rq2(q2.size());
  std::vector<float> s13(E * 2 * I), s2(E * H), rs13(s13.size()), rs2(s2.size());
  test::download(q13, dq13), test::download(q2, dq2), test::download(s13, ds13), test::download(s2, ds2);
  quantize_rows_int8_cpu(w13f.data(), E * 2 * I, H, rq13.data(), rs13.data());
  quantize_rows_int8_cpu(w2f.data(), E * H, I, rq2.data(), rs2.data());
  ASSERT_TRUE(q13 == rq13 && q2 == rq2) << "int8 weights differ from quantize_rows_int8_cpu";
  ASSERT_TRUE(s13 == rs13 && s2 == rs2) << "scales differ from quantize_rows_int8_cpu";
  std::vector<float> dq13f(q13.size()), dq2f(q2.size());
  dequantize_rows_int8_cpu(q13.data(), s13.data(), E * 2 * I, H, dq13f.data());
  dequantize_rows_int8_cpu(q2.data(), s2.data(), E * H, I, dq2f.data());
  // The device dequantiser: the same products, rounded once to bf16.
  test::DeviceBuffer dd13(E * 2 * I * H * 2);
  ASSERT_TRUE(cuda::dequantize_rows_int8(dq13.as<int8_t>(), ds13.as<float>(), E * 2 * I, H, dd13.as<uint16_t>(), nullptr).ok());
  std::vector<uint16_t> d13(E * 2 * I * H);
  test::download(d13, dd13);
  ASSERT_TRUE(d13 == test::to_bf16(dq13f)) << "dequantize_rows_int8 differs from dequantize_rows_int8_cpu in bf16";
  std::vector<float> y_ref, y_f32;
  reference(test::from_bf16(x), dq13f, dq2f, off, H, I, y_ref, y_f32);

  auto dx = test::to_device(x);
  auto doff = test::to_device(off);
  test::DeviceBuffer dy(std::max<int64_t>(rows, 1) * H * 2);
  const size_t ws_bytes = cuda::expert_ffn_int8_workspace_bytes(rows, I);
  test::DeviceBuffer dws(ws_bytes);
  for (int64_t hint : ic.hints) {
    SCOPED_TRACE("max_rows_per_expert=" + std::to_string(hint));
    test::upload(dy, std::vector<uint16_t>(std::max<int64_t>(rows, 1) * H, 0x7fc1));
    test::upload(dws, std::vector<uint16_t>(std::max<size_t>(ws_bytes / 2, 1), 0x7fc1));
    cuda::ExpertFfnInt8Params p;
    p.x = dx->as<uint16_t>(), p.expert_offsets = doff->as<int32_t>(), p.w13 = dq13.as<int8_t>(),
    p.w13_scale = ds13.as<float>(), p.w2 = dq2.as<int8_t>(), p.w2_scale = ds2.as<float>(), p.y = dy.as<uint16_t>();
    p.max_rows = rows, p.max_rows_per_expert = hint, p.num_experts = E, p.hidden = H, p.inter = I;
    p.workspace = dws.ptr, p.workspace_bytes = ws_bytes;
    const KernelStatus s = cuda::expert_ffn_int8(p, nullptr);
    ASSERT_TRUE(s.ok()) << s.error;
    ASSERT_TRUE(cuda::synchronize().ok());
    if (rows == 0) continue;
    std::vector<uint16_t> y(rows * H);
    test::download(y, dy);
    const Compare cmp = compare(y, y_ref, y_f32, H);
    std::printf("expert_ffn_int8 %-14s hint=%-3lld H=%-5lld I=%-4lld rows=%-5lld rel L2 %.3g (f32 semantics %.3g)\n",
                c.name.c_str(), (long long)hint, (long long)H, (long long)I, (long long)rows, cmp.rel_l2, cmp.rel_l2_f32);
    worst = std::max(worst, cmp.rel_l2), worst_f32 = std::max(worst_f32, cmp.rel_l2_f32);
  }
}

TEST(CudaExpertFfn, Int8MatchesReferenceOnDequantisedWeights) {
  FULGUR_SKIP_WITHOUT_GPU();
  const std::vector<Int8Case> cases = {
      {{128, 64, {0, 1, 255, 256, 257}, "counts"}, {0, 1, 16, 64}},
      {{6144, 128, {64, 3}, "wide-hidden"}, {0, 16}},
      {{192, 128, skewed_counts(32, 5, 600, 9, 11), "skewed-32"}, {0, 8}},
      {{256, 192, {0, 1, 0, 0, 1, 0, 0, 0}, "decode-top2"}, {1}},
      {{64, 64, {0, 0}, "all-empty"}, {0}},
  };
  double worst = 0, worst_f32 = 0;
  for (const Int8Case& c : cases) run_int8_case(c, worst, worst_f32);
  std::printf("expert_ffn_int8: worst rel L2 %.3g (tol %.3g); vs f32 semantics %.3g (tol %.3g)\n", worst, kRelL2Tol,
              worst_f32, kF32SemanticsTol);
}

// ---- bf16 with device sizes -------------------------------------------------------------------------

// The int8 kernels loading bf16 weights: against the same reference as the cuBLAS bf16 path.
using Bf16DeviceEntry = KernelStatus (*)(const cuda::ExpertFfnBf16DeviceParams&, cuda::Stream);

// `hints` are max_rows_per_expert values for expert_ffn_bf16_device; for expert_ffn_bf16_tiles (which ignores
// them) a hint h > 0 instead adds h rows of slack to max_rows (the buffers hold more rows than the offsets use).
void run_bf16_device_case(const Int8Case& ic, double& worst, double& worst_f32,
                          Bf16DeviceEntry entry = &cuda::expert_ffn_bf16_device, const char* label = "expert_ffn_bf16_device") {
  const bool slack_hints = entry == &cuda::expert_ffn_bf16_tiles;
  const FfnCase& c = ic.ffn;
  SCOPED_TRACE(c.name + " hidden=" + std::to_string(c.hidden) + " inter=" + std::to_string(c.inter));
  const int64_t E = static_cast<int64_t>(c.counts.size()), H = c.hidden, I = c.inter;
  const std::vector<int32_t> off = offsets_of(c.counts);
  const int64_t rows = off[E];
  const uint64_t seed = rows * 41 + H * 13 + I + E * 991;
  const std::vector<uint16_t> x = test::to_bf16(test::random_floats(std::max<int64_t>(rows, 1) * H, seed));
  const Weights w = random_weights(E, H, I, seed + 1);
  std::vector<float> y_ref, y_f32;
  reference(test::from_bf16(x), test::from_bf16(w.w13), test::from_bf16(w.w2), off, H, I, y_ref, y_f32);
  auto dx = test::to_device(x);
  auto doff = test::to_device(off);
  auto dw13 = test::to_device(w.w13);
  auto dw2 = test::to_device(w.w2);
  int64_t max_slack = 0;
  for (int64_t hint : ic.hints) max_slack = std::max(max_slack, slack_hints ? hint : 0);
  const int64_t cap = rows + max_slack;
  std::vector<uint16_t> x_cap = x;
  x_cap.resize(std::max<int64_t>(cap, 1) * H, 0x7fc1);  // rows past the offsets: NaN, must not reach y
  auto dx_cap = test::to_device(x_cap);
  test::DeviceBuffer dy(std::max<int64_t>(cap, 1) * H * 2);
  const size_t ws_bytes = slack_hints ? cuda::expert_ffn_bf16_tiles_workspace_bytes(cap, I)
                                      : cuda::expert_ffn_int8_workspace_bytes(cap, I);
  test::DeviceBuffer dws(ws_bytes);
  for (int64_t hint : ic.hints) {
    SCOPED_TRACE(std::string(slack_hints ? "max_rows slack=" : "max_rows_per_expert=") + std::to_string(hint));
    const int64_t max_rows = slack_hints ? rows + hint : rows;
    test::upload(dy, std::vector<uint16_t>(std::max<int64_t>(cap, 1) * H, 0x7fc1));
    test::upload(dws, std::vector<uint16_t>(std::max<size_t>(ws_bytes / 2, 1), 0x7fc1));
    cuda::ExpertFfnBf16DeviceParams p;
    p.x = dx_cap->as<uint16_t>(), p.expert_offsets = doff->as<int32_t>(), p.w13 = dw13->as<uint16_t>();
    p.w2 = dw2->as<uint16_t>(), p.y = dy.as<uint16_t>();
    p.max_rows = max_rows, p.max_rows_per_expert = slack_hints ? 0 : hint, p.num_experts = E, p.hidden = H, p.inter = I;
    p.workspace = dws.ptr, p.workspace_bytes = ws_bytes;
    const KernelStatus s = entry(p, nullptr);
    ASSERT_TRUE(s.ok()) << s.error;
    ASSERT_TRUE(cuda::synchronize().ok());
    if (rows == 0) continue;
    std::vector<uint16_t> y(std::max<int64_t>(cap, 1) * H);
    test::download(y, dy);
    // Rows the offsets do not cover keep their poison: nothing was written past the experts' rows.
    for (size_t i = size_t(rows) * H; i < y.size(); ++i) ASSERT_EQ(y[i], 0x7fc1) << "y written past the rows, element " << i;
    y.resize(rows * H);
    const Compare cmp = compare(y, y_ref, y_f32, H);
    std::printf("%s %-14s hint=%-3lld H=%-5lld I=%-4lld rows=%-5lld rel L2 %.3g (f32 semantics %.3g)\n", label,
                c.name.c_str(), (long long)hint, (long long)H, (long long)I, (long long)rows, cmp.rel_l2, cmp.rel_l2_f32);
    worst = std::max(worst, cmp.rel_l2), worst_f32 = std::max(worst_f32, cmp.rel_l2_f32);
  }
}

TEST(CudaExpertFfn, Bf16DeviceSizesMatchCpuReference) {
  FULGUR_SKIP_WITHOUT_GPU();
  const std::vector<Int8Case> cases = {
      {{128, 64, {0, 1, 255, 256, 257}, "counts"}, {0, 1, 16, 64}},
      {{6144, 128, {64, 3}, "wide-hidden"}, {0, 16}},
      {{192, 128, skewed_counts(32, 5, 600, 9, 11), "skewed-32"}, {0, 8}},
      {{256, 192, {0, 1, 0, 0, 1, 0, 0, 0}, "decode-top2"}, {1}},
      {{64, 64, {0, 0}, "all-empty"}, {0}},
  };
  double worst = 0, worst_f32 = 0;
  for (const Int8Case& c : cases) run_bf16_device_case(c, worst, worst_f32);
  std::printf("expert_ffn_bf16_device: worst rel L2 %.3g (tol %.3g); vs f32 semantics %.3g (tol %.3g)\n", worst,
              kRelL2Tol, worst_f32, kF32SemanticsTol);
  cuda::ExpertFfnBf16DeviceParams bad;
  bad.num_experts = 2, bad.hidden = 96, bad.inter = 64, bad.max_rows = 1;  // hidden not a multiple of 64
  const KernelStatus s = cuda::expert_ffn_bf16_device(bad, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("hidden"), std::string::npos) << s.error;
}

// The Hopper tile kernels: token chunks of every compiled width (16 .. 256) and ones that run past their
// expert (1, 127..129, 255..257 rows; rows past the offsets hold NaN), a weight tile past hidden (320 = 2 x 128
// + 64), several k-blocks, 32 experts with skewed and empty ones, spare rows in the buffers (slack), a
// MiniMax-wide hidden.
TEST(CudaExpertFfn, Bf16TilesMatchCpuReference) {
  FULGUR_SKIP_WITHOUT_HOPPER();
  const std::vector<Int8Case> cases = {
      {{128, 64, {0, 1, 255, 256, 257}, "counts"}, {0, 37}},
      {{320, 192, {127, 128, 129, 1, 0, 300}, "tile-edges"}, {0, 5}},
      {{6144, 128, {64, 3}, "wide-hidden"}, {0}},
      {{192, 128, skewed_counts(32, 5, 600, 9, 11), "skewed-32"}, {0, 200}},
      {{256, 192, {0, 1, 0, 0, 1, 0, 0, 0}, "decode-top2"}, {0}},
      {{1024, 512, {700, 260, 513, 0, 384, 1, 129, 900}, "several-blocks"}, {0}},
      {{128, 128, {17, 32, 33, 64, 65, 96, 97, 200, 224, 225}, "tile-widths"}, {0}},
      {{64, 64, {0, 0}, "all-empty"}, {0, 3}},
      // 8 experts x 2 chunks x 32 gate/up weight tiles = 512 tiles, > 2 x the SMs: blocks take second and later
      // tiles from the counter, and their stages carry over from one tile to the next.
      {{128, 2048, std::vector<int32_t>(8, 300), "many-tiles"}, {0}},
  };
  double worst = 0, worst_f32 = 0;
  for (const Int8Case& c : cases) {
    run_bf16_device_case(c, worst, worst_f32, &cuda::expert_ffn_bf16_tiles, "expert_ffn_bf16_tiles");
  }
  std::printf("expert_ffn_bf16_tiles: worst rel L2 %.3g (tol %.3g); vs f32 semantics %.3g (tol %.3g)\n", worst,
              kRelL2Tol, worst_f32, kF32SemanticsTol);
  cuda::ExpertFfnBf16DeviceParams bad;
  bad.num_experts = 2, bad.hidden = 128, bad.inter = 100, bad.max_rows = 1;  // inter not a multiple of 64
  const KernelStatus s = cuda::expert_ffn_bf16_tiles(bad, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("inter"), std::string::npos) << s.error;
  // The device-sizes kernels' workspace is too small here: the tile counters live after act.
  test::DeviceBuffer x(64 * 128 * 2), w13(2 * 2 * 64 * 128 * 2), w2(2 * 128 * 64 * 2), y(64 * 128 * 2), off(12);
  test::DeviceBuffer small(cuda::expert_ffn_int8_workspace_bytes(64, 64));
  cuda::ExpertFfnBf16DeviceParams p;
  p.x = x.as<uint16_t>(), p.expert_offsets = off.as<int32_t>(), p.w13 = w13.as<uint16_t>(), p.w2 = w2.as<uint16_t>();
  p.y = y.as<uint16_t>(), p.max_rows = 64, p.num_experts = 2, p.hidden = 128, p.inter = 64;
  p.workspace = small.ptr, p.workspace_bytes = cuda::expert_ffn_int8_workspace_bytes(64, 64);
  const KernelStatus ws = cuda::expert_ffn_bf16_tiles(p, nullptr);
  EXPECT_FALSE(ws.ok());
  EXPECT_NE(std::string(ws.error).find("workspace"), std::string::npos) << ws.error;
}

// Offsets that go backwards are a caller's bug; the tile kernels read them as empty experts (each expert
// starts where the previous one ended at the latest), so y equals that of the offsets {0, R, R, ..., R}. Here
// 128 of 256 experts would each claim all R rows: 25 600 chunks, far past what the schedule has room for.
TEST(CudaExpertFfn, Bf16TilesReadOffsetsThatGoBackwardsAsEmptyExperts) {
  FULGUR_SKIP_WITHOUT_HOPPER();
  const int64_t E = 256, H = 64, I = 64, R = 51200;
  std::vector<int32_t> bad(E + 1), clean(E + 1, static_cast<int32_t>(R));
  for (int64_t e = 0; e <= E; ++e) bad[e] = e % 2 == 0 ? 0 : static_cast<int32_t>(R);
  bad[E] = static_cast<int32_t>(R), clean[0] = 0;
  const Weights w = random_weights(E, H, I, 4242);
  auto dx = test::to_device(test::to_bf16(test::random_floats(R * H, 4243)));
  auto dw13 = test::to_device(w.w13);
  auto dw2 = test::to_device(w.w2);
  const size_t ws_bytes = cuda::expert_ffn_bf16_tiles_workspace_bytes(R, I);
  test::DeviceBuffer dws(ws_bytes), dy(R * H * 2);
  std::vector<uint16_t> y[2];
  for (int i = 0; i < 2; ++i) {
    auto doff = test::to_device(i == 0 ? bad : clean);
    cuda::ExpertFfnBf16DeviceParams p;
    p.x = dx->as<uint16_t>(), p.expert_offsets = doff->as<int32_t>(), p.w13 = dw13->as<uint16_t>();
    p.w2 = dw2->as<uint16_t>(), p.y = dy.as<uint16_t>();
    p.max_rows = R, p.num_experts = E, p.hidden = H, p.inter = I, p.workspace = dws.ptr, p.workspace_bytes = ws_bytes;
    test::upload(dy, std::vector<uint16_t>(R * H, 0x7fc1));
    const KernelStatus s = cuda::expert_ffn_bf16_tiles(p, nullptr);
    ASSERT_TRUE(s.ok()) << s.error;
    ASSERT_TRUE(cuda::synchronize().ok());
    y[i].resize(R * H);
    test::download(y[i], dy);
  }
  EXPECT_TRUE(y[0] == y[1]) << "backwards offsets gave another y than the same rows all in expert 0";
}

TEST(CudaExpertFfn, RejectsBadShapesByName) {
  cuda::ExpertFfnInt8Params p;
  p.num_experts = 2, p.hidden = 100, p.inter = 64, p.max_rows = 4;
  KernelStatus s = cuda::expert_ffn_int8(p, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("hidden"), std::string::npos) << s.error;
  p.hidden = 64, p.inter = 96;
  s = cuda::expert_ffn_int8(p, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("inter"), std::string::npos) << s.error;

  const std::vector<int32_t> bad_off = {0, 5, 3};
  cuda::ExpertFfnBf16Params b;
  b.num_experts = 2, b.hidden = 64, b.inter = 64, b.host_expert_offsets = bad_off.data();
  b.blas = reinterpret_cast<cublasContext*>(uintptr_t{1});  // never called: validation fails first
  s = cuda::expert_ffn_bf16(b, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("decrease"), std::string::npos) << s.error;
  b.num_experts = 300;
  s = cuda::expert_ffn_bf16(b, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("num_experts"), std::string::npos) << s.error;
}

}  // namespace
}  // namespace fulgur::kernels
