// Checkpoint <-> ModelWeights: maps the tensor names of either naming dialect onto
// actors/layers/weights.h, checking every shape and dtype against the ModelConfig.
//
// Official names (spec §7, ORIG module tree), N = layer, E = expert:
//   model.embed_tokens.weight                                   [vocab, hidden]
//   model.layers.N.input_layernorm.weight                       [hidden]
//   model.layers.N.post_attention_layernorm.weight              [hidden]
//   lightning: model.layers.N.self_attn.qkv_proj.weight         [3*H*D, hidden]
//              model.layers.N.self_attn.output_gate.weight      [H*D, hidden]
//              model.layers.N.self_attn.out_proj.weight         [hidden, H*D]
//              model.layers.N.self_attn.norm.weight             [H*D]
//   softmax:   model.layers.N.self_attn.{q,k,v,o}_proj.weight   [H*D|KV*D|KV*D, hidden], [hidden, H*D]
//   model.layers.N.block_sparse_moe.gate.weight                 [E, hidden]
//   model.layers.N.block_sparse_moe.experts.E.w1.weight         [I, hidden]   (gate)
//   model.layers.N.block_sparse_moe.experts.E.w3.weight         [I, hidden]   (up)
//   model.layers.N.block_sparse_moe.experts.E.w2.weight         [hidden, I]   (down)
//   model.norm.weight                                           [hidden]
//   lm_head.weight                                              [vocab, hidden] (optional when tied)
//
// transformers 5.x names (models/minimax/modeling_minimax.py: MiniMaxSparseMoeBlock.gate is a
// MiniMaxTopKRouter with `.weight`, MiniMaxExperts holds fused 3-D parameters; the attention,
// norm, embedding and head names are the official ones):
//   model.layers.N.mlp.gate.weight                              [E, hidden]
//   model.layers.N.mlp.experts.gate_up_proj                     [E, 2*I, hidden], gate rows first
//   model.layers.N.mlp.experts.down_proj                        [E, hidden, I]
// (transformers' conversion_mapping.py maps the Mixtral-style on-disk names
// block_sparse_moe.experts.*.w1/w3/w2 onto these, so an -hf checkpoint stored with official
// per-expert names loads through the official path.)
//
// Derived buffers are skipped wherever they appear: *.slope_rate, *.query_decay, *.key_decay,
// *.diagonal_decay (transformers' lightning layers) and *.inv_freq (rotary embedding).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "actors/layers/weights.h"
#include "devices/status.h"
#include "orchestration/checkpoint/safetensors.h"
#include "protocols/model_config.h"

namespace fulgur {

enum class WeightNaming : uint8_t {
  official,      // block_sparse_moe.gate / experts.E.w1,w3,w2
  transformers,  // mlp.gate / fused mlp.experts.gate_up_proj, down_proj
};

struct LoadOptions {
  Device device{};  // only the CPU device is supported for now
};

// Fills every ModelWeights tensor from `files`. On the CPU device every tensor ends up f32 and
// contiguous: f32 data stays a zero-copy view of the mapping, bf16/f16 are converted once.
// Errors: a missing tensor (Errc::not_found, naming it and the file it should be in), a wrong
// shape or a non-float dtype (Errc::invalid_checkpoint, naming the tensor, both shapes and the
// file), a tensor that is neither a known weight nor a derived buffer (Errc::invalid_checkpoint,
// naming it and its file).
Expected<ModelWeights> load_model_weights(const CheckpointFiles& files, const ModelConfig& cfg,
                                          const LoadOptions& options = {});
// Opens `dir` (CheckpointFiles::open) and loads from it.
Expected<ModelWeights> load_model_weights(const std::string& dir, const ModelConfig& cfg,
                                          const LoadOptions& options = {},
                                          const ProgressCallback& progress = stderr_progress());

// True for tensors computed from the config that checkpoints may carry (never loaded).
bool is_derived_buffer(std::string_view name);

// The checkpoint tensors of `weights` under `naming`, each cast to `dtype` (a float dtype).
// Tensors already in `dtype` and contiguous are shared, not copied; the transformers naming
// materialises the fused expert tensors. `weights` must match `cfg` (layer count, kinds, experts).
Expected<NamedTensors> model_weights_to_tensors(const ModelWeights& weights, const ModelConfig& cfg,
                                                WeightNaming naming, DType dtype = DType::f32);

struct SaveOptions {
  WeightNaming naming = WeightNaming::official;
  DType dtype = DType::f32;
  uint64_t max_shard_bytes = 0;  // 0: one model.safetensors; else sharded with an index
};

// Writes `dir/config.json` (model_config_to_json) and the weights. `dir` must exist.
Status save_checkpoint(const std::string& dir, const ModelWeights& weights, const ModelConfig& cfg,
                       const SaveOptions& options = {});

}  // namespace fulgur
