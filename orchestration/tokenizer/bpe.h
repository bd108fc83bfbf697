// BPE merge step (internal to fulgur_tokenizer): the part of a BPE model that turns the ids of
// one pre-token's initial symbols into its final token ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fulgur::tokenizer_detail {

struct MergeRule {
  int32_t rank = 0;       // position in tokenizer.json `model.merges`; lower merges first
  int32_t merged_id = 0;  // vocab id of left + right
};

// (left id, right id) -> MergeRule: an open-addressing hash table (linear probing, power-of-two
// capacity, load <= 1/2), because this lookup is the inner loop of encoding.
class MergeTable {
 public:
  // A pair inserted twice keeps the later rule (HF builds its merge map the same way).
  void insert(int32_t left_id, int32_t right_id, MergeRule rule);
  const MergeRule* find(int32_t left_id, int32_t right_id) const {
    if (slots_.empty()) return nullptr;
    const uint64_t k = key(left_id, right_id);
    for (size_t i = slot_of(k);; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.key == k) return &slot.rule;
      if (slot.key == kEmpty) return nullptr;
    }
  }
  size_t size() const { return size_; }
  // Makes room for `n` rules without rehashing.
  void reserve(size_t n);

 private:
  struct Slot {
    uint64_t key;
    MergeRule rule;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are >= 0, so no pair has this key
  static uint64_t key(int32_t left_id, int32_t right_id) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left_id)) << 32) | static_cast<uint32_t>(right_id);
  }
  size_t slot_of(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_); }
  void rehash(size_t capacity);

  std::vector<Slot> slots_;  // [capacity]
  size_t size_ = 0;
  size_t mask_ = 0;
  int shift_ = 64;
};

// Buffers bpe_merge reuses across calls (one per encoding thread).
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
    bool alive;
  };
  struct Candidate {  // merge the symbol at `pos` with its next symbol
    int32_t rank;
    int32_t pos;
    int32_t merged_id;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;  // binary min-heap on (rank, pos)
};

// Merges `ids` (the initial symbols of one pre-token, in order) in place until no adjacent pair
// has a rule: always the lowest-rank pair next, the leftmost one among equal ranks — the same
// order as HF tokenizers' `Word::merge_all` without dropout, including its rule for stale
// queue entries (an entry still applies when the pair now at its position merges to the same
// id). O(n log n) in the number of symbols (linked list + binary heap), so a 100k-character
// whitespace run is fine.
void bpe_merge(const MergeTable& merges, std::vector<int32_t>& ids, BpeScratch& scratch);

}  // namespace fulgur::tokenizer_detail
