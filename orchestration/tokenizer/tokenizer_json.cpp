// Tokenizer::from_json / load: tokenizer.json -> tokenizer_detail::TokenizerData. Every rejection names the
// JSON path at fault ("model.merges[3]", "pre_tokenizer.pretokenizers[0].pattern").
#include <algorithm>
#include <exception>
#include <fstream>
#include <limits>
#include <new>
#include <sstream>

#include <nlohmann/json.hpp>

#include "orchestration/tokenizer/byte_level.h"
#include "orchestration/tokenizer/tokenizer_impl.h"

namespace fulgur {

namespace {

using nlohmann::json;
using tokenizer_detail::AddedTokenMatcher;
using tokenizer_detail::PreTokenizerStep;
using tokenizer_detail::Regex;
using tokenizer_detail::SplitBehavior;

// Ids are dense enough for a by-id table when max id + 1 <= kSparsityFactor * count + kSlack;
// this bounds the memory a hostile file can make us allocate.
constexpr int64_t kSparsityFactor = 4;
constexpr int64_t kSlack = 65536;

// Builds "<origin>: <path>: <what>" statuses.
class Errors {
 public:
  explicit Errors(std::string_view origin) : origin_(origin) {}
  Status at(Errc code, std::string_view path, std::string_view what) const {
    return Status(code, origin_ + ": " + std::string(path) + ": " + std::string(what));
  }
  Status parse(std::string_view path, std::string_view what) const { return at(Errc::parse_error, path, what); }
  Status unsupported(std::string_view path, std::string_view what) const {
    return at(Errc::unsupported, path, what);
  }
  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
};

std::string join_path(std::string_view parent, std::string_view key) {
  return std::string(parent) + "." + std::string(key);
}
std::string index_path(std::string_view parent, size_t i) {
  return std::string(parent) + "[" + std::to_string(i) + "]";
}

// "'abc'" with the content cut to 40 bytes, for messages.
std::string quote_token(std::string_view s) {
  constexpr size_t kMax = 40;
  if (s.size() <= kMax) return "'" + std::string(s) + "'";
  return "'" + std::string(s.substr(0, kMax)) + "...'";
}

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}
bool absent_or_null(const json* v) { return v == nullptr || v->is_null(); }

Expected<bool> optional_bool(const Errors& err, const json& obj, const char* key, std::string_view path,
                             bool fallback) {
  const json* v = member(obj, key);
  if (absent_or_null(v)) return fallback;
  if (!v->is_boolean()) return err.parse(join_path(path, key), "expected true or false");
  return v->get<bool>();
}

Expected<std::string> optional_string(const Errors& err, const json& obj, const char* key,
                                      std::string_view path) {
  const json* v = member(obj, key);
  if (absent_or_null(v)) return std::string();
  if (!v->is_string()) return err.parse(join_path(path, key), "expected a string");
  return v->get<std::string>();
}

Expected<std::string> required_string(const Errors& err, const json& obj, const char* key,
                                      std::string_view path) {
  const json* v = member(obj, key);
  if (v == nullptr) return err.parse(join_path(path, key), "missing");
  if (!v->is_string()) return err.parse(join_path(path, key), "expected a string");
  return v->get<std::string>();
}

// A token id: an integer in [0, INT32_MAX).
Expected<int32_t> parse_id(const Errors& err, const json& v, std::string_view path) {
  if (v.is_number_unsigned()) {
    const auto id = v.get<uint64_t>();
    if (id < static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) return static_cast<int32_t>(id);
  } else if (v.is_number_integer()) {
    const auto id = v.get<int64_t>();
    if (id >= 0 && id < std::numeric_limits<int32_t>::max()) return static_cast<int32_t>(id);
  }
  return err.parse(path, "expected a token id (an integer in [0, 2^31 - 1)), got " + v.dump());
}

// ---- normalizer / decoder ----------------------------------------------------------------

Status check_normalizer(const Errors& err, const json& root) {
  const json* norm = member(root, "normalizer");
  if (absent_or_null(norm)) return Status::ok();
  if (!norm->is_object()) return err.parse("normalizer", "expected an object or null");
  const json* type = member(*norm, "type");
  const std::string name = type != nullptr && type->is_string() ? type->get<std::string>() : "?";
  if (name == "Sequence") {
    const json* list = member(*norm, "normalizers");
    if (list != nullptr && list->is_array() && list->empty()) return Status::ok();
  }
  return err.unsupported("normalizer", "type '" + name + "' is not supported (only null)");
}

Status check_decoder(const Errors& err, const json& root) {
  const json* dec = member(root, "decoder");
  if (absent_or_null(dec)) return Status::ok();  // a byte-level model decodes as ByteLevel
  if (!dec->is_object()) return err.parse("decoder", "expected an object or null");
  FULGUR_ASSIGN_OR_RETURN(const std::string type, required_string(err, *dec, "type", "decoder"));
  if (type != "ByteLevel") {
    return err.unsupported("decoder.type", "'" + type + "' is not supported (only ByteLevel)");
  }
  return Status::ok();
}

// ---- pre_tokenizer -----------------------------------------------------------------------

Expected<SplitBehavior> parse_behavior(const Errors& err, const json& node, std::string_view path) {
  FULGUR_ASSIGN_OR_RETURN(const std::string name, required_string(err, node, "behavior", path));
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  return err.parse(join_path(path, "behavior"), "unknown behavior '" + name + "'");
}

// Split {"pattern": {"Regex": r} | {"String": s}, "behavior": ..., "invert": bool}.
Expected<PreTokenizerStep> parse_split(const Errors& err, const json& node, std::string_view path) {
  PreTokenizerStep step;
  step.kind = PreTokenizerStep::Kind::split;
  const std::string pattern_path = join_path(path, "pattern");
  const json* pattern = member(node, "pattern");
  if (pattern == nullptr) return err.parse(pattern_path, "missing");
  const json* regex = member(*pattern, "Regex");
  const json* literal = member(*pattern, "String");
  const json* source = regex != nullptr ? regex : literal;
  if (source == nullptr || !source->is_string()) {
    return err.parse(pattern_path, "expected {\"Regex\": string} or {\"String\": string}");
  }
  const auto text = source->get<std::string>();
  if (auto bad = tokenizer_detail::find_invalid_utf8(text)) {
    return err.parse(pattern_path, "invalid UTF-8 at byte " + std::to_string(*bad));
  }
  auto compiled = Regex::compile(text, /*literal=*/regex == nullptr);
  if (!compiled) return err.parse(pattern_path, compiled.error().message());
  step.regex = std::move(compiled).value();
  FULGUR_ASSIGN_OR_RETURN(step.behavior, parse_behavior(err, node, path));
  FULGUR_ASSIGN_OR_RETURN(step.invert, optional_bool(err, node, "invert", path, false));
  return step;
}

// ByteLevel {"add_prefix_space": bool, "use_regex": bool} (trim_offsets only affects offsets).
Expected<PreTokenizerStep> parse_byte_level(const Errors& err, const json& node, std::string_view path) {
  PreTokenizerStep step;
  step.kind = PreTokenizerStep::Kind::byte_level;
  FULGUR_ASSIGN_OR_RETURN(step.add_prefix_space, optional_bool(err, node, "add_prefix_space", path, true));
  FULGUR_ASSIGN_OR_RETURN(const bool use_regex, optional_bool(err, node, "use_regex", path, true));
  if (use_regex) {
    auto compiled = Regex::compile(tokenizer_detail::kGpt2Pattern);
    if (!compiled) return err.at(Errc::internal, path, compiled.error().message());
    step.regex = std::move(compiled).value();
  }
  return step;
}

// Appends the steps of `node` (flattening nested Sequences) to `steps`.
Status parse_pre_tokenizer_node(const Errors& err, const json& node, const std::string& path,
                                std::vector<PreTokenizerStep>& steps, int depth) {
  if (depth > 16) return err.parse(path, "Sequence nested too deeply");
  if (!node.is_object()) return err.parse(path, "expected an object");
  FULGUR_ASSIGN_OR_RETURN(const std::string type, required_string(err, node, "type", path));
  if (type == "Sequence") {
    const json* list = member(node, "pretokenizers");
    const std::string list_path = join_path(path, "pretokenizers");
    if (list == nullptr || !list->is_array()) return err.parse(list_path, "expected an array");
    for (size_t i = 0; i < list->size(); ++i) {
      FULGUR_TRY(parse_pre_tokenizer_node(err, (*list)[i], index_path(list_path, i), steps, depth + 1));
    }
    return Status::ok();
  }
  if (type == "Split") {
    FULGUR_ASSIGN_OR_RETURN(auto step, parse_split(err, node, path));
    steps.push_back(std::move(step));
    return Status::ok();
  }
  if (type == "ByteLevel") {
    FULGUR_ASSIGN_OR_RETURN(auto step, parse_byte_level(err, node, path));
    steps.push_back(std::move(step));
    return Status::ok();
  }
  return err.unsupported(join_path(path, "type"),
                         "'" + type + "' is not supported (ByteLevel, Split, Sequence)");
}

Expected<std::vector<PreTokenizerStep>> parse_pre_tokenizer(const Errors& err, const json& root) {
  const json* node = member(root, "pre_tokenizer");
  if (absent_or_null(node)) {
    return err.unsupported("pre_tokenizer", "missing; only byte-level BPE (a ByteLevel pre-tokenizer) is supported");
  }
  std::vector<PreTokenizerStep> steps;
  FULGUR_TRY(parse_pre_tokenizer_node(err, *node, "pre_tokenizer", steps, 0));
  const auto num_byte_level = std::count_if(steps.begin(), steps.end(), [](const PreTokenizerStep& s) {
    return s.kind == PreTokenizerStep::Kind::byte_level;
  });
  if (num_byte_level != 1 || steps.back().kind != PreTokenizerStep::Kind::byte_level) {
    return err.unsupported("pre_tokenizer", "exactly one ByteLevel step, as the last step, is required");
  }
  return steps;
}

// ---- model -------------------------------------------------------------------------------

Status check_model_options(const Errors& err, const json& model, tokenizer_detail::TokenizerData& impl) {
  FULGUR_ASSIGN_OR_RETURN(const std::string type, required_string(err, model, "type", "model"));
  if (type != "BPE") return err.unsupported("model.type", "'" + type + "' is not supported (only BPE)");
  const json* dropout = member(model, "dropout");
  if (!absent_or_null(dropout) && !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return err.unsupported("model.dropout", "only null is supported (encoding must be deterministic)");
  }
  FULGUR_ASSIGN_OR_RETURN(const bool byte_fallback, optional_bool(err, model, "byte_fallback", "model", false));
  if (byte_fallback) return err.unsupported("model.byte_fallback", "only false is supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    FULGUR_ASSIGN_OR_RETURN(const std::string value, optional_string(err, model, key, "model"));
    if (!value.empty()) return err.unsupported(join_path("model", key), "only null or \"\" is supported");
  }
  FULGUR_ASSIGN_OR_RETURN(impl.ignore_merges, optional_bool(err, model, "ignore_merges", "model", false));
  FULGUR_ASSIGN_OR_RETURN(impl.fuse_unk, optional_bool(err, model, "fuse_unk", "model", false));
  return Status::ok();
}

Status parse_vocab(const Errors& err, const json& model, tokenizer_detail::TokenizerData& impl) {
  const json* vocab = member(model, "vocab");
  if (vocab == nullptr) return err.parse("model.vocab", "missing");
  if (!vocab->is_object()) return err.parse("model.vocab", "expected an object {token: id}");
  impl.vocab.reserve(vocab->size());
  std::unordered_map<int32_t, std::string_view> owner;  // id -> token, to catch duplicates
  owner.reserve(vocab->size());
  for (const auto& [token, value] : vocab->items()) {
    const std::string path = "model.vocab[" + quote_token(token) + "]";
    FULGUR_ASSIGN_OR_RETURN(const int32_t id, parse_id(err, value, path));
    const auto [it, inserted] = owner.emplace(id, token);
    if (!inserted) {
      return err.parse("model.vocab", "id " + std::to_string(id) + " is used by both " +
                                          quote_token(it->second) + " and " + quote_token(token));
    }
    impl.vocab.emplace(token, id);
  }
  return Status::ok();
}

// One merge as its two token strings: "a b" or ["a", "b"].
Expected<std::pair<std::string, std::string>> merge_pair(const Errors& err, const json& v,
                                                         std::string_view path) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    const size_t space = s.find(' ');
    if (space == std::string::npos) return err.parse(path, "expected \"left right\", got " + quote_token(s));
    return std::pair{s.substr(0, space), s.substr(space + 1)};
  }
  if (v.is_array() && v.size() == 2 && v[0].is_string() && v[1].is_string()) {
    return std::pair{v[0].get<std::string>(), v[1].get<std::string>()};
  }
  return err.parse(path, "expected \"left right\" or [\"left\", \"right\"]");
}

Status parse_merges(const Errors& err, const json& model, tokenizer_detail::TokenizerData& impl) {
  const json* merges = member(model, "merges");
  if (merges == nullptr) return err.parse("model.merges", "missing");
  if (!merges->is_array()) return err.parse("model.merges", "expected an array");
  if (merges->size() >= static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return err.parse("model.merges", "too many merges");
  }
  impl.merges.reserve(merges->size());
  const auto lookup = [&](const std::string& token) -> std::optional<int32_t> {
    const auto it = impl.vocab.find(token);
    if (it == impl.vocab.end()) return std::nullopt;
    return it->second;
  };
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const std::string path = index_path("model.merges", rank);
    FULGUR_ASSIGN_OR_RETURN(const auto pair, merge_pair(err, (*merges)[rank], path));
    const auto left = lookup(pair.first);
    if (!left) return err.parse(path, "left token " + quote_token(pair.first) + " is not in model.vocab");
    const auto right = lookup(pair.second);
    if (!right) return err.parse(path, "right token " + quote_token(pair.second) + " is not in model.vocab");
    const auto merged = lookup(pair.first + pair.second);
    if (!merged) {
      return err.parse(path, "merged token " + quote_token(pair.first + pair.second) + " is not in model.vocab");
    }
    impl.merges.insert(*left, *right, {static_cast<int32_t>(rank), *merged});
  }
  return Status::ok();
}

Status parse_model(const Errors& err, const json& root, tokenizer_detail::TokenizerData& impl) {
  const json* model = member(root, "model");
  if (model == nullptr) return err.parse("model", "missing");
  if (!model->is_object()) return err.parse("model", "expected an object");
  FULGUR_TRY(check_model_options(err, *model, impl));
  FULGUR_TRY(parse_vocab(err, *model, impl));
  FULGUR_TRY(parse_merges(err, *model, impl));
  FULGUR_ASSIGN_OR_RETURN(const std::string unk, optional_string(err, *model, "unk_token", "model"));
  if (!unk.empty()) {
    const auto it = impl.vocab.find(unk);
    if (it == impl.vocab.end()) return err.parse("model.unk_token", quote_token(unk) + " is not in model.vocab");
    impl.unk_id = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    tokenizer_detail::append_utf8(ch, tokenizer_detail::kByteToCodepoint[b]);
    const auto it = impl.vocab.find(ch);
    impl.byte_ids[b] = it == impl.vocab.end() ? -1 : it->second;
  }
  return Status::ok();
}

// ---- added_tokens ------------------------------------------------------------------------

Expected<AddedToken> parse_added_token(const Errors& err, const json& node, std::string_view path) {
  if (!node.is_object()) return err.parse(path, "expected an object");
  AddedToken tok;
  const json* id = member(node, "id");
  if (id == nullptr) return err.parse(join_path(path, "id"), "missing");
  FULGUR_ASSIGN_OR_RETURN(tok.id, parse_id(err, *id, join_path(path, "id")));
  FULGUR_ASSIGN_OR_RETURN(tok.content, required_string(err, node, "content", path));
  if (tok.content.empty()) return err.parse(join_path(path, "content"), "empty");
  if (auto bad = tokenizer_detail::find_invalid_utf8(tok.content)) {
    return err.parse(join_path(path, "content"), "invalid UTF-8 at byte " + std::to_string(*bad));
  }
  FULGUR_ASSIGN_OR_RETURN(tok.special, optional_bool(err, node, "special", path, false));
  FULGUR_ASSIGN_OR_RETURN(tok.lstrip, optional_bool(err, node, "lstrip", path, false));
  FULGUR_ASSIGN_OR_RETURN(tok.rstrip, optional_bool(err, node, "rstrip", path, false));
  FULGUR_ASSIGN_OR_RETURN(tok.single_word, optional_bool(err, node, "single_word", path, false));
  FULGUR_ASSIGN_OR_RETURN(tok.normalized, optional_bool(err, node, "normalized", path, !tok.special));
  return tok;
}

// An added token's id must agree with model.vocab: when its content is a vocab token, that
// token's id (HF reuses it); otherwise an id no vocab token has.
Status check_added_id(const Errors& err, const tokenizer_detail::TokenizerData& impl, const AddedToken& tok,
                      std::string_view path, const std::unordered_map<int32_t, std::string_view>& vocab_owner) {
  const auto in_vocab = impl.vocab.find(tok.content);
  if (in_vocab != impl.vocab.end() && in_vocab->second != tok.id) {
    return err.parse(path, quote_token(tok.content) + " has id " + std::to_string(tok.id) +
                               " but model.vocab gives it " + std::to_string(in_vocab->second));
  }
  const auto owner = vocab_owner.find(tok.id);
  if (in_vocab == impl.vocab.end() && owner != vocab_owner.end()) {
    return err.parse(path, "id " + std::to_string(tok.id) + " of " + quote_token(tok.content) +
                               " belongs to vocab token " + quote_token(owner->second));
  }
  return Status::ok();
}

Status parse_added_tokens(const Errors& err, const json& root, tokenizer_detail::TokenizerData& impl) {
  const json* list = member(root, "added_tokens");
  if (absent_or_null(list)) return Status::ok();
  if (!list->is_array()) return err.parse("added_tokens", "expected an array");
  std::unordered_map<int32_t, std::string_view> vocab_owner;
  vocab_owner.reserve(impl.vocab.size());
  for (const auto& [token, id] : impl.vocab) vocab_owner.emplace(id, token);
  std::unordered_map<int32_t, size_t> added_by_id;  // id -> index into impl.added
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string path = index_path("added_tokens", i);
    FULGUR_ASSIGN_OR_RETURN(AddedToken tok, parse_added_token(err, (*list)[i], path));
    FULGUR_TRY(check_added_id(err, impl, tok, path, vocab_owner));
    const auto same_content = impl.added_by_content.find(tok.content);
    if (same_content != impl.added_by_content.end()) {
      if (same_content->second != tok.id) return err.parse(path, quote_token(tok.content) + " is listed twice with different ids");
      continue;  // exact repeat: HF ignores it as well
    }
    if (added_by_id.count(tok.id) != 0) {
      return err.parse(path, "id " + std::to_string(tok.id) + " is used by two added tokens");
    }
    added_by_id.emplace(tok.id, impl.added.size());
    impl.added_by_content.emplace(tok.content, tok.id);
    impl.added.push_back(std::move(tok));
  }
  return Status::ok();
}

void build_matchers(tokenizer_detail::TokenizerData& impl) {
  for (size_t i = 0; i < impl.added.size(); ++i) {
    const AddedToken& tok = impl.added[i];
    AddedTokenMatcher& pass = tok.normalized ? impl.norm_pass : impl.raw_pass;
    pass.by_first_byte[static_cast<uint8_t>(tok.content[0])].push_back(static_cast<int32_t>(i));
    pass.empty = false;
  }
  for (AddedTokenMatcher* pass : {&impl.raw_pass, &impl.norm_pass}) {
    for (auto& candidates : pass->by_first_byte) {
      std::stable_sort(candidates.begin(), candidates.end(), [&](int32_t a, int32_t b) {
        return impl.added[a].content.size() > impl.added[b].content.size();
      });
    }
  }
}

// Rust's regex \w (HF matches single_word against it); falls back to PCRE2's \w.
Status compile_word_char(const Errors& err, tokenizer_detail::TokenizerData& impl) {
  const bool needed = std::any_of(impl.added.begin(), impl.added.end(),
                                  [](const AddedToken& t) { return t.single_word; });
  if (!needed) return Status::ok();
  auto re = Regex::compile(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])");
  if (!re) re = Regex::compile(R"(\w)");
  if (!re) return err.at(Errc::internal, "added_tokens", re.error().message());
  impl.word_char = std::move(re).value();
  return Status::ok();
}

// ---- id table ----------------------------------------------------------------------------

std::string token_bytes(const std::string& text) {
  auto bytes = tokenizer_detail::byte_level_to_bytes(text);
  return bytes ? std::move(*bytes) : text;
}

Status build_records(const Errors& err, tokenizer_detail::TokenizerData& impl) {
  int64_t max_id = -1;
  for (const auto& [token, id] : impl.vocab) max_id = std::max<int64_t>(max_id, id);
  for (const auto& tok : impl.added) max_id = std::max<int64_t>(max_id, tok.id);
  if (max_id < 0) return err.parse("model.vocab", "no tokens");
  const int64_t count = static_cast<int64_t>(impl.vocab.size() + impl.added.size());
  if (max_id + 1 > kSparsityFactor * count + kSlack) {
    return err.parse("model.vocab", "ids are too sparse: max id " + std::to_string(max_id) + " for " +
                                        std::to_string(count) + " tokens");
  }
  impl.records.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [token, id] : impl.vocab) {
    auto& rec = impl.records[id];
    rec.text = token;
    rec.bytes = token_bytes(token);
    rec.present = true;
  }
  for (const auto& tok : impl.added) {
    auto& rec = impl.records[tok.id];
    rec.text = tok.content;
    rec.bytes = token_bytes(tok.content);
    rec.present = true;
    rec.special = tok.special;
  }
  return Status::ok();
}

Status parse_document(const Errors& err, std::string_view json_text, tokenizer_detail::TokenizerData& impl) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::parse_error& e) {
    return err.at(Errc::parse_error, "JSON", e.what());
  }
  if (!root.is_object()) return err.parse("(root)", "expected a JSON object");
  FULGUR_TRY(check_normalizer(err, root));
  FULGUR_TRY(parse_model(err, root, impl));
  FULGUR_TRY(parse_added_tokens(err, root, impl));
  FULGUR_ASSIGN_OR_RETURN(impl.pre_steps, parse_pre_tokenizer(err, root));
  FULGUR_TRY(check_decoder(err, root));
  build_matchers(impl);
  FULGUR_TRY(compile_word_char(err, impl));
  return build_records(err, impl);
}

}  // namespace

Expected<Tokenizer> Tokenizer::from_json(std::string_view json_text, std::string_view origin) {
  const Errors err(origin);
  try {
    auto impl = std::make_unique<tokenizer_detail::TokenizerData>();
    impl->origin = std::string(origin);
    FULGUR_TRY(parse_document(err, json_text, *impl));
    return Tokenizer(std::move(impl));
  } catch (const json::exception& e) {  // a type check we missed: still an error, not a crash
    return err.at(Errc::parse_error, "JSON", e.what());
  } catch (const std::bad_alloc&) {
    return Status(Errc::out_of_memory, std::string(origin) + ": out of memory while loading");
  } catch (const std::exception& e) {
    return Status(Errc::internal, std::string(origin) + ": " + e.what());
  }
}

Expected<Tokenizer> Tokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(Errc::not_found, path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status(Errc::io_error, path + ": read failed");
  return from_json(text.str(), path);
}

}  // namespace fulgur
