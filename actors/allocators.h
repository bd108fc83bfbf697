// Allocators of the per-sequence serving state: lightning state slots and softmax KV pages.
// Plain C++ (no CAF); the scheduler actor owns one of each. Both are bounded by construction
// and hand out the lowest free ids first, so runs are reproducible.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "devices/status.h"

namespace fulgur {

// Fixed pool of state slots [0, capacity).
class SlotAllocator {
 public:
  explicit SlotAllocator(int64_t capacity);
  std::optional<int32_t> allocate();  // nullopt when all are in use
  Status free(int32_t slot);          // invalid_argument for an id not currently allocated
  int64_t capacity() const { return static_cast<int64_t>(in_use_.size()); }
  int64_t used() const { return used_; }
  int64_t available() const { return capacity() - used_; }

 private:
  std::vector<bool> in_use_;
  int64_t used_ = 0;
};

// Fixed pool of KV pages; a sequence takes all the pages it needs at once or none.
class BlockAllocator {
 public:
  BlockAllocator(int64_t num_blocks, int64_t page_size);
  // Pages for `num_tokens` tokens (ceil(num_tokens / page_size)); nullopt when not enough are free.
  std::optional<std::vector<int32_t>> allocate_for_tokens(int64_t num_tokens);
  Status free(const std::vector<int32_t>& blocks);
  int64_t blocks_for_tokens(int64_t num_tokens) const { return (num_tokens + page_size_ - 1) / page_size_; }
  int64_t capacity() const { return slots_.capacity(); }
  int64_t used() const { return slots_.used(); }
  int64_t available() const { return slots_.available(); }
  int64_t page_size() const { return page_size_; }

 private:
  SlotAllocator slots_;
  int64_t page_size_;
};

}  // namespace fulgur
