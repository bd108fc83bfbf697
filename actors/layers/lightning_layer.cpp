#include <string>

#include "actors/layers/layers.h"
#include "kernels/activations.h"
#include "kernels/lightning_attention.h"

namespace fulgur {

LightningAttention::LightningAttention(const ModelConfig& cfg, int64_t layer_idx, const LightningWeights& w)
    : cfg_(cfg), layer_idx_(layer_idx), w_(w), slopes_(lightning_slopes(cfg, layer_idx)) {}

Status LightningAttention::forward(const Tensor& h, const BatchLayout& batch, Tensor& state_pool, Tensor& out) const {
  const int64_t T = h.size(0), H = cfg_.num_attention_heads, D = cfg_.head_dim, HD = H * D;
  const std::string where = "layer " + std::to_string(layer_idx_) + " lightning attention";
  Tensor qkv = Tensor::empty(DType::f32, {T, 3 * HD});  // [T, H, 3D]: per head q | k | v
  FULGUR_TRY(linear(h, w_.qkv, qkv, "qkv_proj"));
  kernels::silu_inplace_cpu(qkv.data<float>(), qkv.numel());  // on q, k and v (spec §3.1)

  Tensor attn = Tensor::empty(DType::f32, {T, HD});
  const float* q = qkv.data<float>();
  kernels::KernelStatus ks;
  if (batch.is_decode()) {
    kernels::LightningDecodeParams p;
    p.q = q, p.k = q + D, p.v = q + 2 * D;
    p.qkv_token_stride = 3 * HD, p.qkv_head_stride = 3 * D;
    p.out = attn.data<float>();
    p.states = state_pool.data<float>();
    p.slopes = slopes_.data();
    p.slot_idx = batch.state_slots.data();
    p.num_seqs = batch.num_seqs(), p.num_slots = state_pool.size(0);
    p.num_heads = H, p.head_dim = D;
    ks = kernels::lightning_decode_cpu(p);
  } else {
    Tensor workspace =
        Tensor::empty(DType::f32, {kernels::lightning_prefill_workspace_floats(cfg_.block_size, D)});
    kernels::LightningPrefillParams p;
    p.q = q, p.k = q + D, p.v = q + 2 * D;
    p.qkv_token_stride = 3 * HD, p.qkv_head_stride = 3 * D;
    p.out = attn.data<float>();
    p.states = state_pool.data<float>();
    p.slopes = slopes_.data();
    p.cu_seqlens = batch.cu_seqlens.data();
    p.slot_idx = batch.state_slots.data();
    p.num_seqs = batch.num_seqs(), p.num_slots = state_pool.size(0);
    p.num_heads = H, p.head_dim = D, p.block_size = cfg_.block_size;
    p.workspace = workspace.data<float>();
    ks = kernels::lightning_prefill_cpu(p);
  }
  if (!ks.ok()) return Status(Errc::internal, where + ": " + ks.error);

  // Output path (spec §3.6): RMSNorm over all H*D features, gate with sigmoid(h W_gate^T), out_proj.
  FULGUR_TRY(rms_norm(attn, w_.norm, cfg_.lightning_norm_eps, attn, "lightning norm"));
  Tensor gate = Tensor::empty(DType::f32, {T, HD});
  FULGUR_TRY(linear(h, w_.output_gate, gate, "output_gate"));
  kernels::sigmoid_mul_cpu(gate.data<float>(), attn.data<float>(), attn.numel());
  return linear(attn, w_.out_proj, out, "out_proj");
}

}  // namespace fulgur
