// Checkpoint -> ModelWeights in both namings: tiny random checkpoints written, loaded and
// compared; wrong shapes, missing and unexpected tensors give errors that name them.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "orchestration/checkpoint/checkpoint.h"

#include "test_util.h"

namespace fulgur {
namespace {

using test::TempDir;

// hidden 16, 3 layers (lightning, softmax, lightning), 2 heads of 4 (q_size 8 != hidden),
// 1 kv head, 4 experts of width 8, vocab 32.
ModelConfig tiny_config(bool tied = false) {
  const std::string text = std::string(R"({
    "model_type": "minimax_text_01", "hidden_size": 16, "num_hidden_layers": 3,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "rotary_dim": 2,
    "vocab_size": 32, "num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 8,
    "attn_type_list": [0, 1, 0], "postnorm": true, "tie_word_embeddings": )") +
                           (tied ? "true" : "false") + "}";
  auto cfg = parse_model_config(text);
  EXPECT_TRUE(cfg.has_value()) << cfg.error().to_string();
  return *cfg;
}

Tensor random_tensor(std::vector<int64_t> shape, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Tensor t = Tensor::empty(DType::f32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

ModelWeights random_weights(const ModelConfig& c, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  auto r = [&](std::vector<int64_t> s) { return random_tensor(std::move(s), rng); };
  const int64_t H = c.hidden_size, Q = c.q_size(), KV = c.kv_size(), I = c.intermediate_size;
  ModelWeights w;
  w.embed = r({c.vocab_size, H});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights lw;
    lw.kind = c.layer_types[static_cast<size_t>(l)];
    lw.input_norm = r({H});
    lw.post_norm = r({H});
    if (lw.kind == LayerKind::lightning) {
      lw.lightning = {r({3 * Q, H}), r({Q, H}), r({H, Q}), r({Q})};
    } else {
      lw.softmax = {r({Q, H}), r({KV, H}), r({KV, H}), r({H, Q})};
    }
    lw.moe.gate = r({c.num_local_experts, H});
    for (int64_t e = 0; e < c.num_local_experts; ++e) lw.moe.experts.push_back({r({I, H}), r({I, H}), r({H, I})});
    w.layers.push_back(std::move(lw));
  }
  w.final_norm = r({H});
  w.lm_head = c.tie_word_embeddings ? w.embed : r({c.vocab_size, H});
  return w;
}

// Visits every tensor pair of two ModelWeights with a name for messages.
void for_each_pair(const ModelWeights& a, const ModelWeights& b,
                   const std::function<void(const std::string&, const Tensor&, const Tensor&)>& fn) {
  fn("embed", a.embed, b.embed);
  fn("final_norm", a.final_norm, b.final_norm);
  fn("lm_head", a.lm_head, b.lm_head);
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const LayerWeights &x = a.layers[l], &y = b.layers[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    ASSERT_EQ(x.kind, y.kind);
    fn(p + "input_norm", x.input_norm, y.input_norm);
    fn(p + "post_norm", x.post_norm, y.post_norm);
    if (x.kind == LayerKind::lightning) {
      fn(p + "qkv", x.lightning.qkv, y.lightning.qkv);
      fn(p + "output_gate", x.lightning.output_gate, y.lightning.output_gate);
      fn(p + "out_proj", x.lightning.out_proj, y.lightning.out_proj);
      fn(p + "norm", x.lightning.norm, y.lightning.norm);
    } else {
      fn(p + "q_proj", x.softmax.q_proj, y.softmax.q_proj);
      fn(p + "k_proj", x.softmax.k_proj, y.softmax.k_proj);
      fn(p + "v_proj", x.softmax.v_proj, y.softmax.v_proj);
      fn(p + "o_proj", x.softmax.o_proj, y.softmax.o_proj);
    }
    fn(p + "router", x.moe.gate, y.moe.gate);
    ASSERT_EQ(x.moe.experts.size(), y.moe.experts.size());
    for (size_t e = 0; e < x.moe.experts.size(); ++e) {
      const std::string pe = p + "expert " + std::to_string(e) + " ";
      fn(pe + "w1", x.moe.experts[e].w1, y.moe.experts[e].w1);
      fn(pe + "w3", x.moe.experts[e].w3, y.moe.experts[e].w3);
      fn(pe + "w2", x.moe.experts[e].w2, y.moe.experts[e].w2);
    }
  }
}

// `got` is f32 contiguous and equals `want` after a round trip through `dtype`.
void expect_loaded(const ModelWeights& want, const ModelWeights& got, DType dtype) {
  for_each_pair(want, got, [&](const std::string& name, const Tensor& w, const Tensor& g) {
    ASSERT_EQ(g.dtype(), DType::f32) << name;
    ASSERT_TRUE(g.is_contiguous()) << name;
    ASSERT_EQ(g.shape(), w.shape()) << name;
    Tensor expect = dtype == DType::f32 ? w : w.cast(dtype)->to_f32();
    EXPECT_EQ(std::memcmp(expect.raw(), g.raw(), g.nbytes()), 0) << name;
  });
}

Expected<ModelWeights> load(const std::string& dir, const ModelConfig& cfg) {
  return load_model_weights(dir, cfg, {}, nullptr);
}

void expect_load_error(const std::string& dir, const ModelConfig& cfg, Errc code,
                       std::initializer_list<std::string> needles) {
  auto r = load(dir, cfg);
  ASSERT_FALSE(r.has_value()) << "loaded although an error was expected";
  EXPECT_EQ(r.error().code(), code) << r.error().to_string();
  for (const std::string& n : needles) {
    EXPECT_NE(r.error().message().find(n), std::string::npos) << "'" << n << "' not in: " << r.error().message();
  }
}

NamedTensors tensors_of(const ModelWeights& w, const ModelConfig& c, WeightNaming naming, DType dtype = DType::f32) {
  auto t = model_weights_to_tensors(w, c, naming, dtype);
  EXPECT_TRUE(t.has_value()) << t.error().to_string();
  return t.has_value() ? *t : NamedTensors{};
}

Tensor* find_tensor(NamedTensors& ts, const std::string& name) {
  for (auto& [n, t] : ts) {
    if (n == name) return &t;
  }
  return nullptr;
}

void erase_tensor(NamedTensors& ts, const std::string& name) {
  auto it = std::find_if(ts.begin(), ts.end(), [&](const auto& p) { return p.first == name; });
  ASSERT_NE(it, ts.end()) << name;
  ts.erase(it);
}

// ---- round trips ----------------------------------------------------------------------------

TEST(Checkpoint, OfficialF32RoundTripIsZeroCopy) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  const ModelWeights w = random_weights(cfg);
  ASSERT_TRUE(save_checkpoint(dir.path(), w, cfg).is_ok());
  EXPECT_TRUE(std::filesystem::exists(dir.file("config.json")));
  auto back_cfg = load_model_config(dir.file("config.json"));
  ASSERT_TRUE(back_cfg.has_value());
  auto got = load(dir.path(), *back_cfg);
  ASSERT_TRUE(got.has_value()) << got.error().to_string();
  expect_loaded(w, *got, DType::f32);
  // Every tensor is a view of the one mapping: same owner everywhere.
  for_each_pair(*got, *got, [&](const std::string& name, const Tensor& t, const Tensor&) {
    EXPECT_EQ(t.owner(), got->embed.owner()) << name;
  });
}

TEST(Checkpoint, TransformersNamingRoundTrip) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  const ModelWeights w = random_weights(cfg, 2);
  NamedTensors ts = tensors_of(w, cfg, WeightNaming::transformers);
  EXPECT_NE(find_tensor(ts, "model.layers.1.mlp.experts.gate_up_proj"), nullptr);
  EXPECT_NE(find_tensor(ts, "model.layers.1.mlp.gate.weight"), nullptr);
  for (const auto& [name, t] : ts) EXPECT_EQ(name.find("block_sparse_moe"), std::string::npos) << name;
  ASSERT_TRUE(save_checkpoint(dir.path(), w, cfg, {WeightNaming::transformers, DType::f32, 0}).is_ok());
  auto got = load(dir.path(), cfg);
  ASSERT_TRUE(got.has_value()) << got.error().to_string();
  expect_loaded(w, *got, DType::f32);
  // Experts are row views of the mapped fused tensors.
  EXPECT_EQ(got->layers[0].moe.experts[3].w2.owner(), got->embed.owner());
}

TEST(Checkpoint, FusedLayoutHasGateRowsFirst) {
  const ModelConfig cfg = tiny_config();
  const ModelWeights w = random_weights(cfg, 3);
  NamedTensors ts = tensors_of(w, cfg, WeightNaming::transformers);
  const Tensor* gate_up = find_tensor(ts, "model.layers.2.mlp.experts.gate_up_proj");
  const Tensor* down = find_tensor(ts, "model.layers.2.mlp.experts.down_proj");
  ASSERT_NE(gate_up, nullptr);
  ASSERT_NE(down, nullptr);
  const int64_t E = 4, I = 8, H = 16;
  EXPECT_EQ(gate_up->shape(), (std::vector<int64_t>{E, 2 * I, H}));
  EXPECT_EQ(down->shape(), (std::vector<int64_t>{E, H, I}));
  for (int64_t e = 0; e < E; ++e) {
    const ExpertWeights& x = w.layers[2].moe.experts[static_cast<size_t>(e)];
    const float* g = gate_up->data<float>() + e * 2 * I * H;
    EXPECT_EQ(std::memcmp(g, x.w1.raw(), I * H * 4), 0) << "gate rows of expert " << e;
    EXPECT_EQ(std::memcmp(g + I * H, x.w3.raw(), I * H * 4), 0) << "up rows of expert " << e;
    EXPECT_EQ(std::memcmp(down->data<float>() + e * H * I, x.w2.raw(), H * I * 4), 0) << "down of expert " << e;
  }
}

TEST(Checkpoint, HalfPrecisionIsConvertedOnce) {
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (WeightNaming naming : {WeightNaming::official, WeightNaming::transformers}) {
      TempDir dir;
      const ModelConfig cfg = tiny_config();
      const ModelWeights w = random_weights(cfg, 4);
      ASSERT_TRUE(save_checkpoint(dir.path(), w, cfg, {naming, dtype, 0}).is_ok());
      auto got = load(dir.path(), cfg);
      ASSERT_TRUE(got.has_value()) << got.error().to_string();
      expect_loaded(w, *got, dtype);
      EXPECT_NE(got->embed.owner(), got->lm_head.owner());  // converted copies, not the mapping
      if (naming == WeightNaming::transformers) {
        // One conversion of the fused tensor; the experts are views of it.
        EXPECT_EQ(got->layers[1].moe.experts[0].w1.owner(), got->layers[1].moe.experts[3].w3.owner());
      }
    }
  }
}

TEST(Checkpoint, ShardedBothNamings) {
  for (WeightNaming naming : {WeightNaming::official, WeightNaming::transformers}) {
    TempDir dir;
    const ModelConfig cfg = tiny_config();
    const ModelWeights w = random_weights(cfg, 5);
    ASSERT_TRUE(save_checkpoint(dir.path(), w, cfg, {naming, DType::bf16, 4096}).is_ok());
    EXPECT_TRUE(std::filesystem::exists(dir.file(kSafetensorsIndexFile)));
    std::vector<std::string> lines;
    auto files = CheckpointFiles::open(dir.path(), [&](const std::string& l) { lines.push_back(l); });
    ASSERT_TRUE(files.has_value()) << files.error().to_string();
    EXPECT_GT(files->files().size(), 2u);
    EXPECT_EQ(lines.size(), files->files().size());
    auto got = load_model_weights(*files, cfg);
    ASSERT_TRUE(got.has_value()) << got.error().to_string();
    expect_loaded(w, *got, DType::bf16);
  }
}

TEST(Checkpoint, TiedEmbeddingsWithoutLmHead) {
  TempDir dir;
  const ModelConfig cfg = tiny_config(/*tied=*/true);
  const ModelWeights w = random_weights(cfg, 6);
  NamedTensors ts = tensors_of(w, cfg, WeightNaming::official);
  EXPECT_EQ(find_tensor(ts, "lm_head.weight"), nullptr);  // tied and shared: not written
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), ts).is_ok());
  auto got = load(dir.path(), cfg);
  ASSERT_TRUE(got.has_value()) << got.error().to_string();
  EXPECT_EQ(got->lm_head.raw(), got->embed.raw());
}

// ---- errors ---------------------------------------------------------------------------------

TEST(CheckpointErrors, MissingLmHeadWhenUntied) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  NamedTensors ts = tensors_of(random_weights(cfg), cfg, WeightNaming::official);
  erase_tensor(ts, "lm_head.weight");
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), ts).is_ok());
  expect_load_error(dir.path(), cfg, Errc::not_found, {"'lm_head.weight'", "model.safetensors"});
}

TEST(CheckpointErrors, WrongShapeNamesTensorShapesAndFile) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  NamedTensors ts = tensors_of(random_weights(cfg), cfg, WeightNaming::official);
  std::mt19937 rng(1);
  *find_tensor(ts, "model.layers.2.self_attn.qkv_proj.weight") = random_tensor({24, 17}, rng);
  ASSERT_TRUE(write_sharded_safetensors(dir.path(), ts, 2048).has_value());
  auto files = CheckpointFiles::open(dir.path(), nullptr);
  ASSERT_TRUE(files.has_value());
  const std::string shard = files->file_for("model.layers.2.self_attn.qkv_proj.weight");
  EXPECT_NE(shard.find("-of-"), std::string::npos);
  expect_load_error(dir.path(), cfg, Errc::invalid_checkpoint,
                    {"model.layers.2.self_attn.qkv_proj.weight: expected [24, 16], got [24, 17] in " + shard});
}

TEST(CheckpointErrors, WrongRankAndFusedShape) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  NamedTensors ts = tensors_of(random_weights(cfg), cfg, WeightNaming::transformers);
  std::mt19937 rng(1);
  *find_tensor(ts, "model.layers.0.mlp.experts.down_proj") = random_tensor({4, 8, 16}, rng);  // transposed
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), ts).is_ok());
  expect_load_error(dir.path(), cfg, Errc::invalid_checkpoint,
                    {"model.layers.0.mlp.experts.down_proj: expected [4, 16, 8], got [4, 8, 16] in model.safetensors"});
  *find_tensor(ts, "model.layers.0.mlp.experts.down_proj") = random_tensor({4, 16, 8}, rng);
  *find_tensor(ts, "model.norm.weight") = random_tensor({16, 1}, rng);
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), ts).is_ok());
  expect_load_error(dir.path(), cfg, Errc::invalid_checkpoint, {"model.norm.weight: expected [16], got [16, 1]"});
}

TEST(CheckpointErrors, MissingTensorNamesItAndItsFile) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  NamedTensors ts = tensors_of(random_weights(cfg), cfg, WeightNaming::official);
  erase_tensor(ts, "model.layers.1.block_sparse_moe.experts.2.w3.weight");
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), ts).is_ok());
  expect_load_error(dir.path(), cfg, Errc::not_found,
                    {"tensor 'model.layers.1.block_sparse_moe.experts.2.w3.weight' is missing from model.safetensors"});
}

TEST(CheckpointErrors, MissingTensorInShardedCheckpointPointsAtItsLayersShard) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  NamedTensors ts = tensors_of(random_weights(cfg), cfg, WeightNaming::official);
  erase_tensor(ts, "model.layers.1.post_attention_layernorm.weight");
  ASSERT_TRUE(write_sharded_safetensors(dir.path(), ts, 4096).has_value());
  expect_load_error(dir.path(), cfg, Errc::not_found,
                    {"'model.layers.1.post_attention_layernorm.weight'", kSafetensorsIndexFile,
                     "the other 'model.layers.1.' tensors are in model-0000"});
}

TEST(CheckpointErrors, MissingFusedExperts) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  NamedTensors ts = tensors_of(random_weights(cfg), cfg, WeightNaming::transformers);
  erase_tensor(ts, "model.layers.2.mlp.experts.gate_up_proj");
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), ts).is_ok());
  expect_load_error(dir.path(), cfg, Errc::not_found, {"'model.layers.2.mlp.experts.gate_up_proj'"});
}

TEST(CheckpointErrors, UnexpectedTensorNamesItAndItsFile) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  NamedTensors ts = tensors_of(random_weights(cfg), cfg, WeightNaming::official);
  std::mt19937 rng(1);
  ts.emplace_back("model.layers.0.self_attn.rogue.weight", random_tensor({2}, rng));
  ts.emplace_back("model.layers.3.input_layernorm.weight", random_tensor({16}, rng));  // a 4th layer
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), ts).is_ok());
  expect_load_error(dir.path(), cfg, Errc::invalid_checkpoint,
                    {"unexpected tensor 'model.layers.0.self_attn.rogue.weight' in model.safetensors",
                     "1 more unexpected"});
}

TEST(CheckpointErrors, BothRouterNamesIsAnError) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  const ModelWeights w = random_weights(cfg);
  NamedTensors ts = tensors_of(w, cfg, WeightNaming::official);
  ts.emplace_back("model.layers.1.mlp.gate.weight", w.layers[1].moe.gate);
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), ts).is_ok());
  expect_load_error(dir.path(), cfg, Errc::invalid_checkpoint, {"unexpected tensor", "model.layers.1."});
}

TEST(CheckpointErrors, DerivedBuffersAreIgnored) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  const ModelWeights w = random_weights(cfg);
  NamedTensors ts = tensors_of(w, cfg, WeightNaming::transformers);
  std::mt19937 rng(1);
  for (const char* buf : {"slope_rate", "query_decay", "key_decay", "diagonal_decay"}) {
    ts.emplace_back(std::string("model.layers.0.self_attn.") + buf, random_tensor({2, 1, 1}, rng));
  }
  ts.emplace_back("model.rotary_emb.inv_freq", random_tensor({1}, rng));
  ts.emplace_back("model.layers.1.self_attn.rotary_emb.inv_freq", random_tensor({1}, rng));
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), ts).is_ok());
  auto got = load(dir.path(), cfg);
  ASSERT_TRUE(got.has_value()) << got.error().to_string();
  expect_loaded(w, *got, DType::f32);
  EXPECT_TRUE(is_derived_buffer("model.layers.9.self_attn.diagonal_decay"));
  EXPECT_FALSE(is_derived_buffer("model.layers.9.self_attn.norm.weight"));
}

TEST(CheckpointErrors, IntegerDtypeRejected) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  NamedTensors ts = tensors_of(random_weights(cfg), cfg, WeightNaming::official);
  *find_tensor(ts, "model.layers.0.input_layernorm.weight") = Tensor::empty(DType::i32, {16});
  ASSERT_TRUE(write_safetensors(dir.file(kSafetensorsSingleFile), ts).is_ok());
  expect_load_error(dir.path(), cfg, Errc::invalid_checkpoint,
                    {"model.layers.0.input_layernorm.weight: expected a float dtype", "I32", "model.safetensors"});
}

TEST(CheckpointErrors, LayerKindMismatchIsExplained) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  ASSERT_TRUE(save_checkpoint(dir.path(), random_weights(cfg), cfg).is_ok());
  ModelConfig swapped = cfg;
  swapped.layer_types = {LayerKind::lightning, LayerKind::lightning, LayerKind::softmax};
  expect_load_error(dir.path(), swapped, Errc::not_found,
                    {"'model.layers.1.self_attn.qkv_proj.weight'", "config.json says layer 1 is lightning",
                     "softmax-attention weights"});
}

TEST(CheckpointErrors, UnsupportedDeviceAndBadConfig) {
  TempDir dir;
  const ModelConfig cfg = tiny_config();
  ASSERT_TRUE(save_checkpoint(dir.path(), random_weights(cfg), cfg).is_ok());
  auto files = CheckpointFiles::open(dir.path(), nullptr);
  ASSERT_TRUE(files.has_value());
  LoadOptions cuda;
  cuda.device = {DeviceKind::cuda, 0};
  EXPECT_EQ(load_model_weights(*files, cfg, cuda).error().code(), Errc::unsupported);
  ModelConfig bad = cfg;
  bad.layer_types.pop_back();
  EXPECT_EQ(load_model_weights(*files, bad).error().code(), Errc::invalid_config);
  TempDir empty;
  EXPECT_EQ(load(empty.path(), cfg).error().code(), Errc::not_found);
}

TEST(CheckpointErrors, WriterChecksWeightsAgainstConfig) {
  const ModelConfig cfg = tiny_config();
  ModelWeights w = random_weights(cfg);
  std::mt19937 rng(1);
  w.layers[0].lightning.norm = random_tensor({7}, rng);
  auto r = model_weights_to_tensors(w, cfg, WeightNaming::official);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_NE(r.error().message().find("model.layers.0.self_attn.norm.weight"), std::string::npos);
  w = random_weights(cfg);
  w.layers.pop_back();
  EXPECT_EQ(model_weights_to_tensors(w, cfg, WeightNaming::official).error().code(), Errc::invalid_argument);
  w = random_weights(cfg);
  EXPECT_EQ(model_weights_to_tensors(w, cfg, WeightNaming::official, DType::i32).error().code(), Errc::invalid_argument);
}

}  // namespace
}  // namespace fulgur
