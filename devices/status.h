// Errors as values for everything below the actors.
//
// One error enum for the whole project (`Errc`), a `Status` carrying a code and a message that
// names the thing at fault (file, tensor, field, request), and `Expected<T>`. Nothing in
// kernels/, devices/, protocols/ or the layer code throws; the actors translate a Status into a
// caf::error at their boundary.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace fulgur {

enum class Errc : int {
  ok = 0,
  invalid_argument,   // a caller passed something malformed (shape, flag, sampling parameter)
  invalid_config,     // config.json missing or contradictory field
  invalid_checkpoint, // safetensors / index: truncated, bad header, wrong shape or dtype
  io_error,           // open/read/write/mmap failed
  parse_error,        // JSON or other text input malformed
  not_found,          // missing file or tensor
  unsupported,        // valid input this build does not handle (dtype, device)
  out_of_memory,
  overloaded,         // admission refused: queue full (HTTP 429)
  cancelled,          // the request was cancelled (client went away, or by API)
  unavailable,        // a node or actor that the work needs is gone (HTTP 503)
  internal,
};

const char* errc_name(Errc code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Errc code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok() { return {}; }

  bool is_ok() const { return code_ == Errc::ok; }
  explicit operator bool() const { return is_ok(); }
  Errc code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid_checkpoint: model.safetensors: tensor 'x' ..."
  std::string to_string() const;

 private:
  Errc code_ = Errc::ok;
  std::string message_;
};

// A value or the Status that explains why there is none.
template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Expected(Status error) : v_(std::move(error)) { assert(!std::get<Status>(v_).is_ok()); }

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Status& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace fulgur

// Propagate a failed Status / Expected from the enclosing function.
#define FULGUR_TRY(expr)                                      \
  do {                                                        \
    if (auto _fulgur_st = (expr); !_fulgur_st.is_ok()) {      \
      return _fulgur_st;                                      \
    }                                                         \
  } while (0)

#define FULGUR_CONCAT_INNER(a, b) a##b
#define FULGUR_CONCAT(a, b) FULGUR_CONCAT_INNER(a, b)
#define FULGUR_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.has_value()) return tmp.error();          \
  lhs = std::move(tmp).value()
// FULGUR_ASSIGN_OR_RETURN(auto x, f());
#define FULGUR_ASSIGN_OR_RETURN(lhs, expr) \
  FULGUR_ASSIGN_OR_RETURN_IMPL(FULGUR_CONCAT(_fulgur_ex_, __LINE__), lhs, expr)
