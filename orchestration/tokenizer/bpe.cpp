#include "orchestration/tokenizer/bpe.h"

#include <algorithm>

namespace fulgur::tokenizer_detail {

void MergeTable::reserve(size_t n) {
  size_t capacity = 16;
  while (capacity < 2 * n) capacity *= 2;
  if (capacity > slots_.size()) rehash(capacity);
}

void MergeTable::rehash(size_t capacity) {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(capacity, Slot{kEmpty, {}});
  mask_ = capacity - 1;
  shift_ = 64;
  for (size_t c = capacity; c > 1; c /= 2) --shift_;
  size_ = 0;
  for (const Slot& slot : old) {
    if (slot.key != kEmpty) {
      insert(static_cast<int32_t>(slot.key >> 32), static_cast<int32_t>(slot.key & 0xFFFFFFFFu), slot.rule);
    }
  }
}

void MergeTable::insert(int32_t left_id, int32_t right_id, MergeRule rule) {
  if (2 * (size_ + 1) > slots_.size()) rehash(std::max<size_t>(16, 2 * slots_.size()));
  const uint64_t k = key(left_id, right_id);
  for (size_t i = slot_of(k);; i = (i + 1) & mask_) {
    Slot& slot = slots_[i];
    if (slot.key == k) {
      slot.rule = rule;
      return;
    }
    if (slot.key == kEmpty) {
      slot = {k, rule};
      ++size_;
      return;
    }
  }
}

namespace {

using Symbol = BpeScratch::Symbol;
using Candidate = BpeScratch::Candidate;

// Heap order for std::push_heap / pop_heap (a max-heap on this "less"): the lowest rank, then
// the lowest position, comes out first.
bool later(const Candidate& a, const Candidate& b) {
  if (a.rank != b.rank) return a.rank > b.rank;
  return a.pos > b.pos;
}

void push_candidate(const MergeTable& merges, BpeScratch& s, int32_t pos) {
  if (pos < 0) return;
  const int32_t next = s.symbols[pos].next;
  if (next < 0) return;
  if (const MergeRule* rule = merges.find(s.symbols[pos].id, s.symbols[next].id)) {
    s.heap.push_back({rule->rank, pos, rule->merged_id});
    std::push_heap(s.heap.begin(), s.heap.end(), later);
  }
}

}  // namespace

void bpe_merge(const MergeTable& merges, std::vector<int32_t>& ids, BpeScratch& scratch) {
  if (ids.size() < 2) return;
  const auto n = static_cast<int32_t>(ids.size());
  auto& symbols = scratch.symbols;
  symbols.resize(ids.size());
  for (int32_t i = 0; i < n; ++i) symbols[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  scratch.heap.clear();
  for (int32_t i = 0; i + 1 < n; ++i) push_candidate(merges, scratch, i);

  while (!scratch.heap.empty()) {
    std::pop_heap(scratch.heap.begin(), scratch.heap.end(), later);
    const Candidate top = scratch.heap.back();
    scratch.heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const MergeRule* rule = merges.find(left.id, right.id);
    if (rule == nullptr || rule->merged_id != top.merged_id) continue;  // stale entry
    left.id = top.merged_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    push_candidate(merges, scratch, left.prev);
    push_candidate(merges, scratch, top.pos);
  }

  ids.clear();
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);  // symbol 0 never dies
}

}  // namespace fulgur::tokenizer_detail
