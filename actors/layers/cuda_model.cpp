#include "actors/layers/cuda_model.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "devices/cuda/allocator.h"
#include "devices/cuda/blas.h"
#include "devices/cuda/check.h"
#include "devices/cuda/stream.h"
#include "kernels/cuda/activations.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/expert_ffn.h"
#include "kernels/cuda/lightning_attention.h"
#include "kernels/cuda/moe_permute.h"
#include "kernels/cuda/moe_router.h"
#include "kernels/cuda/reference_f32.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/sampling.h"
#include "kernels/cuda/softmax_attention.h"
#include "kernels/half.h"
#include "kernels/sampling_math.h"

namespace fulgur {

namespace kc = kernels::cuda;
using cuda::DeviceMemory;

namespace {
// A typed view of part of a device buffer (the packed step metadata).
struct DeviceView {
  char* p;
  template <class T>
  T* as() const { return reinterpret_cast<T*>(p); }
  void* data() const { return p; }
};
}  // namespace

// int8-stored experts run the int8 kernel up to this many rows per expert on average, and are widened to
// bf16 for the GEMM path above it. Measured on one H200 at MiniMax size: the kernel is 1.44x bf16 at 16
// rows per expert and 0.60x at 64 (+1.9 ms a layer), while widening a layer costs more than that (16 GB of
// traffic); from ~256 rows the widened bf16 GEMMs win.
constexpr int64_t kInt8MaxAverageRows = 64;

// Rows of logits per lm_head GEMM (the f32 logits buffer on the device is this many rows).
constexpr int64_t kLogitsChunkRows = 4096;

namespace {

// Smallest head_dim with an instantiated kernel that holds `d` features; 0 if none.
template <size_t N>
int64_t padded_head_dim(int64_t d, const int64_t (&dims)[N]) {
  for (int64_t k : dims) {
    if (k >= d) return k;
  }
  return 0;
}

Status kernel_status(const kernels::KernelStatus& ks, const std::string& where) {
  if (ks.ok()) return Status::ok();
  return Status(Errc::internal, where + ": " + ks.error);
}

// Host f32 matrix `src` ([rows, cols], contiguous) into a zero-filled [out_rows, out_cols] matrix,
// row r at row_map(r), column c at col_map(c) (the head padding of the header comment).
template <class RowMap, class ColMap>
std::vector<float> mapped(const Tensor& src, int64_t out_rows, int64_t out_cols, RowMap row_map, ColMap col_map) {
  const int64_t rows = src.size(0), cols = src.dim() > 1 ? src.size(1) : 1;
  std::vector<float> out(static_cast<size_t>(out_rows * out_cols), 0.f);
  const float* s = src.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out.data() + row_map(r) * out_cols;
    for (int64_t c = 0; c < cols; ++c) o[col_map(c)] = s[r * cols + c];
  }
  return out;
}

std::vector<uint16_t> to_bf16(const float* s, size_t n) {
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = kernels::f32_to_bf16(s[i]);
  return out;
}

}  // namespace

// One layer's weights on the device, in the compute dtype (bf16, or f32 in the f32 mode) unless noted.
struct CudaLayerWeights {
  LayerKind kind = LayerKind::lightning;
  DeviceMemory input_norm, post_norm;  // [hidden]
  DeviceMemory qkv;       // lightning [H * 3 * Dl, hidden]; softmax [(H + 2 KV) * Ds, hidden] (q | k | v)
  DeviceMemory out_proj;  // lightning [hidden, H * D]; softmax o_proj [hidden, H * Ds]
  DeviceMemory output_gate, norm;  // lightning only: [H * D, hidden], [H * D]
  DeviceMemory slopes;             // lightning only: [H] f32
  DeviceMemory gate;               // router [E, hidden]
  DeviceMemory w13, w2;            // experts [E, 2I, hidden], [E, hidden, I] (released with int8 experts)
  DeviceMemory q13, s13, q2, s2;   // int8 experts: w13 / w2 as int8 with one f32 scale per row
};

struct CudaModel::Impl {
  ModelConfig cfg;
  int device = 0;
  bool f32 = false;   // CudaComputeDtype::f32
  bool int8 = false;  // CudaModelOptions::int8_experts
  size_t es() const { return f32 ? 4 : 2; }  // bytes per activation / weight element
  cudaDataType_t act_type() const { return f32 ? CUDA_R_32F : CUDA_R_16BF; }
  int64_t dl = 0, ds = 0;  // padded head_dim of the lightning / softmax kernels
  bool has_lightning = false, has_softmax = false;  // layer kinds in the config
  // Declaration order = reverse destruction order: memory goes back to the allocator before it dies.
  cuda::CudaStream stream;
  std::unique_ptr<cuda::CachingAllocator> alloc;
  cuda::BlasHandles blas;
  cuda::PinnedBuffer host_offsets;  // [E + 1] int32: expert row counts for cuBLAS's host-side sizes
  cuda::PinnedBuffer step_staging;  // a step's metadata on its way to the device (upload_packed)
  cuda::CudaEvent staging_free;     // recorded after the copy out of step_staging
  int expert_streams = 0;  // CudaModelOptions::expert_streams
  int64_t bf16_device_sizes_max_rows = 0;  // CudaModelOptions::bf16_device_sizes_max_rows
  int64_t bf16_tiles_max_rows = 0;         // CudaModelOptions::bf16_tiles_max_rows, 0 off sm_90
  int64_t softmax_prefill_kernel = 0;      // CudaModelOptions::softmax_prefill_kernel
  CudaExpertPaths expert_paths;
  // Side streams of the expert FFN (kernels/cuda/expert_ffn.h), each with its cuBLAS handle and event.
  std::vector<cuda::CudaStream> side_streams;
  std::vector<cuda::BlasHandles> side_blas;
  std::vector<cuda::CudaEvent> side_done;
  cuda::CudaEvent fork;
  DeviceMemory embed, final_norm, lm_head;
  std::vector<CudaLayerWeights> layers;
  size_t weight_bytes = 0;
  // State (allocate_state).
  int64_t num_slots = 0, num_blocks = 0, page_size = 0;
  std::vector<DeviceMemory> lightning_state;  // [layer] -> [slots, H, Dl, Dl] f32
  std::vector<DeviceMemory> k_cache, v_cache;  // [layer] -> [blocks, page, KV, Ds] in the compute dtype

  ~Impl() {
    (void)cudaSetDevice(device);  // the frees and events below belong to this device
    if (stream.handle() != nullptr) (void)stream.synchronize();
  }

  cudaStream_t s() const { return stream.handle(); }

  Expected<DeviceMemory> buffer(size_t bytes) { return DeviceMemory::create(*alloc, bytes, s()); }

  Expected<DeviceMemory> upload(const void* data, size_t bytes) {
    FULGUR_ASSIGN_OR_RETURN(DeviceMemory d, buffer(bytes));
    FULGUR_TRY(cuda::copy_async(d.data(), data, bytes, s()));
    FULGUR_TRY(stream.synchronize());  // the host vector dies on return
    weight_bytes += bytes;
    return d;
  }
  template <class T>
  Expected<DeviceMemory> upload(const std::vector<T>& v) {
    return upload(v.data(), v.size() * sizeof(T));
  }
  // A weight in the compute dtype: f32 as is, or rounded to bf16.
  Expected<DeviceMemory> upload_weight(const float* data, size_t n) {
    if (f32) return upload(data, n * 4);
    return upload(to_bf16(data, n));
  }
  Expected<DeviceMemory> upload_weight(const std::vector<float>& v) { return upload_weight(v.data(), v.size()); }
  Expected<DeviceMemory> upload_weight(const Tensor& t) {
    return upload_weight(t.data<float>(), static_cast<size_t>(t.numel()));
  }
  // A step's metadata arrays in one device buffer, each at a 256-byte aligned offset (*offsets), through one
  // copy out of pinned memory: a copy from pageable memory stages through the driver and holds the host,
  // once per array (nine a step).
  Expected<DeviceMemory> upload_packed(const std::vector<std::pair<const void*, size_t>>& parts,
                                       std::vector<size_t>* offsets) {
    size_t total = 0;
    offsets->clear();
    for (const auto& part : parts) {
      offsets->push_back(total);
      total += (std::max<size_t>(part.second, 4) + 255) / 256 * 256;
    }
    FULGUR_TRY(staging_free.synchronize());  // a failed step may have left its copy in flight
    if (step_staging.bytes() < total) {
      FULGUR_ASSIGN_OR_RETURN(step_staging, cuda::PinnedBuffer::create(std::max(total, 2 * step_staging.bytes())));
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      if (parts[i].second > 0) std::memcpy(step_staging.as<char>() + (*offsets)[i], parts[i].first, parts[i].second);
    }
    FULGUR_ASSIGN_OR_RETURN(DeviceMemory d, buffer(total));
    FULGUR_TRY(cuda::copy_async(d.data(), step_staging.data(), total, s()));
    FULGUR_TRY(staging_free.record(s()));
    return d;
  }

  // y[rows, out] = x[rows, in] . w[out, in]^T, operands in the compute dtype, fp32 accumulation (no
  // TF32: the default math mode), y bf16 or f32.
  Status linear(const void* x, int64_t rows, int64_t in, const void* w, int64_t out, void* y, cudaDataType_t y_type,
                const std::string& what) {
    if (rows == 0) return Status::ok();
    const float one = 1.f, zero = 0.f;
    const cublasStatus_t st =
        cublasGemmEx(blas.blas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(rows),
                     static_cast<int>(in), &one, w, act_type(), static_cast<int>(in), x, act_type(),
                     static_cast<int>(in), &zero, y, y_type, static_cast<int>(out), CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) {
      return Status(Errc::internal, what + ": cuBLAS GEMM failed (" + cublasGetStatusString(st) + ")");
    }
    return Status::ok();
  }

  Status upload_weights(const ModelWeights& w);
  Status random_weights(uint64_t seed);
  Status quantize_layer(CudaLayerWeights& w);  // bf16 w13 / w2 -> int8 + scales, the bf16 copies released
  // The sub-blocks: h [T, hidden] in the compute dtype -> out [T, hidden] in the compute dtype.
  Status lightning(int64_t l, const void* h, const BatchLayout& b, const DeviceView& slots,
                   const DeviceView& cu_seqlens, void* out);
  Status softmax(int64_t l, const void* h, const BatchLayout& b, const DeviceView& positions,
                 const DeviceView& slot_mapping, const DeviceView& block_tables, const DeviceView& cu_seqlens,
                 const DeviceView& context_lens, void* out);
  Status moe(int64_t l, const void* h2, int64_t T, void* out);
};

Status CudaModel::Impl::upload_weights(const ModelWeights& w) {
  const int64_t hid = cfg.hidden_size, H = cfg.num_attention_heads, KV = cfg.num_key_value_heads, D = cfg.head_dim;
  const int64_t E = cfg.num_local_experts, I = cfg.intermediate_size;
  auto same = [](int64_t i) { return i; };
  FULGUR_ASSIGN_OR_RETURN(embed, upload_weight(w.embed));
  FULGUR_ASSIGN_OR_RETURN(final_norm, upload_weight(w.final_norm));
  FULGUR_ASSIGN_OR_RETURN(lm_head, upload_weight(w.lm_head));
  layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    CudaLayerWeights& cw = layers[l];
    cw.kind = lw.kind;
    FULGUR_ASSIGN_OR_RETURN(cw.input_norm, upload_weight(lw.input_norm));
    FULGUR_ASSIGN_OR_RETURN(cw.post_norm, upload_weight(lw.post_norm));
    if (lw.kind == LayerKind::lightning) {
      // Rows per head q | k | v of D each -> of Dl each (zero rows after each part).
      const int64_t pd = dl;
      FULGUR_ASSIGN_OR_RETURN(cw.qkv, upload_weight(mapped(lw.lightning.qkv, H * 3 * pd, hid,
                                                           [D, pd](int64_t r) { return (r / D) * pd + r % D; }, same)));
      FULGUR_ASSIGN_OR_RETURN(cw.output_gate, upload_weight(lw.lightning.output_gate));
      FULGUR_ASSIGN_OR_RETURN(cw.out_proj, upload_weight(lw.lightning.out_proj));
      FULGUR_ASSIGN_OR_RETURN(cw.norm, upload_weight(lw.lightning.norm));
      FULGUR_ASSIGN_OR_RETURN(cw.slopes, upload(lightning_slopes(cfg, static_cast<int64_t>(l))));
    } else {
      // Fused q | k | v with every head padded to Ds rows; o_proj columns padded alike.
      const int64_t pd = ds;
      auto head_rows = [D, pd](int64_t r) { return (r / D) * pd + r % D; };
      std::vector<float> qkv(static_cast<size_t>((H + 2 * KV) * pd * hid), 0.f);
      auto place_at = [&](const Tensor& t, int64_t head_offset) {
        const std::vector<float> part = mapped(t, (t.size(0) / D) * pd, hid, head_rows, same);
        std::copy(part.begin(), part.end(), qkv.begin() + head_offset * pd * hid);
      };
      place_at(lw.softmax.q_proj, 0);
      place_at(lw.softmax.k_proj, H);
      place_at(lw.softmax.v_proj, H + KV);
      FULGUR_ASSIGN_OR_RETURN(cw.qkv, upload_weight(qkv));
      FULGUR_ASSIGN_OR_RETURN(cw.out_proj, upload_weight(mapped(lw.softmax.o_proj, hid, H * pd, same, head_rows)));
    }
    FULGUR_ASSIGN_OR_RETURN(cw.gate, upload_weight(lw.moe.gate));
    std::vector<float> w13(static_cast<size_t>(E * 2 * I * hid)), w2(static_cast<size_t>(E * hid * I));
    for (int64_t e = 0; e < E; ++e) {
      const ExpertWeights& ew = lw.moe.experts[e];
      std::copy_n(ew.w1.data<float>(), I * hid, w13.begin() + e * 2 * I * hid);
      std::copy_n(ew.w3.data<float>(), I * hid, w13.begin() + (e * 2 + 1) * I * hid);
      std::copy_n(ew.w2.data<float>(), hid * I, w2.begin() + e * hid * I);
    }
    FULGUR_ASSIGN_OR_RETURN(cw.w13, upload_weight(w13));
    FULGUR_ASSIGN_OR_RETURN(cw.w2, upload_weight(w2));
    if (int8) FULGUR_TRY(quantize_layer(cw));
  }
  return Status::ok();
}

// Right after a layer's experts arrive (upload or generation), so the bf16 experts of one layer at most are
// ever on the device beside the int8 ones.
Status CudaModel::Impl::quantize_layer(CudaLayerWeights& w) {
  const int64_t hid = cfg.hidden_size, E = cfg.num_local_experts, I = cfg.intermediate_size;
  FULGUR_ASSIGN_OR_RETURN(w.q13, buffer(static_cast<size_t>(E * 2 * I * hid)));
  FULGUR_ASSIGN_OR_RETURN(w.s13, buffer(static_cast<size_t>(E * 2 * I) * 4));
  FULGUR_ASSIGN_OR_RETURN(w.q2, buffer(static_cast<size_t>(E * hid * I)));
  FULGUR_ASSIGN_OR_RETURN(w.s2, buffer(static_cast<size_t>(E * hid) * 4));
  FULGUR_TRY(kernel_status(
      kc::quantize_rows_int8({w.w13.as<uint16_t>(), w.q13.as<int8_t>(), w.s13.as<float>(), E * 2 * I, hid}, s()),
      "quantising w1|w3"));
  FULGUR_TRY(kernel_status(
      kc::quantize_rows_int8({w.w2.as<uint16_t>(), w.q2.as<int8_t>(), w.s2.as<float>(), E * hid, I}, s()),
      "quantising w2"));
  FULGUR_TRY(stream.synchronize());
  w.w13.reset(), w.w2.reset();
  weight_bytes -= static_cast<size_t>(E * 3 * I * hid) * 2;
  weight_bytes += static_cast<size_t>(E * 3 * I * hid) + static_cast<size_t>(E * (2 * I + hid)) * 4;
  FULGUR_TRY(stream.synchronize());  // the frees' events complete ...
  return alloc->release_cached();    // ... so the bf16 blocks go back to the device before the next layer's
}

Status CudaModel::Impl::random_weights(uint64_t seed) {
  const int64_t hid = cfg.hidden_size, H = cfg.num_attention_heads, KV = cfg.num_key_value_heads, D = cfg.head_dim;
  const int64_t E = cfg.num_local_experts, I = cfg.intermediate_size, V = cfg.vocab_size;
  const kc::ActivationDtype dt = f32 ? kc::ActivationDtype::kF32 : kc::ActivationDtype::kBf16;
  // Every matrix uniform with std 1/sqrt(fan_in) (unit-scale activations), norm weights 1.
  auto make = [&](DeviceMemory& d, int64_t n, double fan_in, const char* what) -> Status {
    FULGUR_ASSIGN_OR_RETURN(d, buffer(static_cast<size_t>(n) * es()));
    weight_bytes += static_cast<size_t>(n) * es();
    const float std = fan_in > 0 ? static_cast<float>(1.0 / std::sqrt(fan_in)) : 0.f;
    return kernel_status(kc::fill_random(d.data(), dt, n, seed++, std, fan_in > 0 ? 0.f : 1.f, s()), what);
  };
  constexpr double kOnes = 0;
  FULGUR_TRY(make(embed, V * hid, 1, "embed"));
  FULGUR_TRY(make(final_norm, hid, kOnes, "final norm"));
  FULGUR_TRY(make(lm_head, V * hid, hid, "lm_head"));
  layers.resize(cfg.num_hidden_layers);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    CudaLayerWeights& w = layers[l];
    w.kind = cfg.layer_types[l];
    FULGUR_TRY(make(w.input_norm, hid, kOnes, "input norm"));
    FULGUR_TRY(make(w.post_norm, hid, kOnes, "post norm"));
    if (w.kind == LayerKind::lightning) {
      FULGUR_TRY(make(w.qkv, H * 3 * D * hid, hid, "qkv"));
      FULGUR_TRY(make(w.output_gate, H * D * hid, hid, "output_gate"));
      FULGUR_TRY(make(w.out_proj, hid * H * D, H * D, "out_proj"));
      FULGUR_TRY(make(w.norm, H * D, kOnes, "lightning norm"));
      FULGUR_ASSIGN_OR_RETURN(w.slopes, upload(lightning_slopes(cfg, l)));
    } else {
      FULGUR_TRY(make(w.qkv, (H + 2 * KV) * D * hid, hid, "qkv"));
      FULGUR_TRY(make(w.out_proj, hid * H * D, H * D, "o_proj"));
    }
    FULGUR_TRY(make(w.gate, E * hid, hid, "router"));
    FULGUR_TRY(make(w.w13, E * 2 * I * hid, hid, "w1|w3"));
    FULGUR_TRY(make(w.w2, E * hid * I, I, "w2"));
    if (int8) FULGUR_TRY(quantize_layer(w));
  }
  return stream.synchronize();
}

Status CudaModel::Impl::lightning(int64_t l, const void* h, const BatchLayout& b, const DeviceView& slots,
                                  const DeviceView& cu_seqlens, void* out) {
  const CudaLayerWeights& w = layers[l];
  const int64_t T = b.num_tokens, H = cfg.num_attention_heads, D = cfg.head_dim, hid = cfg.hidden_size;
  const std::string where = "layer " + std::to_string(l) + " lightning attention";
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory qkv, buffer(T * H * 3 * dl * es()));
  FULGUR_TRY(linear(h, T, hid, w.qkv.data(), H * 3 * dl, qkv.data(), act_type(), where + " qkv_proj"));
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory attn, buffer(T * H * dl * 4));  // f32 in both modes
  if (f32) {
    FULGUR_TRY(kernel_status(kc::silu_inplace_f32(qkv.as<float>(), T * H * 3 * dl, s()), where + " silu"));
    const float* q = qkv.as<float>();
    kc::LightningRecurrenceF32Params p;
    p.q = q, p.k = q + dl, p.v = q + 2 * dl, p.token_stride = H * 3 * dl, p.head_stride = 3 * dl;
    p.out = attn.as<float>(), p.states = lightning_state[l].as<float>(), p.slopes = w.slopes.as<float>();
    p.cu_seqlens = cu_seqlens.as<int32_t>(), p.slot_idx = slots.as<int32_t>();
    p.num_tokens = T, p.num_seqs = b.num_seqs(), p.num_slots = num_slots, p.num_heads = H, p.head_dim = dl;
    FULGUR_TRY(kernel_status(kc::lightning_recurrence_f32(p, s()), where));
  } else {
    FULGUR_TRY(kernel_status(kc::silu_inplace_bf16(qkv.as<uint16_t>(), T * H * 3 * dl, s()), where + " silu"));
    const uint16_t* q = qkv.as<uint16_t>();
    if (b.is_decode()) {
      kc::LightningDecodeCudaParams p;
      p.q = q, p.k = q + dl, p.v = q + 2 * dl;
      p.qkv_token_stride = H * 3 * dl, p.qkv_head_stride = 3 * dl;
      p.out = attn.data(), p.out_dtype = kc::LightningOutDtype::kF32;
      p.states = lightning_state[l].as<float>(), p.slopes = w.slopes.as<float>(), p.slot_idx = slots.as<int32_t>();
      p.num_seqs = b.num_seqs(), p.num_slots = num_slots, p.num_heads = H, p.head_dim = dl;
      FULGUR_TRY(kernel_status(kc::lightning_decode(p, s()), where));
    } else {
      kc::LightningPrefillCudaParams p;
      p.q = q, p.k = q + dl, p.v = q + 2 * dl;
      p.qkv_token_stride = H * 3 * dl, p.qkv_head_stride = 3 * dl;
      p.out = attn.data(), p.out_dtype = kc::LightningOutDtype::kF32;
      p.states = lightning_state[l].as<float>(), p.slopes = w.slopes.as<float>();
      p.cu_seqlens = cu_seqlens.as<int32_t>(), p.slot_idx = slots.as<int32_t>();
      p.num_tokens = T, p.num_seqs = b.num_seqs(), p.num_slots = num_slots, p.num_heads = H, p.head_dim = dl;
      FULGUR_ASSIGN_OR_RETURN(DeviceMemory ws, buffer(std::max<size_t>(kc::lightning_prefill_workspace_bytes(p), 256)));
      p.workspace = ws.data(), p.workspace_bytes = ws.bytes();
      FULGUR_TRY(kernel_status(kc::lightning_prefill(p, s()), where));
    }
  }
  // Output path (spec §3.6): RMSNorm over the H*D real features, times sigmoid(h W_gate^T), out_proj.
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory gate, buffer(T * H * D * es()));
  FULGUR_TRY(linear(h, T, hid, w.output_gate.data(), H * D, gate.data(), act_type(), where + " output_gate"));
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory gated, buffer(T * H * D * es()));
  kc::LightningOutputGateCudaParams g;
  g.attn = attn.data(), g.attn_dtype = kc::ActivationDtype::kF32;
  g.io_dtype = f32 ? kc::ActivationDtype::kF32 : kc::ActivationDtype::kBf16;
  g.gate = gate.data(), g.norm_weight = w.norm.data(), g.out = gated.data();
  g.num_tokens = T, g.num_heads = H, g.head_dim = D, g.head_stride = dl;
  g.eps = static_cast<float>(cfg.lightning_norm_eps);
  FULGUR_TRY(kernel_status(kc::lightning_output_gate(g, s()), where + " output norm"));
  return linear(gated.data(), T, H * D, w.out_proj.data(), hid, out, act_type(), where + " out_proj");
}

Status CudaModel::Impl::softmax(int64_t l, const void* h, const BatchLayout& b, const DeviceView& positions,
                                const DeviceView& slot_mapping, const DeviceView& block_tables,
                                const DeviceView& cu_seqlens, const DeviceView& context_lens, void* out) {
  const CudaLayerWeights& w = layers[l];
  const int64_t T = b.num_tokens, H = cfg.num_attention_heads, KV = cfg.num_key_value_heads, hid = cfg.hidden_size;
  const std::string where = "layer " + std::to_string(l) + " softmax attention";
  const int64_t width = (H + 2 * KV) * ds;
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory qkv, buffer(T * width * es()));
  FULGUR_TRY(linear(h, T, hid, w.qkv.data(), width, qkv.data(), act_type(), where + " qkv_proj"));
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory attn, buffer(T * H * ds * es()));
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(cfg.head_dim)));
  if (f32) {
    kc::SoftmaxAttentionF32Params p;
    const float* q = qkv.as<float>();
    p.q = q, p.k = q + H * ds, p.v = q + (H + KV) * ds, p.q_token_stride = width, p.kv_token_stride = width;
    p.positions = positions.as<int32_t>(), p.slot_mapping = slot_mapping.as<int64_t>();
    p.k_cache = k_cache[l].as<float>(), p.v_cache = v_cache[l].as<float>();
    p.num_blocks = num_blocks, p.page_size = page_size;
    p.block_tables = block_tables.as<int32_t>(), p.max_blocks_per_seq = b.max_blocks_per_seq;
    p.cu_seqlens_q = cu_seqlens.as<int32_t>();
    p.num_tokens = T, p.num_seqs = b.num_seqs(), p.num_heads = H, p.num_kv_heads = KV, p.head_dim = ds;
    p.rotary_dim = cfg.rotary_dim, p.theta = cfg.rope_theta, p.scale = scale, p.out = attn.as<float>();
    FULGUR_TRY(kernel_status(kc::softmax_attention_f32(p, s()), where));
  } else {
    kc::SoftmaxAttentionCudaParams p;
    const uint16_t* q = qkv.as<uint16_t>();
    p.q = q, p.k = q + H * ds, p.v = q + (H + KV) * ds;
    p.q_token_stride = width, p.kv_token_stride = width;
    p.positions = positions.as<int32_t>(), p.slot_mapping = slot_mapping.as<int64_t>();
    p.k_cache = k_cache[l].as<uint16_t>(), p.v_cache = v_cache[l].as<uint16_t>();
    p.num_blocks = num_blocks, p.page_size = page_size;
    p.block_tables = block_tables.as<int32_t>(), p.max_blocks_per_seq = b.max_blocks_per_seq;
    p.cu_seqlens_q = cu_seqlens.as<int32_t>(), p.context_lens = context_lens.as<int32_t>();
    p.num_tokens = T, p.num_seqs = b.num_seqs();
    p.num_heads = H, p.num_kv_heads = KV, p.head_dim = ds, p.rotary_dim = cfg.rotary_dim, p.theta = cfg.rope_theta;
    p.scale = scale;
    p.out = attn.as<uint16_t>();
    if (b.is_decode()) {
      int64_t max_ctx = 1;
      for (int32_t c : b.context_lens) max_ctx = std::max<int64_t>(max_ctx, c);
      p.max_context = max_ctx;
      FULGUR_ASSIGN_OR_RETURN(DeviceMemory ws, buffer(std::max<size_t>(kc::softmax_decode_workspace_bytes(p), 256)));
      p.workspace = ws.data(), p.workspace_bytes = ws.bytes();
      FULGUR_TRY(kernel_status(kc::softmax_attention_decode(p, s()), where));
    } else {
      p.prefill_kernel = softmax_prefill_kernel;
      FULGUR_TRY(kernel_status(kc::softmax_attention_prefill(p, s()), where));
    }
  }
  return linear(attn.data(), T, H * ds, w.out_proj.data(), hid, out, act_type(), where + " o_proj");
}

Status CudaModel::Impl::moe(int64_t l, const void* h2, int64_t T, void* out) {
  const CudaLayerWeights& w = layers[l];
  const int64_t hid = cfg.hidden_size, E = cfg.num_local_experts, K = cfg.num_experts_per_tok;
  const int64_t I = cfg.intermediate_size;
  const std::string where = "layer " + std::to_string(l) + " MoE";
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory logits, buffer(T * E * 4));
  FULGUR_TRY(linear(h2, T, hid, w.gate.data(), E, logits.data(), CUDA_R_32F, where + " gate"));
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory topk_idx, buffer(T * K * 4));
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory topk_weight, buffer(T * K * 4));
  kc::MoeRouterCudaParams r;
  r.logits = logits.as<float>(), r.topk_idx = topk_idx.as<int32_t>(), r.topk_weight = topk_weight.as<float>();
  r.num_tokens = T, r.num_experts = E, r.k = K;
  FULGUR_TRY(kernel_status(kc::moe_router(r, s()), where + " router"));

  // Group the rows by expert. bf16: the permute kernel copies them; f32: it gives each row's token
  // and gather_rows copies the f32 rows.
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory permuted, buffer(T * K * hid * es()));
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory offsets, buffer((E + 1) * 4));
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory inverse, buffer(T * K * 4));
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory row_token, buffer(T * K * 4));
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory pws, buffer(std::max<size_t>(kc::moe_permute_workspace_bytes(T, K, E), 256)));
  kc::MoePermuteCudaParams pp;
  pp.topk_idx = topk_idx.as<int32_t>();
  if (!f32) pp.h = static_cast<const uint16_t*>(h2), pp.permuted = permuted.as<uint16_t>();
  pp.expert_offsets = offsets.as<int32_t>(), pp.inverse = inverse.as<int32_t>(), pp.permuted_token = row_token.as<int32_t>();
  pp.num_tokens = T, pp.k = K, pp.num_experts = E, pp.hidden = hid;
  pp.workspace = pws.data(), pp.workspace_bytes = pws.bytes();
  FULGUR_TRY(kernel_status(kc::moe_permute(pp, s()), where + " permute"));
  if (f32) {
    FULGUR_TRY(kernel_status(kc::gather_rows(h2, T, hid * 4, row_token.as<int32_t>(), T * K, permuted.data(), s()),
                             where + " permute rows"));
  }
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory y, buffer(T * K * hid * es()));
  // Decode sizes: kernels that read the expert sizes on the device, no host round trip per layer. A token whose
  // router logits are not finite owns no row here (its MoE output is 0), but its hidden state is already
  // non-finite, so its logits are too: forward_greedy reports them, forward returns them.
  const bool int8_kernel = int8 && T * K <= kInt8MaxAverageRows * E;
  const bool bf16_shapes = !f32 && !int8 && hid % 64 == 0 && I % 64 == 0;
  const bool bf16_kernel = bf16_shapes && T * K <= bf16_device_sizes_max_rows * E;
  const bool tiles_kernel = bf16_shapes && !bf16_kernel && T * K <= bf16_tiles_max_rows * E;
  if (int8_kernel || bf16_kernel || tiles_kernel) {
    // The token-tile bound: twice the average rows per expert (>= 8, <= T: a token's top-k experts are
    // distinct). An expert above it is still right, in several tiles; a bound of T (64 at B = 64) picks
    // the 64-token tile, measured 1.3x slower than bf16 at 4 rows per expert (int8).
    const int64_t bound = std::min<int64_t>(T, std::max<int64_t>(8, 2 * ((T * K + E - 1) / E)));
    const size_t qws_bytes = tiles_kernel ? kc::expert_ffn_bf16_tiles_workspace_bytes(T * K, I)
                                          : std::max<size_t>(kc::expert_ffn_int8_workspace_bytes(T * K, I), 256);
    FULGUR_ASSIGN_OR_RETURN(DeviceMemory qws, buffer(qws_bytes));
    if (int8_kernel) {
      kc::ExpertFfnInt8Params q;
      q.x = permuted.as<uint16_t>(), q.expert_offsets = offsets.as<int32_t>();
      q.w13 = w.q13.as<int8_t>(), q.w13_scale = w.s13.as<float>(), q.w2 = w.q2.as<int8_t>(), q.w2_scale = w.s2.as<float>();
      q.y = y.as<uint16_t>(), q.max_rows = T * K, q.max_rows_per_expert = bound;
      q.num_experts = E, q.hidden = hid, q.inter = I;
      q.workspace = qws.data(), q.workspace_bytes = qws.bytes();
      FULGUR_TRY(kernel_status(kc::expert_ffn_int8(q, s()), where + " experts (int8)"));
      ++expert_paths.int8;
    } else {
      kc::ExpertFfnBf16DeviceParams q;
      q.x = permuted.as<uint16_t>(), q.expert_offsets = offsets.as<int32_t>();
      q.w13 = w.w13.as<uint16_t>(), q.w2 = w.w2.as<uint16_t>();
      q.y = y.as<uint16_t>(), q.max_rows = T * K, q.max_rows_per_expert = bound;
      q.num_experts = E, q.hidden = hid, q.inter = I;
      q.workspace = qws.data(), q.workspace_bytes = qws.bytes();
      if (tiles_kernel) {
        FULGUR_TRY(kernel_status(kc::expert_ffn_bf16_tiles(q, s()), where + " experts (bf16, sm_90 tiles)"));
        ++expert_paths.tiles;
      } else {
        FULGUR_TRY(kernel_status(kc::expert_ffn_bf16_device(q, s()), where + " experts (bf16, device sizes)"));
        ++expert_paths.device_sizes;
      }
    }
    kernels::MoeUnpermuteParams u;
    u.expert_out = y.as<uint16_t>(), u.inverse = inverse.as<int32_t>(), u.topk_idx = topk_idx.as<int32_t>();
    u.topk_weight = topk_weight.as<float>(), u.out = static_cast<uint16_t*>(out);
    u.num_tokens = T, u.k = K, u.hidden = hid;
    return kernel_status(kc::moe_unpermute(u, s()), where + " unpermute");
  }
  // cuBLAS takes each expert's GEMM sizes from the host (kernels/cuda/expert_ffn.h).
  ++expert_paths.cublas;
  FULGUR_TRY(cuda::copy_async(host_offsets.data(), offsets.data(), (E + 1) * 4, s()));
  FULGUR_TRY(stream.synchronize());
  const int32_t* ho = host_offsets.as<int32_t>();
  if (ho[E] != T * K) {
    return Status(Errc::internal, where + ": the router gave " + std::to_string(T * K - ho[E]) +
                                      " expert slots no expert (non-finite router logits)");
  }
  if (f32) {
    // Per expert: h13 = x W13^T [rows, 2I], act = silu(gate) * up [rows, I], y = act W2^T.
    FULGUR_ASSIGN_OR_RETURN(DeviceMemory h13, buffer(T * K * 2 * I * 4));
    FULGUR_ASSIGN_OR_RETURN(DeviceMemory act, buffer(T * K * I * 4));
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = ho[e], n = ho[e + 1] - ho[e];
      if (n == 0) continue;
      const std::string we = where + " expert " + std::to_string(e);
      FULGUR_TRY(linear(permuted.as<float>() + r0 * hid, n, hid, w.w13.as<float>() + e * 2 * I * hid, 2 * I,
                        h13.as<float>() + r0 * 2 * I, CUDA_R_32F, we + " w1|w3"));
      FULGUR_TRY(kernel_status(kc::silu_mul_f32(h13.as<float>() + r0 * 2 * I, n, I, act.as<float>() + r0 * I, s()),
                               we + " silu"));
      FULGUR_TRY(linear(act.as<float>() + r0 * I, n, I, w.w2.as<float>() + e * hid * I, hid, y.as<float>() + r0 * hid,
                        CUDA_R_32F, we + " w2"));
    }
    return kernel_status(kc::moe_unpermute_f32(y.as<float>(), inverse.as<int32_t>(), topk_weight.as<float>(), T, K, hid,
                                               static_cast<float*>(out), s()),
                         where + " unpermute");
  }
  // Prefill sizes with int8-stored experts: the int8 kernel is mma-bound there (bench/gpu/NOTES.md), so the
  // layer's experts are widened to bf16 once per step (16 GB of traffic at MiniMax size, ~4 ms) and run
  // through the bf16 GEMMs.
  std::optional<DeviceMemory> w13_tmp, w2_tmp;
  if (int8) {
    FULGUR_ASSIGN_OR_RETURN(DeviceMemory a, buffer(static_cast<size_t>(E * 2 * I * hid) * 2));
    FULGUR_ASSIGN_OR_RETURN(DeviceMemory b, buffer(static_cast<size_t>(E * hid * I) * 2));
    FULGUR_TRY(kernel_status(kc::dequantize_rows_int8(w.q13.as<int8_t>(), w.s13.as<float>(), E * 2 * I, hid,
                                                      a.as<uint16_t>(), s()), where + " widening w1|w3"));
    FULGUR_TRY(kernel_status(kc::dequantize_rows_int8(w.q2.as<int8_t>(), w.s2.as<float>(), E * hid, I, b.as<uint16_t>(),
                                                      s()), where + " widening w2"));
    w13_tmp = std::move(a), w2_tmp = std::move(b);
  }
  kc::ExpertFfnBf16Params f;
  f.x = permuted.as<uint16_t>();
  f.w13 = int8 ? w13_tmp->as<uint16_t>() : w.w13.as<uint16_t>();
  f.w2 = int8 ? w2_tmp->as<uint16_t>() : w.w2.as<uint16_t>();
  f.host_expert_offsets = ho, f.y = y.as<uint16_t>();
  f.num_experts = E, f.hidden = hid, f.inter = I;
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory fws, buffer(std::max<size_t>(kc::expert_ffn_bf16_workspace_bytes(T * K, E, I), 256)));
  f.workspace = fws.data(), f.workspace_bytes = fws.bytes();
  f.blas = blas.blas();
  const int streams = expert_streams > 0 ? expert_streams : (T * K >= 1024 * E ? 4 : 1);
  if (streams > 1) {
    f.mode = kc::ExpertGemmMode::per_expert;  // the mode with side streams
    f.num_side_streams = streams - 1, f.fork = fork.handle();
    for (int i = 0; i < streams - 1; ++i) {
      f.side[i] = {side_streams[i].handle(), side_blas[i].blas(), side_done[i].handle()};
    }
  }
  FULGUR_TRY(kernel_status(kc::expert_ffn_bf16(f, s()), where + " experts"));
  kernels::MoeUnpermuteParams u;
  u.expert_out = y.as<uint16_t>(), u.inverse = inverse.as<int32_t>(), u.topk_idx = topk_idx.as<int32_t>();
  u.topk_weight = topk_weight.as<float>(), u.out = static_cast<uint16_t*>(out);
  u.num_tokens = T, u.k = K, u.hidden = hid;
  return kernel_status(kc::moe_unpermute(u, s()), where + " unpermute");
}

CudaModel::CudaModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaModel::~CudaModel() = default;
const ModelConfig& CudaModel::config() const { return impl_->cfg; }
CudaComputeDtype CudaModel::dtype() const { return impl_->f32 ? CudaComputeDtype::f32 : CudaComputeDtype::bf16; }

Expected<CudaComputeDtype> parse_cuda_compute_dtype(const std::string& name) {
  if (name == "bf16") return CudaComputeDtype::bf16;
  if (name == "f32") return CudaComputeDtype::f32;
  return Status(Errc::invalid_argument, "compute dtype '" + name + "': expected bf16 or f32");
}
int CudaModel::device() const { return impl_->device; }
size_t CudaModel::weight_bytes() const { return impl_->weight_bytes; }
CudaExpertPaths CudaModel::expert_paths() const { return impl_->expert_paths; }

// Checks what the kernels support, then sets up the stream, allocator, cuBLAS and side streams (no weights).
Expected<std::unique_ptr<CudaModel::Impl>> CudaModel::make_impl(const ModelConfig& cfg, int device, CudaModelOptions opt) {
  const int n = cuda::device_count();
  if (device < 0 || device >= n) {
    return Status(Errc::not_found, "cuda:" + std::to_string(device) + ": no such CUDA device (this machine has " +
                                       std::to_string(n) + ")");
  }
  auto impl = std::make_unique<Impl>();
  impl->cfg = cfg;
  impl->device = device;
  impl->f32 = opt.dtype == CudaComputeDtype::f32;
  impl->int8 = opt.int8_experts;
  if (impl->int8 && impl->f32) return Status(Errc::invalid_argument, "int8 experts are a bf16-mode option, not f32");
  if (impl->int8 && (cfg.hidden_size % 64 != 0 || cfg.intermediate_size % 64 != 0)) {
    return Status(Errc::unsupported, "int8 experts need hidden_size and intermediate_size multiples of 64 (got " +
                                         std::to_string(cfg.hidden_size) + " and " +
                                         std::to_string(cfg.intermediate_size) + ")");
  }
  impl->dl = padded_head_dim(cfg.head_dim, kc::kLightningHeadDims);
  impl->ds = padded_head_dim(cfg.head_dim, kc::kSoftmaxHeadDims);
  impl->has_softmax = std::count(cfg.layer_types.begin(), cfg.layer_types.end(), LayerKind::softmax) > 0;
  impl->has_lightning = std::count(cfg.layer_types.begin(), cfg.layer_types.end(), LayerKind::lightning) > 0;
  if ((impl->has_lightning && impl->dl == 0) || (impl->has_softmax && impl->ds == 0)) {
    return Status(Errc::unsupported, "head_dim " + std::to_string(cfg.head_dim) +
                                         ": the CUDA attention kernels support head_dim up to 128");
  }
  if (cfg.num_local_experts > kc::kExpertFfnMaxExperts || cfg.num_local_experts > kc::kMoeRouterMaxExperts) {
    return Status(Errc::unsupported, "num_local_experts " + std::to_string(cfg.num_local_experts) +
                                         ": the CUDA MoE kernels support up to 256 experts");
  }
  if (cfg.num_experts_per_tok > kc::kMoeRouterMaxK) {
    return Status(Errc::unsupported, "num_experts_per_tok " + std::to_string(cfg.num_experts_per_tok) +
                                         ": the CUDA router supports up to 64");
  }
  FULGUR_CUDA_TRY(cudaSetDevice(device));
  FULGUR_ASSIGN_OR_RETURN(impl->stream, cuda::CudaStream::create());
  impl->alloc = std::make_unique<cuda::CachingAllocator>(device);
  FULGUR_ASSIGN_OR_RETURN(impl->blas, cuda::BlasHandles::create(*impl->alloc, impl->s()));
  FULGUR_ASSIGN_OR_RETURN(impl->host_offsets, cuda::PinnedBuffer::create((cfg.num_local_experts + 1) * 4));
  FULGUR_ASSIGN_OR_RETURN(impl->staging_free, cuda::CudaEvent::create());
  if (opt.expert_streams < 0 || opt.expert_streams > kc::kExpertFfnMaxSideStreams + 1) {
    return Status(Errc::invalid_argument, "expert_streams must be in [0, 8]");
  }
  impl->expert_streams = opt.expert_streams;
  if (opt.bf16_device_sizes_max_rows < 0) {
    return Status(Errc::invalid_argument, "bf16_device_sizes_max_rows must be >= 0");
  }
  impl->bf16_device_sizes_max_rows = opt.bf16_device_sizes_max_rows;
  if (opt.bf16_tiles_max_rows < 0) return Status(Errc::invalid_argument, "bf16_tiles_max_rows must be >= 0");
  impl->bf16_tiles_max_rows = kc::device_major() == 9 ? opt.bf16_tiles_max_rows : 0;  // the tile kernels need sm_90
  if (opt.softmax_prefill_kernel < kc::kPrefillAuto || opt.softmax_prefill_kernel > kc::kPrefillSm90) {
    return Status(Errc::invalid_argument, "softmax_prefill_kernel must be 0 (auto), 1 (mma.sync) or 2 (Hopper)");
  }
  impl->softmax_prefill_kernel = opt.softmax_prefill_kernel;
  const int sides = impl->f32 ? 0 : (opt.expert_streams == 0 ? 4 : opt.expert_streams) - 1;  // f32: one stream
  FULGUR_ASSIGN_OR_RETURN(impl->fork, cuda::CudaEvent::create());
  for (int i = 0; i < sides; ++i) {
    FULGUR_ASSIGN_OR_RETURN(cuda::CudaStream st, cuda::CudaStream::create());
    FULGUR_ASSIGN_OR_RETURN(cuda::BlasHandles bh, cuda::BlasHandles::create(*impl->alloc, st.handle()));
    FULGUR_ASSIGN_OR_RETURN(cuda::CudaEvent ev, cuda::CudaEvent::create());
    impl->side_streams.push_back(std::move(st));
    impl->side_blas.push_back(std::move(bh));
    impl->side_done.push_back(std::move(ev));
  }
  return impl;
}

Expected<std::unique_ptr<CudaModel>> CudaModel::create(const Model& model, int device, CudaModelOptions opt) {
  FULGUR_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, make_impl(model.config(), device, opt));
  FULGUR_TRY(impl->upload_weights(model.weights()));
  return std::unique_ptr<CudaModel>(new CudaModel(std::move(impl)));
}

Expected<std::unique_ptr<CudaModel>> CudaModel::create_random(const ModelConfig& cfg, int device, CudaModelOptions opt,
                                                              uint64_t seed) {
  FULGUR_TRY(cfg.validate());
  FULGUR_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, make_impl(cfg, device, opt));
  if ((impl->has_lightning && impl->dl != cfg.head_dim) || (impl->has_softmax && impl->ds != cfg.head_dim)) {
    return Status(Errc::unsupported, "create_random: head_dim " + std::to_string(cfg.head_dim) +
                                         " needs padding; use a head_dim the layers' kernels have (lightning 16/32/64/128, softmax 16/64/128)");
  }
  FULGUR_TRY(impl->random_weights(seed));
  return std::unique_ptr<CudaModel>(new CudaModel(std::move(impl)));
}

size_t CudaModel::slot_state_bytes() const {
  const Impl& m = *impl_;
  size_t bytes = 0;
  for (const auto& layer : m.layers) {
    if (layer.kind == LayerKind::lightning) bytes += static_cast<size_t>(m.cfg.num_attention_heads * m.dl * m.dl) * 4;
  }
  return bytes;
}

size_t CudaModel::kv_page_bytes(int64_t page_size) const {
  const Impl& m = *impl_;
  size_t bytes = 0;
  for (const auto& layer : m.layers) {
    if (layer.kind != LayerKind::lightning) {
      bytes += 2 * static_cast<size_t>(page_size * m.cfg.num_key_value_heads * m.ds) * m.es();
    }
  }
  return bytes;
}

Expected<std::pair<size_t, size_t>> CudaModel::device_memory() const {
  FULGUR_CUDA_TRY(cudaSetDevice(impl_->device));
  size_t free_bytes = 0, total_bytes = 0;
  FULGUR_CUDA_TRY(cudaMemGetInfo(&free_bytes, &total_bytes));
  return std::make_pair(free_bytes, total_bytes);
}

Status CudaModel::allocate_state(int64_t num_slots, int64_t num_blocks, int64_t page_size) {
  Impl& m = *impl_;
  if (num_slots <= 0 || num_blocks <= 0 || page_size <= 0) {
    return Status(Errc::invalid_argument, "allocate_state: slots, blocks and page size must be positive");
  }
  FULGUR_CUDA_TRY(cudaSetDevice(m.device));
  m.lightning_state.clear(), m.k_cache.clear(), m.v_cache.clear();
  m.num_slots = 0, m.num_blocks = 0, m.page_size = 0;  // no state until every buffer is in place
  m.lightning_state.resize(m.layers.size()), m.k_cache.resize(m.layers.size()), m.v_cache.resize(m.layers.size());
  const int64_t H = m.cfg.num_attention_heads, KV = m.cfg.num_key_value_heads;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    if (m.layers[l].kind == LayerKind::lightning) {
      const size_t bytes = static_cast<size_t>(num_slots * H * m.dl * m.dl) * 4;
      FULGUR_ASSIGN_OR_RETURN(m.lightning_state[l], m.buffer(bytes));
      FULGUR_CUDA_TRY(cudaMemsetAsync(m.lightning_state[l].data(), 0, bytes, m.s()));
    } else {
      // Zeroed as well: the padded dims of every cached row must read as zero.
      const size_t bytes = static_cast<size_t>(num_blocks * page_size * KV * m.ds) * m.es();
      FULGUR_ASSIGN_OR_RETURN(m.k_cache[l], m.buffer(bytes));
      FULGUR_ASSIGN_OR_RETURN(m.v_cache[l], m.buffer(bytes));
      FULGUR_CUDA_TRY(cudaMemsetAsync(m.k_cache[l].data(), 0, bytes, m.s()));
      FULGUR_CUDA_TRY(cudaMemsetAsync(m.v_cache[l].data(), 0, bytes, m.s()));
    }
  }
  m.num_slots = num_slots, m.num_blocks = num_blocks, m.page_size = page_size;
  return m.stream.synchronize();
}

Status CudaModel::reset_slot(int64_t slot) {
  Impl& m = *impl_;
  if (slot < 0 || slot >= m.num_slots) return Status(Errc::invalid_argument, "reset_slot: slot out of range");
  FULGUR_CUDA_TRY(cudaSetDevice(m.device));
  const int64_t H = m.cfg.num_attention_heads;
  const size_t bytes = static_cast<size_t>(H * m.dl * m.dl) * 4;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    if (m.layers[l].kind != LayerKind::lightning) continue;
    FULGUR_CUDA_TRY(cudaMemsetAsync(m.lightning_state[l].as<char>() + slot * bytes, 0, bytes, m.s()));
  }
  return Status::ok();
}

// One step; the asked rows' logits end as host f32 (`logits`) or as chosen tokens (`greedy`), exactly one
// given: drawn with `sampling` (one per row) when given, else greedily.
static Status run_step(CudaModel::Impl& m, const std::vector<int32_t>& tokens, const BatchLayout& batch,
                       const std::vector<int64_t>& logits_rows, Tensor* logits, std::vector<int32_t>* greedy,
                       std::vector<Tensor>* layer_outputs,
                       const std::vector<kernels::SamplingParams>* sampling = nullptr) {
  const ModelConfig& cfg = m.cfg;
  const int64_t T = batch.num_tokens, hid = cfg.hidden_size, V = cfg.vocab_size;
  if (static_cast<int64_t>(tokens.size()) != T) {
    return Status(Errc::invalid_argument, "forward: token count differs from the batch layout");
  }
  if (m.num_slots == 0) return Status(Errc::invalid_argument, "forward: allocate_state was not called");
  FULGUR_TRY(batch.validate(m.num_slots, m.num_blocks, m.page_size));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= V) {
      return Status(Errc::invalid_argument, "token " + std::to_string(i) + " has id " + std::to_string(tokens[i]) +
                                                ", outside the vocabulary [0, " + std::to_string(V) + ")");
    }
  }
  for (int64_t r : logits_rows) {
    if (r < 0 || r >= T) return Status(Errc::invalid_argument, "forward: logits row " + std::to_string(r) + " out of range");
  }
  bool draws = false;  // some row samples with a temperature (else greedy, the faster kernel)
  if (sampling != nullptr) {
    if (V > kernels::sampling::kMaxVocab) {
      return Status(Errc::unsupported, "forward_sample: a vocabulary of " + std::to_string(V) +
                                           " is above the samplers' 2^26 (kernels/sampling_math.h)");
    }
    if (sampling->size() != logits_rows.size()) {
      return Status(Errc::invalid_argument, "forward: one set of sampling parameters per logits row is needed");
    }
    for (size_t i = 0; i < sampling->size(); ++i) {
      if (auto ks = kernels::check_sampling_params((*sampling)[i]); !ks.ok()) {
        return Status(Errc::invalid_argument, "row " + std::to_string(logits_rows[i]) + ": " + ks.error);
      }
      draws = draws || (*sampling)[i].temperature > 0.f;
    }
  }
  FULGUR_CUDA_TRY(cudaSetDevice(m.device));
  const int64_t R = static_cast<int64_t>(logits_rows.size());
  if (logits != nullptr) *logits = Tensor::empty(DType::f32, {R, V});
  if (greedy != nullptr) greedy->assign(static_cast<size_t>(R), -1);
  if (T == 0) return Status::ok();

  // Step metadata to the device, one packed copy (stream-ordered).
  std::vector<int32_t> rows32(logits_rows.begin(), logits_rows.end());
  auto bytes_of = [](const auto& v) { return std::make_pair(static_cast<const void*>(v.data()), v.size() * sizeof(v[0])); };
  std::vector<std::pair<const void*, size_t>> parts = {
      bytes_of(tokens),           bytes_of(batch.positions),    bytes_of(batch.kv_slot_mapping),
      bytes_of(batch.block_tables), bytes_of(batch.cu_seqlens), bytes_of(batch.context_lens),
      bytes_of(batch.state_slots), bytes_of(rows32)};
  if (draws) parts.push_back(bytes_of(*sampling));
  std::vector<size_t> at;
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory meta, m.upload_packed(parts, &at));
  const DeviceView ids{meta.as<char>() + at[0]}, positions{meta.as<char>() + at[1]}, slot_mapping{meta.as<char>() + at[2]};
  const DeviceView block_tables{meta.as<char>() + at[3]}, cu_seqlens{meta.as<char>() + at[4]};
  const DeviceView context_lens{meta.as<char>() + at[5]}, slots{meta.as<char>() + at[6]}, rows_dev{meta.as<char>() + at[7]};
  std::optional<DeviceView> sampling_dev;
  if (draws) sampling_dev = DeviceView{meta.as<char>() + at[8]};

  const size_t act_bytes = static_cast<size_t>(T * hid) * m.es();
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory x, m.buffer(act_bytes));   // embedding, then each sub-block's output
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory h, m.buffer(act_bytes));   // normalised input of the attention half
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory h2, m.buffer(act_bytes));  // normalised input of the MoE half
  std::optional<DeviceMemory> sum;
  if (layer_outputs != nullptr) {
    FULGUR_ASSIGN_OR_RETURN(DeviceMemory s, m.buffer(act_bytes));
    sum = std::move(s);
    layer_outputs->clear();
  }

  if (m.f32) {  // ids were checked above
    FULGUR_TRY(kernel_status(kc::gather_rows(m.embed.data(), V, hid * 4, ids.as<int32_t>(), T, x.data(), m.s()),
                             "embedding"));
  } else {
    kc::EmbeddingCudaParams ep;
    ep.table = m.embed.as<uint16_t>(), ep.ids = ids.as<int32_t>(), ep.ids_host = tokens.data();
    ep.out = x.as<uint16_t>(), ep.num_tokens = T, ep.hidden = hid, ep.vocab = V;
    FULGUR_TRY(kernel_status(kc::embedding(ep, m.s()), "embedding"));
  }

  // out = RMSNorm(alpha * residual + beta * xin) * weight (spec §6); the plain input norm of layer 0 is
  // the step with alpha = 0 (0 * x is exactly 0 for the finite embeddings).
  auto norm = [&](const DeviceMemory& residual, float alpha, const DeviceMemory& xin, float beta,
                  const DeviceMemory& weight, DeviceMemory& out, void* sum_out, const std::string& what) {
    const float eps = static_cast<float>(cfg.rms_norm_eps);
    if (m.f32) {
      kc::DeepNormRmsNormF32Params p;
      p.residual = residual.as<float>(), p.x = xin.as<float>(), p.weight = weight.as<float>();
      p.out = out.as<float>(), p.sum_out = static_cast<float*>(sum_out);
      p.rows = T, p.dim = hid, p.alpha = alpha, p.beta = beta, p.eps = eps;
      return kernel_status(kc::deepnorm_rmsnorm_f32(p, m.s()), what);
    }
    kc::DeepNormRmsNormCudaParams p;
    p.residual = residual.as<uint16_t>(), p.x = xin.as<uint16_t>(), p.weight = weight.as<uint16_t>();
    p.out = out.as<uint16_t>(), p.sum_out = static_cast<uint16_t*>(sum_out);
    p.rows = T, p.dim = hid, p.alpha = alpha, p.beta = beta, p.eps = eps;
    return kernel_status(kc::deepnorm_rmsnorm(p, m.s()), what);
  };
  FULGUR_TRY(norm(x, 0.f, x, 1.f, m.layers[0].input_norm, h, nullptr, "layer 0 input_layernorm"));

  const int64_t L = static_cast<int64_t>(m.layers.size());
  for (int64_t l = 0; l < L; ++l) {
    const CudaLayerWeights& w = m.layers[l];
    const std::string p = "layer " + std::to_string(l);
    if (w.kind == LayerKind::lightning) {
      FULGUR_TRY(m.lightning(l, h.data(), batch, slots, cu_seqlens, x.data()));
    } else {
      FULGUR_TRY(m.softmax(l, h.data(), batch, positions, slot_mapping, block_tables, cu_seqlens, context_lens, x.data()));
    }
    // Post-norm DeepNorm: the carried residual is the normalised h (spec §6).
    FULGUR_TRY(norm(h, static_cast<float>(cfg.attn_alpha(w.kind)), x, static_cast<float>(cfg.attn_beta(w.kind)),
                    w.post_norm, h2, nullptr, p + " post_attention_layernorm"));
    FULGUR_TRY(m.moe(l, h2.data(), T, x.data()));
    const DeviceMemory& next = l + 1 < L ? m.layers[l + 1].input_norm : m.final_norm;
    FULGUR_TRY(norm(h2, static_cast<float>(cfg.mlp_alpha), x, static_cast<float>(cfg.mlp_beta), next, h,
                    sum ? sum->data() : nullptr, l + 1 < L ? p + " -> next input_layernorm" : "model.norm"));
    if (layer_outputs != nullptr) {
      Tensor t = Tensor::empty(DType::f32, {T, hid});
      if (m.f32) {
        FULGUR_TRY(cuda::copy_async(t.data<float>(), sum->data(), act_bytes, m.s()));
        FULGUR_TRY(m.stream.synchronize());
      } else {
        std::vector<uint16_t> host(static_cast<size_t>(T * hid));
        FULGUR_TRY(cuda::copy_async(host.data(), sum->data(), act_bytes, m.s()));
        FULGUR_TRY(m.stream.synchronize());
        for (size_t i = 0; i < host.size(); ++i) t.data<float>()[i] = kernels::bf16_to_f32(host[i]);
      }
      layer_outputs->push_back(std::move(t));
    }
  }

  // The final norm is applied (the last DeepNorm step used model.norm's weight); lm_head on the asked rows.
  if (R == 0) return m.stream.synchronize();
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory picked, m.buffer(static_cast<size_t>(R * hid) * m.es()));
  FULGUR_TRY(kernel_status(kc::gather_rows(h.data(), T, hid * static_cast<int64_t>(m.es()), rows_dev.as<int32_t>(), R,
                                           picked.data(), m.s()),
                           "logits row gather"));
  // lm_head in chunks of rows, so the f32 logits on the device stay bounded (4096 x 200064 x 4 = 3.3 GB)
  // however many rows are asked for.
  const int64_t chunk = std::min<int64_t>(R, kLogitsChunkRows);
  FULGUR_ASSIGN_OR_RETURN(DeviceMemory out, m.buffer(static_cast<size_t>(chunk * V) * 4));
  std::optional<DeviceMemory> ids_out, gws;
  if (greedy != nullptr) {
    FULGUR_ASSIGN_OR_RETURN(DeviceMemory a, m.buffer(static_cast<size_t>(R) * 4));
    ids_out = std::move(a);
    if (!draws) {
      FULGUR_ASSIGN_OR_RETURN(DeviceMemory b, m.buffer(std::max<size_t>(kc::sample_greedy_workspace_bytes(chunk, V), 256)));
      gws = std::move(b);
    }
  }
  for (int64_t r0 = 0; r0 < R; r0 += chunk) {
    const int64_t n = std::min(chunk, R - r0);
    const char* rows_in = picked.as<char>() + static_cast<size_t>(r0 * hid) * m.es();
    FULGUR_TRY(m.linear(rows_in, n, hid, m.lm_head.data(), V, out.data(), CUDA_R_32F, "lm_head"));
    if (logits != nullptr) {
      // Stream order keeps the next chunk's GEMM behind this copy out of `out`.
      FULGUR_TRY(cuda::copy_async(logits->data<float>() + r0 * V, out.data(), static_cast<size_t>(n * V) * 4, m.s()));
      continue;
    }
    // The choice on the device, only the token ids cross to the host.
    if (draws) {
      kc::SampleCudaParams sp;
      sp.logits = out.as<float>(), sp.params = sampling_dev->as<kernels::SamplingParams>() + r0;
      sp.out_token = ids_out->as<int32_t>() + r0, sp.num_rows = n, sp.vocab = V;
      FULGUR_TRY(kernel_status(kc::sample(sp, m.s()), "sampling"));
      continue;
    }
    kc::SampleGreedyCudaParams gp2;
    gp2.logits = out.as<float>(), gp2.out_token = ids_out->as<int32_t>() + r0, gp2.num_rows = n, gp2.vocab = V;
    gp2.workspace = gws->data(), gp2.workspace_bytes = gws->bytes();
    FULGUR_TRY(kernel_status(kc::sample_greedy(gp2, m.s()), "greedy sampling"));
  }
  if (greedy != nullptr) FULGUR_TRY(cuda::copy_async(greedy->data(), ids_out->data(), static_cast<size_t>(R) * 4, m.s()));
  FULGUR_TRY(m.stream.synchronize());
  if (greedy != nullptr) {
    for (int64_t r = 0; r < R; ++r) {
      if ((*greedy)[r] == kc::kSampleNonFinite) {
        return Status(Errc::internal, "sampling: the logits of row " + std::to_string(logits_rows[r]) + " are not finite");
      }
      if ((*greedy)[r] < 0) {
        return Status(Errc::internal, "sampling: row " + std::to_string(logits_rows[r]) + " failed with code " +
                                          std::to_string((*greedy)[r]));
      }
    }
  }
  return Status::ok();
}

Status CudaModel::forward(const std::vector<int32_t>& tokens, const BatchLayout& batch,
                          const std::vector<int64_t>& logits_rows, Tensor& logits, std::vector<Tensor>* layer_outputs) {
  return run_step(*impl_, tokens, batch, logits_rows, &logits, nullptr, layer_outputs);
}

Status CudaModel::forward_greedy(const std::vector<int32_t>& tokens, const BatchLayout& batch,
                                 const std::vector<int64_t>& rows, std::vector<int32_t>& next_tokens) {
  return run_step(*impl_, tokens, batch, rows, nullptr, &next_tokens, nullptr);
}

Status CudaModel::forward_sample(const std::vector<int32_t>& tokens, const BatchLayout& batch,
                                 const std::vector<int64_t>& rows, const std::vector<kernels::SamplingParams>& sampling,
                                 std::vector<int32_t>& next_tokens) {
  return run_step(*impl_, tokens, batch, rows, nullptr, &next_tokens, nullptr, &sampling);
}

Expected<CudaSingleSequence> CudaSingleSequence::create(CudaModel& model, int64_t max_tokens, int64_t page_size) {
  if (max_tokens <= 0 || page_size <= 0) {
    return Status(Errc::invalid_argument, "a sequence needs a positive capacity and page size");
  }
  FULGUR_TRY(model.allocate_state(1, (max_tokens + page_size - 1) / page_size, page_size));
  return CudaSingleSequence(model, max_tokens, page_size);
}

Status CudaSingleSequence::advance(size_t count, const std::function<Status(const BatchLayout&)>& forward) {
  const int64_t n = static_cast<int64_t>(count);
  if (n == 0) return Status(Errc::invalid_argument, "step: no tokens");
  if (length_ + n > max_tokens_) {
    return Status(Errc::invalid_argument, "sequence of " + std::to_string(length_ + n) +
                                              " tokens exceeds its capacity of " + std::to_string(max_tokens_));
  }
  if (broken_) {
    return Status(Errc::invalid_argument, "this sequence's state is undefined after a failed step: start a new one");
  }
  const BatchLayout b = single_sequence_layout(length_, n, (max_tokens_ + page_size_ - 1) / page_size_);
  if (Status st = forward(b); !st.is_ok()) {
    broken_ = st.code() != Errc::invalid_argument;  // refused before any work (bad input) vs failed midway
    return st;
  }
  length_ += n;
  return Status::ok();
}

Status CudaSingleSequence::step(const std::vector<int32_t>& tokens, bool all_logits, Tensor& logits,
                                std::vector<Tensor>* layer_outputs) {
  const std::vector<int64_t> rows = step_logits_rows(static_cast<int64_t>(tokens.size()), all_logits);
  return advance(tokens.size(), [&](const BatchLayout& b) { return model_->forward(tokens, b, rows, logits, layer_outputs); });
}

Expected<int32_t> CudaSingleSequence::step_sample(const std::vector<int32_t>& tokens,
                                                  const kernels::SamplingParams& sampling) {
  std::vector<int32_t> next;
  FULGUR_TRY(advance(tokens.size(), [&](const BatchLayout& b) {
    return model_->forward_sample(tokens, b, {static_cast<int64_t>(tokens.size()) - 1}, {sampling}, next);
  }));
  return next.at(0);
}

Expected<Tensor> forward_all_logits_cuda(CudaModel& model, const std::vector<int32_t>& tokens,
                                         const ForwardOptions& opt) {
  FULGUR_ASSIGN_OR_RETURN(CudaSingleSequence seq,
                          CudaSingleSequence::create(model, std::max<int64_t>(1, static_cast<int64_t>(tokens.size()))));
  return forward_all_logits(model.config().vocab_size, tokens, opt,
                            [&](const std::vector<int32_t>& part, Tensor& logits) { return seq.step(part, true, logits); });
}

}  // namespace fulgur
