#include "orchestration/tokenizer/chat_template.h"

namespace fulgur {

namespace {

// The header line that opens a message of `role`, or empty for an unknown role.
std::string_view role_header(std::string_view role) {
  if (role == "system") return "system ai_setting=assistant\n";
  if (role == "user") return "user name=user\n";
  if (role == "assistant") return "ai name=assistant\n";
  if (role == "function" || role == "tool") return "system function_response=functions\n";
  return {};
}

bool is_function_role(std::string_view role) { return role == "function" || role == "tool"; }

// The message body; a function response is wrapped as the template does, without escaping:
// {"name": "<name>", "response": <content>} (the content is expected to be JSON already).
std::string message_body(const ChatMessage& m) {
  if (!is_function_role(m.role)) return m.content;
  return "{\"name\": \"" + m.name + "\", \"response\": " + m.content + "}";
}

}  // namespace

Expected<std::string> render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const std::string_view header = role_header(m.role);
    if (header.empty()) {
      return Status(Errc::invalid_argument, "chat message " + std::to_string(i) + ": unknown role '" + m.role +
                                                "' (system, user, assistant, function, tool)");
    }
    if (is_function_role(m.role) && m.name.empty()) {
      return Status(Errc::invalid_argument, "chat message " + std::to_string(i) + ": role '" + m.role +
                                                "' needs the function's name");
    }
    out += kMiniMaxBeginOfSentence;
    out += header;
    out += message_body(m);
    out += kMiniMaxEndOfSentence;
    out += '\n';
  }
  if (add_generation_prompt) {
    out += kMiniMaxBeginOfSentence;
    out += role_header("assistant");
  }
  return out;
}

}  // namespace fulgur
