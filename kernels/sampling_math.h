// The arithmetic of token sampling, shared bit for bit by the CPU sampler (kernels/cpu/sampling.cpp)
// and the GPU one (kernels/cuda/sampling.cu): same seed, same logits -> same token on both devices.
//
// Why integers: a sampler that sums float probabilities depends on the order of the additions, and a
// GPU sums in a different order than a loop. Here each token's probability is a fixed-point weight,
//   weight = floor(2^36 * exp((logit - max_logit) / temperature))      (the max token weighs 2^36),
// computed with an exp made only of correctly rounded float operations (fmaf, rint, ldexp), so both
// devices get the same integer; sums of weights are exact in uint64 (vocab <= 2^26), and every
// decision (top-p cut, the draw) is integer arithmetic. A token whose probability is below 2^-36 of
// the most likely one's (1.5e-11) weighs 0 and is never drawn.
//
// The order of tokens is the key: descending logit, ties to the lower id (-0 counts as +0).
//
// Host code must not contract these into FMAs of its own: the CPU file that uses them is compiled
// with -ffp-contract=off (CMakeLists.txt); device code uses the _rn intrinsics, which nvcc never fuses.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FULGUR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FULGUR_HOST_DEVICE inline
#endif

namespace fulgur::kernels::sampling {

inline constexpr int kWeightBits = 36;
inline constexpr int64_t kMaxVocab = int64_t{1} << 26;  // keeps a sum of weights (each <= ~2^36) below 2^63

// splitmix64 of (seed, step): the draw's 64 random bits, no hidden state.
FULGUR_HOST_DEVICE uint64_t random_bits(uint64_t seed, uint64_t step) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (step + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Order key: a larger key comes first (higher logit, then lower id). Unique per token.
FULGUR_HOST_DEVICE uint64_t order_key(float logit, uint32_t token) {
  const float canonical = logit == 0.f ? 0.f : logit;  // -0 -> +0: the CPU's comparisons see them equal
#if defined(__CUDA_ARCH__)
  const uint32_t u = __float_as_uint(canonical);
#else
  uint32_t u;
  std::memcpy(&u, &canonical, sizeof(u));
#endif
  const uint32_t ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | (0xffffffffu - token);
}
FULGUR_HOST_DEVICE uint32_t key_token(uint64_t key) { return 0xffffffffu - static_cast<uint32_t>(key); }

FULGUR_HOST_DEVICE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
FULGUR_HOST_DEVICE float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
FULGUR_HOST_DEVICE float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
// rint / ldexp / frexp are exact on both devices (round half to even; power-of-two scaling).
FULGUR_HOST_DEVICE float rint_f(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return std::rint(x);
#endif
}
FULGUR_HOST_DEVICE float ldexp_f(float x, int e) {
#if defined(__CUDA_ARCH__)
  return ldexpf(x, e);
#else
  return std::ldexp(x, e);
#endif
}
FULGUR_HOST_DEVICE float frexp_f(float x, int* e) {
#if defined(__CUDA_ARCH__)
  return frexpf(x, e);
#else
  return std::frexp(x, e);
#endif
}

// exp(x) for x in [-64, 0]: x = k ln2 + r (|r| <= ln2/2, Cody-Waite split), a degree-7 Taylor
// polynomial for exp(r) (relative error < 4e-8 there), times 2^k. Every step is one correctly rounded
// operation, so host and device agree exactly; the result is normal (>= 2^-93), no denormal flushing.
FULGUR_HOST_DEVICE float exp_nonpositive(float x) {
  const float k = rint_f(mul_rn(x, 1.44269504f));
  float r = fma_rn(k, -0.693145751953125f, x);  // ln2 high part: 16 significant bits, k * hi is exact
  r = fma_rn(k, -1.428606765330187e-06f, r);    // ln2 low part
  float p = 1.f / 5040.f;
  p = fma_rn(p, r, 1.f / 720.f);
  p = fma_rn(p, r, 1.f / 120.f);
  p = fma_rn(p, r, 1.f / 24.f);
  p = fma_rn(p, r, 1.f / 6.f);
  p = fma_rn(p, r, 0.5f);
  p = fma_rn(p, r, 1.f);
  p = fma_rn(p, r, 1.f);
  return ldexp_f(p, static_cast<int>(k));
}

// 1 / temperature as the samplers use it (temperature > 0; a tiny one gives inf: greedy).
FULGUR_HOST_DEVICE float inverse_temperature(float temperature) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(1.f, temperature);
#else
  return 1.f / temperature;
#endif
}

// The fixed-point weight of a token with `logit`, given the row's maximum logit `top` (>= logit).
FULGUR_HOST_DEVICE uint64_t weight(float logit, float top, float inv_t) {
  const float d = sub_rn(logit, top);
  if (d == 0.f) return uint64_t{1} << kWeightBits;
  const float x = mul_rn(d, inv_t);
  // 2^36 e^-25 = 0.95: below -25 the weight truncates to 0 anyway, so skip the exp (most of a real
  // vocabulary sits there). Also catches -inf and NaN from an infinite 1/temperature.
  if (!(x >= -25.f)) return 0;
  const float scaled = ldexp_f(exp_nonpositive(x), kWeightBits);  // exact: a power-of-two scale
  return scaled > 0.f ? static_cast<uint64_t>(scaled) : 0;        // truncation, as on both devices
}

// 64 x 64 -> 128-bit product, as (high, low).
struct U128 {
  uint64_t hi, lo;
};
FULGUR_HOST_DEVICE U128 mul_wide(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return {__umul64hi(a, b), a * b};
#else
  const unsigned __int128 p = static_cast<unsigned __int128>(a) * b;
  return {static_cast<uint64_t>(p >> 64), static_cast<uint64_t>(p)};
#endif
}

// The mass a top-p prefix must reach: ceil(total * top_p), exactly (top_p in (0, 1], total >= 1).
FULGUR_HOST_DEVICE uint64_t top_p_mass(uint64_t total, float top_p) {
  int e = 0;
  const float mant = frexp_f(top_p, &e);  // top_p = mant * 2^e, mant in [0.5, 1)
  const uint64_t m = static_cast<uint64_t>(ldexp_f(mant, 24));  // 24-bit integer: top_p = m * 2^(e - 24)
  const int shift = 24 - e;                                     // >= 23 since top_p <= 1
  const U128 v = mul_wide(total, m);
  if (shift >= 128) return 1;  // 0 < total * top_p < 1
  uint64_t q, rest;
  if (shift >= 64) {
    q = v.hi >> (shift - 64);
    rest = v.lo | (shift > 64 ? v.hi & ((uint64_t{1} << (shift - 64)) - 1) : 0);
  } else {
    q = (v.lo >> shift) | (v.hi << (64 - shift));
    rest = v.lo & ((uint64_t{1} << shift) - 1);
  }
  return q + (rest != 0 ? 1 : 0);
}

// The draw: a point in [0, total) from the 64 random bits, exactly floor(bits * total / 2^64). The token
// drawn is the first in key order whose running sum of weights exceeds it.
FULGUR_HOST_DEVICE uint64_t draw_point(uint64_t bits, uint64_t total) { return mul_wide(bits, total).hi; }

}  // namespace fulgur::kernels::sampling
