// GPU embedding gather and greedy sampling against the CPU references (kernels/embedding.h,
// kernels/sampling.h). Both are exact operations (a copy; an argmax with ties to the lowest index),
// so the GPU must agree bit for bit. Skips (with the reason) where no CUDA device exists.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace fulgur::kernels
