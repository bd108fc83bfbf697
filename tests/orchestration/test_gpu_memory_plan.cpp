// plan_gpu_state (orchestration/serving/gpu_memory_plan.h): how `fulgur serve --device cuda` sizes its KV cache
// from the GPU's free memory. Pure arithmetic, so it runs without a GPU.
#include <gtest/gtest.h>

#include <string>

#include "orchestration/serving/gpu_memory_plan.h"

namespace fulgur {
namespace {

constexpr size_t kGiB = size_t(1) << 30;
constexpr size_t kMiB = size_t(1) << 20;

GpuMemoryAsk ask(size_t free, size_t total, size_t slot, size_t page, int64_t slots, int64_t context) {
  GpuMemoryAsk a;
  a.free_bytes = free, a.total_bytes = total, a.slot_bytes = slot, a.page_bytes = page;
  a.slots = slots, a.page_size = 16, a.max_context = context;
  return a;
}

TEST(GpuMemoryPlan, EverySlotAtFullContextWhenItFits) {
  // 100 GiB free of 141: reserve 2 GiB + 2.82 GiB; 8 slots x 1 GiB; 1 MiB pages of 16 tokens; 4096 tokens each.
  auto p = plan_gpu_state(ask(100 * kGiB, 141 * kGiB, kGiB, kMiB, 8, 4096));
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  EXPECT_EQ(p->kv_blocks, 8 * 256);
  EXPECT_EQ(p->max_context, 4096);
  EXPECT_EQ(p->state_bytes, 8 * kGiB);
  EXPECT_EQ(p->reserve_bytes, 2 * kGiB + 141 * kGiB / 50);
  EXPECT_EQ(p->kv_bytes, size_t(8 * 256) * kMiB);
}

TEST(GpuMemoryPlan, PagesCappedByFreeMemoryAndContextLoweredToOneSlotsShare) {
  // 20 GiB free of 100: budget 20 - 4 = 16 GiB; state 4 x 1 GiB; 12 GiB of 1 MiB pages = 12288 pages, while
  // 4 slots at 1M tokens would want 4 x 65536. Each slot's share: 3072 pages = 49152 tokens, so that one
  // request cannot take the pages of the other three.
  auto p = plan_gpu_state(ask(20 * kGiB, 100 * kGiB, kGiB, kMiB, 4, 1 << 20));
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  EXPECT_EQ(p->kv_blocks, 12288);
  EXPECT_EQ(p->max_context, 3072 * 16);
  EXPECT_LE(p->state_bytes + p->kv_bytes + p->reserve_bytes, 20 * kGiB);
  // Fewer pages than slots: still one page's context (sequences then wait for pages).
  auto few = plan_gpu_state(ask(20 * kGiB, 100 * kGiB, kGiB, 4 * kGiB, 4, 1 << 20));
  ASSERT_TRUE(few.has_value()) << few.error().to_string();
  EXPECT_EQ(few->kv_blocks, 3);
  EXPECT_EQ(few->max_context, 16);
}

TEST(GpuMemoryPlan, KvCacheLimitCapsThePages) {
  GpuMemoryAsk a = ask(100 * kGiB, 141 * kGiB, kGiB, kMiB, 8, 4096);
  a.kv_cache_limit = 100 * kMiB + kMiB / 2;  // 100 pages and a half
  auto p = plan_gpu_state(a);
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  EXPECT_EQ(p->kv_blocks, 100);
  EXPECT_EQ(p->max_context, (100 / 8) * 16);
  a.kv_cache_limit = kMiB / 2;  // less than a page
  auto none = plan_gpu_state(a);
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), Errc::invalid_argument);
  EXPECT_NE(none.error().message().find("--kv-cache-gib"), std::string::npos) << none.error().to_string();
  a.kv_cache_limit = 64 * kGiB;  // above the need: every slot at the full context, as without a limit
  EXPECT_EQ(plan_gpu_state(a)->kv_blocks, 8 * 256);
}

TEST(GpuMemoryPlan, AskedContextKeptWhileOneSequenceReachesIt) {
  GpuMemoryAsk a = ask(100 * kGiB, 141 * kGiB, kGiB, kMiB, 8, 4096);
  a.context_asked = true;
  a.kv_cache_limit = 300 * kMiB;  // 300 pages: one sequence of 4096 tokens (256 pages) fits, 8 do not
  auto p = plan_gpu_state(a);
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  EXPECT_EQ(p->kv_blocks, 300);
  EXPECT_EQ(p->max_context, 4096);
  a.kv_cache_limit = 200 * kMiB;  // not even one
  auto no = plan_gpu_state(a);
  ASSERT_FALSE(no.has_value());
  EXPECT_EQ(no.error().code(), Errc::out_of_memory);
  EXPECT_NE(no.error().message().find("a context of 4096 tokens needs 256 KV pages"), std::string::npos)
      << no.error().to_string();
  EXPECT_NE(no.error().message().find("--max-context"), std::string::npos);
}

TEST(GpuMemoryPlan, NoSoftmaxLayersGiveEverySlotTheFullContext) {
  // The scheduler still counts pages per sequence; with no softmax layer they cost no memory.
  auto p = plan_gpu_state(ask(10 * kGiB, 80 * kGiB, kGiB, 0, 2, 1 << 20));
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  EXPECT_EQ(p->kv_blocks, 2 * ((1 << 20) / 16));
  EXPECT_EQ(p->kv_bytes, 0u);
  EXPECT_EQ(p->max_context, 1 << 20);
}

TEST(GpuMemoryPlan, TooManySlotsOrNoPageIsAnErrorNamingTheSizes) {
  auto slots = plan_gpu_state(ask(10 * kGiB, 80 * kGiB, kGiB, kMiB, 64, 4096));
  ASSERT_FALSE(slots.has_value());
  EXPECT_EQ(slots.error().code(), Errc::out_of_memory);
  EXPECT_NE(slots.error().message().find("64 sequences need 64.00 GiB"), std::string::npos) << slots.error().to_string();
  EXPECT_NE(slots.error().message().find("--max-running"), std::string::npos);
  // Slots fit exactly, nothing left for a page.
  const size_t reserve = 2 * kGiB + 80 * kGiB / 50;
  auto page = plan_gpu_state(ask(reserve + 4 * kGiB, 80 * kGiB, kGiB, kMiB, 4, 4096));
  ASSERT_FALSE(page.has_value());
  EXPECT_NE(page.error().message().find("no KV-cache page"), std::string::npos) << page.error().to_string();
  // Less free memory than the reserve: the weights are what to shrink, not --max-running.
  auto full = plan_gpu_state(ask(kGiB, 80 * kGiB, 1, 1, 1, 16));
  ASSERT_FALSE(full.has_value());
  EXPECT_NE(full.error().message().find("leave no room"), std::string::npos) << full.error().to_string();
  EXPECT_EQ(full.error().message().find("--max-running"), std::string::npos) << full.error().to_string();
  // Overflowing slot bytes are refused, not wrapped.
  EXPECT_FALSE(plan_gpu_state(ask(100 * kGiB, 141 * kGiB, SIZE_MAX / 2, 1, 4, 16)).has_value());
  EXPECT_FALSE(plan_gpu_state(ask(100 * kGiB, 141 * kGiB, 1, 1, 0, 16)).has_value());
}

}  // namespace
}  // namespace fulgur
