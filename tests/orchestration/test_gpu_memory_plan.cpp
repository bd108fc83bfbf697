// plan_gpu_state (orchestration/serving/gpu_memory_plan.h): how `fulgur serve --device cuda` sizes its KV cache
// from the GPU's free memory. Pure arithmetic, so it runs without a GPU.
#include <gtest/gtest.h>

#include <string>

#include "orchestration/serving/gpu_memory_plan.h"

namespace fulgur {
namespace {

constexpr size_t kGiB = size_t(1) << 30;

TEST(GpuMemoryPlan, EverySlotAtFullContextWhenItFits) {
  // 100 GiB free of 141: reserve 2 GiB + 2.82 GiB; 8 slots x 1 GiB; 1 MiB pages of 16 tokens; 4096 tokens each.
  auto p = plan_gpu_state(100 * kGiB, 141 * kGiB, kGiB, size_t(1) << 20, 8, 16, 4096);
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  EXPECT_EQ(p->kv_blocks, 8 * 256);
  EXPECT_EQ(p->max_context, 4096);
  EXPECT_EQ(p->state_bytes, 8 * kGiB);
  EXPECT_EQ(p->reserve_bytes, 2 * kGiB + 141 * kGiB / 50);
  EXPECT_EQ(p->kv_bytes, size_t(8 * 256) << 20);
}

TEST(GpuMemoryPlan, PagesCappedByFreeMemoryAndContextLowered) {
  // 20 GiB free of 100: budget 20 - 4 = 16 GiB; state 4 x 1 GiB; 12 GiB of 1 MiB pages = 12288 pages, while
  // 4 slots at 1M tokens would want 4 x 65536.
  auto p = plan_gpu_state(20 * kGiB, 100 * kGiB, kGiB, size_t(1) << 20, 4, 16, 1 << 20);
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  EXPECT_EQ(p->kv_blocks, 12288);
  EXPECT_EQ(p->max_context, 12288 * 16);
  EXPECT_LE(p->state_bytes + p->kv_bytes + p->reserve_bytes, 20 * kGiB);
}

TEST(GpuMemoryPlan, NoSoftmaxLayersGiveEverySlotTheFullContext) {
  // The scheduler still counts pages per sequence; with no softmax layer they cost no memory.
  auto p = plan_gpu_state(10 * kGiB, 80 * kGiB, kGiB, 0, 2, 16, 1 << 20);
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  EXPECT_EQ(p->kv_blocks, 2 * ((1 << 20) / 16));
  EXPECT_EQ(p->kv_bytes, 0u);
  EXPECT_EQ(p->max_context, 1 << 20);
}

TEST(GpuMemoryPlan, TooManySlotsOrNoPageIsAnErrorNamingTheSizes) {
  auto slots = plan_gpu_state(10 * kGiB, 80 * kGiB, kGiB, size_t(1) << 20, 64, 16, 4096);
  ASSERT_FALSE(slots.has_value());
  EXPECT_EQ(slots.error().code(), Errc::out_of_memory);
  EXPECT_NE(slots.error().message().find("64 sequences need 64.00 GiB"), std::string::npos) << slots.error().to_string();
  EXPECT_NE(slots.error().message().find("--max-running"), std::string::npos);
  // Slots fit exactly, nothing left for a page.
  const size_t reserve = 2 * kGiB + 80 * kGiB / 50;
  auto page = plan_gpu_state(reserve + 4 * kGiB, 80 * kGiB, kGiB, size_t(1) << 20, 4, 16, 4096);
  ASSERT_FALSE(page.has_value());
  EXPECT_NE(page.error().message().find("no KV-cache page"), std::string::npos) << page.error().to_string();
  // Less free memory than the reserve.
  EXPECT_FALSE(plan_gpu_state(kGiB, 80 * kGiB, 1, 1, 1, 16, 16).has_value());
  // Overflowing slot bytes are refused, not wrapped.
  EXPECT_FALSE(plan_gpu_state(100 * kGiB, 141 * kGiB, SIZE_MAX / 2, 1, 4, 16, 16).has_value());
  EXPECT_FALSE(plan_gpu_state(100 * kGiB, 141 * kGiB, 1, 1, 0, 16, 16).has_value());
}

}  // namespace
}  // namespace fulgur
