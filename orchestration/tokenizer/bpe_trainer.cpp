// Tokenizer::make_byte_level_json: learns byte-level BPE merges on a training text and writes
// a GPT-2-style tokenizer.json with exactly the requested number of ids.
//
// Training (the classic greedy BPE trainer, made deterministic):
//   words   = GPT-2 pre-tokens of the text with their counts, each a list of token ids
//             (initially its bytes; token id = byte value for ids < 256)
//   repeat  pick the adjacent pair (a, b) with the highest count summed over words (ties: the
//           lower a, then the lower b), give a+b the next id (or its existing id when another
//           pair already produced the same bytes), replace the pair in every word holding it
//   until   the vocabulary is full or no pair is left
// Pair counts are kept incrementally (count map + lazily-updated max-heap + pair -> words
// index), so each merge costs time proportional to the words it touches.
#include <algorithm>
#include <map>
#include <queue>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "orchestration/tokenizer/byte_level.h"
#include "orchestration/tokenizer/regex.h"
#include "orchestration/tokenizer/tokenizer.h"

namespace fulgur {

namespace {

using tokenizer_detail::bytes_to_byte_level;

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}
int32_t pair_left(uint64_t key) { return static_cast<int32_t>(key >> 32); }
int32_t pair_right(uint64_t key) { return static_cast<int32_t>(key & 0xFFFFFFFFu); }

struct Word {
  std::vector<int32_t> ids;
  int64_t count = 0;
};

// Heap entry: a pair and its count when pushed (stale when the count has changed since).
struct PairEntry {
  int64_t count;
  int32_t left, right;
};
struct WorsePair {  // max-heap: higher count first, then lower (left, right)
  bool operator()(const PairEntry& x, const PairEntry& y) const {
    if (x.count != y.count) return x.count < y.count;
    return std::tie(x.left, x.right) > std::tie(y.left, y.right);
  }
};

class BpeTrainer {
 public:
  // `reserved` holds byte-level strings no learned token may equal (the special tokens).
  BpeTrainer(std::vector<Word> words, std::unordered_set<std::string> reserved)
      : words_(std::move(words)), reserved_(std::move(reserved)) {
    for (int b = 0; b < 256; ++b) {
      token_bytes_.emplace_back(1, static_cast<char>(b));
      bytes_to_id_.emplace(token_bytes_.back(), b);
    }
    for (size_t w = 0; w < words_.size(); ++w) add_word_pairs(static_cast<int32_t>(w));
    for (const auto& [key, count] : pair_counts_) heap_.push({count, pair_left(key), pair_right(key)});
  }

  // Learns merges until there are `target` tokens or no pair is left.
  void run(int64_t target) {
    while (static_cast<int64_t>(token_bytes_.size()) < target) {
      const auto best = pop_best();
      if (!best) break;
      apply_merge(best->first, best->second);
    }
  }

  const std::vector<std::string>& token_bytes() const { return token_bytes_; }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }

 private:
  void add_word_pairs(int32_t w) {
    const Word& word = words_[w];
    for (size_t i = 0; i + 1 < word.ids.size(); ++i) {
      const uint64_t key = pair_key(word.ids[i], word.ids[i + 1]);
      pair_counts_[key] += word.count;
      pair_words_[key].push_back(w);
    }
  }
  void remove_word_pairs(int32_t w, std::unordered_set<uint64_t>& touched) {
    const Word& word = words_[w];
    for (size_t i = 0; i + 1 < word.ids.size(); ++i) {
      const uint64_t key = pair_key(word.ids[i], word.ids[i + 1]);
      pair_counts_[key] -= word.count;
      touched.insert(key);
    }
  }

  // The most frequent valid pair, or nullopt when none is left.
  std::optional<std::pair<int32_t, int32_t>> pop_best() {
    while (!heap_.empty()) {
      const PairEntry top = heap_.top();
      heap_.pop();
      const auto it = pair_counts_.find(pair_key(top.left, top.right));
      if (it == pair_counts_.end() || it->second != top.count || top.count <= 0) continue;  // stale
      const std::string merged = token_bytes_[top.left] + token_bytes_[top.right];
      if (reserved_.count(bytes_to_byte_level(merged)) != 0) continue;  // would shadow a special
      return std::pair{top.left, top.right};
    }
    return std::nullopt;
  }

  // Records the merge (left, right) and rewrites every word that holds the pair.
  void apply_merge(int32_t left, int32_t right) {
    const std::string merged = token_bytes_[left] + token_bytes_[right];
    int32_t merged_id;
    if (const auto it = bytes_to_id_.find(merged); it != bytes_to_id_.end()) {
      merged_id = it->second;  // same bytes reached through another pair
    } else {
      merged_id = static_cast<int32_t>(token_bytes_.size());
      token_bytes_.push_back(merged);
      bytes_to_id_.emplace(merged, merged_id);
    }
    merges_.emplace_back(left, right);

    const uint64_t key = pair_key(left, right);
    std::vector<int32_t> holders = std::move(pair_words_[key]);
    pair_words_.erase(key);
    std::sort(holders.begin(), holders.end());
    holders.erase(std::unique(holders.begin(), holders.end()), holders.end());
    std::unordered_set<uint64_t> touched;
    for (const int32_t w : holders) {
      if (!holds_pair(words_[w].ids, left, right)) continue;
      remove_word_pairs(w, touched);
      replace_pair(words_[w].ids, left, right, merged_id);
      add_word_pairs(w);
      const Word& word = words_[w];
      for (size_t i = 0; i + 1 < word.ids.size(); ++i) touched.insert(pair_key(word.ids[i], word.ids[i + 1]));
    }
    pair_counts_.erase(key);
    for (const uint64_t k : touched) {
      const auto it = pair_counts_.find(k);
      if (it != pair_counts_.end() && it->second > 0) heap_.push({it->second, pair_left(k), pair_right(k)});
    }
  }

  static bool holds_pair(const std::vector<int32_t>& ids, int32_t left, int32_t right) {
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      if (ids[i] == left && ids[i + 1] == right) return true;
    }
    return false;
  }
  // Left to right, non-overlapping (as BPE encoding applies one merge).
  static void replace_pair(std::vector<int32_t>& ids, int32_t left, int32_t right, int32_t merged) {
    size_t out = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i + 1 < ids.size() && ids[i] == left && ids[i + 1] == right) {
        ids[out++] = merged;
        ++i;
      } else {
        ids[out++] = ids[i];
      }
    }
    ids.resize(out);
  }

  std::vector<Word> words_;
  std::unordered_set<std::string> reserved_;
  std::vector<std::string> token_bytes_;  // id -> raw bytes
  std::unordered_map<std::string, int32_t> bytes_to_id_;
  std::vector<std::pair<int32_t, int32_t>> merges_;  // in rank order
  std::unordered_map<uint64_t, int64_t> pair_counts_;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words_;  // may repeat a word
  std::priority_queue<PairEntry, std::vector<PairEntry>, WorsePair> heap_;
};

Status check_specials(const std::vector<std::string>& specials) {
  std::unordered_set<std::string> seen;
  for (size_t i = 0; i < specials.size(); ++i) {
    const std::string& s = specials[i];
    const std::string where = "special_tokens[" + std::to_string(i) + "]";
    if (s.empty()) return Status(Errc::invalid_argument, where + ": empty");
    if (auto bad = tokenizer_detail::find_invalid_utf8(s)) {
      return Status(Errc::invalid_argument, where + ": invalid UTF-8 at byte " + std::to_string(*bad));
    }
    if (!seen.insert(s).second) return Status(Errc::invalid_argument, where + ": '" + s + "' repeated");
    const auto bytes = tokenizer_detail::byte_level_to_bytes(s);
    if (bytes && bytes->size() == 1) {
      return Status(Errc::invalid_argument, where + ": '" + s + "' is a byte token's string");
    }
  }
  return Status::ok();
}

// GPT-2 pre-tokens of `text` with their counts, in a deterministic (sorted) order.
Expected<std::vector<Word>> count_words(std::string_view text) {
  FULGUR_ASSIGN_OR_RETURN(auto regex, tokenizer_detail::Regex::compile(tokenizer_detail::kGpt2Pattern));
  std::vector<tokenizer_detail::ByteRange> matches;
  FULGUR_TRY(regex.find_all(text, matches));
  std::map<std::string_view, int64_t> counts;
  for (const auto& [begin, end] : matches) ++counts[text.substr(begin, end - begin)];
  std::vector<Word> words;
  words.reserve(counts.size());
  for (const auto& [piece, count] : counts) {
    Word w;
    w.count = count;
    for (const char c : piece) w.ids.push_back(static_cast<uint8_t>(c));
    words.push_back(std::move(w));
  }
  return words;
}

// The `model.vocab` object in id order. nlohmann's ordered_json searches its keys linearly on
// insertion, so keys go straight into its underlying vector; uniqueness is tracked here.
class VocabBuilder {
 public:
  bool contains(const std::string& token) const { return used_.count(token) != 0; }
  int64_t size() const { return static_cast<int64_t>(used_.size()); }
  // Gives `token` the next id; false (and no change) when it is already present.
  bool add(const std::string& token) {
    if (!used_.insert(token).second) return false;
    auto& entries = static_cast<Entries&>(json_.get_ref<nlohmann::ordered_json::object_t&>());
    entries.emplace_back(token, nlohmann::ordered_json(size() - 1));
    return true;
  }
  nlohmann::ordered_json release() { return std::move(json_); }

 private:
  using Entries = std::vector<std::pair<const std::string, nlohmann::ordered_json>>;
  nlohmann::ordered_json json_ = nlohmann::ordered_json::object();
  std::unordered_set<std::string> used_;
};

// Adds `n` filler tokens "<|unused_K|>", skipping names a token or a special already uses.
void add_fillers(int64_t n, const std::unordered_set<std::string>& reserved, VocabBuilder& vocab) {
  for (int64_t k = 0, added = 0; added < n; ++k) {
    const std::string name = "<|unused_" + std::to_string(k) + "|>";
    if (reserved.count(name) == 0 && vocab.add(name)) ++added;
  }
}

nlohmann::ordered_json byte_level_node(bool for_decoder) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", for_decoder},
          {"trim_offsets", true},
          {"use_regex", true}};
}

Expected<std::string> build_byte_level_json(int64_t vocab_size, const std::vector<std::string>& special_tokens,
                                            std::string_view training_text) {
  const auto num_specials = static_cast<int64_t>(special_tokens.size());
  if (vocab_size < 256 + num_specials || vocab_size >= (int64_t{1} << 30)) {
    return Status(Errc::invalid_argument, "make_byte_level_json: vocab_size " + std::to_string(vocab_size) +
                                              " must be in [256 + " + std::to_string(num_specials) +
                                              " special tokens, 2^30)");
  }
  FULGUR_TRY(check_specials(special_tokens));
  if (auto bad = tokenizer_detail::find_invalid_utf8(training_text)) {
    return Status(Errc::invalid_argument,
                  "make_byte_level_json: training_text: invalid UTF-8 at byte offset " + std::to_string(*bad));
  }
  FULGUR_ASSIGN_OR_RETURN(auto words, count_words(training_text));
  const std::unordered_set<std::string> reserved(special_tokens.begin(), special_tokens.end());
  BpeTrainer trainer(std::move(words), reserved);
  const int64_t num_regular = vocab_size - num_specials;
  trainer.run(num_regular);

  VocabBuilder vocab;
  for (const std::string& bytes : trainer.token_bytes()) vocab.add(bytes_to_byte_level(bytes));
  add_fillers(num_regular - vocab.size(), reserved, vocab);
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  for (const std::string& special : special_tokens) {
    const int64_t id = vocab.size();
    vocab.add(special);  // cannot collide: reserved during training and filling, unique
    added.push_back({{"id", id},
                     {"content", special},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  const auto& bytes = trainer.token_bytes();
  for (const auto& [left, right] : trainer.merges()) {
    merges.push_back({bytes_to_byte_level(bytes[left]), bytes_to_byte_level(bytes[right])});
  }

  nlohmann::ordered_json doc;
  doc["version"] = "1.0";
  doc["truncation"] = nullptr;
  doc["padding"] = nullptr;
  doc["added_tokens"] = std::move(added);
  doc["normalizer"] = nullptr;
  doc["pre_tokenizer"] = byte_level_node(false);
  doc["post_processor"] = nullptr;
  doc["decoder"] = byte_level_node(true);
  doc["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", false},
                  {"vocab", vocab.release()},
                  {"merges", std::move(merges)}};
  return doc.dump(1);
}

}  // namespace

Expected<std::string> Tokenizer::make_byte_level_json(int64_t vocab_size, const std::vector<std::string>& special_tokens,
                                                      std::string_view training_text) {
  try {
    return build_byte_level_json(vocab_size, special_tokens, training_text);
  } catch (const std::bad_alloc&) {
    return Status(Errc::out_of_memory, "make_byte_level_json: out of memory");
  } catch (const std::exception& e) {
    return Status(Errc::internal, std::string("make_byte_level_json: ") + e.what());
  }
}

}  // namespace fulgur
