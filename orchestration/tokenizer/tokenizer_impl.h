// TokenizerData: the loaded tokenizer.json, shared by tokenizer_json.cpp (which fills it)
// and tokenizer.cpp (which encodes and decodes with it). Internal to fulgur_tokenizer.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "orchestration/tokenizer/bpe.h"
#include "orchestration/tokenizer/regex.h"
#include "orchestration/tokenizer/tokenizer.h"

namespace fulgur::tokenizer_detail {

// HF SplitDelimiterBehavior: what happens to the pieces a Split pattern matches.
enum class SplitBehavior {
  isolated,              // matches and the text between them are all pieces
  removed,               // matches are dropped (with invert: the text between them is)
  merged_with_previous,  // a match joins the piece before it
  merged_with_next,      // a match joins the piece after it
  contiguous,            // consecutive matches (or non-matches) form one piece
};

// One step of the pre_tokenizer pipeline; each step maps every current piece to sub-pieces.
struct PreTokenizerStep {
  enum class Kind { split, byte_level };
  Kind kind = Kind::split;
  std::optional<Regex> regex;  // split: its pattern; byte_level: kGpt2Pattern iff use_regex
  SplitBehavior behavior = SplitBehavior::isolated;  // split only (byte_level: isolated)
  bool invert = false;                               // split only: swap match / non-match
  bool add_prefix_space = false;                     // byte_level only: " " before pieces
                                                     // that do not start with one
};

// Everything known about one id.
struct TokenRecord {
  std::string text;      // token string as in tokenizer.json (byte-level form / added content)
  std::string bytes;     // what decode emits: byte-level decoded, or `text` as UTF-8 when some
                         // character is outside the byte alphabet (HF ByteLevel decoder does so)
  bool present = false;  // false for gaps in the id space
  bool special = false;  // a special added token
};

// The added tokens matched in one pass over the text.
struct AddedTokenMatcher {
  // [256]: indices into TokenizerData::added whose content starts with that byte, longest first.
  std::array<std::vector<int32_t>, 256> by_first_byte;
  bool empty = true;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// Bounded piece -> ids cache shared by all encode() calls (HF keeps one too). Only pieces of
// at most kMaxPieceBytes are cached; when kMaxEntries is reached the cache is emptied.
class PieceCache {
 public:
  static constexpr size_t kMaxEntries = size_t{1} << 15;
  static constexpr size_t kMaxPieceBytes = 256;
  // Appends the cached ids of `piece` to `out`; false when absent.
  bool lookup(std::string_view piece, std::vector<int32_t>& out) const;
  void store(std::string_view piece, const int32_t* ids, size_t num_ids);

 private:
  mutable std::mutex mu_;
  StringMap<std::vector<int32_t>> map_;
};

struct TokenizerData {
  std::string origin;  // for messages

  // pre_tokenizer, in order; the last step is the ByteLevel one.
  std::vector<PreTokenizerStep> pre_steps;

  // model (BPE)
  StringMap<int32_t> vocab;  // token string (byte-level form) -> id
  MergeTable merges;
  std::array<int32_t, 256> byte_ids{};  // byte -> id of its one-character token, -1 if none
  bool ignore_merges = false;           // a piece that is itself in vocab maps to it directly
  int32_t unk_id = -1;                  // -1: bytes without a token are dropped (as HF does)
  bool fuse_unk = false;

  // added_tokens, in file order
  std::vector<AddedToken> added;
  StringMap<int32_t> added_by_content;  // content -> id
  AddedTokenMatcher raw_pass;           // normalized == false
  AddedTokenMatcher norm_pass;          // normalized == true
  std::optional<Regex> word_char;       // one \w character (single_word tokens)

  std::vector<TokenRecord> records;  // [vocab_size], by id

  mutable PieceCache cache;
};

}  // namespace fulgur::tokenizer_detail
