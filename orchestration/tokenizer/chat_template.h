// MiniMax-Text-01 chat template, written natively (spec §8).
//
// Source: the `chat_template` of MiniMaxAI/MiniMax-Text-01 `tokenizer_config.json` (commit
// 7466de1, "Guide document for function calling (#32)"), which renders, per message:
//   system     <beginning_of_sentence>system ai_setting=assistant\n{text}<end_of_sentence>\n
//   user       <beginning_of_sentence>user name=user\n{text}<end_of_sentence>\n
//   assistant  <beginning_of_sentence>ai name=assistant\n{text}<end_of_sentence>\n
//   function   <beginning_of_sentence>system function_response=functions\n
//              {"name": "{name}", "response": {text}}<end_of_sentence>\n
// and, with add_generation_prompt, a final `<beginning_of_sentence>ai name=assistant\n`.
// No default system prompt is inserted when there is no system message, and no BOS or
// <begin_of_document> precedes the first message (that prefix is MiniMax-M1's); ms-swift's
// `minimax` template (swift/llm/template/template/minimax.py: empty prefix, no default_system)
// agrees. The Jinja template silently drops unknown roles; render_chat rejects them instead.
// Not rendered: the template's `tools` block (one `system function_setting=functions` message
// per tool schema after the conversation).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "devices/status.h"

namespace fulgur {

inline constexpr std::string_view kMiniMaxBeginOfSentence = "<beginning_of_sentence>";
inline constexpr std::string_view kMiniMaxEndOfSentence = "<end_of_sentence>";

struct ChatMessage {
  std::string role = {};     // "system" | "user" | "assistant" | "function" (alias "tool")
  std::string content = {};  // the message text (the template's content[0].text), verbatim
  std::string name = {};     // function / tool messages only: the function's name (required)
};

// Renders `messages` in order with the template above. An unknown role, or a function/tool
// message without a name -> Errc::invalid_argument naming the message index.
Expected<std::string> render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt);

}  // namespace fulgur
