#include <string>

#include "actors/layers/layers.h"
#include "kernels/gemm.h"
#include "kernels/rmsnorm.h"

namespace fulgur {

Status linear(const Tensor& x, const Tensor& w, Tensor& out, const char* what) {
  if (x.dim() != 2 || w.dim() != 2 || out.dim() != 2 || x.size(1) != w.size(1) || out.size(0) != x.size(0) ||
      out.size(1) != w.size(0)) {
    return Status(Errc::internal, std::string(what) + ": shape mismatch x " + x.describe() + ", w " + w.describe() +
                                      ", out " + out.describe());
  }
  if (x.dtype() != DType::f32 || w.dtype() != DType::f32 || out.dtype() != DType::f32) {
    return Status(Errc::unsupported, std::string(what) + ": the CPU path computes in f32 only");
  }
  kernels::GemmParams p;
  p.a = x.data<float>(), p.b = w.data<float>(), p.c = out.data<float>();
  p.m = x.size(0), p.n = w.size(0), p.k = x.size(1);
  p.lda = x.strides()[0], p.ldb = w.strides()[0], p.ldc = out.strides()[0];
  if (auto ks = kernels::gemm_nt_cpu(p); !ks.ok()) return Status(Errc::internal, std::string(what) + ": " + ks.error);
  return Status::ok();
}

Status rms_norm(const Tensor& x, const Tensor& weight, double eps, Tensor& y, const char* what) {
  if (x.dim() != 2 || weight.numel() != x.size(1) || y.dim() != 2 || y.size(0) != x.size(0) || y.size(1) != x.size(1)) {
    return Status(Errc::internal, std::string(what) + ": shape mismatch x " + x.describe() + ", weight " +
                                      weight.describe());
  }
  kernels::RmsNormParams p;
  p.x = x.data<float>(), p.weight = weight.data<float>(), p.y = y.data<float>();
  p.rows = x.size(0), p.dim = x.size(1), p.x_stride = x.strides()[0], p.y_stride = y.strides()[0];
  p.eps = static_cast<float>(eps);
  if (auto ks = kernels::rmsnorm_cpu(p); !ks.ok()) return Status(Errc::internal, std::string(what) + ": " + ks.error);
  return Status::ok();
}

DecoderLayer::DecoderLayer(const ModelConfig& cfg, int64_t layer_idx, const LayerWeights& w)
    : cfg_(cfg), layer_idx_(layer_idx), w_(w), moe_(cfg, layer_idx, w.moe) {
  if (w.kind == LayerKind::lightning) {
    lightning_ = std::make_unique<LightningAttention>(cfg, layer_idx, w.lightning);
  } else {
    softmax_ = std::make_unique<SoftmaxAttention>(cfg, layer_idx, w.softmax);
  }
}

Status DecoderLayer::attention_half(Tensor& x, const BatchLayout& batch, StatePools& pools, Tensor& h2) const {
  const int64_t T = x.size(0), hidden = cfg_.hidden_size;
  Tensor h = Tensor::empty(DType::f32, {T, hidden});
  Tensor a = Tensor::empty(DType::f32, {T, hidden});
  FULGUR_TRY(rms_norm(x, w_.input_norm, cfg_.rms_norm_eps, h, "input_layernorm"));
  if (lightning_) {
    FULGUR_TRY(lightning_->forward(h, batch, pools.lightning[layer_idx_], a));
  } else {
    FULGUR_TRY(softmax_->forward(h, batch, pools.k_cache[layer_idx_], pools.v_cache[layer_idx_], pools.page_size, a));
  }
  // Post-norm DeepNorm residual: the carried residual is the normalised h, not x (spec §6).
  kernels::scale_add_cpu(h.data<float>(), a.data<float>(), x.data<float>(), T * hidden,
                         static_cast<float>(cfg_.attn_alpha(w_.kind)), static_cast<float>(cfg_.attn_beta(w_.kind)));
  return rms_norm(x, w_.post_norm, cfg_.rms_norm_eps, h2, "post_attention_layernorm");
}

Status DecoderLayer::moe_half(const Tensor& h2, Tensor& x) const {
  const int64_t T = h2.size(0), hidden = cfg_.hidden_size;
  Tensor m = Tensor::empty(DType::f32, {T, hidden});
  FULGUR_TRY(moe_.forward(h2, m));
  kernels::scale_add_cpu(h2.data<float>(), m.data<float>(), x.data<float>(), T * hidden,
                         static_cast<float>(cfg_.mlp_alpha), static_cast<float>(cfg_.mlp_beta));
  return Status::ok();
}

Status DecoderLayer::forward(Tensor& x, const BatchLayout& batch, StatePools& pools) const {
  Tensor h2 = Tensor::empty(DType::f32, {x.size(0), cfg_.hidden_size});
  FULGUR_TRY(attention_half(x, batch, pools, h2));
  return moe_half(h2, x);
}

}  // namespace fulgur
