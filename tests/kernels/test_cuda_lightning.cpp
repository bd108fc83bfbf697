// GPU lightning attention (prefill and decode) against the CPU reference (kernels/cpu, f32) on the
// same bf16-rounded inputs. Skips (with the reason) where no CUDA device exists, as on CI.
//
// Tolerances, from the rms relative error of one bf16 rounding, e_b = 2^-8 * sqrt(E[1/m^2] / 3)
// ~= 1.7e-3 (m the mantissa in [1, 2)): the GPU kernel rounds two operands to bf16 that the f32
// reference does not (the masked scores P before P.V, the decayed V before the state update), so
// f32 outputs may differ by up to sqrt(2) e_b ~= 2.4e-3 -> 3e-3; bf16 outputs add their own
// rounding, sqrt(3) e_b ~= 2.9e-3 -> 3.5e-3; states carry one rounding, e_b -> 2.5e-3. Decode is
// fp32 throughout: 1e-5 (summation order only).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/lightning_attention.h"
#include "kernels/half.h"
#include "kernels/lightning_attention.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

constexpr double kTolOutF32 = 3e-3;
constexpr double kTolOutBf16 = 3.5e-3;
constexpr double kTolState = 2.5e-3;
constexpr double kTolDecode = 1e-5;
// split_state = false (S enters Q.S as bf16 hi only) adds one rounding: f32 sqrt(3) e_b ~= 2.9e-3,
// bf16 sqrt(4) e_b ~= 3.4e-3; the state path is unchanged.
constexpr double kTolOutF32NoSplit = 3.5e-3;
constexpr double kTolOutBf16NoSplit = 4e-3;

// Output-pass variants (correctness-neutral tuning knobs, except split_state: see above).
struct Variant {
  int64_t target_ctas;
  int64_t blocks_per_sm;
  bool split_state;
};

// A device buffer freed at scope exit.
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { EXPECT_TRUE(cuda::device_alloc(&ptr, std::max<size_t>(bytes, 16)).ok()); }
  ~DeviceBuffer() { (void)cuda::device_free(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(ptr); }
};

template <class T>
void upload(DeviceBuffer& d, const std::vector<T>& h) {
  ASSERT_TRUE(cuda::copy_to_device(d.ptr, h.data(), h.size() * sizeof(T)).ok());
}
template <class T>
void download(std::vector<T>& h, const DeviceBuffer& d) {
  ASSERT_TRUE(cuda::copy_to_host(h.data(), d.ptr, h.size() * sizeof(T)).ok());
}

// Rel L2 and the first mismatches with (token, head, dim) indices, for failure messages.
std::string describe(const std::vector<float>& got, const std::vector<float>& want, int64_t H, int64_t D, double tol) {
  std::string s;
  int shown = 0;
  for (size_t i = 0; i < want.size() && shown < 5; ++i) {
    const double d = std::abs(double(got[i]) - want[i]);
    if (!(d <= 8 * tol * (std::abs(double(want[i])) + 1e-2))) {
      char buf[160];
      std::snprintf(buf, sizeof buf, " [t=%lld h=%lld d=%lld] got %.6g want %.6g;", (long long)(i / (H * D)),
                    (long long)(i / D % H), (long long)(i % D), got[i], want[i]);
      s += buf;
      ++shown;
    }
  }
  return shown ? "first mismatches:" + s : "no single element far off";
}

std::vector<float> bf16_round(std::vector<float> v) {
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}
std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = f32_to_bf16(v[i]);
  return r;
}

// One packed problem: fused qkv [T, H, 3D] (bf16 values), slopes, state slots, sequences.
struct Problem {
  int64_t H, D, num_slots;
  std::vector<int32_t> cu, slots;
  std::vector<float> qkv, slopes, states;
  int64_t T() const { return cu.back(); }
};

Problem make_problem(int64_t H, int64_t D, const std::vector<int32_t>& seqlens, uint64_t seed, int64_t extra_slots = 1) {
  Problem p{H, D, static_cast<int64_t>(seqlens.size()) + extra_slots, {0}, {}, {}, {}, {}};
  for (int32_t n : seqlens) p.cu.push_back(p.cu.back() + n);
  p.slots.resize(seqlens.size());
  std::iota(p.slots.begin(), p.slots.end(), 0);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::shuffle(p.slots.begin(), p.slots.end(), rng);
  for (auto& s : p.slots) s = static_cast<int32_t>((s + extra_slots) % p.num_slots);  // leave some slot untouched
  p.qkv = bf16_round(test::random_floats(static_cast<size_t>(p.T() * H * 3 * D), seed, 0.5f));
  // Decays from the fastest head of layer 0 (s = 0.917) down to slow late-layer heads.
  for (int64_t h = 0; h < H; ++h) p.slopes.push_back(static_cast<float>(0.917 * std::pow(0.2, h)));
  p.states = test::random_floats(static_cast<size_t>(p.num_slots * H * D * D), seed + 1, 0.3f);
  return p;
}

// CPU reference prefill over tokens [0, T) of p (every sequence), updating `states`.
std::vector<float> cpu_prefill(const Problem& p, std::vector<float>& states) {
  std::vector<float> out(static_cast<size_t>(p.T() * p.H * p.D), NAN);
  const int64_t block = 256;
  std::vector<float> ws(static_cast<size_t>(lightning_prefill_workspace_floats(block, p.D)));
  LightningPrefillParams c;
  c.q = p.qkv.data(), c.k = p.qkv.data() + p.D, c.v = p.qkv.data() + 2 * p.D;
  c.qkv_token_stride = 3 * p.H * p.D, c.qkv_head_stride = 3 * p.D;
  c.out = out.data(), c.states = states.data(), c.slopes = p.slopes.data();
  c.cu_seqlens = p.cu.data(), c.slot_idx = p.slots.data();
  c.num_seqs = static_cast<int64_t>(p.slots.size()), c.num_slots = p.num_slots;
  c.num_heads = p.H, c.head_dim = p.D, c.block_size = block, c.workspace = ws.data();
  EXPECT_TRUE(lightning_prefill_cpu(c).ok());
  return out;
}

// GPU prefill of p; states (host) uploaded, run, downloaded back.
std::vector<float> gpu_prefill(const Problem& p, std::vector<float>& states, cuda::LightningOutDtype dt,
                               int64_t target_ctas, int64_t blocks_per_sm = 0, bool split_state = true) {
  const int64_t n_out = p.T() * p.H * p.D;
  DeviceBuffer qkv(p.qkv.size() * 2), out(n_out * 4), st(states.size() * 4), sl(p.slopes.size() * 4),
      cu(p.cu.size() * 4), slots(p.slots.size() * 4 + 4);
  upload(qkv, to_bf16(p.qkv));
  upload(st, states);
  upload(sl, p.slopes);
  upload(cu, p.cu);
  upload(slots, p.slots);
  std::vector<uint32_t> poison(static_cast<size_t>(n_out), 0x7fc07fc0u);  // NaN in either dtype
  upload(out, poison);
  cuda::LightningPrefillCudaParams g;
  g.q = qkv.as<uint16_t>(), g.k = g.q + p.D, g.v = g.q + 2 * p.D;
  g.qkv_token_stride = 3 * p.H * p.D, g.qkv_head_stride = 3 * p.D;
  g.out = out.ptr, g.out_dtype = dt, g.states = st.as<float>(), g.slopes = sl.as<float>();
  g.cu_seqlens = cu.as<int32_t>(), g.slot_idx = slots.as<int32_t>();
  g.num_tokens = p.T(), g.num_seqs = static_cast<int64_t>(p.slots.size()), g.num_slots = p.num_slots;
  g.num_heads = p.H, g.head_dim = p.D, g.target_ctas = target_ctas;
  g.blocks_per_sm = blocks_per_sm, g.split_state = split_state;
  g.workspace_bytes = cuda::lightning_prefill_workspace_bytes(g);
  DeviceBuffer ws(g.workspace_bytes);
  g.workspace = ws.ptr;
  const KernelStatus s = cuda::lightning_prefill(g, nullptr);
  EXPECT_TRUE(s.ok()) << (s.error ? s.error : "");
  EXPECT_TRUE(cuda::synchronize().ok());
  std::vector<float> result(static_cast<size_t>(n_out));
  if (dt == cuda::LightningOutDtype::kF32) {
    download(result, out);
  } else {
    std::vector<uint16_t> raw(static_cast<size_t>(n_out));
    download(raw, out);
    for (size_t i = 0; i < raw.size(); ++i) result[i] = bf16_to_f32(raw[i]);
  }
  download(states, st);
  return result;
}

void check_prefill(const Problem& p, const char* what) {
  for (auto dt : {cuda::LightningOutDtype::kF32, cuda::LightningOutDtype::kBf16}) {
    std::vector<float> ref_states = p.states;
    const std::vector<float> ref = cpu_prefill(p, ref_states);
    // device default (many segments), one segment per sequence, one output block per SM, hi-only S.
    for (const Variant v : {Variant{0, 0, true}, Variant{1, 0, true}, Variant{0, 1, true}, Variant{0, 0, false}}) {
      const int64_t target = v.target_ctas;
      std::vector<float> got_states = p.states;
      const std::vector<float> got = gpu_prefill(p, got_states, dt, target, v.blocks_per_sm, v.split_state);
      const bool f32 = dt == cuda::LightningOutDtype::kF32;
      const double tol = v.split_state ? (f32 ? kTolOutF32 : kTolOutBf16) : (f32 ? kTolOutF32NoSplit : kTolOutBf16NoSplit);
      const double e_out = test::rel_l2(got, ref), e_state = test::rel_l2(got_states, ref_states);
      std::printf("[lightning prefill] %-28s T=%-5lld H=%lld D=%-3lld out=%s target_ctas=%lld blocks/SM=%lld split=%d  "
                  "rel_l2 out %.3e  state %.3e\n",
                  what, (long long)p.T(), (long long)p.H, (long long)p.D, f32 ? "f32 " : "bf16", (long long)target,
                  (long long)v.blocks_per_sm, int(v.split_state), e_out, e_state);
      EXPECT_LT(e_out, tol) << what << ": " << describe(got, ref, p.H, p.D, tol);
      EXPECT_LT(e_state, kTolState) << what << " (state): " << test::first_mismatch(got_states, ref_states, kTolState);
    }
  }
}

bool have_gpu() { return cuda::device_count() > 0; }
#define SKIP_WITHOUT_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine: GPU test skipped"

TEST(CudaLightningPrefill, SingleSequenceHostileLengths) {
  SKIP_WITHOUT_GPU();
  for (int32_t T : {1, 63, 64, 65, 255, 256, 257, 1000}) {
    for (int64_t D : {16, 64, 128}) {
      if (D == 16 || T <= 257) check_prefill(make_problem(4, D, {T}, 100 + T + D), "single sequence");
    }
  }
  check_prefill(make_problem(2, 32, {130}, 7), "single sequence D=32");
}

TEST(CudaLightningPrefill, PackedVarlenPermutedSlots) {
  SKIP_WITHOUT_GPU();
  check_prefill(make_problem(3, 64, {65, 1, 300, 0, 128, 257, 64}, 11, 3), "varlen D=64");
  check_prefill(make_problem(2, 128, {200, 1, 63, 129}, 12, 2), "varlen D=128");
  check_prefill(make_problem(4, 16, {1, 1, 1, 2, 500}, 13, 1), "varlen D=16");
}

TEST(CudaLightningPrefill, LongSequenceManyChunks) {
  SKIP_WITHOUT_GPU();
  check_prefill(make_problem(2, 128, {2500}, 21), "long D=128");
}

TEST(CudaLightningPrefill, RejectsUnsupportedHeadDim) {
  cuda::LightningPrefillCudaParams g;
  g.num_tokens = 1, g.num_seqs = 1, g.num_slots = 1, g.num_heads = 1, g.head_dim = 96, g.target_ctas = 1;
  const KernelStatus s = cuda::lightning_prefill(g, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.error).find("head_dim"), std::string::npos);
}

// Decode: `steps` one-token steps for every sequence of p (tokens taken from p.qkv rows 0..), on the
// CPU and the GPU from the same states, comparing each step's output and the final states.
void check_decode(const Problem& p, std::vector<float>& ref_states, std::vector<float>& got_states, int steps,
                  cuda::LightningOutDtype dt, const char* what, double tol_f32 = kTolDecode) {
  const int64_t B = static_cast<int64_t>(p.slots.size()), H = p.H, D = p.D;
  DeviceBuffer st(got_states.size() * 4), sl(H * 4), slots(B * 4), out(B * H * D * 4), qkv(p.qkv.size() * 2);
  upload(st, got_states);
  upload(sl, p.slopes);
  upload(slots, p.slots);
  upload(qkv, to_bf16(p.qkv));
  for (int step = 0; step < steps; ++step) {
    // Token rows step*B .. step*B + B - 1 of the fused qkv serve as the B sequences' new tokens.
    ASSERT_LE((step + 1) * B, p.T());
    const int64_t row0 = step * B * 3 * H * D;
    std::vector<float> ref(static_cast<size_t>(B * H * D));
    LightningDecodeParams c;
    c.q = p.qkv.data() + row0, c.k = c.q + D, c.v = c.q + 2 * D;
    c.qkv_token_stride = 3 * H * D, c.qkv_head_stride = 3 * D;
    c.out = ref.data(), c.states = ref_states.data(), c.slopes = p.slopes.data(), c.slot_idx = p.slots.data();
    c.num_seqs = B, c.num_slots = p.num_slots, c.num_heads = H, c.head_dim = D;
    ASSERT_TRUE(lightning_decode_cpu(c).ok());
    std::vector<uint32_t> poison(static_cast<size_t>(B * H * D), 0x7fc07fc0u);
    upload(out, poison);
    cuda::LightningDecodeCudaParams g;
    g.q = qkv.as<uint16_t>() + row0, g.k = g.q + D, g.v = g.q + 2 * D;
    g.qkv_token_stride = 3 * H * D, g.qkv_head_stride = 3 * D;
    g.out = out.ptr, g.out_dtype = dt, g.states = st.as<float>(), g.slopes = sl.as<float>(), g.slot_idx = slots.as<int32_t>();
    g.num_seqs = B, g.num_slots = p.num_slots, g.num_heads = H, g.head_dim = D;
    const KernelStatus s = cuda::lightning_decode(g, nullptr);
    ASSERT_TRUE(s.ok()) << (s.error ? s.error : "");
    ASSERT_TRUE(cuda::synchronize().ok());
    std::vector<float> got(static_cast<size_t>(B * H * D));
    if (dt == cuda::LightningOutDtype::kF32) {
      download(got, out);
    } else {
      std::vector<uint16_t> raw(got.size());
      download(raw, out);
      for (size_t i = 0; i < raw.size(); ++i) got[i] = bf16_to_f32(raw[i]);
    }
    const double tol = dt == cuda::LightningOutDtype::kF32 ? tol_f32 : 2.5e-3 + tol_f32;  // bf16: one rounding, e_b
    const double e = test::rel_l2(got, ref);
    std::printf("[lightning decode] %-28s B=%lld H=%lld D=%-3lld step %d  rel_l2 out %.3e\n", what, (long long)B,
                (long long)H, (long long)D, step, e);
    EXPECT_LT(e, tol) << what << " step " << step << ": " << describe(got, ref, H, D, tol);
  }
  download(got_states, st);
}

TEST(CudaLightningDecode, MatchesCpuReference) {
  SKIP_WITHOUT_GPU();
  for (int64_t D : {16, 32, 64, 128}) {
    for (int32_t B : {1, 5, 33}) {
      Problem p = make_problem(3, D, std::vector<int32_t>(static_cast<size_t>(B), 2), 300 + D + B, 2);
      std::vector<float> ref_states = p.states, got_states = p.states;
      check_decode(p, ref_states, got_states, 2, cuda::LightningOutDtype::kF32, "decode f32");
      EXPECT_LT(test::rel_l2(got_states, ref_states), 1e-6);
      check_decode(p, ref_states, got_states, 2, cuda::LightningOutDtype::kBf16, "decode bf16");
    }
  }
}

// Chunked prefill: two prefill calls over consecutive pieces of the same sequences, then decode.
TEST(CudaLightning, ChunkedPrefillThenDecode) {
  SKIP_WITHOUT_GPU();
  const int64_t H = 2, D = 128;
  Problem first = make_problem(H, D, {70, 300, 1}, 41, 1);
  Problem second = first;  // same slots and slopes, fresh tokens of other lengths
  second.cu = {0, 129, 64, 200};
  std::partial_sum(second.cu.begin(), second.cu.end(), second.cu.begin());
  second.qkv = bf16_round(test::random_floats(static_cast<size_t>(second.T() * H * 3 * D), 42, 0.5f));
  std::vector<float> ref_states = first.states, got_states = first.states;
  for (const Problem* p : {&first, &second}) {
    const std::vector<float> ref = cpu_prefill(*p, ref_states);
    const std::vector<float> got = gpu_prefill(*p, got_states, cuda::LightningOutDtype::kBf16, 0);
    const double e_out = test::rel_l2(got, ref), e_state = test::rel_l2(got_states, ref_states);
    std::printf("[lightning chunked] piece T=%lld  rel_l2 out %.3e  state %.3e\n", (long long)p->T(), e_out, e_state);
    EXPECT_LT(e_out, kTolOutBf16) << describe(got, ref, H, D, kTolOutBf16);
    EXPECT_LT(e_state, kTolState);
  }
  // Decode continues from the (slightly different) states each side reached; compare its outputs
  // with the decode tolerance scaled by the state difference carried in.
  const double carried = test::rel_l2(got_states, ref_states);
  Problem dec = make_problem(H, D, {1, 1, 1}, 43, 1);
  dec.slots = first.slots, dec.slopes = first.slopes, dec.num_slots = first.num_slots;
  std::vector<float> r = ref_states, g = got_states;
  check_decode(dec, r, g, 1, cuda::LightningOutDtype::kF32, "decode after chunked prefill", 2 * carried + kTolDecode);
  EXPECT_LT(test::rel_l2(g, r), carried * 1.5 + 1e-6);
}

}  // namespace
}  // namespace fulgur::kernels
