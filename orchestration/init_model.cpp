#include "orchestration/init_model.h"

#include <cmath>
#include <filesystem>
#include <random>

#include "orchestration/tokenizer/tokenizer.h"

namespace fulgur {

namespace {

// Text the demo tokenizer learns its merges from: plain English about the model it ships with.
constexpr std::string_view kTokenizerTrainingText =
    "MiniMax-Text-01 is a mixture of experts language model with lightning attention. "
    "Seven lightning attention layers, which keep a constant-size state for every sequence, "
    "alternate with one softmax attention layer that keeps a key and value cache. "
    "Every layer routes each token to the two best of thirty-two experts. The runtime serves "
    "the model as a system of actors: attention actors, router actors and expert actors exchange "
    "batches of tokens, and the scheduler admits requests, mixes prefill and decode, and streams "
    "tokens back to the clients. The quick brown fox jumps over the lazy dog. "
    "Hello, world! How are you today? I am fine, thank you, and you? We are serving tokens. "
    "def forward(self, hidden_states): return self.norm(hidden_states) + 1234567890\n"
    "The state of the sequence is carried from one chunk to the next, so the answer does not "
    "depend on how the prompt was split. There are 10 layers, 20 heads and 30 experts in this text.\n";

void fill_normal(Tensor& t, std::mt19937_64& rng, double mean, double stddev) {
  std::normal_distribution<float> dist(static_cast<float>(mean), static_cast<float>(stddev));
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
}

Tensor linear_weight(int64_t out, int64_t in, std::mt19937_64& rng) {
  Tensor t = Tensor::empty(DType::f32, {out, in});
  fill_normal(t, rng, 0.0, 1.0 / std::sqrt(static_cast<double>(in)));
  return t;
}

Tensor norm_weight(int64_t n, std::mt19937_64& rng) {
  Tensor t = Tensor::empty(DType::f32, {n});
  fill_normal(t, rng, 1.0, 0.1);
  return t;
}

}  // namespace

ModelConfig demo_model_config() {
  ModelConfig c;
  c.model_type = "minimax_text_01";
  c.hidden_size = 256;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.rotary_dim = 32;
  c.rope_theta = 10000000.0;
  c.vocab_size = 512;  // the embedded training text fills a 512-id BPE with real merges
  c.num_local_experts = 8;
  c.num_experts_per_tok = 2;
  c.intermediate_size = 512;
  c.max_position_embeddings = 4096;
  c.block_size = 256;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    c.layer_types.push_back(l % 8 == 7 ? LayerKind::softmax : LayerKind::lightning);
  }
  const double alpha = std::pow(2.0 * static_cast<double>(c.num_hidden_layers), 0.25);  // DeepNorm
  c.full_attn_alpha = c.linear_attn_alpha = c.mlp_alpha = alpha;
  c.full_attn_beta = c.linear_attn_beta = c.mlp_beta = 1.0;
  return c;
}

const std::vector<std::string>& minimax_special_tokens() {
  static const std::vector<std::string> tokens = {"<beginning_of_sentence>", "<end_of_sentence>",
                                                  "<begin_of_document>", "<end_of_document>"};
  return tokens;
}

ModelWeights random_model_weights(const ModelConfig& cfg, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t hid = cfg.hidden_size, V = cfg.vocab_size, HD = cfg.q_size(), KVD = cfg.kv_size();
  const int64_t I = cfg.intermediate_size;
  ModelWeights w;
  w.embed = Tensor::empty(DType::f32, {V, hid});
  fill_normal(w.embed, rng, 0.0, 1.0);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    LayerWeights lw;
    lw.kind = cfg.layer_types[l];
    lw.input_norm = norm_weight(hid, rng);
    lw.post_norm = norm_weight(hid, rng);
    if (lw.kind == LayerKind::lightning) {
      lw.lightning.qkv = linear_weight(3 * HD, hid, rng);
      lw.lightning.output_gate = linear_weight(HD, hid, rng);
      lw.lightning.out_proj = linear_weight(hid, HD, rng);
      lw.lightning.norm = norm_weight(HD, rng);
    } else {
      lw.softmax.q_proj = linear_weight(HD, hid, rng);
      lw.softmax.k_proj = linear_weight(KVD, hid, rng);
      lw.softmax.v_proj = linear_weight(KVD, hid, rng);
      lw.softmax.o_proj = linear_weight(hid, HD, rng);
    }
    lw.moe.gate = linear_weight(cfg.num_local_experts, hid, rng);
    for (int64_t e = 0; e < cfg.num_local_experts; ++e) {
      ExpertWeights ew;
      ew.w1 = linear_weight(I, hid, rng);
      ew.w3 = linear_weight(I, hid, rng);
      ew.w2 = linear_weight(hid, I, rng);
      lw.moe.experts.push_back(std::move(ew));
    }
    w.layers.push_back(std::move(lw));
  }
  w.final_norm = norm_weight(hid, rng);
  w.lm_head = linear_weight(V, hid, rng);
  return w;
}

Status init_model(ModelConfig cfg, const std::string& out_dir, const InitModelOptions& options) {
  const auto& specials = minimax_special_tokens();
  FULGUR_ASSIGN_OR_RETURN(std::string tokenizer_json,
                          Tokenizer::make_byte_level_json(cfg.vocab_size, specials, kTokenizerTrainingText));
  cfg.eos_token_id = cfg.vocab_size - static_cast<int64_t>(specials.size()) + 1;  // <end_of_sentence>
  FULGUR_TRY(cfg.validate());
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return Status(Errc::io_error, out_dir + ": cannot create directory: " + ec.message());
  ModelWeights weights = random_model_weights(cfg, options.seed);
  SaveOptions save;
  save.naming = options.naming;
  save.dtype = options.dtype;
  save.max_shard_bytes = options.max_shard_bytes;
  FULGUR_TRY(save_checkpoint(out_dir, weights, cfg, save));
  return write_file_atomically(out_dir + "/tokenizer.json", tokenizer_json);
}

}  // namespace fulgur
