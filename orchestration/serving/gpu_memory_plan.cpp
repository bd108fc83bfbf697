#include "orchestration/serving/gpu_memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <string>

namespace fulgur {
namespace {

std::string gib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024 * 1024));
  return buf;
}

}  // namespace

Expected<GpuMemoryPlan> plan_gpu_state(size_t free_bytes, size_t total_bytes, size_t slot_bytes, size_t page_bytes,
                                       int64_t slots, int64_t page_size, int64_t max_context) {
  if (slots < 1 || page_size < 1 || max_context < 1) {
    return Status(Errc::invalid_argument, "plan_gpu_state: slots, page size and context must be positive");
  }
  GpuMemoryPlan p;
  p.reserve_bytes = (size_t(2) << 30) + total_bytes / 50;
  const size_t budget = free_bytes > p.reserve_bytes ? free_bytes - p.reserve_bytes : 0;
  p.state_bytes = slot_bytes * static_cast<size_t>(slots);
  if (slot_bytes > 0 && p.state_bytes / slot_bytes != static_cast<size_t>(slots)) p.state_bytes = SIZE_MAX;
  if (p.state_bytes > budget) {
    return Status(Errc::out_of_memory,
                  std::to_string(slots) + " sequences need " + gib(p.state_bytes) + " of lightning state (" +
                      gib(slot_bytes) + " each) but the GPU has " + gib(free_bytes) + " free after the weights, " +
                      gib(p.reserve_bytes) + " of it kept for the steps: lower --max-running");
  }
  p.max_context = max_context;
  const int64_t pages_per_seq = (max_context + page_size - 1) / page_size;
  const int64_t full = pages_per_seq > INT64_MAX / slots ? INT64_MAX : pages_per_seq * slots;
  if (page_bytes == 0) {  // no softmax layer: the pages cost nothing, so every slot gets the full context
    p.kv_blocks = full;
    return p;
  }
  const size_t fit = (budget - p.state_bytes) / page_bytes;
  p.kv_blocks = static_cast<int64_t>(std::min<size_t>(fit, static_cast<size_t>(full)));
  if (p.kv_blocks < 1) {
    return Status(Errc::out_of_memory,
                  "no KV-cache page (" + gib(page_bytes) + ") fits: " + gib(free_bytes) + " free after the weights, " +
                      gib(p.state_bytes) + " of lightning state, " + gib(p.reserve_bytes) +
                      " kept for the steps: lower --max-running");
  }
  p.max_context = std::min<int64_t>(max_context, p.kv_blocks * page_size);
  p.kv_bytes = static_cast<size_t>(p.kv_blocks) * page_bytes;
  return p;
}

}  // namespace fulgur
