#include "protocols/serving/caf_config.h"

#include <chrono>

#include <caf/io/middleman.hpp>
#include <caf/timespan.hpp>

namespace fulgur::serving {

void enable_middleman(caf::actor_system_config& cfg) {
  cfg.load<caf::io::middleman>();
  cfg.set("middleman.heartbeat-interval", caf::timespan{std::chrono::seconds(1)});
  cfg.set("middleman.connection-timeout", caf::timespan{std::chrono::seconds(5)});
}

}  // namespace fulgur::serving
