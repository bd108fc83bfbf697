#include "orchestration/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>

namespace fulgur::tokenizer_detail {

namespace {

std::string pcre2_message(int error_code) {
  PCRE2_UCHAR buffer[256];
  const int len = pcre2_get_error_message(error_code, buffer, sizeof(buffer));
  if (len < 0) return "PCRE2 error " + std::to_string(error_code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(len));
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

// Moves `offset` past one UTF-8 character of `text` (used after a failed empty-match retry).
size_t next_char_offset(std::string_view text, size_t offset) {
  ++offset;
  while (offset < text.size() && (static_cast<uint8_t>(text[offset]) & 0xC0) == 0x80) ++offset;
  return offset;
}

}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;  // pcre2_jit_compile succeeded
  ~Code() { pcre2_code_free(code); }
};

Regex::Regex(std::unique_ptr<Code> code) : code_(std::move(code)) {}
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

Expected<Regex> Regex::compile(std::string_view pattern, bool literal) {
  uint32_t options = PCRE2_UTF | PCRE2_UCP;
  if (literal) options |= PCRE2_LITERAL;
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  auto code = std::make_unique<Code>();
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                             &error_code, &error_offset, nullptr);
  if (code->code == nullptr) {
    return Status(Errc::parse_error, pcre2_message(error_code) + " at pattern offset " +
                                         std::to_string(error_offset));
  }
  // JIT is an optimisation only: when it is unavailable the interpreter runs the same pattern.
  code->jit = pcre2_jit_compile(code->code, PCRE2_JIT_COMPLETE) == 0;
  return Regex(std::move(code));
}

Status Regex::find_all(std::string_view text, std::vector<ByteRange>& matches) const {
  MatchData md(pcre2_match_data_create(1, nullptr));
  if (!md) return Status(Errc::out_of_memory, "pcre2_match_data_create failed");
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  // The caller validated `text`; PCRE2 would otherwise re-check the whole subject per call.
  uint32_t base_options = PCRE2_NO_UTF_CHECK;
  size_t offset = 0;
  bool last_was_empty = false;
  while (offset <= text.size()) {
    const uint32_t options =
        base_options | (last_was_empty ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0u);
    int rc = pcre2_match(code_->code, subject, text.size(), offset, options, md.get(), nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && code_->jit) {
      // E.g. PCRE2_ERROR_JIT_STACKLIMIT on a pathological subject: the interpreter keeps its
      // backtracking state on the heap and may still succeed.
      rc = pcre2_match(code_->code, subject, text.size(), offset, options | PCRE2_NO_JIT, md.get(),
                       nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) {
      if (!last_was_empty) break;
      last_was_empty = false;
      if (offset >= text.size()) break;
      offset = next_char_offset(text, offset);
      continue;
    }
    if (rc < 0) {
      return Status(Errc::invalid_argument, "pre-tokenizer regex failed at byte offset " +
                                                std::to_string(offset) + ": " + pcre2_message(rc));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md.get());
    const size_t begin = ovector[0], end = ovector[1];
    if (begin < offset || end < begin) {  // \K tricks; keep matches ordered and disjoint
      return Status(Errc::invalid_argument, "pre-tokenizer regex produced a match ending before it "
                                            "starts (\\K) at byte offset " + std::to_string(offset));
    }
    matches.emplace_back(begin, end);
    last_was_empty = begin == end;
    offset = end;
  }
  return Status::ok();
}

bool Regex::matches_prefix(std::string_view text) const {
  MatchData md(pcre2_match_data_create(1, nullptr));
  if (!md) return false;
  const int rc = pcre2_match(code_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                             PCRE2_ANCHORED, md.get(), nullptr);
  return rc >= 0;
}

}  // namespace fulgur::tokenizer_detail
