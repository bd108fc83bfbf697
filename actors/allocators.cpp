#include "actors/allocators.h"

#include <string>

namespace fulgur {

SlotAllocator::SlotAllocator(int64_t capacity) : in_use_(static_cast<size_t>(capacity > 0 ? capacity : 0), false) {}

std::optional<int32_t> SlotAllocator::allocate() {
  if (used_ == capacity()) return std::nullopt;
  for (size_t i = 0; i < in_use_.size(); ++i) {
    if (!in_use_[i]) {
      in_use_[i] = true;
      ++used_;
      return static_cast<int32_t>(i);
    }
  }
  return std::nullopt;
}

Status SlotAllocator::free(int32_t slot) {
  if (slot < 0 || slot >= capacity() || !in_use_[slot]) {
    return Status(Errc::invalid_argument, "free of slot " + std::to_string(slot) + " that is not allocated");
  }
  in_use_[slot] = false;
  --used_;
  return Status::ok();
}

BlockAllocator::BlockAllocator(int64_t num_blocks, int64_t page_size)
    : slots_(num_blocks), page_size_(page_size > 0 ? page_size : 1) {}

std::optional<std::vector<int32_t>> BlockAllocator::allocate_for_tokens(int64_t num_tokens) {
  const int64_t n = blocks_for_tokens(num_tokens);
  if (n > slots_.available()) return std::nullopt;
  std::vector<int32_t> blocks;
  blocks.reserve(n);
  for (int64_t i = 0; i < n; ++i) blocks.push_back(*slots_.allocate());
  return blocks;
}

Status BlockAllocator::free(const std::vector<int32_t>& blocks) {
  for (int32_t b : blocks) FULGUR_TRY(slots_.free(b));
  return Status::ok();
}

}  // namespace fulgur
