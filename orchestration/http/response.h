// OpenAI response bodies, error bodies and incremental text, as pure functions: the server
// (server.cpp) only moves their bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "devices/status.h"
#include "orchestration/http/request.h"

namespace fulgur {

class Tokenizer;

namespace http {

// HTTP status for an error code: invalid_argument / parse_error / unsupported -> 400,
// not_found -> 404, overloaded -> 429, unavailable / cancelled / out_of_memory -> 503, else 500.
int http_status_for(Errc code);

// {"error": {"message": ..., "type": ..., "param": <param or null>, "code": null}} -- OpenAI's
// shape. type: "invalid_request_error" (4xx), "rate_limit_error" (429), "service_unavailable"
// (503), "server_error" (5xx).
nlohmann::json error_body(int http_status, const std::string& message, const std::string& param = {});
// From a Status: message and param by request.h's convention, status by http_status_for.
nlohmann::json error_body(const Status& status);

// JSON text; invalid UTF-8 in strings (a model may emit any bytes) becomes U+FFFD instead of
// throwing.
std::string dump_json(const nlohmann::json& value);
// One server-sent event: "data: <json>\n\n".
std::string sse_data(const nlohmann::json& value);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// Length of the longest prefix of `bytes` that does not end inside a UTF-8 character: an
// incomplete multi-byte sequence at the end (a lead byte followed by fewer continuation bytes
// than it announces, at most 3 bytes) is left out. Invalid bytes are not held back.
size_t utf8_complete_prefix(std::string_view bytes);

// Token ids -> text, incrementally: special tokens and `hidden` ids (the stop tokens) give no
// text, and a character split across tokens is emitted whole with the token that completes it.
class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, std::vector<int32_t> hidden);
  // The text that `token` completes (may be empty).
  std::string push(int32_t token);
  // Whatever is still held back (an incomplete character at the very end).
  std::string finish();

 private:
  const Tokenizer* tokenizer_;
  std::vector<int32_t> hidden_;
  std::string pending_;
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// What every response body of one request shares.
struct ResponseMeta {
  Endpoint endpoint = Endpoint::completions;
  std::string id;     // "cmpl-..." / "chatcmpl-..."
  std::string model;
  int64_t created = 0;  // unix seconds
};

nlohmann::json usage_json(const Usage& usage);

// Non-streaming body: "text_completion" with choices[0].text, or "chat.completion" with
// choices[0].message {role: assistant, content}; both with finish_reason and usage.
nlohmann::json completion_body(const ResponseMeta& meta, const std::string& text, const std::string& finish_reason,
                               const Usage& usage);

// Streaming chunk: "text_completion" with choices[0].text, or "chat.completion.chunk" with
// choices[0].delta ({role: "assistant", content: ""} for the first chunk, {content} after, {}
// in the final one). finish_reason is null until the final chunk, which also carries usage.
nlohmann::json stream_chunk(const ResponseMeta& meta, const std::string& text,
                            const std::optional<std::string>& finish_reason, const std::optional<Usage>& usage,
                            bool first_chat_chunk = false);

}  // namespace http
}  // namespace fulgur
