// libFuzzer entry point: arbitrary bytes as a safetensors file image. Every accepted tensor is
// read in full, so an out-of-bounds view shows up under ASan.
#include <cstddef>
#include <cstdint>
#include <string>

#include "orchestration/checkpoint/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = fulgur::SafetensorsFile::from_bytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!file) return 0;
  volatile unsigned sink = 0;
  for (const fulgur::SafetensorsEntry& e : file->entries()) {
    auto t = file->tensor(e);
    if (!t) continue;
    const auto* p = static_cast<const uint8_t*>(t->raw());
    for (size_t i = 0; i < t->nbytes(); ++i) sink = sink + p[i];
  }
  return 0;
}
