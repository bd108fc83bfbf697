// expert_ffn_bf16_tiles (kernels/cuda/expert_ffn.h): the bf16 expert FFN at prefill sizes as two
// persistent, warp-specialised grouped GEMMs on Hopper tensor cores, sizes read on the device.
//
// One launch per GEMM; the tiles of every expert form one work list, so an expert with a few hundred rows
// no longer leaves most SMs idle between short GEMMs (the per-expert cuBLAS loop's loss at 4k tokens).
// A tile is 128 weight rows x up to 256 of one expert's tokens: weights are the wgmma M side, tokens the N
// side, N rounded up per tile to 16, 32, 48, 64, 96, ..., 256 (Wgmma<N>), so an expert's last, partial chunk of
// tokens wastes < 16 (small chunks) or < 32 rows of work instead of most of a 128-row tile.
//   gate/up: the 128 weight rows are 64 gate rows and the same 64 up rows, interleaved in groups of 8 (a
//            5-D tensor map does it in one TMA load), so a thread's accumulators for row r (gate) and r + 8
//            (up) are the same act column: act[t, c] = bf16(silu(bf16(gate)) * bf16(up)) in the epilogue,
//            no [rows, 2 inter] round trip through memory.
//   down:    y[t, h] = bf16(act[t] . w2[e][h]), 128 h per tile.
// The roundings are expert_ffn_bf16's (gate and up to bf16, the activation, the output).
//
// Block: 3 warpgroups. Warpgroup 0 is the producer (one thread issues the TMA loads of 128 x 64 weight
// tiles and N x 64 token tiles into a 4-stage ring, completion counted on mbarriers); warpgroups 1 and 2
// each own 64 of the 128 weight rows and run wgmma m64nNk16 over the stages, releasing a stage once the
// wgmma that read it has retired. The producer runs ahead into the next tile while the consumers store
// the previous one from registers.
//
// Work list: expert e has ceil(rows_e / 256) token chunks x (weight rows / 128) weight tiles, ordered as the
// schedule below says. A chunk that runs past its expert reads the next expert's rows (or zeros past the
// tensor): computed, never stored.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <set>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/expert_ffn.h"
#include "kernels/cuda/sm90.cuh"
#include "kernels/cuda/tma.h"

namespace fulgur::kernels::cuda {
namespace {

constexpr int kBW = 128;  // weight rows per tile (two consumer warpgroups x 64)
constexpr int kBT = 256;  // tokens per chunk (the largest wgmma N)
constexpr int kBK = 64;   // one 128-byte swizzle row of bf16
constexpr int kTokBox = 16;  // token rows per small TMA box (N granularity)
constexpr int kStages = 4;
constexpr int kThreads = 384;
constexpr int kConsumerWarps = 8;
constexpr int kWBytes = kBW * kBK * 2;
constexpr int kStageBytes = kWBytes + kBT * kBK * 2;
constexpr int kMaxE = static_cast<int>(kExpertFfnMaxExperts);

constexpr int kMaxSegs = 640;   // segment capacity of the schedule (the host sizes segments to fit)

// Schedule (built by each CTA from the device offsets, identically): an expert's token chunks (256 rows)
// are cut into segments of <= seg_chunks consecutive chunks; segments run heavy first (by chunk count,
// capped at 8: the longest work starts first, the light segments fill the tail). A segment's tiles run
// weight-tile-major, its chunks fastest: the CTAs working at one moment share each weight tile (HBM once,
// then L2), and the segment's tokens (<= seg_chunks x 256 rows) stay in L2 across its weight tiles.
// Measured and dropped (bench/gpu/NOTES.md): packing light segments beside heavy ones (to overlap their
// weight streaming with the heavy ones' math) and L2 eviction hints; both were slower.
struct alignas(8) TileShared {
  uint64_t full[kStages];
  uint64_t empty[kStages];
  int row_begin[kMaxE + 1];     // expert offsets clamped to [0, max_rows]
  int seg_expert[kMaxSegs];     // segments, heavy first
  int seg_chunk0[kMaxSegs];     // first chunk (of its expert) of the segment
  int seg_chunks[kMaxSegs];
  int seg_tile0[kMaxSegs + 1];  // first work-list index of each segment
  int num_segs;
  int stage_tile[kStages];      // work-list index of the tile a stage holds (-1: no more tiles)
};
constexpr size_t kSmemBytes = 1024 + size_t(kStages) * kStageBytes + sizeof(TileShared);
static_assert(kSmemBytes <= 227 * 1024, "shared memory above the sm_90 limit");

struct Tile {
  int expert;
  int tok0;    // first token row (global row of x / act / y)
  int tokens;  // valid tokens in this chunk, 1..256
  int wt;      // weight tile index
};

// One thread. Returns the work list's length, or -1 when the segments do not fit (the host sizes
// seg_chunks so that they do).
__device__ int build_schedule(TileShared& s, int E, int w_tiles, int seg_chunks) {
  constexpr int kKeys = 8;
  int count[kKeys + 1] = {};
  int n_segs = 0;
  for (int e = 0; e < E; ++e) {
    const int chunks = (max(s.row_begin[e + 1] - s.row_begin[e], 0) + kBT - 1) / kBT;
    for (int c0 = 0; c0 < chunks; c0 += seg_chunks) ++count[min(min(chunks - c0, seg_chunks), kKeys)], ++n_segs;
  }
  if (n_segs > kMaxSegs) return -1;
  int pos[kKeys + 1];
  for (int k = kKeys, p = 0; k >= 1; --k) pos[k] = p, p += count[k];
  for (int e = 0; e < E; ++e) {
    const int chunks = (max(s.row_begin[e + 1] - s.row_begin[e], 0) + kBT - 1) / kBT;
    for (int c0 = 0; c0 < chunks; c0 += seg_chunks) {
      const int n = min(chunks - c0, seg_chunks);
      const int i = pos[min(n, kKeys)]++;
      s.seg_expert[i] = e, s.seg_chunk0[i] = c0, s.seg_chunks[i] = n;
    }
  }
  int tiles = 0;
  for (int i = 0; i < n_segs; ++i) s.seg_tile0[i] = tiles, tiles += s.seg_chunks[i] * w_tiles;
  s.seg_tile0[n_segs] = tiles, s.num_segs = n_segs;
  return tiles;
}

__device__ __forceinline__ Tile decode_tile(const TileShared& s, int t) {
  int lo = 0, hi = s.num_segs - 1;  // the segment holding t
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (s.seg_tile0[mid] <= t) lo = mid; else hi = mid - 1;
  }
  const int n = s.seg_chunks[lo];
  const int local = t - s.seg_tile0[lo];
  const int e = s.seg_expert[lo];
  const int chunk = s.seg_chunk0[lo] + local % n;
  const int rows = s.row_begin[e + 1] - s.row_begin[e];
  return {e, s.row_begin[e] + chunk * kBT, min(kBT, rows - chunk * kBT), local / n};
}

// The tile widths compiled (Wgmma<N>): 16, 32, 48, 64, then steps of 32 to 256. A chunk of `tokens` runs as
// the narrowest that holds it. (Steps of 16 throughout made ptxas spill in the consumer: 16 variants inlined.)
__host__ __device__ constexpr int next_width(int n) { return n < 64 ? n + 16 : n + 32; }
__device__ __forceinline__ int round_n(int tokens) {
  return tokens <= 64 ? (tokens + 15) / 16 * 16 : (tokens + 31) / 32 * 32;
}

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.f + expf(-g)) * u; }

struct Pipe {
  int st = 0;
  uint32_t phase = 0;
  __device__ __forceinline__ void next() {
    if (++st == kStages) st = 0, phase ^= 1;
  }
};

// One tile's main loop and epilogue for one consumer warpgroup (cw: its 64 weight rows), N tokens wide.
template <bool kGated, int N>
__device__ __forceinline__ void consume_tile(TileShared& s, uint8_t* stages, Pipe& pipe,
                                             const Tile& tile, int k_blocks, int cw, int n_out,
                                             __nv_bfloat16* __restrict__ out) {
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  float d[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) d[i] = 0.f;  // defined on entry: no variant's registers stay live past it
  int prev = 0;
  for (int kb = 0; kb < k_blocks; ++kb) {
    if (kb > 0) sm90::mbar_wait(&s.full[pipe.st], pipe.phase);  // the caller waited for the first
    const uint8_t* w = stages + size_t(pipe.st) * kStageBytes;
    const uint64_t dw = sm90::desc_k128(w + cw * 64 * 128);
    const uint64_t dt = sm90::desc_k128(w + kWBytes);
    sm90::fence_operands(d);
    sm90::wgmma_fence();
#pragma unroll
    for (int k = 0; k < kBK / 16; ++k) {
      sm90::Wgmma<N>::mma(d, sm90::desc_advance_k(dw, 16 * k), sm90::desc_advance_k(dt, 16 * k), (kb | k) != 0 ? 1 : 0);
    }
    sm90::wgmma_commit();
    sm90::fence_operands(d);
    if (kb > 0) {
      sm90::wgmma_wait<1>();  // the previous stage's group has retired: its buffers may be refilled
      if (lane == 0) sm90::mbar_arrive(&s.empty[prev]);
    }
    prev = pipe.st;
    pipe.next();
  }
  sm90::wgmma_wait<0>();
  sm90::fence_operands(d);
  if (lane == 0) sm90::mbar_arrive(&s.empty[prev]);

  // Epilogue: accumulator row = weight row, column = token (see wgmma_gen.cuh for the fragment).
  const int q2 = 2 * (lane % 4);
  if constexpr (kGated) {
    // Rows 16 w + l / 4 (gate) and + 8 (up) are act column 32 cw + 8 w + l / 4 of the tile's 64.
    const int c = tile.wt * 64 + 32 * cw + 8 * warp + lane / 4;
#pragma unroll
    for (int j = 0; j < N / 8; ++j) {
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        const int t = 8 * j + q2 + b;
        if (t >= tile.tokens) continue;
        const float g = __bfloat162float(__float2bfloat16_rn(d[4 * j + b]));
        const float u = __bfloat162float(__float2bfloat16_rn(d[4 * j + 2 + b]));
        out[int64_t(tile.tok0 + t) * n_out + c] = __float2bfloat16_rn(silu_mul(g, u));
      }
    }
  } else {
    const int h = tile.wt * kBW + 64 * cw + 16 * warp + lane / 4;
#pragma unroll
    for (int j = 0; j < N / 8; ++j) {
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        const int t = 8 * j + q2 + b;
        if (t >= tile.tokens) continue;
        __nv_bfloat16* row = out + int64_t(tile.tok0 + t) * n_out;
        if (h < n_out) row[h] = __float2bfloat16_rn(d[4 * j + b]);
        if (h + 8 < n_out) row[h + 8] = __float2bfloat16_rn(d[4 * j + 2 + b]);
      }
    }
  }
}

template <bool kGated, int N = kTokBox>
__device__ __forceinline__ void consume_dispatch(int n, TileShared& s, uint8_t* stages, Pipe& pipe, const Tile& tile,
                                                 int k_blocks, int cw, int n_out, __nv_bfloat16* out) {
  if constexpr (N <= kBT) {
    if (n == N) return consume_tile<kGated, N>(s, stages, pipe, tile, k_blocks, cw, n_out, out);
    consume_dispatch<kGated, next_width(N)>(n, s, stages, pipe, tile, k_blocks, cw, n_out, out);
  }
}

// map_w: gate/up: 5-D (k, 8 rows, gate|up, row group of 8, expert), box {64, 8, 2, 8, 1} = 128 rows;
//        down: 3-D (k, h, expert), box {64, 128, 1}.
// map_t_big / map_t_small: 2-D (k, token row), boxes {64, 256} / {64, 16}.
// Weight tiles: gate/up inter / 64 (64 act columns each), down ceil(hidden / 128).
template <bool kGated>
__global__ void __launch_bounds__(kThreads, 1)
    expert_gemm_sm90_kernel(const __grid_constant__ CUtensorMap map_w, const __grid_constant__ CUtensorMap map_t_big,
                            const __grid_constant__ CUtensorMap map_t_small, const int32_t* __restrict__ offsets, int E,
                            int max_rows, int K, int n_out, int seg_chunks, int* __restrict__ next_tile,
                            __nv_bfloat16* __restrict__ out) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* stages = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  TileShared& s = *reinterpret_cast<TileShared*>(stages + size_t(kStages) * kStageBytes);
  const int w_tiles = kGated ? n_out / 64 : (n_out + kBW - 1) / kBW;
  const int k_blocks = K / kBK;

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __trap();  // compiled for a GPU without wgmma / TMA; the host refuses to launch this image (launch_gemm)
#else
  for (int e = threadIdx.x; e <= E; e += kThreads) s.row_begin[e] = min(max(offsets[e], 0), max_rows);
  __syncthreads();
  if (threadIdx.x == 0) {
    // Offsets that go backwards are read as empty experts, never as rows counted twice: the work list then
    // covers at most max_rows rows, which the host's segment sizing assumes.
    for (int e = 1; e <= E; ++e) s.row_begin[e] = max(s.row_begin[e], s.row_begin[e - 1]);
    sm90::prefetch_tensor_map(&map_w);
    sm90::prefetch_tensor_map(&map_t_big);
    sm90::prefetch_tensor_map(&map_t_small);
    for (int i = 0; i < kStages; ++i) sm90::mbar_init(&s.full[i], 1), sm90::mbar_init(&s.empty[i], kConsumerWarps);
    sm90::fence_barrier_init();
  }
  __syncthreads();
  __shared__ int total_tiles;
  if (threadIdx.x == 0) total_tiles = build_schedule(s, E, w_tiles, seg_chunks);
  __syncthreads();
  const int total = total_tiles;
  if (total < 0) __trap();  // the host sizes segments so that they fit: a bug, not an input
  const int wg = threadIdx.x / 128;

  if (wg == 0) {  // producer
    sm90::regs_dealloc<40>();
    if (threadIdx.x != 0) return;
    // Tiles are handed out in work-list order: the first one per CTA by index, the rest by a counter (next_tile,
    // zeroed on the stream before the launch; tiles differ up to ~4x in cost, and the static round-robin this
    // replaced left CTAs idle at the end: 64k zipf 79 -> 86 % of dense). The tile of each stage travels to the
    // consumers in stage_tile, published by the full barrier's arrive; -1 tells them to stop.
    Pipe pipe;
    for (int t = blockIdx.x; t < total; t = gridDim.x + atomicAdd(next_tile, 1)) {
      const Tile tile = decode_tile(s, t);
      const int n = round_n(tile.tokens);
      for (int kb = 0; kb < k_blocks; ++kb) {
        sm90::mbar_wait(&s.empty[pipe.st], pipe.phase ^ 1);
        uint8_t* w = stages + size_t(pipe.st) * kStageBytes;
        uint8_t* tok = w + kWBytes;
        uint64_t* bar = &s.full[pipe.st];
        s.stage_tile[pipe.st] = t;
        sm90::mbar_arrive_expect_tx(bar, kWBytes + n * kBK * 2);
        if constexpr (kGated) {
          const int coords[5] = {kb * kBK, 0, 0, tile.wt * 8, tile.expert};
          sm90::tma_load_5d(w, &map_w, bar, coords);
        } else {
          sm90::tma_load_3d(w, &map_w, bar, kb * kBK, tile.wt * kBW, tile.expert);
        }
        if (n == kBT) {
          sm90::tma_load_2d(tok, &map_t_big, bar, kb * kBK, tile.tok0);
        } else {
          for (int i = 0; i < n; i += kTokBox) sm90::tma_load_2d(tok + i * kBK * 2, &map_t_small, bar, kb * kBK, tile.tok0 + i);
        }
        pipe.next();
      }
    }
    sm90::mbar_wait(&s.empty[pipe.st], pipe.phase ^ 1);
    s.stage_tile[pipe.st] = -1;
    sm90::mbar_arrive(&s.full[pipe.st]);
    return;
  }

  sm90::regs_alloc<232>();
  const int cw = wg - 1;
  Pipe pipe;
  for (;;) {
    sm90::mbar_wait(&s.full[pipe.st], pipe.phase);  // the tile's first stage (consume_tile does not wait again)
    const int t = s.stage_tile[pipe.st];
    if (t < 0) break;
    const Tile tile = decode_tile(s, t);
    consume_dispatch<kGated>(round_n(tile.tokens), s, stages, pipe, tile, k_blocks, cw, n_out, out);
  }
#endif
}

template <bool kGated>
KernelStatus launch_gemm(const CUtensorMap& w, const CUtensorMap& t_big, const CUtensorMap& t_small,
                         const int32_t* offsets, int E, int max_rows, int K, int n_out, __nv_bfloat16* out, int sms,
                         int* next_tile, Stream stream) {
  // The shared-memory opt-in is per device: once for each device this process launches on.
  static std::mutex mu;
  static std::set<int> ready;
  int dev = 0;
  FULGUR_CUDA_CHECK(cudaGetDevice(&dev));
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!ready.count(dev)) {
      cudaFuncAttributes fa{};
      FULGUR_CUDA_CHECK(cudaFuncGetAttributes(&fa, expert_gemm_sm90_kernel<kGated>));
      if (fa.binaryVersion != 90) {
        return kernel_error(
            "expert_ffn_bf16_tiles: this build has no sm_90a code for the kernel (build with CMAKE_CUDA_ARCHITECTURES "
            "including 90a)");
      }
      if (cudaFuncSetAttribute(expert_gemm_sm90_kernel<kGated>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(kSmemBytes)) != cudaSuccess) {
        (void)cudaGetLastError();
        return kernel_error("expert_ffn_bf16_tiles: the kernel's shared memory cannot be set");
      }
      ready.insert(dev);
    }
  }
  const int64_t w_tiles = kGated ? n_out / 64 : (n_out + kBW - 1) / kBW;
  const int64_t bound = ((int64_t(max_rows) + kBT - 1) / kBT + E) * w_tiles;  // >= the work list's length
  if (bound > INT32_MAX) return kernel_error("expert_ffn_bf16_tiles: too many tiles for one launch (max_rows x hidden)");
  const int grid = static_cast<int>(std::min<int64_t>(sms, bound));
  // Segments of >= 8 chunks, more where needed to fit kMaxSegs: there are at most chunks / seg + E of them,
  // and at most ceil(max_rows / 256) + E chunks.
  const int64_t chunk_bound = (int64_t(max_rows) + kBT - 1) / kBT + E;
  const int seg_chunks = static_cast<int>(std::max<int64_t>(8, (chunk_bound + (kMaxSegs - E) - 1) / (kMaxSegs - E)));
  expert_gemm_sm90_kernel<kGated><<<grid, kThreads, kSmemBytes, stream>>>(
      w, t_big, t_small, offsets, E, max_rows, K, n_out, seg_chunks, next_tile, out);
  FULGUR_CUDA_CHECK(cudaGetLastError());
  return kernel_ok();
}

}  // namespace

size_t expert_ffn_bf16_tiles_workspace_bytes(int64_t max_rows, int64_t inter) {
  return (size_t(max_rows) * size_t(inter) * 2 + 255) / 256 * 256 + 256;
}

KernelStatus expert_ffn_bf16_tiles(const ExpertFfnBf16DeviceParams& p, Stream stream) {
  if (p.num_experts < 1 || p.num_experts > kExpertFfnMaxExperts) {
    return kernel_error("expert_ffn_bf16_tiles: num_experts out of [1, 256]");
  }
  if (p.hidden < 64 || p.hidden % 64 != 0 || p.hidden > (1 << 24)) {
    return kernel_error("expert_ffn_bf16_tiles: hidden must be a positive multiple of 64");
  }
  if (p.inter < 64 || p.inter % 64 != 0 || p.inter > (1 << 24)) {
    return kernel_error("expert_ffn_bf16_tiles: inter must be a positive multiple of 64");
  }
  if (p.max_rows < 0 || p.max_rows > INT32_MAX - kBT) return kernel_error("expert_ffn_bf16_tiles: max_rows out of range");
  if (p.max_rows == 0) return kernel_ok();
  if (p.x == nullptr || p.expert_offsets == nullptr || p.w13 == nullptr || p.w2 == nullptr || p.y == nullptr) {
    return kernel_error("expert_ffn_bf16_tiles: null pointer");
  }
  for (const void* ptr : {static_cast<const void*>(p.x), static_cast<const void*>(p.w13), static_cast<const void*>(p.w2),
                          static_cast<const void*>(p.y)}) {
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return kernel_error("expert_ffn_bf16_tiles: x, w13, w2 and y must be 16-byte aligned");
  }
  if (p.workspace == nullptr || p.workspace_bytes < expert_ffn_bf16_tiles_workspace_bytes(p.max_rows, p.inter) ||
      reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0) {
    return kernel_error("expert_ffn_bf16_tiles: workspace missing, too small or not 16-byte aligned");
  }
  int dev = 0, major = 0, sms = 0;
  FULGUR_CUDA_CHECK(cudaGetDevice(&dev));
  FULGUR_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  FULGUR_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  if (major != 9) return kernel_error("expert_ffn_bf16_tiles: needs a Hopper (sm_90) GPU");
  const int E = static_cast<int>(p.num_experts), H = static_cast<int>(p.hidden), I = static_cast<int>(p.inter);
  const int R = static_cast<int>(p.max_rows);
  auto* act = static_cast<__nv_bfloat16*>(p.workspace);

  CUtensorMap x_big, x_small, act_big, act_small, w13_map, w2_map;
  auto token_maps = [&](const void* base, int cols, CUtensorMap* big, CUtensorMap* small) -> KernelStatus {
    const uint64_t dims[2] = {uint64_t(cols), uint64_t(R)}, strides[1] = {uint64_t(cols) * 2};
    const uint32_t box_big[2] = {kBK, kBT}, box_small[2] = {kBK, kTokBox};
    if (auto s = make_tensor_map_bf16_sw128(big, base, 2, dims, strides, box_big); !s.ok()) return s;
    return make_tensor_map_bf16_sw128(small, base, 2, dims, strides, box_small);
  };
  if (auto s = token_maps(p.x, H, &x_big, &x_small); !s.ok()) return s;
  if (auto s = token_maps(act, I, &act_big, &act_small); !s.ok()) return s;
  {
    // w13 [E][gate|up][I][H] viewed as (k, row in group of 8, gate|up, group of 8, expert).
    const uint64_t dims[5] = {uint64_t(H), 8, 2, uint64_t(I) / 8, uint64_t(E)};
    const uint64_t strides[4] = {uint64_t(H) * 2, uint64_t(I) * H * 2, uint64_t(8) * H * 2, uint64_t(2) * I * H * 2};
    const uint32_t box[5] = {kBK, 8, 2, 8, 1};
    if (auto s = make_tensor_map_bf16_sw128(&w13_map, p.w13, 5, dims, strides, box); !s.ok()) return s;
  }
  {
    const uint64_t dims[3] = {uint64_t(I), uint64_t(H), uint64_t(E)};
    const uint64_t strides[2] = {uint64_t(I) * 2, uint64_t(H) * I * 2};
    const uint32_t box[3] = {kBK, kBW, 1};
    if (auto s = make_tensor_map_bf16_sw128(&w2_map, p.w2, 3, dims, strides, box); !s.ok()) return s;
  }
  // The two launches' tile counters, after act.
  int* counters = reinterpret_cast<int*>(static_cast<char*>(p.workspace) + size_t(R) * I * 2);
  FULGUR_CUDA_CHECK(cudaMemsetAsync(counters, 0, 2 * sizeof(int), stream));
  if (auto s = launch_gemm<true>(w13_map, x_big, x_small, p.expert_offsets, E, R, H, I, act, sms, counters, stream);
      !s.ok()) {
    return s;
  }
  return launch_gemm<false>(w2_map, act_big, act_small, p.expert_offsets, E, R, I, H,
                            reinterpret_cast<__nv_bfloat16*>(p.y), sms, counters + 1, stream);
}

}  // namespace fulgur::kernels::cuda
