#include "orchestration/http/response.h"

#include <algorithm>

#include "orchestration/tokenizer/tokenizer.h"

namespace fulgur::http {

using nlohmann::json;

int http_status_for(Errc code) {
  switch (code) {
    case Errc::invalid_argument:
    case Errc::parse_error:
    case Errc::unsupported:
    case Errc::invalid_config:
      return 400;
    case Errc::not_found:
      return 404;
    case Errc::overloaded:
      return 429;
    case Errc::unavailable:
    case Errc::cancelled:
    case Errc::out_of_memory:
      return 503;
    default:
      return 500;
  }
}

json error_body(int http_status, const std::string& message, const std::string& param) {
  const char* type = "server_error";
  if (http_status == 429) {
    type = "rate_limit_error";
  } else if (http_status == 503) {
    type = "service_unavailable";
  } else if (http_status >= 400 && http_status < 500) {
    type = "invalid_request_error";
  }
  json err = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) err["param"] = param;
  return json{{"error", std::move(err)}};
}

json error_body(const Status& status) {
  return error_body(http_status_for(status.code()), status.message(), error_param(status));
}

std::string dump_json(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_data(const json& value) { return "data: " + dump_json(value) + "\n\n"; }

size_t utf8_complete_prefix(std::string_view bytes) {
  const size_t n = bytes.size();
  // Look back at most 3 bytes for the lead byte of the last character.
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(bytes[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: keep looking for the lead
    size_t need = 0;
    if ((c & 0xE0) == 0xC0) {
      need = 2;
    } else if ((c & 0xF0) == 0xE0) {
      need = 3;
    } else if ((c & 0xF8) == 0xF0) {
      need = 4;
    } else {
      return n;  // ASCII or an invalid lead: nothing to wait for
    }
    return back < need ? n - back : n;
  }
  return n;  // only continuation bytes at the end (or empty): invalid, nothing to wait for
}

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<int32_t> hidden)
    : tokenizer_(&tokenizer), hidden_(std::move(hidden)) {}

std::string TextStream::push(int32_t token) {
  if (std::find(hidden_.begin(), hidden_.end(), token) != hidden_.end()) return {};
  if (tokenizer_->is_special(token)) return {};
  auto piece = tokenizer_->decode_token(token);
  if (!piece) return {};  // an id outside the vocabulary has no text
  pending_ += *piece;
  const size_t ready = utf8_complete_prefix(pending_);
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  return out;
}

std::string TextStream::finish() { return std::exchange(pending_, std::string()); }

json usage_json(const Usage& usage) {
  return json{{"prompt_tokens", usage.prompt_tokens},
              {"completion_tokens", usage.completion_tokens},
              {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

json completion_body(const ResponseMeta& meta, const std::string& text, const std::string& finish_reason,
                     const Usage& usage) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  const bool chat = meta.endpoint == Endpoint::chat_completions;
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  return json{{"id", meta.id},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"created", meta.created},
              {"model", meta.model},
              {"choices", json::array({std::move(choice)})},
              {"usage", usage_json(usage)}};
}

json stream_chunk(const ResponseMeta& meta, const std::string& text, const std::optional<std::string>& finish_reason,
                  const std::optional<Usage>& usage, bool first_chat_chunk) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (finish_reason) choice["finish_reason"] = *finish_reason;
  const bool chat = meta.endpoint == Endpoint::chat_completions;
  if (chat) {
    json delta = json::object();
    if (first_chat_chunk) delta["role"] = "assistant";
    if (first_chat_chunk || !text.empty()) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  json chunk = {{"id", meta.id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", meta.created},
                {"model", meta.model},
                {"choices", json::array({std::move(choice)})}};
  if (usage) chunk["usage"] = usage_json(*usage);
  return chunk;
}

}  // namespace fulgur::http
