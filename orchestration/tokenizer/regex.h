// PCRE2 wrapper for the pre-tokenizer patterns of tokenizer.json (internal to fulgur_tokenizer).
//
// HF `tokenizers` runs these patterns with Oniguruma; PCRE2 compiled with PCRE2_UTF | PCRE2_UCP
// gives the same meaning to what tokenizer.json files use: \p{L}, \p{N}, (?i:...) with Unicode
// case folding, (?!\S), and \s as Unicode whitespace. Known difference: PCRE2's \s also matches
// U+180E (MONGOLIAN VOWEL SEPARATOR), which Oniguruma's does not.
//
// A Regex is immutable after compile() and may be used from several threads at once.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "devices/status.h"

namespace fulgur::tokenizer_detail {

// The GPT-2 pre-tokenizer pattern (HF ByteLevel with use_regex = true).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// [begin, end) byte offsets into the searched text.
using ByteRange = std::pair<size_t, size_t>;

class Regex {
 public:
  // `literal`: match `pattern` as a plain string (HF Split with {"String": ...}).
  // A pattern PCRE2 rejects -> Errc::parse_error "<PCRE2 message> at pattern offset N".
  static Expected<Regex> compile(std::string_view pattern, bool literal = false);

  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  // Appends to `matches` every non-overlapping match of the pattern in `text`, left to right
  // (global matching as in pcre2demo: after an empty match the next try must be non-empty at
  // the same offset, else the search moves on one character). `text` must be valid UTF-8.
  // A match that exceeds PCRE2's match limit -> Errc::invalid_argument.
  Status find_all(std::string_view text, std::vector<ByteRange>& matches) const;

  // True iff the pattern matches at offset 0 of `text` (anchored).
  bool matches_prefix(std::string_view text) const;

 private:
  struct Code;
  explicit Regex(std::unique_ptr<Code> code);
  std::unique_ptr<Code> code_;
};

}  // namespace fulgur::tokenizer_detail
