// GPU embedding gather, greedy sampling and temperature / top-k / top-p sampling against the CPU
// references (kernels/embedding.h, kernels/sampling.h). All are exact operations (a copy; an argmax
// with ties to the lowest index; the integer draw of kernels/sampling_math.h), so the GPU must agree
// token for token. Skips (with the reason) where no CUDA device exists.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/sampling.h"
#include "kernels/embedding.h"
#include "kernels/half.h"
#include "kernels/sampling.h"
#include "test_util.h"

namespace fulgur::kernels {
namespace {

// ---- embedding ---------------------------------------------------------------------------------------

void run_embedding_case(int64_t T, int64_t hidden, int64_t vocab, int64_t pad) {
  SCOPED_TRACE("T=" + std::to_string(T) + " hidden=" + std::to_string(hidden) + " vocab=" + std::to_string(vocab) +
               " pad=" + std::to_string(pad));
  const uint64_t seed = T * 3 + hidden * 5 + vocab;
  const std::vector<uint16_t> table16 = test::to_bf16(test::random_floats(vocab * hidden, seed));
  std::vector<int32_t> ids(T);
  std::mt19937_64 rng(seed + 1);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
  if (T > 2) ids[0] = 0, ids[T - 1] = static_cast<int32_t>(vocab - 1);  // both ends of the table
  // Reference: the f32 CPU gather of the same (bf16-valued) table.
  const std::vector<float> table = test::from_bf16(table16);
  std::vector<float> ref(T * hidden);
  EmbeddingParams cp{.table = table.data(), .ids = ids.data(), .out = ref.data(), .num_tokens = T, .hidden = hidden,
                     .vocab = vocab};
  ASSERT_TRUE(embedding_cpu(cp).ok());
  auto d_table = test::to_device(table16), d_ids = test::to_device(ids);
  const int64_t ld = hidden + pad;
  test::DeviceBuffer d_out(T * ld * 2);
  test::upload(d_out, std::vector<uint16_t>(T * ld, 0x7fc1));
  cuda::EmbeddingCudaParams p{.table = d_table->as<uint16_t>(), .ids = d_ids->as<int32_t>(), .ids_host = ids.data(),
                              .out = d_out.as<uint16_t>(), .num_tokens = T, .hidden = hidden, .vocab = vocab,
                              .out_stride = ld};
  ASSERT_TRUE(cuda::embedding(p, nullptr).ok());
  ASSERT_TRUE(cuda::synchronize().ok());
  std::vector<uint16_t> out(T * ld);
  test::download(out, d_out);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < hidden; ++c) {
      ASSERT_EQ(bf16_to_f32(out[t * ld + c]), ref[t * hidden + c]) << "t=" << t << " c=" << c << " id=" << ids[t];
    }
    for (int64_t c = hidden; c < ld; ++c) ASSERT_EQ(out[t * ld + c], 0x7fc1) << "padding written at t=" << t;
  }
}

TEST(CudaEmbedding, MatchesCpuReference) {
  FULGUR_SKIP_WITHOUT_GPU();
  for (int64_t T : {1, 255, 256, 257, 4096}) {
    for (int64_t hidden : {16, 257, 6144}) run_embedding_case(T, hidden, hidden == 6144 ? 1000 : 5000, 0);
  }
  run_embedding_case(300, 6144, 200064 / 64, 8);  // strided output, 16-byte path
  run_embedding_case(300, 64, 7, 3);              // strided output, scalar path
  run_embedding_case(10, 16, 1, 0);               // a one-row table
}

TEST(CudaEmbedding, OutOfRangeIdIsAnErrorBeforeLaunch) {
  FULGUR_SKIP_WITHOUT_GPU();
  const int64_t T = 5, hidden = 16, vocab = 10;
  const std::vector<uint16_t> table = test::to_bf16(test::random_floats(vocab * hidden, 1));
  for (int32_t bad : {-1, 10, 1 << 30}) {
    const std::vector<int32_t> ids{1, 2, bad, 3, 4};
    auto d_table = test::to_device(table), d_ids = test::to_device(ids);
    test::DeviceBuffer d_out(T * hidden * 2);
    test::upload(d_out, std::vector<uint16_t>(T * hidden, 0x7fc1));
    cuda::EmbeddingCudaParams p{.table = d_table->as<uint16_t>(), .ids = d_ids->as<int32_t>(), .ids_host = ids.data(),
                                .out = d_out.as<uint16_t>(), .num_tokens = T, .hidden = hidden, .vocab = vocab};
    const KernelStatus s = cuda::embedding(p, nullptr);
    ASSERT_FALSE(s.ok()) << "id " << bad;
    EXPECT_NE(std::string(s.error).find("ids_host"), std::string::npos) << s.error;
    ASSERT_TRUE(cuda::synchronize().ok());
    std::vector<uint16_t> out(T * hidden);
    test::download(out, d_out);
    EXPECT_EQ(out, std::vector<uint16_t>(T * hidden, 0x7fc1)) << "nothing may be written";
    // Without the host copy the kernel still never reads outside the table: a zero row.
    p.ids_host = nullptr;
    ASSERT_TRUE(cuda::embedding(p, nullptr).ok());
    ASSERT_TRUE(cuda::synchronize().ok());
    test::download(out, d_out);
    for (int64_t c = 0; c < hidden; ++c) {
      EXPECT_EQ(out[2 * hidden + c], 0) << "row of the bad id";
      EXPECT_EQ(out[0 * hidden + c], table[1 * hidden + c]);
    }
  }
}

// ---- greedy sampling ------------------------------------------------------------------------------------

void run_greedy_case(int64_t rows, int64_t vocab, int64_t pad, bool ties, bool bad_rows) {
  SCOPED_TRACE("rows=" + std::to_string(rows) + " vocab=" + std::to_string(vocab) + " pad=" + std::to_string(pad) +
               (ties ? " ties" : "") + (bad_rows ? " bad rows" : ""));
  const int64_t ld = vocab + pad;
  std::vector<float> logits = test::random_floats(rows * ld, rows * 11 + vocab + pad + ties, 4.f);
  if (ties) {
    for (auto& z : logits) z = std::min(std::round(z), 3.f);  // the maximum 3 repeats many times per row
  }
  std::vector<int32_t> ref(rows, -1);
  std::vector<char> ws(sample_workspace_bytes(vocab));
  for (int64_t r = 0; r < rows; ++r) {
    if (bad_rows && r % 5 == 1) logits[r * ld + (r * 7919) % vocab] = (r % 2) ? NAN : -INFINITY;
    if (bad_rows && r % 5 == 1) continue;  // the CPU sampler rejects it; the GPU answers -1
    ASSERT_TRUE(sample_cpu(&logits[r * ld], vocab, SamplingParams{}, ws.data(), &ref[r]).ok());
  }
  auto d_logits = test::to_device(logits);
  test::DeviceBuffer d_tok(rows * 4);
  const size_t ws_bytes = cuda::sample_greedy_workspace_bytes(rows, vocab);
  test::DeviceBuffer d_ws(ws_bytes);
  test::upload(d_tok, std::vector<int32_t>(rows, -42));
  cuda::SampleGreedyCudaParams p{.logits = d_logits->as<float>(), .out_token = d_tok.as<int32_t>(), .num_rows = rows,
                                 .vocab = vocab, .logits_stride = ld, .workspace = d_ws.ptr, .workspace_bytes = ws_bytes};
  ASSERT_TRUE(cuda::sample_greedy(p, nullptr).ok());
  ASSERT_TRUE(cuda::synchronize().ok());
  std::vector<int32_t> got(rows);
  test::download(got, d_tok);
  int shown = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (got[r] != ref[r] && shown++ < 5) {
      ADD_FAILURE() << "row " << r << ": got token " << got[r] << ", want " << ref[r];
    }
  }
}

TEST(CudaSampleGreedy, MatchesCpuReference) {
  FULGUR_SKIP_WITHOUT_GPU();
  for (int64_t rows : {1, 255, 256, 257}) {
    for (int64_t vocab : {16, 257, 8192, 8193, 40000}) run_greedy_case(rows, vocab, 0, false, false);
  }
  run_greedy_case(1, 200064, 0, false, false);  // MiniMax vocabulary, decode of one sequence
  run_greedy_case(64, 200064, 0, true, false);  // ties -> lowest index, across segments
  run_greedy_case(33, 20000, 3, false, false);  // strided rows, scalar path
  run_greedy_case(40, 9000, 0, true, true);     // NaN / -inf rows -> -1
}

// ---- temperature / top-k / top-p sampling ---------------------------------------------------------------

enum class Logits { normal, ties, signed_zeros, wide, flat };

// Every row draws with its own parameters (cycled through a table of hostile ones) and its own step.
void run_sample_case(int64_t rows, int64_t vocab, int64_t pad, Logits kind, uint64_t seed, bool bad_rows = false) {
  SCOPED_TRACE("rows=" + std::to_string(rows) + " vocab=" + std::to_string(vocab) + " pad=" + std::to_string(pad) +
               " kind=" + std::to_string(static_cast<int>(kind)) + " seed=" + std::to_string(seed));
  const int64_t ld = vocab + pad;
  std::vector<float> logits = test::random_floats(rows * ld, seed, kind == Logits::wide ? 30.f : 3.f);
  for (auto& z : logits) {
    if (kind == Logits::ties) z = std::round(z * 2.f) / 2.f;     // many equal logits, ties at every cut
    if (kind == Logits::signed_zeros) z = std::round(z) * 0.f;  // only +0 and -0
    if (kind == Logits::flat) z = 1.25f;
  }
  const std::vector<SamplingParams> table = {
      {.temperature = 1.f},
      {.temperature = 0.f},
      {.temperature = 0.7f, .top_k = 40},
      {.temperature = 1.3f, .top_p = 0.9f},
      {.temperature = 0.8f, .top_k = 50, .top_p = 0.95f},
      {.temperature = 2.f, .top_k = 1},
      {.temperature = 1.f, .top_p = 1e-6f},
      {.temperature = 1.f, .top_k = vocab - 1, .top_p = 0.999f},
      {.temperature = 1.f, .top_k = vocab + 10},
      {.temperature = 1e-40f},  // 1 / temperature overflows: greedy
      {.temperature = 5.f, .top_p = 0.5f},
      {.temperature = 0.05f, .top_k = 3, .top_p = 0.3f},
      {.temperature = 1.f, .top_k = 10000, .top_p = 0.97f},  // a top-k set too large for shared memory
      {.temperature = 5.f, .top_p = 0.99f},                   // so is this top-p prefix
  };
  std::vector<SamplingParams> params(rows);
  std::vector<int32_t> want(rows);
  std::vector<char> ws(sample_workspace_bytes(vocab));
  for (int64_t r = 0; r < rows; ++r) {
    params[r] = table[(r + seed) % table.size()];
    params[r].seed = seed * 1000 + r;
    params[r].step = r * 7 + 3;
    if (bad_rows && r % 4 == 1) logits[r * ld + (r * 7919) % vocab] = (r % 8 == 1) ? NAN : INFINITY;
    if (bad_rows && r % 4 == 3) params[r].top_p = 1.5f;
    const bool finite = std::all_of(&logits[r * ld], &logits[r * ld] + vocab, [](float z) { return std::isfinite(z); });
    if (!finite) {
      want[r] = cuda::kSampleNonFinite;
    } else if (!check_sampling_params(params[r]).ok()) {
      want[r] = cuda::kSampleBadParams;
    } else {
      ASSERT_TRUE(sample_cpu(&logits[r * ld], vocab, params[r], ws.data(), &want[r]).ok());
    }
  }
  auto d_logits = test::to_device(logits);
  auto d_params = test::to_device(params);
  test::DeviceBuffer d_tok(rows * 4);
  test::upload(d_tok, std::vector<int32_t>(rows, -42));
  cuda::SampleCudaParams p{.logits = d_logits->as<float>(), .params = d_params->as<SamplingParams>(),
                           .out_token = d_tok.as<int32_t>(), .num_rows = rows, .vocab = vocab, .logits_stride = ld};
  ASSERT_TRUE(cuda::sample(p, nullptr).ok());
  ASSERT_TRUE(cuda::synchronize().ok());
  std::vector<int32_t> got(rows);
  test::download(got, d_tok);
  int shown = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (got[r] != want[r] && shown++ < 5) {
      ADD_FAILURE() << "row " << r << " (temperature " << params[r].temperature << ", top_k " << params[r].top_k
                    << ", top_p " << params[r].top_p << "): got token " << got[r] << ", want " << want[r];
    }
  }
}

TEST(CudaSample, MatchesCpuSamplerTokenForToken) {
  FULGUR_SKIP_WITHOUT_GPU();
  for (int64_t rows : {1, 255, 256, 257}) {
    for (int64_t vocab : {1, 2, 255, 256, 257, 4099}) run_sample_case(rows, vocab, 0, Logits::normal, rows + vocab);
  }
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    run_sample_case(48, 200064, 0, Logits::normal, seed);  // the MiniMax vocabulary, a decode batch
    run_sample_case(48, 200064, 0, Logits::ties, seed);
  }
  run_sample_case(24, 30000, 5, Logits::wide, 4);          // strided rows; most weights are 0
  run_sample_case(24, 1000, 0, Logits::signed_zeros, 5);   // -0 and +0 rank as equals
  run_sample_case(24, 1000, 0, Logits::flat, 6);           // every logit equal: order by id alone
  run_sample_case(14, 30000, 0, Logits::flat, 8);          // ... in buckets too large for shared memory
  run_sample_case(40, 9000, 0, Logits::normal, 7, true);   // NaN / inf rows and bad parameters -> codes
}

TEST(CudaSample, RejectsBadShapes) {
  FULGUR_SKIP_WITHOUT_GPU();
  test::DeviceBuffer d(64);
  cuda::SampleCudaParams p{.logits = d.as<float>(), .params = d.as<SamplingParams>(), .out_token = d.as<int32_t>(),
                           .num_rows = 1, .vocab = 0};
  EXPECT_FALSE(cuda::sample(p, nullptr).ok());
  p.vocab = (int64_t{1} << 26) + 1;
  EXPECT_FALSE(cuda::sample(p, nullptr).ok());
  p.vocab = 8, p.logits_stride = 4;
  EXPECT_FALSE(cuda::sample(p, nullptr).ok());
  p.logits_stride = 0, p.params = nullptr;
  EXPECT_FALSE(cuda::sample(p, nullptr).ok());
}

}  // namespace
}  // namespace fulgur::kernels
