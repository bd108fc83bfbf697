// The `fulgur` binary end to end: init-model -> forward in all three modes -> generate, and clear
// non-zero exits on bad input.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/wait.h>

#include "devices/device.h"
#include "orchestration/checkpoint/safetensors.h"
#include "test_util.h"

namespace fulgur {
namespace {

namespace fs = std::filesystem;

struct Result {
  int code;
  std::string output;  // stdout and stderr
};

// The build's bin/ folder; FULGUR_BINARY_DIR in the environment overrides it (binaries built on one
// machine and run from a copy on another, e.g. the GPU machine).
std::string binary_dir() {
  const char* env = std::getenv("FULGUR_BINARY_DIR");
  return env != nullptr && *env != '\0' ? env : FULGUR_BINARY_DIR;
}

Result run(const std::string& args) {
  const std::string cmd = binary_dir() + "/bin/fulgur " + args + " 2>&1";
  Result r{-1, {}};
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("fulgur-cli-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    // A tiny config so the test stays fast.
    std::ofstream(dir_ / "config.json") << R"({
      "model_type": "minimax_text_01", "hidden_size": 32, "num_hidden_layers": 3,
      "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "rotary_dim": 8,
      "rope_theta": 10000.0, "vocab_size": 300, "num_local_experts": 4, "num_experts_per_tok": 2,
      "intermediate_size": 24, "attn_type_list": [0, 1, 0], "postnorm": true, "rms_norm_eps": 1e-5,
      "layernorm_full_attention_alpha": 1.5, "layernorm_full_attention_beta": 1.0,
      "layernorm_linear_attention_alpha": 1.5, "layernorm_linear_attention_beta": 1.0,
      "layernorm_mlp_alpha": 1.5, "layernorm_mlp_beta": 1.0, "max_position_embeddings": 512,
      "block_size": 4, "tie_word_embeddings": false, "shared_intermediate_size": 0 })";
    model_ = (dir_ / "model").string();
    init_ = run("init-model --config " + (dir_ / "config.json").string() + " --out " + model_ +
                " --seed 3 --dtype f32 --shard-mb 0.05");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::vector<float> logits(const std::string& file) {
    auto f = SafetensorsFile::open(file);
    EXPECT_TRUE(f.has_value()) << (f ? "" : f.error().to_string());
    auto t = f->tensor("logits");
    EXPECT_TRUE(t.has_value());
    return {t->data<float>(), t->data<float>() + t->numel()};
  }

  static inline fs::path dir_;
  static inline std::string model_;
  static inline Result init_;
};

TEST_F(Cli, InitModelWritesAShardedCheckpointWithTokenizer) {
  ASSERT_EQ(init_.code, 0) << init_.output;
  EXPECT_TRUE(fs::exists(fs::path(model_) / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(fs::path(model_) / "tokenizer.json"));
}

TEST_F(Cli, ForwardModesAgree) {
  ASSERT_EQ(init_.code, 0) << init_.output;
  const std::string tokens = "--tokens 5,17,200,3,3,3,99,150,0,299,42,7,8";
  const std::string base = "forward --model " + model_ + " " + tokens + " --out ";
  auto a = run(base + (dir_ / "a.safetensors").string());
  ASSERT_EQ(a.code, 0) << a.output;
  EXPECT_NE(a.output.find("loading shard 1/"), std::string::npos) << "one progress line per shard: " << a.output;
  auto b = run(base + (dir_ / "b.safetensors").string() + " --chunk-size 3");
  ASSERT_EQ(b.code, 0) << b.output;
  auto c = run(base + (dir_ / "c.safetensors").string() + " --decode-from 2");
  ASSERT_EQ(c.code, 0) << c.output;
  const auto la = logits((dir_ / "a.safetensors").string());
  ASSERT_EQ(la.size(), 13u * 300u);
  EXPECT_LT(test::rel_l2(logits((dir_ / "b.safetensors").string()), la), 1e-5);
  EXPECT_LT(test::rel_l2(logits((dir_ / "c.safetensors").string()), la), 1e-5);
}

// `forward --device cuda`: the f32 mode matches the CPU (f32) in all three modes within the issue's 1e-4;
// the bf16 mode tracks it within the rounding of bf16 activations and weights. Skips without a GPU.
TEST_F(Cli, ForwardOnCudaMatchesCpu) {
  ASSERT_EQ(init_.code, 0) << init_.output;
  bool has_cuda = false;
  for (const DeviceInfo& d : available_devices()) has_cuda = has_cuda || d.device.kind == DeviceKind::cuda;
  if (!has_cuda) GTEST_SKIP() << "no CUDA device on this machine: GPU test skipped";
  const std::string tokens = "--tokens 5,17,200,3,3,3,99,150,0,299,42,7,8";
  const std::string base = "forward --model " + model_ + " " + tokens + " --out ";
  auto cpu = run(base + (dir_ / "cpu.safetensors").string());
  ASSERT_EQ(cpu.code, 0) << cpu.output;
  const auto ref = logits((dir_ / "cpu.safetensors").string());
  for (const std::string mode : {"", " --chunk-size 3", " --decode-from 2"}) {
    auto r = run(base + (dir_ / "gpu.safetensors").string() + " --device cuda --dtype f32" + mode);
    ASSERT_EQ(r.code, 0) << r.output;
    const double err = test::rel_l2(logits((dir_ / "gpu.safetensors").string()), ref);
    std::printf("[cli] forward --device cuda --dtype f32%s: rel L2 vs cpu %.3e\n", mode.c_str(), err);
    EXPECT_LT(err, 1e-4) << mode;
    r = run(base + (dir_ / "gpu16.safetensors").string() + " --device cuda" + mode);
    ASSERT_EQ(r.code, 0) << r.output;
    const double err16 = test::rel_l2(logits((dir_ / "gpu16.safetensors").string()), ref);
    std::printf("[cli] forward --device cuda (bf16)%s: rel L2 vs cpu %.3e\n", mode.c_str(), err16);
    EXPECT_LT(err16, 5e-2) << mode;
  }
  // generate: the GPU draws with the CPU sampler's integer weights (kernels/sampling_math.h), so a seeded f32
  // run on the GPU writes the CPU's text (a 4e-7 logit difference moves a draw only on a boundary), and bf16 runs.
  const std::string gen = "generate --model " + model_ + " --prompt 'Hello, world!' --max-tokens 12 --temperature 0.9 --seed 5";
  auto gen_cpu = run(gen), gen_gpu = run(gen + " --device cuda --dtype f32"), gen_bf16 = run(gen + " --device cuda");
  ASSERT_EQ(gen_cpu.code, 0) << gen_cpu.output;
  ASSERT_EQ(gen_gpu.code, 0) << gen_gpu.output;
  EXPECT_EQ(gen_gpu.output, gen_cpu.output);
  EXPECT_EQ(gen_bf16.code, 0) << gen_bf16.output;
  auto narrow = run(base + (dir_ / "gpu.safetensors").string() + " --device cuda --int8-experts");
  EXPECT_NE(narrow.code, 0);
  EXPECT_NE(narrow.output.find("multiples of 64"), std::string::npos) << narrow.output;
  auto bad = run(base + (dir_ / "gpu.safetensors").string() + " --device cuda --dtype f16");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.output.find("f16"), std::string::npos) << bad.output;
}

TEST_F(Cli, GenerateIsReproducibleBySeed) {
  ASSERT_EQ(init_.code, 0) << init_.output;
  const std::string cmd = "generate --model " + model_ + " --prompt 'Hello, world!' --max-tokens 12 --temperature 0.9 --seed 5";
  auto a = run(cmd), b = run(cmd);
  ASSERT_EQ(a.code, 0) << a.output;
  EXPECT_EQ(a.output, b.output);
  auto chat = run("generate --model " + model_ + " --chat --prompt hi --max-tokens 4 --stats");
  EXPECT_EQ(chat.code, 0) << chat.output;
  EXPECT_NE(chat.output.find("tok/s"), std::string::npos);
}

TEST_F(Cli, BadInputExitsNonZeroWithAMessage) {
  ASSERT_EQ(init_.code, 0) << init_.output;
  const std::string out = " --out " + (dir_ / "x.safetensors").string();
  struct Case {
    std::string args, expect;
  };
  const Case cases[] = {
      {"forward --model " + model_ + " --tokens 1,x,3" + out, "item 1 ('x')"},
      {"forward --model " + model_ + " --tokens 1,300" + out, "token id 300"},
      {"forward --model " + model_ + " --tokens 1,2 --decode-from 3" + out, "decode-from"},
      {"forward --model /nonexistent/model --tokens 1" + out, "/nonexistent/model"},
      {"forward --model " + model_ + " --tokens 1 --device cuda:99" + out, "cuda:99"},
      {"forward --model " + model_ + " --tokens 1 --int8-experts" + out, "--int8-experts needs --device cuda"},
      {"generate --model " + model_ + " --prompt hi --top-p 0", "top-p"},
      {"serve --model " + model_ + " --listen 127.0.0.1:0 --device cuda:99", "cuda:99"},
      {"serve --model " + model_ + " --listen 127.0.0.1:0 --int8-experts", "--int8-experts needs --device cuda"},
      {"serve --model " + model_ + " --listen 127.0.0.1:0 --dtype f16", "--dtype 'f16'"},
      {"init-model --out " + (dir_ / "m2").string() + " --seed 1 --config /nonexistent.json", "/nonexistent.json"},
      {"frobnicate", "frobnicate"},
  };
  for (const auto& c : cases) {
    auto r = run(c.args);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
  }
}

TEST_F(Cli, CorruptShardIsNamed) {
  ASSERT_EQ(init_.code, 0) << init_.output;
  const fs::path copy = dir_ / "corrupt";
  fs::copy(model_, copy, fs::copy_options::recursive);
  fs::path shard;
  for (const auto& e : fs::directory_iterator(copy)) {
    if (e.path().filename().string().rfind("model-00002", 0) == 0) shard = e.path();
  }
  ASSERT_FALSE(shard.empty());
  fs::resize_file(shard, fs::file_size(shard) / 2);
  auto r = run("forward --model " + copy.string() + " --tokens 1,2 --out " + (dir_ / "y.safetensors").string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find(shard.filename().string()), std::string::npos) << r.output;
}

}  // namespace
}  // namespace fulgur
