#include "actors/layers/model.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/embedding.h"

namespace fulgur {

namespace {

Status check_shape(const Tensor& t, const std::vector<int64_t>& shape, const std::string& name) {
  if (t.shape() != shape) {
    return Status(Errc::invalid_checkpoint,
                  name + ": expected " + shape_string(shape) + ", got " + shape_string(t.shape()));
  }
  if (t.dtype() != DType::f32 || !t.is_contiguous()) {
    return Status(Errc::unsupported, name + ": the CPU model needs contiguous f32 weights, got " + t.describe());
  }
  return Status::ok();
}

Status check_weights(const ModelConfig& c, const ModelWeights& w) {
  const int64_t hid = c.hidden_size, V = c.vocab_size, HD = c.q_size(), KVD = c.kv_size();
  const int64_t E = c.num_local_experts, I = c.intermediate_size;
  FULGUR_TRY(check_shape(w.embed, {V, hid}, "model.embed_tokens.weight"));
  FULGUR_TRY(check_shape(w.final_norm, {hid}, "model.norm.weight"));
  FULGUR_TRY(check_shape(w.lm_head, {V, hid}, "lm_head.weight"));
  if (static_cast<int64_t>(w.layers.size()) != c.num_hidden_layers) {
    return Status(Errc::invalid_checkpoint, "weights hold " + std::to_string(w.layers.size()) + " layers, config " +
                                                std::to_string(c.num_hidden_layers));
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    if (lw.kind != c.layer_types[l]) return Status(Errc::invalid_checkpoint, p + ": layer kind differs from config");
    FULGUR_TRY(check_shape(lw.input_norm, {hid}, p + "input_layernorm.weight"));
    FULGUR_TRY(check_shape(lw.post_norm, {hid}, p + "post_attention_layernorm.weight"));
    if (lw.kind == LayerKind::lightning) {
      FULGUR_TRY(check_shape(lw.lightning.qkv, {3 * HD, hid}, p + "self_attn.qkv_proj.weight"));
      FULGUR_TRY(check_shape(lw.lightning.output_gate, {HD, hid}, p + "self_attn.output_gate.weight"));
      FULGUR_TRY(check_shape(lw.lightning.out_proj, {hid, HD}, p + "self_attn.out_proj.weight"));
      FULGUR_TRY(check_shape(lw.lightning.norm, {HD}, p + "self_attn.norm.weight"));
    } else {
      FULGUR_TRY(check_shape(lw.softmax.q_proj, {HD, hid}, p + "self_attn.q_proj.weight"));
      FULGUR_TRY(check_shape(lw.softmax.k_proj, {KVD, hid}, p + "self_attn.k_proj.weight"));
      FULGUR_TRY(check_shape(lw.softmax.v_proj, {KVD, hid}, p + "self_attn.v_proj.weight"));
      FULGUR_TRY(check_shape(lw.softmax.o_proj, {hid, HD}, p + "self_attn.o_proj.weight"));
    }
    FULGUR_TRY(check_shape(lw.moe.gate, {E, hid}, p + "block_sparse_moe.gate.weight"));
    if (static_cast<int64_t>(lw.moe.experts.size()) != E) {
      return Status(Errc::invalid_checkpoint, p + "block_sparse_moe: expected " + std::to_string(E) + " experts");
    }
    for (int64_t e = 0; e < E; ++e) {
      const std::string pe = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      FULGUR_TRY(check_shape(lw.moe.experts[e].w1, {I, hid}, pe + "w1.weight"));
      FULGUR_TRY(check_shape(lw.moe.experts[e].w3, {I, hid}, pe + "w3.weight"));
      FULGUR_TRY(check_shape(lw.moe.experts[e].w2, {hid, I}, pe + "w2.weight"));
    }
  }
  return Status::ok();
}

}  // namespace

Model::Model(ModelConfig cfg, ModelWeights weights) : cfg_(std::move(cfg)), weights_(std::move(weights)) {
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    layers_.push_back(std::make_unique<DecoderLayer>(cfg_, l, weights_.layers[l]));
  }
}

Expected<std::unique_ptr<Model>> Model::create(ModelConfig cfg, ModelWeights weights) {
  FULGUR_TRY(cfg.validate());
  FULGUR_TRY(check_weights(cfg, weights));
  return std::unique_ptr<Model>(new Model(std::move(cfg), std::move(weights)));
}

Status Model::embed(const std::vector<int32_t>& tokens, Tensor& x) const {
  kernels::EmbeddingParams p;
  p.table = weights_.embed.data<float>(), p.ids = tokens.data(), p.out = x.data<float>();
  p.num_tokens = static_cast<int64_t>(tokens.size()), p.hidden = cfg_.hidden_size, p.vocab = cfg_.vocab_size;
  if (auto ks = kernels::embedding_cpu(p); !ks.ok()) {
    for (int32_t id : tokens) {
      if (id < 0 || id >= cfg_.vocab_size) {
        return Status(Errc::invalid_argument, "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                                  std::to_string(cfg_.vocab_size) + ")");
      }
    }
    return Status(Errc::internal, std::string("embedding: ") + ks.error);
  }
  return Status::ok();
}

Status Model::head(const Tensor& x, const std::vector<int64_t>& rows, Tensor& logits) const {
  const int64_t hidden = cfg_.hidden_size, n = static_cast<int64_t>(rows.size());
  Tensor picked = Tensor::empty(DType::f32, {n, hidden});
  for (int64_t i = 0; i < n; ++i) {
    if (rows[i] < 0 || rows[i] >= x.size(0)) return Status(Errc::invalid_argument, "logits row out of range");
    std::memcpy(picked.data<float>() + i * hidden, x.data<float>() + rows[i] * hidden, sizeof(float) * hidden);
  }
  FULGUR_TRY(rms_norm(picked, weights_.final_norm, cfg_.rms_norm_eps, picked, "model.norm"));
  return linear(picked, weights_.lm_head, logits, "lm_head");
}

Status Model::forward(const std::vector<int32_t>& tokens, const BatchLayout& batch, StatePools& pools,
                      const std::vector<int64_t>& logits_rows, Tensor& logits) const {
  if (static_cast<int64_t>(tokens.size()) != batch.num_tokens) {
    return Status(Errc::invalid_argument, "forward: token count differs from the batch layout");
  }
  FULGUR_TRY(batch.validate(pools.num_slots, pools.num_blocks, pools.page_size));
  Tensor x = Tensor::empty(DType::f32, {batch.num_tokens, cfg_.hidden_size});
  FULGUR_TRY(embed(tokens, x));
  for (const auto& layer : layers_) FULGUR_TRY(layer->forward(x, batch, pools));
  return head(x, logits_rows, logits);
}

SingleSequence::SingleSequence(const Model& model, int64_t max_tokens, int64_t page_size)
    : model_(model),
      max_tokens_(max_tokens),
      page_size_(page_size),
      pools_(StatePools::create(model.config(), 1, (max_tokens + page_size - 1) / page_size, page_size)) {}

BatchLayout single_sequence_layout(int64_t length, int64_t n, int64_t num_blocks) {
  return uniform_batch_layout(1, length, n, num_blocks, 1);  // page size 1: the identity page table
}

std::vector<int64_t> step_logits_rows(int64_t n, bool all_logits) {
  if (!all_logits) return {n - 1};
  std::vector<int64_t> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rows[i] = i;
  return rows;
}

Status SingleSequence::step(const std::vector<int32_t>& tokens, bool all_logits, Tensor& logits) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return Status(Errc::invalid_argument, "step: no tokens");
  if (length_ + n > max_tokens_) {
    return Status(Errc::invalid_argument, "sequence of " + std::to_string(length_ + n) +
                                              " tokens exceeds its capacity of " + std::to_string(max_tokens_));
  }
  const BatchLayout b = single_sequence_layout(length_, n, pools_.num_blocks);
  const std::vector<int64_t> rows = step_logits_rows(n, all_logits);
  logits = Tensor::empty(DType::f32, {static_cast<int64_t>(rows.size()), model_.config().vocab_size});
  FULGUR_TRY(model_.forward(tokens, b, pools_, rows, logits));
  length_ += n;
  return Status::ok();
}

Expected<Tensor> forward_all_logits(int64_t vocab, const std::vector<int32_t>& tokens, const ForwardOptions& opt,
                                    const SequenceStep& step) {
  const int64_t T = static_cast<int64_t>(tokens.size()), V = vocab;
  if (T == 0) return Status(Errc::invalid_argument, "no tokens given");
  if (opt.chunk_size < 0) return Status(Errc::invalid_argument, "chunk size must be positive");
  if (opt.decode_from == 0 || opt.decode_from > T) {
    return Status(Errc::invalid_argument, "decode-from must be in [1, " + std::to_string(T) + "]");
  }
  const int64_t prefill_len = opt.decode_from > 0 ? opt.decode_from : T;
  const int64_t chunk = opt.chunk_size > 0 ? opt.chunk_size : prefill_len;
  Tensor all = Tensor::empty(DType::f32, {T, V});
  auto run = [&](int64_t begin, int64_t count) -> Status {
    std::vector<int32_t> part(tokens.begin() + begin, tokens.begin() + begin + count);
    Tensor logits;
    FULGUR_TRY(step(part, logits));
    if (logits.dtype() != DType::f32 || logits.numel() != count * V) {
      return Status(Errc::internal, "forward: a step returned logits " + logits.describe());
    }
    std::memcpy(all.data<float>() + begin * V, logits.data<float>(), logits.nbytes());
    return Status::ok();
  };
  for (int64_t t0 = 0; t0 < prefill_len; t0 += chunk) FULGUR_TRY(run(t0, std::min(chunk, prefill_len - t0)));
  for (int64_t t = prefill_len; t < T; ++t) FULGUR_TRY(run(t, 1));
  return all;
}

Expected<Tensor> forward_all_logits(const Model& model, const std::vector<int32_t>& tokens, const ForwardOptions& opt) {
  SingleSequence seq(model, std::max<int64_t>(1, static_cast<int64_t>(tokens.size())));
  return forward_all_logits(model.config().vocab_size, tokens, opt,
                            [&](const std::vector<int32_t>& part, Tensor& logits) { return seq.step(part, true, logits); });
}

}  // namespace fulgur
