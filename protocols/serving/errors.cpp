#include "protocols/serving/errors.h"

#include <caf/actor_system_config.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace fulgur::serving {

caf::error to_caf_error(const Status& st) {
  if (st.is_ok()) return caf::error{};
  return caf::error(static_cast<uint8_t>(st.code()), kErrorCategory, caf::make_message(st.message()));
}

Status from_caf_error(const caf::error& err) {
  if (!err) return Status::ok();
  std::string context;
  if (err.context().match_elements<std::string>()) context = err.context().get_as<std::string>(0);
  if (err.category() == kErrorCategory) {
    const auto code = static_cast<Errc>(err.code());
    return Status(code == Errc::ok ? Errc::internal : code, context);
  }
  if (err.category() == caf::atom("system")) {
    const auto code = static_cast<caf::sec>(err.code());
    const std::string what = "actor runtime: " + caf::to_string(code) + (context.empty() ? "" : ": " + context);
    switch (code) {
      case caf::sec::request_timeout:
      case caf::sec::request_receiver_down:
      case caf::sec::no_route_to_receiving_node:
        return Status(Errc::unavailable, what);
      default:
        return Status(Errc::internal, what);
    }
  }
  return Status(Errc::internal, "actor runtime: " + caf::to_string(err.category()) + " error " +
                                    std::to_string(err.code()) + (context.empty() ? "" : ": " + context));
}

void add_error_category(caf::actor_system_config& cfg) {
  cfg.add_error_category(kErrorCategory, [](uint8_t code, caf::atom_value, const caf::message& msg) {
    std::string ctx;
    if (msg.match_elements<std::string>()) ctx = msg.get_as<std::string>(0);
    return std::string("fulgur: ") + errc_name(static_cast<Errc>(code)) + (ctx.empty() ? "" : ": " + ctx);
  });
}

}  // namespace fulgur::serving
