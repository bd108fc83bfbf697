// libFuzzer entry point: arbitrary bytes as config.json (and as a shard index). Any accepted
// config must validate and survive a round trip through model_config_to_json.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "orchestration/checkpoint/safetensors.h"
#include "protocols/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cfg = fulgur::parse_model_config(text);
  if (cfg) {
    if (!cfg->validate().is_ok()) std::abort();
    auto again = fulgur::parse_model_config(fulgur::model_config_to_json(*cfg));
    if (!again || again->layer_types != cfg->layer_types || again->rotary_dim != cfg->rotary_dim) std::abort();
    (void)fulgur::lightning_slopes(*cfg, cfg->num_hidden_layers - 1);
  }
  (void)fulgur::parse_shard_index(text);
  return 0;
}
