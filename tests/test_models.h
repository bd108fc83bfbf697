// Tiny random models shared by the model-level and actor tests.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <vector>

#include "actors/layers/model.h"
#include "orchestration/init_model.h"

namespace fulgur::test {

// A tiny model with every feature of the real one: lightning and softmax layers (softmax not
// last), GQA 2, partial RoPE, 4 experts top-2, several lightning blocks within 50 tokens.
inline ModelConfig actor_test_config() {
  ModelConfig c = demo_model_config();
  c.hidden_size = 48;
  c.num_hidden_layers = 4;
  c.layer_types = {LayerKind::lightning, LayerKind::softmax, LayerKind::lightning, LayerKind::lightning};
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 12;
  c.rotary_dim = 6;
  c.vocab_size = 300;
  c.num_local_experts = 4;
  c.intermediate_size = 40;
  c.block_size = 16;
  c.max_position_embeddings = 256;
  return c;
}

inline std::shared_ptr<const Model> make_test_model(uint64_t seed, ModelConfig cfg = actor_test_config()) {
  auto m = Model::create(cfg, random_model_weights(cfg, seed));
  EXPECT_TRUE(m.has_value()) << (m ? "" : m.error().to_string());
  return std::shared_ptr<const Model>(std::move(m).value());
}

inline std::vector<int32_t> random_prompt(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

}  // namespace fulgur::test
