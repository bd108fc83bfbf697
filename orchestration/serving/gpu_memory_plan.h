// Sizing the serving state of one GPU from its free memory: how many softmax KV-cache pages fit beside the
// weights (already on the device), the lightning state slots and the working memory of the steps.
#pragma once

#include <cstddef>
#include <cstdint>

#include "devices/status.h"

namespace fulgur {

struct GpuMemoryPlan {
  int64_t kv_blocks = 0;    // KV-cache pages of page_size tokens (>= 1)
  int64_t max_context = 0;  // <= the asked one: the longest sequence the pages can hold
  size_t reserve_bytes = 0;  // left free for the steps' buffers (caching allocator)
  size_t state_bytes = 0;    // slots x slot_bytes
  size_t kv_bytes = 0;       // kv_blocks x page_bytes
};

// free_bytes / total_bytes: the device's, after the weights are in place. slot_bytes: one sequence's lightning
// state over all layers; page_bytes: one KV page (K and V, all softmax layers; 0 when the model has none).
// Reserve: 2 GiB + 2 % of the device for the steps' buffers. Pages: every slot at max_context if that fits,
// else as many as fit, and max_context lowered to what they hold (a longer request would wait forever, so the
// API refuses it instead). An error names the sizes when not even the slots (or one page) fit.
Expected<GpuMemoryPlan> plan_gpu_state(size_t free_bytes, size_t total_bytes, size_t slot_bytes, size_t page_bytes,
                                       int64_t slots, int64_t page_size, int64_t max_context);

}  // namespace fulgur
