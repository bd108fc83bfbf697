// libFuzzer entry point for the tokenizer (not built by default; CMake has no target for it).
//
// The first input byte picks the mode:
//   even: the rest is a tokenizer.json document -> Tokenizer::from_json, then encode/decode a
//         fixed text with whatever loaded;
//   odd:  the rest is text -> encode (both allow_special settings) and decode with a small
//         byte-level tokenizer built once by make_byte_level_json.
// Nothing may crash, hang or throw; encode must either fail with invalid_argument or decode back
// to its input.
//
// Build and run by hand (from the repository root):
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -I. \
//     tests/fuzz/fuzz_tokenizer.cpp orchestration/tokenizer/{tokenizer,tokenizer_json,bpe,bpe_trainer,regex}.cpp \
//     devices/status.cpp -lpcre2-8 -o /tmp/fuzz_tokenizer
//   /tmp/fuzz_tokenizer -max_total_time=60 -max_len=8192
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "orchestration/tokenizer/tokenizer.h"

namespace {

const fulgur::Tokenizer& text_tokenizer() {
  static const fulgur::Tokenizer tok = [] {
    auto json = fulgur::Tokenizer::make_byte_level_json(
        400, {"<|end|>", "<s>"}, "hello world, it's a tokenizer fuzzer 12345 \n\n  tabs\t\t");
    if (!json) std::abort();
    auto loaded = fulgur::Tokenizer::from_json(*json);
    if (!loaded) std::abort();
    return std::move(loaded).value();
  }();
  return tok;
}

void check_text(const fulgur::Tokenizer& tok, std::string_view text, bool allow_special) {
  auto ids = tok.encode(text, allow_special);
  if (!ids) {
    if (ids.error().code() != fulgur::Errc::invalid_argument) std::abort();
    return;
  }
  auto back = tok.decode(*ids);
  if (!back || *back != text) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] % 2 == 0) {
    auto tok = fulgur::Tokenizer::from_json(rest, "fuzz.json");
    if (tok) {
      auto ids = tok->encode("hello <mask> world<|end|> it's 123 \xF0\x9F\x98\x80");
      if (ids) (void)tok->decode(*ids);
    }
  } else {
    check_text(text_tokenizer(), rest, true);
    check_text(text_tokenizer(), rest, false);
  }
  return 0;
}
