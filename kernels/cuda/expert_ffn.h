// Expert FFN (SwiGLU) of all experts of one MoE layer on the GPU, over tokens already grouped by
// expert (the layout of moe_permute: rows [expert_offsets[e], expert_offsets[e + 1]) of x belong to
// expert e). Per row r of expert e:  y[r] = w2[e] . (silu(w1[e] . x[r]) * (w3[e] . x[r])).
// The CPU reference is kernels/expert_ffn.h (expert_ffn_cpu); MoeBlock::expert_forward has the same math.
//
// Two weight formats:
//  - bf16 (expert_ffn_bf16): two grouped GEMMs through cuBLAS (fp32 accumulation, bf16 out) and one
//    fused activation kernel between them:
//      1. h13[r, :] = x[r] . w13[e]^T            [rows, 2 * inter] bf16 (gate | up), one GEMM for w1 and w3
//      2. h13[r, 0:inter] = silu(gate) * up       in place over the gate half (fp32 math, bf16 store)
//      3. y[r] = h13[r, 0:inter] . w2[e]^T        the act operand read with row stride 2 * inter
//    HOST SIZES: cuBLAS takes each GEMM's m/n/k from host memory, so this path needs the expert offsets
//    on the host (host_expert_offsets). When they exist only on the device (after moe_permute), the
//    caller copies E + 1 ints back and waits for the stream: bench_expert_ffn measures that round trip
//    (bench/gpu/NOTES.md: 6.4 us on an idle H200 stream). The per-expert pointer arrays of the grouped call travel as a kernel
//    parameter (no host staging buffer, stream-ordered).
//  - int8 weight-only (expert_ffn_int8): w ~= q * scale per output row (one fp32 scale per row of
//    w13 and of w2). Two launches, sized from host bounds only (no host sizes needed: each block
//    reads its expert's rows from the device offsets):
//      1. gate/up: per block 16 rows of w1 + the same 16 rows of w3, all of the expert's tokens in
//         tiles of <= 64, K split over 4 warps; mma.sync m16n8k16 with the int8 weights converted to
//         bf16 in registers (exact: |q| <= 127), fp32 accumulation, scales after the sum; writes
//         act = bf16(silu(bf16(gate)) * bf16(up)) (the bf16 path's roundings) into the workspace.
//      2. down: the same kernel over 32 rows of w2, writing y.
//    Each launch streams every weight byte of the experts that have tokens once per token tile of 64:
//    half the bytes of bf16 at decode sizes (1 to ~64 rows per expert). Larger groups stay correct
//    (the tile loop re-reads the weights per 64 rows), but then the work is mma.sync-bound: the design
//    choice for prefill is the bf16 path (dequantise once per layer into bf16 weights, or keep bf16).
//
// Supported matrix (anything else is rejected with a status naming the field):
//  bf16: num_experts in [1, kExpertFfnMaxExperts], any hidden / inter >= 1, rows < 2^31.
//  int8: as bf16, plus hidden % 64 == 0 and inter % 64 == 0 (the 64-wide int8 k-chunks) and
//        16-byte aligned x, weights and y.
// All pointers are device pointers unless named host_; entries validate and enqueue on `stream`,
// never allocate (workspaces from the caller).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/runtime.h"

struct cublasContext;  // cublasHandle_t without including the cuBLAS headers
struct CUevent_st;     // cudaEvent_t

namespace fulgur::kernels::cuda {

inline constexpr int64_t kExpertFfnMaxExperts = 256;
inline constexpr int kExpertFfnMaxSideStreams = 7;

// A stream the per-expert mode may run some experts on, with its own cuBLAS handle (bound to it, with
// its own workspace) and an event the entry records there when the stream's share is done.
struct ExpertFfnSideStream {
  Stream stream = nullptr;
  cublasContext* blas = nullptr;
  CUevent_st* done = nullptr;
};

enum class ExpertGemmMode {
  automatic,   // per_expert, except grouped at decode sizes (<= 64 rows per expert, >= 8 experts with rows)
  grouped,     // one cublasGemmGroupedBatchedEx per GEMM over the experts that have rows
  per_expert,  // one cublasGemmEx per expert and GEMM, all on the stream
};

struct ExpertFfnBf16Params {
  const uint16_t* x = nullptr;                   // [rows, hidden] bf16 bits, row-major, grouped by expert
  const uint16_t* w13 = nullptr;                 // [num_experts, 2 * inter, hidden] bf16: rows [0, inter)
                                                 //   = w1 (gate), [inter, 2 * inter) = w3 (up)
  const uint16_t* w2 = nullptr;                  // [num_experts, hidden, inter] bf16 (down)
  const int32_t* host_expert_offsets = nullptr;  // HOST [num_experts + 1]: rows = host_expert_offsets[E]
  uint16_t* y = nullptr;                         // [rows, hidden] bf16 bits
  int64_t num_experts = 0;
  int64_t hidden = 0;
  int64_t inter = 0;
  void* workspace = nullptr;  // expert_ffn_bf16_workspace_bytes(rows, ...) bytes, 256-byte aligned
  size_t workspace_bytes = 0;
  cublasContext* blas = nullptr;  // cuBLAS handle, set to `stream` unless already there (cublasSetStream would
                                  //   reset its workspace to cuBLAS's pool: bind it beforehand to keep your own)
  ExpertGemmMode mode = ExpertGemmMode::automatic;
  // Optional concurrency for the per-expert mode: experts go round-robin over `stream` and these side
  // streams, each expert's chain (gate/up GEMM, SwiGLU over its rows, down GEMM) on one stream, so one
  // expert's weight loads and tail overlap another's math. The side streams first wait for `fork`
  // (recorded on `stream` by the entry); `stream` waits for every side stream's `done` before the entry
  // returns, so to the caller the work is on `stream` alone. Ignored by the grouped mode.
  int num_side_streams = 0;
  ExpertFfnSideStream side[kExpertFfnMaxSideStreams];
  CUevent_st* fork = nullptr;
};
// Workspace layout (byte offsets, each 256-aligned):
//   [0, P)          pointer arrays of the grouped call: 6 x num_experts device pointers (P = 48 * E)
//   [P', P' + H13)  h13 [rows, 2 * inter] bf16 (H13 = rows * 2 * inter * 2 bytes)
size_t expert_ffn_bf16_workspace_bytes(int64_t rows, int64_t num_experts, int64_t inter);
KernelStatus expert_ffn_bf16(const ExpertFfnBf16Params& p, Stream stream);

struct ExpertFfnInt8Params {
  const uint16_t* x = nullptr;               // [rows, hidden] bf16 bits, grouped by expert
  const int32_t* expert_offsets = nullptr;   // DEVICE [num_experts + 1]
  const int8_t* w13 = nullptr;               // [num_experts, 2 * inter, hidden] int8 (gate rows, then up rows)
  const float* w13_scale = nullptr;          // [num_experts, 2 * inter]: w13 ~= q * scale per row
  const int8_t* w2 = nullptr;                // [num_experts, hidden, inter] int8
  const float* w2_scale = nullptr;           // [num_experts, hidden]
  uint16_t* y = nullptr;                     // [rows, hidden] bf16 bits
  int64_t max_rows = 0;             // host bound on expert_offsets[E] (the rows x and y hold)
  int64_t max_rows_per_expert = 0;  // host bound on any expert's rows; picks the token tile (8..64);
                                    //   0 = max_rows. A bound that is too low is still correct, slower.
  int64_t num_experts = 0;
  int64_t hidden = 0;
  int64_t inter = 0;
  void* workspace = nullptr;  // expert_ffn_int8_workspace_bytes(max_rows, inter) bytes
  size_t workspace_bytes = 0;
};
// Workspace layout: act [max_rows, inter] bf16.
size_t expert_ffn_int8_workspace_bytes(int64_t max_rows, int64_t inter);
KernelStatus expert_ffn_int8(const ExpertFfnInt8Params& p, Stream stream);

// bf16 experts with their sizes read on the device: the int8 path's two kernels loading bf16 weights (no
// scales), for decode sizes without the host round trip cuBLAS needs (expert_ffn_bf16). The same
// roundings as expert_ffn_bf16 (gate and up to bf16, the activation, the output); the same supported
// matrix and workspace as expert_ffn_int8 (expert_ffn_int8_workspace_bytes).
struct ExpertFfnBf16DeviceParams {
  const uint16_t* x = nullptr;              // [rows, hidden] bf16 bits, grouped by expert
  const int32_t* expert_offsets = nullptr;  // DEVICE [num_experts + 1]
  const uint16_t* w13 = nullptr;            // [num_experts, 2 * inter, hidden] bf16 (gate rows, then up rows)
  const uint16_t* w2 = nullptr;             // [num_experts, hidden, inter] bf16
  uint16_t* y = nullptr;                    // [rows, hidden] bf16 bits
  int64_t max_rows = 0;                     // as ExpertFfnInt8Params
  int64_t max_rows_per_expert = 0;
  int64_t num_experts = 0;
  int64_t hidden = 0;
  int64_t inter = 0;
  void* workspace = nullptr;  // expert_ffn_int8_workspace_bytes(max_rows, inter) bytes (expert_ffn_bf16_tiles:
  size_t workspace_bytes = 0;  // expert_ffn_bf16_tiles_workspace_bytes(max_rows, inter))
};
KernelStatus expert_ffn_bf16_device(const ExpertFfnBf16DeviceParams& p, Stream stream);

// The same contract at prefill sizes, on Hopper tensor cores (kernels/cuda/expert_ffn_sm90.cu): two persistent
// grouped GEMMs (TMA + wgmma; tiles of 128 weight rows x up to 256 of one expert's tokens, every expert's in
// one work list; the SwiGLU fused into the gate/up GEMM's epilogue), sizes read on the device, no host round
// trip. Same roundings and supported matrix as expert_ffn_bf16_device (max_rows_per_expert unused); its own
// workspace size (act, then the launches' tile counters, which the entry zeroes on the stream); refuses a GPU
// other than sm_90 and a build without sm_90a code. Offsets that go backwards are read as empty experts (an
// expert starts where the previous one ended at the latest). Which sizes it wins at (the model uses it up to
// 64 rows per expert): bench/gpu/NOTES.md.
size_t expert_ffn_bf16_tiles_workspace_bytes(int64_t max_rows, int64_t inter);
KernelStatus expert_ffn_bf16_tiles(const ExpertFfnBf16DeviceParams& p, Stream stream);

// Row-wise int8 quantiser (bit-exact with quantize_rows_int8_cpu on the bf16 values):
// scale[r] = max_c |w[r, c]| / 127 (1 for an all-zero row), q = round-half-away(w / scale) in [-127, 127].
struct QuantizeRowsInt8Params {
  const uint16_t* w = nullptr;  // [rows, cols] bf16 bits
  int8_t* q = nullptr;          // [rows, cols]
  float* scale = nullptr;       // [rows]
  int64_t rows = 0;
  int64_t cols = 0;
};
KernelStatus quantize_rows_int8(const QuantizeRowsInt8Params& p, Stream stream);
// The inverse for the bf16 path (prefill with int8-stored experts): w[r, c] = bf16(q[r, c] * scale[r]), the
// product rounded once (bit-exact with dequantize_rows_int8_cpu rounded to bf16).
KernelStatus dequantize_rows_int8(const int8_t* q, const float* scale, int64_t rows, int64_t cols, uint16_t* w,
                                  Stream stream);

}  // namespace fulgur::kernels::cuda
