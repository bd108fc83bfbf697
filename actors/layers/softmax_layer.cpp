#include <cmath>
#include <string>

#include "actors/layers/layers.h"
#include "kernels/softmax_attention.h"

namespace fulgur {

SoftmaxAttention::SoftmaxAttention(const ModelConfig& cfg, int64_t layer_idx, const SoftmaxWeights& w)
    : cfg_(cfg), layer_idx_(layer_idx), w_(w) {}

Status SoftmaxAttention::forward(const Tensor& h, const BatchLayout& batch, Tensor& k_cache, Tensor& v_cache,
                                 int64_t page_size, Tensor& out) const {
  const int64_t T = h.size(0), H = cfg_.num_attention_heads, KV = cfg_.num_key_value_heads, D = cfg_.head_dim;
  const std::string where = "layer " + std::to_string(layer_idx_) + " softmax attention: ";
  Tensor q = Tensor::empty(DType::f32, {T, H * D});
  Tensor k = Tensor::empty(DType::f32, {T, KV * D});
  Tensor v = Tensor::empty(DType::f32, {T, KV * D});
  FULGUR_TRY(linear(h, w_.q_proj, q, "q_proj"));
  FULGUR_TRY(linear(h, w_.k_proj, k, "k_proj"));
  FULGUR_TRY(linear(h, w_.v_proj, v, "v_proj"));

  for (auto [x, heads] : {std::pair{&q, H}, std::pair{&k, KV}}) {
    kernels::RopeParams rp;
    rp.x = x->data<float>();
    rp.token_stride = heads * D, rp.head_stride = D;
    rp.num_tokens = T, rp.num_heads = heads, rp.head_dim = D;
    rp.positions = batch.positions.data();
    rp.rotary_dim = cfg_.rotary_dim, rp.theta = cfg_.rope_theta;
    if (auto ks = kernels::rope_neox_cpu(rp); !ks.ok()) return Status(Errc::internal, where + ks.error);
  }

  const int64_t num_blocks = k_cache.size(0);
  kernels::KvCacheWriteParams wp;
  wp.k = k.data<float>(), wp.v = v.data<float>(), wp.token_stride = KV * D;
  wp.k_cache = k_cache.data<float>(), wp.v_cache = v_cache.data<float>();
  wp.slot_mapping = batch.kv_slot_mapping.data();
  wp.num_tokens = T, wp.num_kv_heads = KV, wp.head_dim = D, wp.num_blocks = num_blocks, wp.page_size = page_size;
  if (auto ks = kernels::kv_cache_write_cpu(wp); !ks.ok()) return Status(Errc::internal, where + ks.error);

  int64_t max_ctx = 1;
  for (int32_t c : batch.context_lens) max_ctx = std::max<int64_t>(max_ctx, c);
  const int64_t ws_floats = kernels::paged_attention_workspace_floats(max_ctx, D);
  Tensor workspace = Tensor::empty(DType::f32, {ws_floats});
  Tensor attn = Tensor::empty(DType::f32, {T, H * D});
  kernels::PagedAttentionParams ap;
  ap.q = q.data<float>(), ap.q_token_stride = H * D;
  ap.k_cache = k_cache.data<float>(), ap.v_cache = v_cache.data<float>();
  ap.block_tables = batch.block_tables.data(), ap.max_blocks_per_seq = batch.max_blocks_per_seq;
  ap.cu_seqlens_q = batch.cu_seqlens.data(), ap.context_lens = batch.context_lens.data();
  ap.num_seqs = batch.num_seqs(), ap.num_heads = H, ap.num_kv_heads = KV, ap.head_dim = D;
  ap.num_blocks = num_blocks, ap.page_size = page_size;
  ap.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  ap.out = attn.data<float>(), ap.workspace = workspace.data<float>(), ap.workspace_floats = ws_floats;
  if (auto ks = kernels::paged_attention_cpu(ap); !ks.ok()) return Status(Errc::internal, where + ks.error);
  return linear(attn, w_.o_proj, out, "o_proj");
}

}  // namespace fulgur
