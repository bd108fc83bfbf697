// CPU lightning attention: blocked prefill with BLAS for the three block products, and the
// one-token decode recurrence. Both follow spec §3.4/§3.5 literally; every decay is exp(-s*n),
// n >= 0, computed per block, so nothing overflows whatever the sequence length.
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "kernels/lightning_attention.h"

namespace fulgur::kernels {

// Workspace layout (floats):
//   [0, B*B)               P: scores of one block, decayed and masked
//   [B*B, B*B + B*D)       Kd: keys of one block scaled by exp(-s (m-1-j))
//   [.., + B + 1)          decay table exp(-s n), n = 0..B
int64_t lightning_prefill_workspace_floats(int64_t block_size, int64_t head_dim) {
  return block_size * block_size + block_size * head_dim + block_size + 1;
}

namespace {

KernelStatus check_common(int64_t num_seqs, int64_t num_slots, int64_t num_heads, int64_t head_dim,
                          const int32_t* slot_idx) {
  if (num_seqs < 0 || num_slots <= 0 || num_heads <= 0 || head_dim <= 0) {
    return kernel_error("lightning: bad sizes");
  }
  for (int64_t b = 0; b < num_seqs; ++b) {
    if (slot_idx[b] < 0 || slot_idx[b] >= num_slots) return kernel_error("lightning: slot index out of range");
  }
  return kernel_ok();
}

// One block of m tokens for one head: inter, intra, then the state update.
void prefill_block(const float* q, const float* k, const float* v, int64_t ld_qkv, float* o, int64_t ld_o,
                   float* state, int64_t m, int64_t d, const float* decay, float* scores, float* k_decayed) {
  const int mi = static_cast<int>(m), di = static_cast<int>(d);
  // inter: O = diag(exp(-s (i+1))) (Q S)
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mi, di, di, 1.f, q, static_cast<int>(ld_qkv), state, di,
              0.f, o, static_cast<int>(ld_o));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = 0; c < d; ++c) o[i * ld_o + c] *= decay[i + 1];
  }
  // intra: O += ((Q K^T) . M) V with M[i][j] = exp(-s (i-j)) for j <= i
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mi, mi, di, 1.f, q, static_cast<int>(ld_qkv), k,
              static_cast<int>(ld_qkv), 0.f, scores, mi);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < m; ++j) scores[i * m + j] = j <= i ? scores[i * m + j] * decay[i - j] : 0.f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mi, di, mi, 1.f, scores, mi, v, static_cast<int>(ld_qkv),
              1.f, o, static_cast<int>(ld_o));
  // state: S = exp(-s m) S + sum_j exp(-s (m-1-j)) k_j^T v_j
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t c = 0; c < d; ++c) k_decayed[j * d + c] = k[j * ld_qkv + c] * decay[m - 1 - j];
  }
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, di, di, mi, 1.f, k_decayed, di, v, static_cast<int>(ld_qkv),
              decay[m], state, di);
}

}  // namespace

KernelStatus lightning_prefill_cpu(const LightningPrefillParams& p) {
  if (auto st = check_common(p.num_seqs, p.num_slots, p.num_heads, p.head_dim, p.slot_idx); !st.ok()) return st;
  if (p.block_size <= 0) return kernel_error("lightning prefill: block_size must be positive");
  if (p.cu_seqlens[0] != 0) return kernel_error("lightning prefill: cu_seqlens[0] must be 0");
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    if (p.cu_seqlens[b + 1] < p.cu_seqlens[b]) return kernel_error("lightning prefill: cu_seqlens not ascending");
  }
  const int64_t H = p.num_heads, D = p.head_dim, B = p.block_size;
  float* scores = p.workspace;
  float* k_decayed = scores + B * B;
  float* decay = k_decayed + B * D;
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    const int64_t t_begin = p.cu_seqlens[b], t_end = p.cu_seqlens[b + 1];
    for (int64_t h = 0; h < H; ++h) {
      const double s = p.slopes[h];
      for (int64_t n = 0; n <= B; ++n) decay[n] = static_cast<float>(std::exp(-s * static_cast<double>(n)));
      float* state = p.states + (static_cast<int64_t>(p.slot_idx[b]) * H + h) * D * D;
      for (int64_t t0 = t_begin; t0 < t_end; t0 += B) {
        const int64_t m = std::min(B, t_end - t0);
        const int64_t base = t0 * p.qkv_token_stride + h * p.qkv_head_stride;
        prefill_block(p.q + base, p.k + base, p.v + base, p.qkv_token_stride, p.out + (t0 * H + h) * D, H * D,
                      state, m, D, decay, scores, k_decayed);
      }
    }
  }
  return kernel_ok();
}

KernelStatus lightning_decode_cpu(const LightningDecodeParams& p) {
  if (auto st = check_common(p.num_seqs, p.num_slots, p.num_heads, p.head_dim, p.slot_idx); !st.ok()) return st;
  const int64_t H = p.num_heads, D = p.head_dim;
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const float decay = static_cast<float>(std::exp(-static_cast<double>(p.slopes[h])));
      const int64_t base = b * p.qkv_token_stride + h * p.qkv_head_stride;
      const float* q = p.q + base;
      const float* k = p.k + base;
      const float* v = p.v + base;
      float* state = p.states + (static_cast<int64_t>(p.slot_idx[b]) * H + h) * D * D;
      float* o = p.out + (b * H + h) * D;
      std::fill(o, o + D, 0.f);
      for (int64_t i = 0; i < D; ++i) {
        float* row = state + i * D;
        for (int64_t j = 0; j < D; ++j) {
          row[j] = decay * row[j] + k[i] * v[j];
          o[j] += q[i] * row[j];
        }
      }
    }
  }
  return kernel_ok();
}

}  // namespace fulgur::kernels
