// The per-step batch description and the per-sequence state pools that the layers read and write.
//
// A step runs a packed (varlen) batch: sequence b owns tokens [cu_seqlens[b], cu_seqlens[b+1]) of
// the step; its lightning state lives in slot state_slots[b] of every lightning layer's pool and
// its softmax KV in the pages listed in its block-table row. The same layout serves a one-sequence
// CLI run, chunked prefill and (later) the scheduler's mixed prefill/decode steps.
#pragma once

#include <cstdint>
#include <vector>

#include "devices/tensor.h"
#include "protocols/model_config.h"

namespace fulgur {

struct BatchLayout {
  int64_t num_tokens = 0;
  std::vector<int32_t> cu_seqlens;       // [num_seqs + 1]
  std::vector<int32_t> positions;        // [num_tokens] absolute position in its sequence
  std::vector<int32_t> state_slots;      // [num_seqs] lightning state slot
  std::vector<int32_t> context_lens;     // [num_seqs] cached tokens after this step (past + new)
  std::vector<int32_t> block_tables;     // [num_seqs, max_blocks_per_seq] KV page ids
  int64_t max_blocks_per_seq = 0;
  std::vector<int64_t> kv_slot_mapping;  // [num_tokens] page * page_size + offset for each new token

  int64_t num_seqs() const { return static_cast<int64_t>(state_slots.size()); }
  // True when every sequence contributes exactly one token after earlier ones: the decode path.
  bool is_decode() const;
  // Consistency of all the vectors above with each other and with the pools' sizes.
  Status validate(int64_t num_slots, int64_t num_blocks, int64_t page_size) const;
};

// num_seqs sequences of `len` new tokens after `past` cached ones each, sequence s in state slot s and
// owning KV pages [s * pages_per_seq, (s + 1) * pages_per_seq) of page_size tokens (benchmarks, tests,
// single sequences).
BatchLayout uniform_batch_layout(int64_t num_seqs, int64_t past, int64_t len, int64_t pages_per_seq, int64_t page_size);

// State of every layer for up to num_slots sequences.
struct StatePools {
  int64_t num_slots = 0;
  int64_t num_blocks = 0;
  int64_t page_size = 0;
  std::vector<Tensor> lightning;  // [layer] -> [num_slots, H, D, D] f32 (lightning layers only)
  std::vector<Tensor> k_cache;    // [layer] -> [num_blocks, page_size, KV, D] f32 (softmax layers only)
  std::vector<Tensor> v_cache;

  static StatePools create(const ModelConfig& cfg, int64_t num_slots, int64_t num_blocks, int64_t page_size);
  void reset_slot(int64_t slot);  // zero a lightning slot (a sequence starts)
};

}  // namespace fulgur
