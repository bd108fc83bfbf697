#include "kernels/expert_ffn.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/half.h"

namespace fulgur::kernels {

namespace {
float round_bf16(float v, bool on) { return on ? bf16_to_f32(f32_to_bf16(v)) : v; }
}  // namespace

KernelStatus expert_ffn_cpu(const ExpertFfnRefParams& p) {
  if (p.x == nullptr || p.w13 == nullptr || p.w2 == nullptr || p.expert_offsets == nullptr || p.y == nullptr) {
    return kernel_error("expert_ffn_cpu: null pointer");
  }
  if (p.num_experts <= 0 || p.hidden <= 0 || p.inter <= 0) return kernel_error("expert_ffn_cpu: bad sizes");
  const int64_t H = p.hidden, I = p.inter;
  if (p.expert_offsets[0] != 0) return kernel_error("expert_ffn_cpu: expert_offsets[0] != 0");
  for (int64_t e = 0; e < p.num_experts; ++e) {
    if (p.expert_offsets[e + 1] < p.expert_offsets[e]) return kernel_error("expert_ffn_cpu: expert_offsets decrease");
  }
  std::vector<float> act(I);
  for (int64_t e = 0; e < p.num_experts; ++e) {
    const float* w13 = p.w13 + e * 2 * I * H;
    const float* w2 = p.w2 + e * H * I;
    for (int64_t r = p.expert_offsets[e]; r < p.expert_offsets[e + 1]; ++r) {
      const float* x = p.x + r * H;
      for (int64_t i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (int64_t c = 0; c < H; ++c) {
          g += double(w13[i * H + c]) * x[c];
          u += double(w13[(I + i) * H + c]) * x[c];
        }
        const float gf = round_bf16(static_cast<float>(g), p.round_intermediates);
        const float uf = round_bf16(static_cast<float>(u), p.round_intermediates);
        act[i] = round_bf16(gf / (1.f + std::exp(-gf)) * uf, p.round_intermediates);
      }
      float* y = p.y + r * H;
      for (int64_t c = 0; c < H; ++c) {
        double s = 0;
        for (int64_t i = 0; i < I; ++i) s += double(w2[c * I + i]) * act[i];
        y[c] = static_cast<float>(s);
      }
    }
  }
  return kernel_ok();
}

void quantize_rows_int8_cpu(const float* w, int64_t rows, int64_t cols, int8_t* q, float* scale) {
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0.f;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::abs(w[r * cols + c]));
    const float s = amax > 0.f ? amax / 127.f : 1.f;
    scale[r] = s;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = std::round(w[r * cols + c] / s);
      q[r * cols + c] = static_cast<int8_t>(std::clamp(v, -127.f, 127.f));
    }
  }
}

void dequantize_rows_int8_cpu(const int8_t* q, const float* scale, int64_t rows, int64_t cols, float* w) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) w[r * cols + c] = static_cast<float>(q[r * cols + c]) * scale[r];
  }
}

}  // namespace fulgur::kernels
