// Model-level check against references nobody here wrote (tests/fixtures/README.md): tiny random
// MiniMax checkpoints with logits from transformers 5.17 / a float64 reference checked against it.
// `forward` in all three modes (one prefill, chunked prefill, prefill + decode) must match.
#include <gtest/gtest.h>

#include <filesystem>

#include "actors/layers/model.h"
#include "orchestration/checkpoint/safetensors.h"
#include "orchestration/generate.h"
#include "fixture_util.h"
#include "test_util.h"

namespace fulgur {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = test::fixtures_dir();
using test::fixture_names;

TEST(Fixtures, AllPresent) {
  // The generator writes six fixtures; a missing one must not silently shrink coverage.
  EXPECT_EQ(fixture_names().size(), 6u);
}

class Fixture : public ::testing::TestWithParam<std::string> {};

TEST_P(Fixture, ForwardMatchesReferenceInEveryMode) {
  const fs::path dir = kFixtures / GetParam();
  auto loaded = load_model_dir(dir.string(), false, [](const std::string&) {});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().to_string();
  auto ref_file = SafetensorsFile::open((dir / "reference.safetensors").string());
  ASSERT_TRUE(ref_file.has_value()) << ref_file.error().to_string();
  auto tokens_t = ref_file->tensor("tokens");
  auto logits_t = ref_file->tensor("logits");
  ASSERT_TRUE(tokens_t.has_value() && logits_t.has_value());
  std::vector<int32_t> tokens;
  for (int64_t i = 0; i < tokens_t->numel(); ++i) tokens.push_back(static_cast<int32_t>(tokens_t->data<int64_t>()[i]));
  const std::vector<float> ref(logits_t->data<float>(), logits_t->data<float>() + logits_t->numel());
  const int64_t T = static_cast<int64_t>(tokens.size());
  const ForwardOptions modes[] = {{}, {.chunk_size = 5}, {.chunk_size = 64}, {.decode_from = std::max<int64_t>(1, T / 3)},
                                  {.chunk_size = 7, .decode_from = std::max<int64_t>(1, T - 4)}};
  for (const ForwardOptions& m : modes) {
    auto logits = forward_all_logits(*loaded->model, tokens, m);
    ASSERT_TRUE(logits.has_value()) << logits.error().to_string();
    std::vector<float> got(logits->data<float>(), logits->data<float>() + logits->numel());
    ASSERT_EQ(got.size(), ref.size());
    const double err = test::rel_l2(got, ref);
    EXPECT_LT(err, 1e-4) << "chunk " << m.chunk_size << " decode_from " << m.decode_from << ": "
                         << test::first_mismatch(got, ref, 1e-3);
    // Tighter than the bound: f32 compute against the float64 truth lands near 1e-6.
    EXPECT_LT(err, 5e-6) << "chunk " << m.chunk_size << " decode_from " << m.decode_from;
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, Fixture, ::testing::ValuesIn(fixture_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace fulgur
