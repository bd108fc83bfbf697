// Tokenizer: byte-level BPE read from a Hugging Face tokenizer.json (GPT-2 / cl100k style).
//
// encode(text) gives the ids that HF `tokenizers` gives for `encode(text,
// add_special_tokens=False)`:
//   1. reject text that is not valid UTF-8 (Errc::invalid_argument naming the byte offset);
//   2. split out added tokens: leftmost-longest exact match, `lstrip` / `rstrip` / `single_word`
//      honoured; first the tokens with normalized=false, then those with normalized=true (the
//      order HF uses; without a normalizer both see the same text);
//   3. run the pre_tokenizer steps over each remaining segment, giving pieces ("pre-tokens");
//   4. BPE each piece over its bytes (GPT-2 byte-level alphabet, see byte_level.h), merges in
//      rank order.
// decode(ids) concatenates each token's raw bytes (the ByteLevel decoder); the result may be
// invalid UTF-8 (a generation cut in the middle of a character) and is returned as is.
//
// Supported tokenizer.json (one table; anything else is rejected by from_json with a Status
// naming the field, Errc::unsupported for valid-but-unhandled, Errc::parse_error otherwise):
//   normalizer      null or absent
//   pre_tokenizer   ByteLevel {add_prefix_space, use_regex}                 (required, last)
//                   Split {pattern: {"Regex"|"String"}, behavior, invert}   (behavior: Isolated,
//                     Removed, MergedWithPrevious, MergedWithNext, Contiguous)
//                   Sequence {pretokenizers: [...]} of the above
//   model           BPE: vocab, merges ("a b" or ["a", "b"]), ignore_merges, unk_token,
//                   fuse_unk; dropout null/0, byte_fallback false, continuing_subword_prefix
//                   and end_of_word_suffix null or ""
//   decoder         ByteLevel, or absent/null (decoded as ByteLevel all the same)
//   post_processor  ignored: encode() never adds BOS/EOS (add_special_tokens=False)
//   added_tokens    [{id, content, special, lstrip, rstrip, single_word, normalized}]
//
// Thread-safety: a Tokenizer is immutable after loading except for an internal mutex-guarded
// cache of piece -> ids, so encode/decode may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "devices/status.h"

namespace fulgur {

namespace tokenizer_detail {
struct TokenizerData;  // the loaded tokenizer.json (tokenizer_impl.h)
}  // namespace tokenizer_detail

// One entry of tokenizer.json `added_tokens`.
struct AddedToken {
  int32_t id = 0;
  std::string content;       // matched verbatim in the input text
  bool special = false;      // encode(..., allow_special=false) treats it as plain text;
                             // decode(..., skip_special=true) drops it
  bool lstrip = false;       // the match also swallows whitespace before it
  bool rstrip = false;       // the match also swallows whitespace after it
  bool single_word = false;  // only matches when not inside a word (\w on neither side)
  bool normalized = false;   // matched after normalization (no normalizer: same text)
};

class Tokenizer {
 public:
  // Parses a tokenizer.json document. `origin` (usually the path) prefixes every error message:
  // "<origin>: model.merges[12]: 'Ġt' + 'he' is not in model.vocab".
  static Expected<Tokenizer> from_json(std::string_view json_text,
                                       std::string_view origin = "tokenizer.json");
  // Reads and parses the file at `path` (Errc::not_found / io_error when it cannot be read).
  static Expected<Tokenizer> load(const std::string& path);

  // Builds the text of a GPT-2-style byte-level BPE tokenizer.json with exactly `vocab_size`
  // ids, for models that have no tokenizer of their own (random-weight test models):
  //   ids [0, 256)                      the 256 byte tokens, id = byte value
  //   ids [256, vocab_size - S)         merges learned greedily on `training_text` (most
  //                                     frequent adjacent pair within GPT-2 pre-tokens; ties
  //                                     to the lower (left id, right id)); when the text runs
  //                                     out of pairs, unreachable filler tokens "<|unused_N|>"
  //   ids [vocab_size - S, vocab_size)  `special_tokens` in order, as special added tokens
  // with S = special_tokens.size(), a ByteLevel pre-tokenizer (GPT-2 regex, no prefix space)
  // and a ByteLevel decoder. Errc::invalid_argument when vocab_size < 256 + S, a special token
  // is empty, repeated, not UTF-8 or equal to a byte token, or training_text is not UTF-8.
  static Expected<std::string> make_byte_level_json(int64_t vocab_size,
                                                    const std::vector<std::string>& special_tokens,
                                                    std::string_view training_text);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text -> token ids (see the pipeline above). allow_special=false: the text of special
  // added tokens is encoded as ordinary text (non-special added tokens still match).
  Expected<std::vector<int32_t>> encode(std::string_view text, bool allow_special = true) const;

  // Token ids -> raw bytes, concatenated. An id with no token -> Errc::invalid_argument naming
  // it and its position. skip_special drops special added tokens.
  Expected<std::string> decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  // Raw bytes of one token, for streaming output (may be part of a UTF-8 character).
  Expected<std::string> decode_token(int32_t id) const;

  // Token string as written in tokenizer.json (byte-level form: " hello" is "Ġhello"); added
  // tokens by their content. Looks at added tokens first, then the model vocab.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Inverse of token_to_id; the view lives as long as this Tokenizer.
  std::optional<std::string_view> id_to_token(int32_t id) const;

  // Max id + 1 over model.vocab and added_tokens (ids may have gaps; embeddings need this many
  // rows at least).
  int64_t vocab_size() const;
  bool is_special(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;

 private:
  explicit Tokenizer(std::unique_ptr<tokenizer_detail::TokenizerData> impl);
  std::unique_ptr<tokenizer_detail::TokenizerData> impl_;
};

}  // namespace fulgur
