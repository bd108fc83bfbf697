// Errors across actor boundaries: fulgur's Errc as a CAF error category.
//
// A caf::error with category `kErrorCategory` ("fulgur") carries the Errc as its code and the
// Status message as its context (a one-string message). CAF's own errors (sec: a request timed
// out, the receiver is down) map onto Errc::unavailable, anything else onto Errc::internal.
// Nothing throws across an actor: handlers return caf::result / caf::error built from these.
#pragma once

#include <caf/atom.hpp>
#include <caf/error.hpp>

#include "devices/status.h"

namespace caf { class actor_system_config; }

namespace fulgur::serving {

inline constexpr caf::atom_value kErrorCategory = caf::atom("fulgur");

caf::error to_caf_error(const Status& st);
Status from_caf_error(const caf::error& err);
// Registers the renderer of the "fulgur" category (so to_string(caf::error) prints it).
void add_error_category(caf::actor_system_config& cfg);

}  // namespace fulgur::serving
