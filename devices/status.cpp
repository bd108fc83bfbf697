#include "devices/status.h"

namespace fulgur {

const char* errc_name(Errc code) {
  switch (code) {
    case Errc::ok: return "ok";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::invalid_config: return "invalid_config";
    case Errc::invalid_checkpoint: return "invalid_checkpoint";
    case Errc::io_error: return "io_error";
    case Errc::parse_error: return "parse_error";
    case Errc::not_found: return "not_found";
    case Errc::unsupported: return "unsupported";
    case Errc::out_of_memory: return "out_of_memory";
    case Errc::overloaded: return "overloaded";
    case Errc::cancelled: return "cancelled";
    case Errc::unavailable: return "unavailable";
    case Errc::internal: return "internal";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  return std::string(errc_name(code_)) + ": " + message_;
}

}  // namespace fulgur
