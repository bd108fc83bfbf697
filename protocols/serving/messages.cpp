#include "protocols/serving/messages.h"

#include <atomic>
#include <chrono>

namespace fulgur::serving {

namespace {
std::atomic<uint64_t> next_buffer_id{1};

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace

HiddenHandle HiddenHandle::wrap(Tensor t, uint32_t node) {
  HiddenHandle h;
  h.ref.buffer_id = next_buffer_id.fetch_add(1, std::memory_order_relaxed);
  h.ref.owner_node = node;
  h.ref.shape = t.shape();
  h.ref.dtype = static_cast<uint8_t>(t.dtype());
  h.local = std::make_shared<Tensor>(std::move(t));
  return h;
}

Expected<Tensor*> resolve(const HiddenHandle& h, const char* what) {
  if (!h.local) {
    return Status(Errc::unavailable, std::string(what) + ": tensor buffer " + std::to_string(h.ref.buffer_id) +
                                         " of node " + std::to_string(h.ref.owner_node) +
                                         " is not in this process (no data-plane transfer yet)");
  }
  return h.local.get();
}

SamplingDesc to_desc(const kernels::SamplingParams& p) {
  return {float_bits(p.temperature), p.top_k, float_bits(p.top_p), p.seed, p.step};
}

kernels::SamplingParams from_desc(const SamplingDesc& d) {
  kernels::SamplingParams p;
  p.temperature = bits_float(d.temperature_bits);
  p.top_k = d.top_k;
  p.top_p = bits_float(d.top_p_bits);
  p.seed = d.seed;
  p.step = d.step;
  return p;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace fulgur::serving
