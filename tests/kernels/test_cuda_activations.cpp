// The elementwise glue kernels of the CUDA model (kernels/cuda/activations.h) against the CPU
// references on fresh random inputs. Skips where no CUDA device exists.
//
// Tolerance: each kernel computes in f32 what the reference computes in f32 (silu: the same
// expression; the output gate: rmsnorm_cpu's double-accumulated norm vs a float block sum, ~1e-6
// relative) and rounds once to bf16 (half ulp <= 2^-8 of the value): every element within
// (2^-8 + 1e-5) |ref| + 1e-30.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/activations.h"
#include "kernels/cuda/activations.h"
#include "kernels/half.h"
#include "kernels/rmsnorm.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

constexpr double kElemTol = 0x1.0p-8 + 1e-5;

std::string check_elems(const std::vector<float>& got, const std::vector<float>& ref) {
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!(std::abs(got[i] - ref[i]) <= kElemTol * std::abs(ref[i]) + 1e-30)) {
      return "element " + std::to_string(i) + ": got " + std::to_string(got[i]) + ", want " + std::to_string(ref[i]);
    }
  }
  return "";
}

TEST(CudaActivations, SiluMatchesCpu) {
  FULGUR_SKIP_WITHOUT_GPU();
  for (int64_t n : {1, 255, 256, 257, 100003}) {
    const std::vector<uint16_t> x = test::to_bf16(test::random_floats(n, n, 3.f));
    std::vector<float> ref = test::from_bf16(x);
    silu_inplace_cpu(ref.data(), n);
    auto d = test::to_device(x);
    ASSERT_TRUE(cuda::silu_inplace_bf16(d->as<uint16_t>(), n, nullptr).ok());
    ASSERT_TRUE(cuda::synchronize().ok());
    std::vector<uint16_t> out(n);
    test::download(out, *d);
    EXPECT_EQ(check_elems(test::from_bf16(out), ref), "") << "n " << n;
  }
  EXPECT_FALSE(cuda::silu_inplace_bf16(nullptr, 4, nullptr).ok());
}

TEST(CudaActivations, Bf16ToF32IsExact) {
  FULGUR_SKIP_WITHOUT_GPU();
  const int64_t n = 4099;
  const std::vector<uint16_t> x = test::to_bf16(test::random_floats(n, 7, 100.f));
  auto d = test::to_device(x);
  test::DeviceBuffer y(n * 4);
  ASSERT_TRUE(cuda::bf16_to_f32(d->as<uint16_t>(), y.as<float>(), n, nullptr).ok());
  ASSERT_TRUE(cuda::synchronize().ok());
  std::vector<float> got(n);
  test::download(got, y);
  EXPECT_EQ(got, test::from_bf16(x));
}

TEST(CudaActivations, FillRandomIsTheHostFormula) {
  FULGUR_SKIP_WITHOUT_GPU();
  const int64_t n = 100003;
  test::DeviceBuffer f(n * 4), b(n * 2);
  ASSERT_TRUE(cuda::fill_random(f.ptr, cuda::ActivationDtype::kF32, n, 42, 0.5f, 1.f, nullptr).ok());
  ASSERT_TRUE(cuda::fill_random(b.ptr, cuda::ActivationDtype::kBf16, n, 42, 0.5f, 1.f, nullptr).ok());
  ASSERT_TRUE(cuda::synchronize().ok());
  std::vector<float> got(n);
  std::vector<uint16_t> got16(n);
  test::download(got, f);
  test::download(got16, b);
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float want = cuda::fill_random_value(42, i, 0.5f, 1.f);  // the device may fuse the multiply-add
    ASSERT_NEAR(got[i], want, 1e-6 * std::abs(want) + 1e-7) << i;
    ASSERT_EQ(got16[i], f32_to_bf16(got[i])) << i;
    sum += got[i], sq += (got[i] - 1.0) * (got[i] - 1.0);
  }
  EXPECT_NEAR(sum / n, 1.0, 0.01);
  EXPECT_NEAR(std::sqrt(sq / n), 0.5, 0.01);
}

// y = w * RMSNorm over the real features, then * sigmoid(gate), on [T, H, head_stride] input with
// only the first D of every head real (the padded layout of the CUDA model).
TEST(CudaActivations, LightningOutputGateMatchesCpu) {
  FULGUR_SKIP_WITHOUT_GPU();
  struct Shape {
    int64_t T, H, D, stride;
  };
  for (const Shape& s : {Shape{1, 1, 16, 16}, Shape{255, 4, 8, 16}, Shape{256, 8, 16, 16}, Shape{257, 2, 24, 32},
                         Shape{3, 64, 128, 128}}) {
    for (bool f32_in : {true, false}) {
      const int64_t F = s.H * s.D;
      std::vector<float> attn_full = test::random_floats(s.T * s.H * s.stride, s.T + s.H, 0.05f);
      std::vector<uint16_t> attn_bf16 = test::to_bf16(attn_full);
      if (!f32_in) attn_full = test::from_bf16(attn_bf16);
      // Padding lanes hold garbage: the kernel must not read them as features.
      for (int64_t t = 0; t < s.T; ++t) {
        for (int64_t h = 0; h < s.H; ++h) {
          for (int64_t d = s.D; d < s.stride; ++d) {
            attn_full[(t * s.H + h) * s.stride + d] = 1e6f;
            attn_bf16[(t * s.H + h) * s.stride + d] = f32_to_bf16(1e6f);
          }
        }
      }
      const std::vector<uint16_t> gate = test::to_bf16(test::random_floats(s.T * F, 11, 2.f));
      const std::vector<uint16_t> w = test::to_bf16(test::random_floats(F, 12, 1.f));
      // Reference: compact the real features, rmsnorm_cpu, sigmoid_mul_cpu.
      std::vector<float> ref(s.T * F);
      for (int64_t t = 0; t < s.T; ++t) {
        for (int64_t i = 0; i < F; ++i) ref[t * F + i] = attn_full[(t * s.H + i / s.D) * s.stride + i % s.D];
      }
      const std::vector<float> wf = test::from_bf16(w);
      RmsNormParams rp{.x = ref.data(), .weight = wf.data(), .y = ref.data(), .rows = s.T, .dim = F, .eps = 1e-6f};
      ASSERT_TRUE(rmsnorm_cpu(rp).ok());
      const std::vector<float> gf = test::from_bf16(gate);
      sigmoid_mul_cpu(gf.data(), ref.data(), s.T * F);

      auto d_attn = f32_in ? test::to_device(attn_full) : test::to_device(attn_bf16);
      auto d_gate = test::to_device(gate);
      auto d_w = test::to_device(w);
      auto d_out = test::to_device(std::vector<uint16_t>(s.T * F, 0x7fc0));  // NaN poison
      cuda::LightningOutputGateCudaParams p;
      p.attn = d_attn->ptr, p.attn_dtype = f32_in ? cuda::ActivationDtype::kF32 : cuda::ActivationDtype::kBf16;
      p.gate = d_gate->as<uint16_t>(), p.norm_weight = d_w->as<uint16_t>(), p.out = d_out->as<uint16_t>();
      p.num_tokens = s.T, p.num_heads = s.H, p.head_dim = s.D, p.head_stride = s.stride, p.eps = 1e-6f;
      ASSERT_TRUE(cuda::lightning_output_gate(p, nullptr).ok());
      ASSERT_TRUE(cuda::synchronize().ok());
      std::vector<uint16_t> out(s.T * F);
      test::download(out, *d_out);
      EXPECT_EQ(check_elems(test::from_bf16(out), ref), "")
          << "T " << s.T << " H " << s.H << " D " << s.D << " stride " << s.stride << (f32_in ? " f32" : " bf16");
    }
  }
  cuda::LightningOutputGateCudaParams bad;
  bad.num_tokens = 1, bad.num_heads = 1, bad.head_dim = 16, bad.head_stride = 8;
  const auto st = cuda::lightning_output_gate(bad, nullptr);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(std::string(st.error).find("head_stride"), std::string::npos) << st.error;
}

}  // namespace
}  // namespace fulgur::kernels
