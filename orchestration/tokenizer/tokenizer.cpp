// Tokenizer: encode / decode with a loaded tokenizer.json (loading is in tokenizer_json.cpp,
// the byte-level trainer in bpe_trainer.cpp).
#include "orchestration/tokenizer/tokenizer.h"

#include <algorithm>
#include <deque>

#include "orchestration/tokenizer/byte_level.h"
#include "orchestration/tokenizer/tokenizer_impl.h"

namespace fulgur {

namespace tokenizer_detail {

bool PieceCache::lookup(std::string_view piece, std::vector<int32_t>& out) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = map_.find(piece);
  if (it == map_.end()) return false;
  out.insert(out.end(), it->second.begin(), it->second.end());
  return true;
}

void PieceCache::store(std::string_view piece, const int32_t* ids, size_t num_ids) {
  std::lock_guard<std::mutex> lock(mu_);
  if (map_.size() >= kMaxEntries) map_.clear();
  map_.emplace(std::string(piece), std::vector<int32_t>(ids, ids + num_ids));
}

}  // namespace tokenizer_detail

namespace {

using tokenizer_detail::AddedTokenMatcher;
using tokenizer_detail::ByteRange;
using tokenizer_detail::PreTokenizerStep;
using tokenizer_detail::SplitBehavior;

// A run of input text, or (id >= 0) an added token already split out.
struct Segment {
  std::string_view text;
  int32_t id = -1;
};

// Buffers reused across the pieces of one encode() call.
struct EncodeScratch {
  std::vector<std::string_view> pieces, next_pieces;
  std::vector<ByteRange> matches;
  std::vector<std::pair<ByteRange, bool>> parts;  // (range, is_match / remove)
  std::vector<int32_t> symbols;
  tokenizer_detail::BpeScratch bpe;
  std::deque<std::string> arena;  // pieces that got a prefix space; deque keeps them in place
};

// ---- added tokens ------------------------------------------------------------------------

// Start of the run of whitespace that ends at text[end) (HF space_leftmost_at_end).
size_t whitespace_run_start(std::string_view text, size_t end) {
  while (end > 0) {
    const size_t start = tokenizer_detail::utf8_previous_start(text, end);
    const uint32_t cp = tokenizer_detail::decode_utf8_at(text, start, end - start);
    if (!tokenizer_detail::is_unicode_whitespace(cp)) break;
    end = start;
  }
  return end;
}

// End of the run of whitespace that starts at text[begin] (HF space_rightmost_at_start).
size_t whitespace_run_end(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    const size_t len = tokenizer_detail::utf8_sequence_length(text, begin);
    const uint32_t cp = tokenizer_detail::decode_utf8_at(text, begin, len);
    if (!tokenizer_detail::is_unicode_whitespace(cp)) break;
    begin += len;
  }
  return begin;
}

// HF single_word: no word character right before `start` nor right after `stop`.
bool is_single_word(const tokenizer_detail::TokenizerData& impl, std::string_view text, size_t start, size_t stop) {
  if (!impl.word_char) return true;
  if (start > 0) {
    const size_t prev = tokenizer_detail::utf8_previous_start(text, start);
    if (impl.word_char->matches_prefix(text.substr(prev, start - prev))) return false;
  }
  if (stop < text.size()) {
    const size_t len = tokenizer_detail::utf8_sequence_length(text, stop);
    if (impl.word_char->matches_prefix(text.substr(stop, len))) return false;
  }
  return true;
}

// Index into impl.added of the longest token of `pass` starting at text[pos], or -1.
int32_t match_added_at(const tokenizer_detail::TokenizerData& impl, const AddedTokenMatcher& pass, std::string_view text,
                       size_t pos) {
  for (const int32_t idx : pass.by_first_byte[static_cast<uint8_t>(text[pos])]) {
    if (text.substr(pos).starts_with(impl.added[idx].content)) return idx;
  }
  return -1;
}

// Splits `text` on the added tokens of `pass` (leftmost-longest, non-overlapping, as HF's
// AddedVocabulary::find_matches). A match that is then discarded (a special token with
// allow_special=false, a single_word token inside a word) still consumes its text.
void split_added(const tokenizer_detail::TokenizerData& impl, const AddedTokenMatcher& pass, std::string_view text,
                 bool allow_special, std::vector<Segment>& out) {
  if (pass.empty) {
    out.push_back({text});
    return;
  }
  size_t emitted = 0;  // text[0, emitted) is already in `out`
  size_t pos = 0;
  while (pos < text.size()) {
    const int32_t idx = match_added_at(impl, pass, text, pos);
    if (idx < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = impl.added[idx];
    size_t start = pos, stop = pos + tok.content.size();
    pos = stop;
    if (tok.special && !allow_special) continue;
    if (tok.single_word && !is_single_word(impl, text, start, stop)) continue;
    if (tok.lstrip) start = std::max(whitespace_run_start(text, start), emitted);
    if (tok.rstrip) stop = whitespace_run_end(text, stop);
    if (emitted < start) out.push_back({text.substr(emitted, start - emitted)});
    out.push_back({{}, tok.id});
    emitted = stop;
    pos = stop;  // HF resumes after the raw match; after rstrip that is inside the whitespace
                 // it swallowed, which can only matter for added tokens starting with spaces
  }
  if (emitted < text.size()) out.push_back({text.substr(emitted)});
}

// Both HF passes: normalized=false tokens on the text, then normalized=true tokens on what is
// left between them.
std::vector<Segment> split_all_added(const tokenizer_detail::TokenizerData& impl, std::string_view text, bool allow_special) {
  std::vector<Segment> first, result;
  split_added(impl, impl.raw_pass, text, allow_special, first);
  if (impl.norm_pass.empty) return first;
  for (const Segment& seg : first) {
    if (seg.id >= 0) {
      result.push_back(seg);
    } else {
      split_added(impl, impl.norm_pass, seg.text, allow_special, result);
    }
  }
  return result;
}

// ---- pre_tokenizer -----------------------------------------------------------------------

// HF NormalizedString::split: `parts` covers the piece as (range, is_match); rewrites it to
// (range, remove) according to `behavior`.
void apply_behavior(SplitBehavior behavior, std::vector<std::pair<ByteRange, bool>>& parts) {
  std::vector<std::pair<ByteRange, bool>> out;
  out.reserve(parts.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::removed:
      return;  // is_match == remove
    case SplitBehavior::isolated:
      for (auto& p : parts) p.second = false;
      return;
    case SplitBehavior::contiguous:
      for (const auto& [range, is_match] : parts) {
        if (is_match == previous_match && !out.empty()) {
          out.back().first.second = range.second;
        } else {
          out.push_back({range, false});
        }
        previous_match = is_match;
      }
      break;
    case SplitBehavior::merged_with_previous:
      for (const auto& [range, is_match] : parts) {
        if (is_match && !previous_match && !out.empty()) {
          out.back().first.second = range.second;
        } else {
          out.push_back({range, false});
        }
        previous_match = is_match;
      }
      break;
    case SplitBehavior::merged_with_next:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        const auto& [range, is_match] = *it;
        if (is_match && !previous_match && !out.empty()) {
          out.back().first.first = range.first;
        } else {
          out.push_back({range, false});
        }
        previous_match = is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  parts = std::move(out);
}

// Splits `piece` with `regex` and appends the kept, non-empty sub-pieces to scratch.next_pieces.
Status split_piece(const tokenizer_detail::Regex& regex, SplitBehavior behavior, bool invert,
                   std::string_view piece, EncodeScratch& scratch) {
  scratch.matches.clear();
  FULGUR_TRY(regex.find_all(piece, scratch.matches));
  auto& parts = scratch.parts;
  parts.clear();
  size_t prev = 0;
  for (const auto& [begin, end] : scratch.matches) {
    if (prev != begin) parts.push_back({{prev, begin}, invert});
    parts.push_back({{begin, end}, !invert});
    prev = end;
  }
  if (prev != piece.size()) parts.push_back({{prev, piece.size()}, invert});
  apply_behavior(behavior, parts);
  for (const auto& [range, remove] : parts) {
    if (!remove && range.second > range.first) {
      scratch.next_pieces.push_back(piece.substr(range.first, range.second - range.first));
    }
  }
  return Status::ok();
}

Status apply_step(const PreTokenizerStep& step, std::string_view piece, EncodeScratch& scratch) {
  if (step.kind == PreTokenizerStep::Kind::split) {
    return split_piece(*step.regex, step.behavior, step.invert, piece, scratch);
  }
  if (step.add_prefix_space && piece.front() != ' ') {
    scratch.arena.push_back(" " + std::string(piece));
    piece = scratch.arena.back();
  }
  if (!step.regex) {
    scratch.next_pieces.push_back(piece);
    return Status::ok();
  }
  return split_piece(*step.regex, SplitBehavior::isolated, false, piece, scratch);
}

// ---- model -------------------------------------------------------------------------------

// The one-byte symbols of `piece` (HF BPE::merge_word on the byte-level string).
void initial_symbols(const tokenizer_detail::TokenizerData& impl, std::string_view piece, std::vector<int32_t>& symbols) {
  symbols.clear();
  bool previous_unk = false;
  for (const char c : piece) {
    const int32_t id = impl.byte_ids[static_cast<uint8_t>(c)];
    if (id >= 0) {
      symbols.push_back(id);
      previous_unk = false;
    } else if (impl.unk_id >= 0 && !(impl.fuse_unk && previous_unk)) {
      symbols.push_back(impl.unk_id);
      previous_unk = true;
    }
  }
}

void bpe_piece(const tokenizer_detail::TokenizerData& impl, std::string_view piece, EncodeScratch& scratch,
               std::vector<int32_t>& ids) {
  if (impl.ignore_merges) {
    const auto it = impl.vocab.find(tokenizer_detail::bytes_to_byte_level(piece));
    if (it != impl.vocab.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= tokenizer_detail::PieceCache::kMaxPieceBytes;
  if (cacheable && impl.cache.lookup(piece, ids)) return;
  initial_symbols(impl, piece, scratch.symbols);
  tokenizer_detail::bpe_merge(impl.merges, scratch.symbols, scratch.bpe);
  ids.insert(ids.end(), scratch.symbols.begin(), scratch.symbols.end());
  if (cacheable) impl.cache.store(piece, scratch.symbols.data(), scratch.symbols.size());
}

Status encode_segment(const tokenizer_detail::TokenizerData& impl, std::string_view text, EncodeScratch& scratch,
                      std::vector<int32_t>& ids) {
  scratch.pieces.assign(1, text);
  for (const PreTokenizerStep& step : impl.pre_steps) {
    scratch.next_pieces.clear();
    for (const std::string_view piece : scratch.pieces) FULGUR_TRY(apply_step(step, piece, scratch));
    std::swap(scratch.pieces, scratch.next_pieces);
  }
  for (const std::string_view piece : scratch.pieces) bpe_piece(impl, piece, scratch, ids);
  return Status::ok();
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<tokenizer_detail::TokenizerData> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Expected<std::vector<int32_t>> Tokenizer::encode(std::string_view text, bool allow_special) const {
  if (const auto bad = tokenizer_detail::find_invalid_utf8(text)) {
    return Status(Errc::invalid_argument, "text to encode: invalid UTF-8 at byte offset " + std::to_string(*bad));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  EncodeScratch scratch;
  for (const Segment& seg : split_all_added(*impl_, text, allow_special)) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
    } else if (!seg.text.empty()) {
      FULGUR_TRY(encode_segment(*impl_, seg.text, scratch, ids));
    }
  }
  return ids;
}

Expected<std::string> Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || static_cast<size_t>(id) >= impl_->records.size() || !impl_->records[id].present) {
      return Status(Errc::invalid_argument,
                    "decode: id " + std::to_string(id) + " at position " + std::to_string(i) + " is not a token");
    }
    const auto& rec = impl_->records[id];
    if (skip_special && rec.special) continue;
    out += rec.bytes;
  }
  return out;
}

Expected<std::string> Tokenizer::decode_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->records.size() || !impl_->records[id].present) {
    return Status(Errc::invalid_argument, "decode_token: id " + std::to_string(id) + " is not a token");
  }
  return impl_->records[id].bytes;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) {
    return it->second;
  }
  if (const auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string_view> Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->records.size() || !impl_->records[id].present) {
    return std::nullopt;
  }
  return std::string_view(impl_->records[id].text);
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->records.size()); }

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->records.size() && impl_->records[id].special;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

}  // namespace fulgur
