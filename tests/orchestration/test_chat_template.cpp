// MiniMax-Text-01 chat template (spec §8): exact strings, role handling, and the ids the
// rendered prompt gets from a tokenizer that knows the MiniMax special tokens.
#include "orchestration/tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "orchestration/tokenizer/tokenizer.h"

namespace fulgur {
namespace {

std::string must_render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  auto text = render_chat(messages, add_generation_prompt);
  if (!text) {
    ADD_FAILURE() << text.error().to_string();
    return {};
  }
  return std::move(text).value();
}

// The string ms-swift's test_minimax checks against the real MiniMax-Text-01 tokenizer.
TEST(ChatTemplate, SystemUserAndGenerationPrompt) {
  const std::vector<ChatMessage> messages = {
      {"system", "You are a helpful assistant created by MiniMax based on MiniMax-Text-01 model."},
      {"user", "Hello!"}};
  EXPECT_EQ(must_render(messages, true),
            "<beginning_of_sentence>system ai_setting=assistant\nYou are a helpful assistant created by MiniMax based "
            "on MiniMax-Text-01 model.<end_of_sentence>\n<beginning_of_sentence>user name=user\nHello!<end_of_sentence>\n"
            "<beginning_of_sentence>ai name=assistant\n");
}

TEST(ChatTemplate, NoDefaultSystemPrompt) {
  EXPECT_EQ(must_render({{"user", "Hi"}}, true),
            "<beginning_of_sentence>user name=user\nHi<end_of_sentence>\n<beginning_of_sentence>ai name=assistant\n");
}

TEST(ChatTemplate, MultiTurnWithoutGenerationPrompt) {
  const std::vector<ChatMessage> messages = {{"user", "2+2?"}, {"assistant", "4"}, {"user", "and 3+3?"}, {"assistant", "6"}};
  EXPECT_EQ(must_render(messages, false),
            "<beginning_of_sentence>user name=user\n2+2?<end_of_sentence>\n"
            "<beginning_of_sentence>ai name=assistant\n4<end_of_sentence>\n"
            "<beginning_of_sentence>user name=user\nand 3+3?<end_of_sentence>\n"
            "<beginning_of_sentence>ai name=assistant\n6<end_of_sentence>\n");
}

TEST(ChatTemplate, EmptyConversation) {
  EXPECT_EQ(must_render({}, false), "");
  EXPECT_EQ(must_render({}, true), "<beginning_of_sentence>ai name=assistant\n");
}

TEST(ChatTemplate, ContentIsVerbatim) {
  // No trimming, no escaping: whitespace, newlines and even special-token text pass through.
  EXPECT_EQ(must_render({{"user", "  a\n\nb <end_of_sentence> "}}, false),
            "<beginning_of_sentence>user name=user\n  a\n\nb <end_of_sentence> <end_of_sentence>\n");
}

TEST(ChatTemplate, FunctionResponses) {
  const std::string expected =
      "<beginning_of_sentence>system function_response=functions\n"
      "{\"name\": \"get_weather\", \"response\": {\"temp\": 25}}<end_of_sentence>\n";
  EXPECT_EQ(must_render({{"function", "{\"temp\": 25}", "get_weather"}}, false), expected);
  EXPECT_EQ(must_render({{"tool", "{\"temp\": 25}", "get_weather"}}, false), expected);
  auto unnamed = render_chat({{"user", "x"}, {"tool", "{}"}}, true);
  ASSERT_FALSE(unnamed.has_value());
  EXPECT_EQ(unnamed.error().code(), Errc::invalid_argument);
  EXPECT_NE(unnamed.error().message().find("message 1"), std::string::npos) << unnamed.error().message();
}

TEST(ChatTemplate, UnknownRoleNamesRoleAndIndex) {
  for (const std::string role : {"bot", "", "System", "ai"}) {
    auto r = render_chat({{"system", "s"}, {"user", "u"}, {role, "x"}}, true);
    ASSERT_FALSE(r.has_value()) << role;
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
    EXPECT_NE(r.error().message().find("message 2"), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("'" + role + "'"), std::string::npos) << r.error().message();
  }
}

// The rendered prompt through a tokenizer with the MiniMax special tokens: each marker is one id
// and the whole prompt decodes back to the text.
TEST(ChatTemplate, TokenizesMarkersAsSpecialIds) {
  const std::vector<std::string> specials = {"<beginning_of_sentence>", "<end_of_sentence>", "<end_of_document>"};
  auto json_text = Tokenizer::make_byte_level_json(
      512, specials, "system ai_setting=assistant user name=user ai name=assistant hello there");
  ASSERT_TRUE(json_text.has_value()) << json_text.error().to_string();
  auto tok = Tokenizer::from_json(*json_text, "minimax-test.json");
  ASSERT_TRUE(tok.has_value()) << tok.error().to_string();
  const int32_t bos = *tok->token_to_id("<beginning_of_sentence>");
  const int32_t eos = *tok->token_to_id("<end_of_sentence>");
  EXPECT_EQ(bos, 509);
  EXPECT_EQ(eos, 510);

  const std::string prompt = must_render({{"system", "Be brief."}, {"user", "hello there"}}, true);
  auto ids = tok->encode(prompt);
  ASSERT_TRUE(ids.has_value()) << ids.error().to_string();
  EXPECT_EQ(ids->front(), bos);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), bos), 3);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), eos), 2);
  EXPECT_EQ(*tok->decode(*ids), prompt);
  // The newline after <end_of_sentence> is ordinary text, not swallowed.
  const auto eos_at = std::find(ids->begin(), ids->end(), eos);
  ASSERT_NE(eos_at + 1, ids->end());
  EXPECT_EQ(*tok->decode_token(*(eos_at + 1)), "\n");
}

}  // namespace
}  // namespace fulgur
