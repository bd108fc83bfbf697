// The actor-system configuration every fulgur process uses: the fulgur type-ID block, the
// "fulgur" error category and an explicit scheduler size (CAF's default is >= 4 workers even on
// 2 cores, architecture.md §7).
#pragma once

#include <caf/actor_system_config.hpp>

#include "protocols/serving/errors.h"
#include "protocols/serving/type_ids.h"

namespace fulgur::serving {

struct RuntimeOptions {
  size_t scheduler_threads = 2;  // CAF worker threads (scheduler.max-threads)
};

inline void configure(caf::actor_system_config& cfg, const RuntimeOptions& opt) {
  cfg.add_message_types<caf::id_block::fulgur>();
  add_error_category(cfg);
  cfg.set("scheduler.max-threads", opt.scheduler_threads);
}

// Loads the CAF middleman (processes talk over TCP) with heartbeats on, so that a peer that
// vanishes without closing its connection is noticed (architecture.md §7): heartbeat every
// second, connection dropped after 5 s of silence.
void enable_middleman(caf::actor_system_config& cfg);

}  // namespace fulgur::serving
