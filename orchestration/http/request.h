// OpenAI request bodies -> engine requests, as pure functions (no sockets, no engine), so the
// gateway's input handling can be unit-tested and fuzzed directly.
//
// Two steps:
//   1. parse_completion_request(body, endpoint, ctx): JSON shape and value checks, no tokenizer.
//   2. build_engine_request(parsed, tokenizer, ctx): chat template, tokenization, context length,
//      stop tokens -> the CompletionRequest handed to Engine::submit.
//
// Error convention: a failure that is about one request field has a Status message
// "<param>: <what is wrong>", where <param> is the field's path in the body ("temperature",
// "messages[2].role", "prompt"); error_param() recovers it for the OpenAI error's "param".
// Messages that do not name a field (a body that is not JSON) have no such prefix.
// Codes: Errc::parse_error (body is not JSON), Errc::invalid_argument (bad field),
// Errc::unsupported (valid OpenAI field this server does not implement), Errc::not_found
// (unknown model) -- http_status_for() maps them to 400 / 400 / 400 / 404.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "devices/status.h"
#include "orchestration/serving/engine.h"
#include "orchestration/tokenizer/chat_template.h"

namespace fulgur {

class Tokenizer;

namespace http {

enum class Endpoint { completions, chat_completions };  // POST /v1/completions, /v1/chat/completions

// What the parser and the builder need to know about the served model.
struct RequestContext {
  std::string served_model;            // a request's "model" must equal this (when given)
  int64_t max_context = 4096;          // prompt + completion tokens, from Engine::max_context()
  std::vector<int32_t> stop_tokens;    // always added (default_stop_tokens); never emitted as text
  int64_t default_max_tokens = 16;     // /v1/completions without max_tokens (OpenAI's default)
};

struct ParsedRequest {
  Endpoint endpoint = Endpoint::completions;
  // completions: exactly one of prompt_text / prompt_tokens is set.
  std::optional<std::string> prompt_text;
  std::optional<std::vector<int32_t>> prompt_tokens;
  // chat completions: the conversation, rendered with add_generation_prompt.
  std::vector<ChatMessage> messages;
  // Absent: completions use ctx.default_max_tokens, chat uses the rest of the context.
  std::optional<int64_t> max_tokens;
  float temperature = 1.f;             // OpenAI's default
  float top_p = 1.f;
  int64_t top_k = 0;                   // extension; 0 (or -1) = off
  std::optional<uint64_t> seed;        // absent: the gateway draws one
  bool stream = false;
  std::vector<std::string> stop;       // each must be a single token (checked when building)
  std::vector<int32_t> stop_token_ids; // extension (vLLM's name)
};

// The request body text -> JSON (Errc::parse_error with the position, no param).
Expected<nlohmann::json> parse_json_body(std::string_view body);

// Field-level validation of a /v1/completions or /v1/chat/completions body:
//   model            string, equal to ctx.served_model (else Errc::not_found, HTTP 404)
//   prompt           (completions, required) string | [int] | [string] of one | [[int]] of one
//   messages         (chat, required) non-empty array of {role, content, name?}; role one of
//                    system | user | assistant | function | tool (function/tool need a name);
//                    content a string, null, or an array of {"type":"text","text":...} parts
//   max_tokens       integer >= 0 (chat also: max_completion_tokens)
//   temperature      number in [0, 100];  top_p number in (0, 1];  top_k integer >= -1
//   seed             integer;  stream  bool;  n  1 (else unsupported)
//   stop             string | [string] (<= 4);  stop_token_ids  [int >= 0]
//   echo, logprobs, suffix, best_of > 1, non-zero presence/frequency_penalty: unsupported
// Unknown fields are ignored (as OpenAI-compatible servers do); null means "absent".
Expected<ParsedRequest> parse_completion_request(const nlohmann::json& body, Endpoint endpoint,
                                                 const RequestContext& ctx);

// Renders chat messages (MiniMax template, add_generation_prompt), tokenizes the prompt
// (special tokens recognised), checks token ids against the vocabulary and the prompt length
// against ctx.max_context (param "prompt" / "messages"), resolves max_tokens (an explicit value
// that does not fit beside the prompt is an error naming "max_tokens"; the default is clipped),
// maps each `stop` string to the single token it encodes to, and fills the sampling params.
// `seed_if_absent` is used when the request has no seed.
Expected<CompletionRequest> build_engine_request(const ParsedRequest& parsed, const Tokenizer& tokenizer,
                                                 const RequestContext& ctx, uint64_t seed_if_absent);

// "<param>: ..." -> "<param>", else "" (see the error convention above).
std::string error_param(const Status& status);

}  // namespace http
}  // namespace fulgur
