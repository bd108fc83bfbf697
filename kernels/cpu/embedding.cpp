#include <cstring>

#include "kernels/embedding.h"

namespace fulgur::kernels {

KernelStatus embedding_cpu(const EmbeddingParams& p) {
  if (p.num_tokens < 0 || p.hidden <= 0 || p.vocab <= 0) return kernel_error("embedding: bad sizes");
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    if (p.ids[t] < 0 || p.ids[t] >= p.vocab) return kernel_error("embedding: token id out of range");
  }
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    std::memcpy(p.out + t * p.hidden, p.table + static_cast<int64_t>(p.ids[t]) * p.hidden,
                sizeof(float) * p.hidden);
  }
  return kernel_ok();
}

}  // namespace fulgur::kernels
