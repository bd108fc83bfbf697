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

Expected<GpuMemoryPlan> plan_gpu_state(const GpuMemoryAsk& a) {
  if (a.slots < 1 || a.page_size < 1 || a.max_context < 1) {
    return Status(Errc::invalid_argument, "plan_gpu_state: slots, page size and context must be positive");
  }
  GpuMemoryPlan p;
  p.reserve_bytes = (size_t(2) << 30) + a.total_bytes / 50;
  if (a.free_bytes <= p.reserve_bytes) {
    return Status(Errc::out_of_memory, "the GPU has " + gib(a.free_bytes) + " free after the weights, not more than the " +
                                           gib(p.reserve_bytes) +
                                           " kept for the steps: the weights leave no room for serving state "
                                           "(--int8-experts halves the experts' bytes)");
  }
  const size_t budget = a.free_bytes - p.reserve_bytes;
  p.state_bytes = a.slot_bytes * static_cast<size_t>(a.slots);
  if (a.slot_bytes > 0 && p.state_bytes / a.slot_bytes != static_cast<size_t>(a.slots)) p.state_bytes = SIZE_MAX;
  if (p.state_bytes > budget) {
    return Status(Errc::out_of_memory,
                  std::to_string(a.slots) + " sequences need " + gib(p.state_bytes) + " of lightning state (" +
                      gib(a.slot_bytes) + " each) but the GPU has " + gib(a.free_bytes) + " free after the weights, " +
                      gib(p.reserve_bytes) + " of it kept for the steps: lower --max-running");
  }
  p.max_context = a.max_context;
  const int64_t pages_per_seq = (a.max_context + a.page_size - 1) / a.page_size;
  const int64_t full = pages_per_seq > INT64_MAX / a.slots ? INT64_MAX : pages_per_seq * a.slots;
  if (a.page_bytes == 0) {  // no softmax layer: the pages cost nothing, so every slot gets the full context
    p.kv_blocks = full;
    return p;
  }
  size_t fit = (budget - p.state_bytes) / a.page_bytes;
  if (a.kv_cache_limit > 0) fit = std::min(fit, a.kv_cache_limit / a.page_bytes);
  p.kv_blocks = static_cast<int64_t>(std::min<size_t>(fit, static_cast<size_t>(full)));
  if (p.kv_blocks < 1) {
    if (a.kv_cache_limit > 0 && a.kv_cache_limit < a.page_bytes) {
      return Status(Errc::invalid_argument, "a KV-cache limit of " + gib(a.kv_cache_limit) +
                                                " holds no page (" + gib(a.page_bytes) + " each): raise --kv-cache-gib");
    }
    return Status(Errc::out_of_memory,
                  "no KV-cache page (" + gib(a.page_bytes) + ") fits: " + gib(a.free_bytes) +
                      " free after the weights, " + gib(p.state_bytes) + " of lightning state for " +
                      std::to_string(a.slots) + " sequences, " + gib(p.reserve_bytes) +
                      " kept for the steps: lower --max-running");
  }
  p.kv_bytes = static_cast<size_t>(p.kv_blocks) * a.page_bytes;
  if (p.kv_blocks < full) {
    if (a.context_asked) {
      // The user's context stands as long as one sequence can reach it; the scheduler then runs fewer at once.
      if (p.kv_blocks < pages_per_seq) {
        return Status(Errc::out_of_memory,
                      "a context of " + std::to_string(a.max_context) + " tokens needs " +
                          std::to_string(pages_per_seq) + " KV pages (" + gib(a.page_bytes) + " each); the memory holds " +
                          std::to_string(p.kv_blocks) + " beside the state of " + std::to_string(a.slots) +
                          " sequences: lower --max-context or --max-running");
      }
    } else {
      p.max_context = std::min<int64_t>(a.max_context, std::max<int64_t>(1, p.kv_blocks / a.slots) * a.page_size);
    }
  }
  return p;
}

}  // namespace fulgur
