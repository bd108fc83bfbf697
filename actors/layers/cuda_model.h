// CudaModel: the model forward of model.h on one CUDA device (issue 4). The same layer math as the
// CPU layers (layers.h, spec §2–§6) with the kernels of kernels/cuda and cuBLAS projections. In the
// bf16 compute mode (the default): bf16 weights and activations, fp32 accumulation and fp32
// norm/softmax math, fp32 lightning state, a paged bf16 KV cache, fp32 router logits and fp32
// output logits. The f32 mode (CudaModelOptions) keeps everything in f32.
//
// Built from a loaded host Model (its f32 weights are rounded to bf16 once, on upload). Head
// dimensions without an instantiated attention kernel (the kernels have 16/32/64/128 for lightning,
// 16/64/128 for softmax) are padded on upload: each head's q/k/v projection rows are followed by
// zero rows up to the kernel's head_dim and o_proj gains zero columns, so the padded features are
// exactly zero and change nothing (the lightning output norm reads only the real ones, and the
// softmax scale stays 1/sqrt(head_dim)).
//
// Where the bf16 mode rounds to bf16 beyond the weights: every projection output that feeds a kernel (qkv,
// output gate, out_proj / o_proj, expert activations and outputs), the normalised residual h of
// every sub-block (the DeepNorm kernel), and the kernels' own roundings (kernels/cuda/*.h). The
// lightning attention output stays fp32 up to its norm; router logits and output logits are fp32.
//
// Not thread-safe: one caller at a time (it owns one stream).
#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "actors/layers/model.h"
#include "kernels/sampling.h"

namespace fulgur {

// bf16: the serving path (tensor-core kernels, bf16 weights). f32: every weight, activation and
// state in f32 through simple kernels (kernels/cuda/reference_f32.h) and fp32 cuBLAS GEMMs without
// TF32: slow, for checking the GPU forward against the float64 reference to 1e-4.
enum class CudaComputeDtype { bf16, f32 };
struct CudaModelOptions {
  CudaComputeDtype dtype = CudaComputeDtype::bf16;
  // Streams the bf16 expert FFN spreads a layer's experts over (kernels/cuda/expert_ffn.h side streams):
  // 1..8, or 0 = automatic: 4 when the step averages >= 1024 rows per expert (measured on one H200:
  // 16k tokens uniform 20.6 -> 17.5 ms; at 4k tokens one stream is 3-5 % faster), else 1.
  int expert_streams = 0;
  // bf16 mode only: experts stored as int8 weight-only (per-row scales; quantised on the device at load,
  // kernels/cuda/expert_ffn.h): half the expert bytes, 1.4-1.6x faster expert FFN at decode sizes, no
  // host round trip for the expert sizes. Needs hidden_size and intermediate_size multiples of 64.
  bool int8_experts = false;
  // bf16 experts (bf16 mode): up to this many rows per expert on average a step runs them through
  // expert_ffn_bf16_device, which reads the expert sizes on the device, instead of cuBLAS, which needs them
  // on the host (a stream sync per layer). 0 = cuBLAS always. Only where hidden_size and intermediate_size
  // are multiples of 64 (else cuBLAS). Tuning only: both give the same math to bf16 rounding noise.
  // Measured on one H200, 8 MiniMax layers, decode at context 1024 (bench/gpu/NOTES.md): B = 1 / 8 / 32
  // (<= 2 rows per expert) 3.62 / 8.27 / 15.45 ms a step vs cuBLAS 3.92 / 11.02 / 16.05; B = 64 (4 rows)
  // 21.09 vs 19.32: hence 2.
  int64_t bf16_device_sizes_max_rows = 2;
  // bf16 experts (bf16 mode) on a Hopper GPU: above bf16_device_sizes_max_rows and up to this many rows per
  // expert on average, a step runs them through expert_ffn_bf16_tiles (persistent TMA + wgmma grouped GEMMs,
  // sizes read on the device: no stream sync per layer) instead of the cuBLAS loop. 0 = never; on other GPUs,
  // and for shapes whose hidden_size or intermediate_size is not a multiple of 64, such steps run on cuBLAS
  // (the device-sizes kernels above keep their own range). Measured on
  // one H200 (bench/gpu/NOTES.md): one MoE layer at 64 rows per expert 2.73 ms vs cuBLAS 2.97-3.24, at 128
  // rows 3.76 vs 3.26; 8 MiniMax layers, decode B = 64 (4 rows) 17.84 vs 18.92 ms a step: hence 64.
  int64_t bf16_tiles_max_rows = 64;
  // Softmax prefill kernel (kernels/cuda/softmax_attention.h prefill_kernel): 0 = the Hopper (wgmma + TMA) one
  // where it applies, else mma.sync; 1 = mma.sync; 2 = Hopper (a step whose shapes it does not take fails).
  int64_t softmax_prefill_kernel = 0;
};

// How many MoE layer calls took each expert path (CudaModel::expert_paths): which kernels a step really ran.
struct CudaExpertPaths {
  uint64_t cublas = 0;        // expert_ffn_bf16 (host sizes) or the f32 loop
  uint64_t device_sizes = 0;  // expert_ffn_bf16_device
  uint64_t tiles = 0;         // expert_ffn_bf16_tiles
  uint64_t int8 = 0;          // expert_ffn_int8
};
Expected<CudaComputeDtype> parse_cuda_compute_dtype(const std::string& name);  // "bf16" | "f32"

class CudaModel {
 public:
  // Uploads `model`'s weights to CUDA device `device`. `model` may be dropped afterwards.
  static Expected<std::unique_ptr<CudaModel>> create(const Model& model, int device, CudaModelOptions opt = {});
  // A model of `cfg`'s shapes with random weights generated on the device (benchmarks at full size
  // without a checkpoint): matrices uniform with std 1/sqrt(fan_in), norm weights 1. head_dim must be
  // one the attention kernels have (no padding).
  static Expected<std::unique_ptr<CudaModel>> create_random(const ModelConfig& cfg, int device, CudaModelOptions opt,
                                                            uint64_t seed);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const ModelConfig& config() const;
  int device() const;
  CudaComputeDtype dtype() const;
  // Bytes of weights on the device.
  size_t weight_bytes() const;
  CudaExpertPaths expert_paths() const;

  // Device state for up to num_slots sequences (lightning states, zeroed) and num_blocks KV pages of
  // page_size tokens; replaces any earlier state.
  Status allocate_state(int64_t num_slots, int64_t num_blocks, int64_t page_size);
  // What allocate_state takes: one slot's lightning state over all layers, one KV page of page_size tokens (K
  // and V over all softmax layers; 0 without any), and the device's free and total bytes now.
  size_t slot_state_bytes() const;
  size_t kv_page_bytes(int64_t page_size) const;
  Expected<std::pair<size_t, size_t>> device_memory() const;
  // Zeroes one lightning state slot (a sequence starts there).
  Status reset_slot(int64_t slot);

  // One step, as Model::forward: embeds `tokens`, runs every layer over the packed batch (reading
  // and writing the state of allocate_state), and writes f32 logits [logits_rows.size(), vocab] to
  // host memory. layer_outputs, when given, receives the residual stream x after each layer
  // (spec §2's x = alpha*h2 + beta*MoE(h2), as the bf16 the kernels formed, widened to f32 [T, hidden]).
  // Bad input is refused (invalid_argument) before any work. Any other error comes after the layers may
  // have written the batch's state slots and KV pages: reset those sequences.
  Status forward(const std::vector<int32_t>& tokens, const BatchLayout& batch, const std::vector<int64_t>& logits_rows,
                 Tensor& logits, std::vector<Tensor>* layer_outputs = nullptr);
  // The same step, choosing the next token of each asked row greedily on the device (argmax, ties to
  // the lowest id; kernels/cuda/sampling.h): only the ids cross to the host, not [rows, vocab] logits.
  Status forward_greedy(const std::vector<int32_t>& tokens, const BatchLayout& batch, const std::vector<int64_t>& rows,
                        std::vector<int32_t>& next_tokens);
  // The same step, each asked row drawing its next token with its own parameters (temperature, top-k,
  // top-p, seed, step) on the device: the token sample_cpu would draw from the same logits
  // (kernels/cuda/sampling.h). Parameters failing check_sampling_params are refused before any work.
  Status forward_sample(const std::vector<int32_t>& tokens, const BatchLayout& batch, const std::vector<int64_t>& rows,
                        const std::vector<kernels::SamplingParams>& sampling, std::vector<int32_t>& next_tokens);

  struct Impl;

 private:
  explicit CudaModel(std::unique_ptr<Impl> impl);
  static Expected<std::unique_ptr<Impl>> make_impl(const ModelConfig& cfg, int device, CudaModelOptions opt);
  std::unique_ptr<Impl> impl_;
};

// One sequence fed step by step on the GPU (the CLI and tests), as SingleSequence. It owns the model's
// state: creating another sequence on the same model replaces it. After a step fails midway the
// sequence refuses further steps.
class CudaSingleSequence {
 public:
  // Allocates the model's state for one sequence of up to max_tokens tokens.
  static Expected<CudaSingleSequence> create(CudaModel& model, int64_t max_tokens, int64_t page_size = 16);
  Status step(const std::vector<int32_t>& tokens, bool all_logits, Tensor& logits,
              std::vector<Tensor>* layer_outputs = nullptr);
  // The same step, drawing the next token after the last of `tokens` on the device (forward_sample).
  Expected<int32_t> step_sample(const std::vector<int32_t>& tokens, const kernels::SamplingParams& sampling);
  int64_t length() const { return length_; }

 private:
  CudaSingleSequence(CudaModel& model, int64_t max_tokens, int64_t page_size)
      : model_(&model), max_tokens_(max_tokens), page_size_(page_size) {}
  // Checks, then runs `forward` (one model call over this step's layout) and advances on success.
  Status advance(size_t n, const std::function<Status(const BatchLayout&)>& forward);
  CudaModel* model_;
  int64_t max_tokens_;
  int64_t page_size_;
  int64_t length_ = 0;
  bool broken_ = false;
};

// forward_all_logits (model.h) on the GPU: logits [T, vocab] for every token, in the same modes.
Expected<Tensor> forward_all_logits_cuda(CudaModel& model, const std::vector<int32_t>& tokens, const ForwardOptions& opt);

}  // namespace fulgur
