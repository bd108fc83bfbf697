// Model-level invariants on random models: every way of feeding a prompt (one prefill, chunked
// prefill, prefill + decode) gives the same logits, and packed multi-sequence batches equal
// separate runs. The reference logits themselves are checked in test_fixtures.cpp.
#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "actors/layers/model.h"
#include "orchestration/init_model.h"
#include "test_models.h"
#include "test_util.h"

namespace fulgur {
namespace {

using test::make_test_model;
using test::random_prompt;

ModelConfig small_config() { return test::actor_test_config(); }

std::vector<float> as_vector(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

TEST(Model, ChunkedAndDecodeModesMatchOnePrefill) {
  const ModelConfig cfg = small_config();
  auto model = make_test_model(3);
  for (int64_t T : {1, 15, 16, 17, 50}) {
    const auto tokens = random_prompt(T, cfg.vocab_size, T);
    auto full = forward_all_logits(*model, tokens, {});
    ASSERT_TRUE(full.has_value()) << full.error().to_string();
    const auto ref = as_vector(*full);
    for (ForwardOptions opt : {ForwardOptions{.chunk_size = 1}, ForwardOptions{.chunk_size = 7},
                               ForwardOptions{.chunk_size = 16}, ForwardOptions{.decode_from = 1},
                               ForwardOptions{.chunk_size = 5, .decode_from = T}, ForwardOptions{.decode_from = (T + 1) / 2}}) {
      auto got = forward_all_logits(*model, tokens, opt);
      ASSERT_TRUE(got.has_value()) << got.error().to_string();
      EXPECT_LT(test::rel_l2(as_vector(*got), ref), 1e-5)
          << "T " << T << " chunk " << opt.chunk_size << " decode_from " << opt.decode_from;
    }
  }
}

TEST(Model, PackedBatchEqualsSeparateSequences) {
  const ModelConfig cfg = small_config();
  auto model = make_test_model(4);
  const std::vector<int64_t> lens = {9, 1, 33};
  const int64_t page = 4, max_blocks = 10;
  StatePools pools = StatePools::create(cfg, 3, 3 * max_blocks, page);
  BatchLayout b;
  b.cu_seqlens = {0};
  b.max_blocks_per_seq = max_blocks;
  std::vector<int32_t> tokens;
  std::vector<int64_t> rows;
  // Sequence s uses slot (2 - s) and pages interleaved across sequences.
  for (int64_t s = 0; s < 3; ++s) {
    const auto t = random_prompt(lens[s], cfg.vocab_size, 100 + s);
    tokens.insert(tokens.end(), t.begin(), t.end());
    b.cu_seqlens.push_back(static_cast<int32_t>(tokens.size()));
    b.state_slots.push_back(static_cast<int32_t>(2 - s));
    b.context_lens.push_back(static_cast<int32_t>(lens[s]));
    for (int64_t i = 0; i < max_blocks; ++i) b.block_tables.push_back(static_cast<int32_t>(i * 3 + s));
    for (int64_t i = 0; i < lens[s]; ++i) {
      b.positions.push_back(static_cast<int32_t>(i));
      b.kv_slot_mapping.push_back((i / page * 3 + s) * page + i % page);
    }
  }
  b.num_tokens = static_cast<int64_t>(tokens.size());
  rows.resize(tokens.size());
  std::iota(rows.begin(), rows.end(), 0);
  Tensor logits = Tensor::empty(DType::f32, {b.num_tokens, cfg.vocab_size});
  ASSERT_TRUE(model->forward(tokens, b, pools, rows, logits).is_ok());
  for (int64_t s = 0; s < 3; ++s) {
    std::vector<int32_t> t(tokens.begin() + b.cu_seqlens[s], tokens.begin() + b.cu_seqlens[s + 1]);
    auto ref = forward_all_logits(*model, t, {});
    ASSERT_TRUE(ref.has_value());
    std::vector<float> got(logits.data<float>() + b.cu_seqlens[s] * cfg.vocab_size,
                           logits.data<float>() + b.cu_seqlens[s + 1] * cfg.vocab_size);
    EXPECT_LT(test::rel_l2(got, as_vector(*ref)), 1e-5) << "sequence " << s;
  }
}

TEST(Model, RejectsBadTokensAndLayouts) {
  const ModelConfig cfg = small_config();
  auto model = make_test_model(5);
  auto bad = forward_all_logits(*model, {1, 2, static_cast<int32_t>(cfg.vocab_size)}, {});
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("outside the vocabulary"), std::string::npos) << bad.error().to_string();
  EXPECT_FALSE(forward_all_logits(*model, {}, {}).has_value());
  EXPECT_FALSE(forward_all_logits(*model, {1, 2}, {.decode_from = 3}).has_value());
  // A layout whose positions do not continue the context is refused before any state changes.
  StatePools pools = StatePools::create(cfg, 1, 4, 4);
  BatchLayout b{.num_tokens = 2, .cu_seqlens = {0, 2}, .positions = {0, 2}, .state_slots = {0},
                .context_lens = {2}, .block_tables = {0, 1, 2, 3}, .max_blocks_per_seq = 4, .kv_slot_mapping = {0, 1}};
  Tensor logits = Tensor::empty(DType::f32, {1, cfg.vocab_size});
  EXPECT_EQ(model->forward({1, 2}, b, pools, {1}, logits).code(), Errc::invalid_argument);
  // Two sequences in one state slot; a decode whose earlier context sits on a page out of range.
  const BatchLayout same_slot{.num_tokens = 2, .cu_seqlens = {0, 1, 2}, .positions = {0, 0}, .state_slots = {1, 1},
                              .context_lens = {1, 1}, .block_tables = {0, 1}, .max_blocks_per_seq = 1,
                              .kv_slot_mapping = {0, 4}};
  Status st = same_slot.validate(2, 8, 4);
  EXPECT_NE(st.message().find("state slot appears twice"), std::string::npos) << st.to_string();
  const BatchLayout old_page{.num_tokens = 1, .cu_seqlens = {0, 1}, .positions = {4}, .state_slots = {0},
                             .context_lens = {5}, .block_tables = {9, 1}, .max_blocks_per_seq = 2,
                             .kv_slot_mapping = {4}};
  st = old_page.validate(2, 8, 4);
  EXPECT_NE(st.message().find("KV page id out of range"), std::string::npos) << st.to_string();
}

TEST(Model, WeightShapeMismatchIsNamed) {
  ModelConfig cfg = small_config();
  ModelWeights w = random_model_weights(cfg, 1);
  w.layers[2].lightning.norm = Tensor::empty(DType::f32, {7});
  auto m = Model::create(cfg, std::move(w));
  ASSERT_FALSE(m.has_value());
  EXPECT_NE(m.error().message().find("model.layers.2.self_attn.norm.weight"), std::string::npos);
}

}  // namespace
}  // namespace fulgur
