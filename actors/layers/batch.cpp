#include "actors/layers/batch.h"

#include <algorithm>
#include <string>
#include <vector>

namespace fulgur {

bool BatchLayout::is_decode() const {
  for (int64_t b = 0; b < num_seqs(); ++b) {
    if (cu_seqlens[b + 1] - cu_seqlens[b] != 1 || context_lens[b] < 2) return false;
  }
  return num_seqs() > 0;
}

Status BatchLayout::validate(int64_t num_slots, int64_t num_blocks, int64_t page_size) const {
  const int64_t n = num_seqs();
  auto bad = [](const std::string& what) { return Status(Errc::invalid_argument, "batch layout: " + what); };
  if (static_cast<int64_t>(cu_seqlens.size()) != n + 1 || cu_seqlens[0] != 0 || cu_seqlens[n] != num_tokens) {
    return bad("cu_seqlens must have num_seqs+1 entries from 0 to num_tokens");
  }
  if (static_cast<int64_t>(positions.size()) != num_tokens ||
      static_cast<int64_t>(kv_slot_mapping.size()) != num_tokens) {
    return bad("positions and kv_slot_mapping need one entry per token");
  }
  if (static_cast<int64_t>(context_lens.size()) != n ||
      static_cast<int64_t>(block_tables.size()) != n * max_blocks_per_seq) {
    return bad("context_lens / block_tables sizes do not match num_seqs");
  }
  // Two sequences of one step in one state slot would race on it (and read each other's state).
  std::vector<int32_t> slots(state_slots.begin(), state_slots.end());
  std::sort(slots.begin(), slots.end());
  if (std::adjacent_find(slots.begin(), slots.end()) != slots.end()) return bad("a state slot appears twice");
  for (int64_t b = 0; b < n; ++b) {
    const int64_t len = cu_seqlens[b + 1] - cu_seqlens[b];
    if (len < 0) return bad("cu_seqlens must not decrease");
    if (state_slots[b] < 0 || state_slots[b] >= num_slots) return bad("state slot out of range");
    if (context_lens[b] < len) return bad("context shorter than the step's tokens");
    if ((context_lens[b] + page_size - 1) / page_size > max_blocks_per_seq) return bad("block table too short");
    // The attention kernels read every page of the context, not only the new tokens' pages.
    for (int64_t p = 0; p < (context_lens[b] + page_size - 1) / page_size; ++p) {
      const int64_t page = block_tables[b * max_blocks_per_seq + p];
      if (page < 0 || page >= num_blocks) return bad("KV page id out of range");
    }
    for (int64_t i = 0; i < len; ++i) {
      const int64_t t = cu_seqlens[b] + i;
      if (positions[t] != context_lens[b] - len + i) return bad("positions must continue the sequence's context");
      const int64_t page = block_tables[b * max_blocks_per_seq + positions[t] / page_size];
      if (page < 0 || page >= num_blocks) return bad("KV page id out of range");
      if (kv_slot_mapping[t] != page * page_size + positions[t] % page_size) {
        return bad("kv_slot_mapping disagrees with the block table");
      }
    }
  }
  return Status::ok();
}

StatePools StatePools::create(const ModelConfig& cfg, int64_t num_slots, int64_t num_blocks, int64_t page_size) {
  StatePools pools;
  pools.num_slots = num_slots;
  pools.num_blocks = num_blocks;
  pools.page_size = page_size;
  const int64_t L = cfg.num_hidden_layers, H = cfg.num_attention_heads, D = cfg.head_dim;
  pools.lightning.resize(L);
  pools.k_cache.resize(L);
  pools.v_cache.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    if (cfg.layer_types[l] == LayerKind::lightning) {
      pools.lightning[l] = Tensor::zeros(DType::f32, {num_slots, H, D, D});
    } else {
      pools.k_cache[l] = Tensor::zeros(DType::f32, {num_blocks, page_size, cfg.num_key_value_heads, D});
      pools.v_cache[l] = Tensor::zeros(DType::f32, {num_blocks, page_size, cfg.num_key_value_heads, D});
    }
  }
  return pools;
}

void StatePools::reset_slot(int64_t slot) {
  for (Tensor& t : lightning) {
    if (t.raw() == nullptr) continue;
    const int64_t per_slot = t.numel() / num_slots;
    std::fill_n(t.data<float>() + slot * per_slot, per_slot, 0.f);
  }
}

BatchLayout uniform_batch_layout(int64_t num_seqs, int64_t past, int64_t len, int64_t pages_per_seq, int64_t page_size) {
  BatchLayout b;
  b.num_tokens = num_seqs * len;
  b.max_blocks_per_seq = pages_per_seq;
  b.cu_seqlens.push_back(0);
  for (int64_t s = 0; s < num_seqs; ++s) {
    b.cu_seqlens.push_back(static_cast<int32_t>((s + 1) * len));
    b.state_slots.push_back(static_cast<int32_t>(s));
    b.context_lens.push_back(static_cast<int32_t>(past + len));
    for (int64_t i = 0; i < pages_per_seq; ++i) b.block_tables.push_back(static_cast<int32_t>(s * pages_per_seq + i));
    for (int64_t i = 0; i < len; ++i) {
      const int64_t pos = past + i;
      b.positions.push_back(static_cast<int32_t>(pos));
      b.kv_slot_mapping.push_back((s * pages_per_seq + pos / page_size) * page_size + pos % page_size);
    }
  }
  return b;
}

}  // namespace fulgur
