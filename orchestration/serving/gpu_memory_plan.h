// Sizing the serving state of one GPU from its free memory: how many softmax KV-cache pages fit beside the
// weights (already on the device), the lightning state slots and the working memory of the steps.
#pragma once

#include <cstddef>
#include <cstdint>

#include "devices/status.h"

namespace fulgur {

struct GpuMemoryAsk {
  size_t free_bytes = 0;   // the device's, after the weights are in place
  size_t total_bytes = 0;
  size_t slot_bytes = 0;   // one sequence's lightning state over all layers
  size_t page_bytes = 0;   // one KV page (K and V, all softmax layers; 0 when the model has none)
  int64_t slots = 0;
  int64_t page_size = 0;     // tokens per page
  int64_t max_context = 0;   // the context wanted for every slot
  bool context_asked = false;  // max_context came from the user (--max-context): never lowered; an error when
                               // not even one sequence can reach it
  size_t kv_cache_limit = 0;   // at most this many bytes of pages (--kv-cache-gib); 0: no limit
};

struct GpuMemoryPlan {
  int64_t kv_blocks = 0;    // KV-cache pages of page_size tokens (>= 1)
  int64_t max_context = 0;  // <= the asked one: what every slot can hold at once
  size_t reserve_bytes = 0;  // left free for the steps' buffers (caching allocator)
  size_t state_bytes = 0;    // slots x slot_bytes
  size_t kv_bytes = 0;       // kv_blocks x page_bytes
};

// Reserve: 2 GiB + 2 % of the device for the steps' buffers. Pages: every slot at max_context if that fits
// (and the limit allows), else as many as fit, and max_context lowered to one slot's share of them (pages /
// slots, at least one page): a longer request would hold the pages of the other slots (the scheduler reserves a
// request's whole length), so the API refuses it instead. An asked-for context is kept while one sequence can
// reach it. An error names the sizes when not even the slots (or one page) fit, or an asked-for context does not.
Expected<GpuMemoryPlan> plan_gpu_state(const GpuMemoryAsk& ask);

}  // namespace fulgur
