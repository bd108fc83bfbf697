#include "orchestration/http/request.h"

#include <cctype>
#include <cmath>
#include <limits>

#include "orchestration/tokenizer/tokenizer.h"

namespace fulgur::http {

namespace {

using nlohmann::json;

Status field_error(const std::string& param, const std::string& what, Errc code = Errc::invalid_argument) {
  return Status(code, param + ": " + what);
}

const char* type_name(const json& v) { return v.type_name(); }

// The member `name` of `body`, or nullptr when it is absent or null.
const json* member(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

Expected<int64_t> as_int64(const json& v, const std::string& param) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return field_error(param, "integer is too large");
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return field_error(param, std::string("must be an integer, got ") + type_name(v));
}

Expected<double> as_number(const json& v, const std::string& param) {
  if (!v.is_number()) return field_error(param, std::string("must be a number, got ") + type_name(v));
  const double d = v.get<double>();
  if (!std::isfinite(d)) return field_error(param, "must be finite");
  return d;
}

Expected<bool> as_bool(const json& v, const std::string& param) {
  if (!v.is_boolean()) return field_error(param, std::string("must be a boolean, got ") + type_name(v));
  return v.get<bool>();
}

Expected<std::vector<int32_t>> as_token_array(const json& v, const std::string& param) {
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string p = param + "[" + std::to_string(i) + "]";
    FULGUR_ASSIGN_OR_RETURN(const int64_t id, as_int64(v[i], p));
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) return field_error(p, "token id out of range");
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// prompt: string | [int] | [string] of one | [[int]] of one.
Status parse_prompt(const json& body, ParsedRequest& out) {
  const json* prompt = member(body, "prompt");
  if (!prompt) return field_error("prompt", "is required");
  if (prompt->is_string()) {
    out.prompt_text = prompt->get<std::string>();
    if (out.prompt_text->empty()) return field_error("prompt", "must not be empty");
    return Status::ok();
  }
  if (!prompt->is_array()) {
    return field_error("prompt", std::string("must be a string or an array of token ids, got ") + type_name(*prompt));
  }
  if (prompt->empty()) return field_error("prompt", "must not be empty");
  const json& first = (*prompt)[0];
  if (first.is_string() || first.is_array()) {  // a batch: only one prompt per request here
    if (prompt->size() != 1) {
      return field_error("prompt", "batches of several prompts are not supported; send one prompt per request",
                         Errc::unsupported);
    }
    if (first.is_string()) {
      out.prompt_text = first.get<std::string>();
      if (out.prompt_text->empty()) return field_error("prompt[0]", "must not be empty");
      return Status::ok();
    }
    if (first.empty()) return field_error("prompt[0]", "must not be empty");
    FULGUR_ASSIGN_OR_RETURN(out.prompt_tokens, as_token_array(first, "prompt[0]"));
    return Status::ok();
  }
  FULGUR_ASSIGN_OR_RETURN(out.prompt_tokens, as_token_array(*prompt, "prompt"));
  return Status::ok();
}

// content: string | null | [{"type": "text", "text": string}].
Expected<std::string> parse_content(const json& content, const std::string& param) {
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    return field_error(param, std::string("must be a string or an array of text parts, got ") + type_name(content));
  }
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string p = param + "[" + std::to_string(i) + "]";
    const json& part = content[i];
    if (!part.is_object()) return field_error(p, std::string("must be an object, got ") + type_name(part));
    const json* type = member(part, "type");
    if (!type || !type->is_string()) return field_error(p + ".type", "must be a string");
    if (type->get<std::string>() != "text") {
      return field_error(p + ".type", "only \"text\" content parts are supported", Errc::unsupported);
    }
    const json* t = member(part, "text");
    if (!t || !t->is_string()) return field_error(p + ".text", "must be a string");
    text += t->get<std::string>();
  }
  return text;
}

Status parse_messages(const json& body, ParsedRequest& out) {
  const json* messages = member(body, "messages");
  if (!messages) return field_error("messages", "is required");
  if (!messages->is_array()) {
    return field_error("messages", std::string("must be an array, got ") + type_name(*messages));
  }
  if (messages->empty()) return field_error("messages", "must not be empty");
  for (size_t i = 0; i < messages->size(); ++i) {
    const std::string p = "messages[" + std::to_string(i) + "]";
    const json& m = (*messages)[i];
    if (!m.is_object()) return field_error(p, std::string("must be an object, got ") + type_name(m));
    ChatMessage msg;
    const json* role = member(m, "role");
    if (!role) return field_error(p + ".role", "is required");
    if (!role->is_string()) return field_error(p + ".role", std::string("must be a string, got ") + type_name(*role));
    msg.role = role->get<std::string>();
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" && msg.role != "function" &&
        msg.role != "tool") {
      return field_error(p + ".role", "unknown role '" + msg.role +
                                          "' (expected system, user, assistant, function or tool)");
    }
    auto content_it = m.find("content");
    if (content_it == m.end()) return field_error(p + ".content", "is required");
    FULGUR_ASSIGN_OR_RETURN(msg.content, parse_content(*content_it, p + ".content"));
    if (const json* name = member(m, "name")) {
      if (!name->is_string()) return field_error(p + ".name", std::string("must be a string, got ") + type_name(*name));
      msg.name = name->get<std::string>();
    }
    if ((msg.role == "function" || msg.role == "tool") && msg.name.empty()) {
      return field_error(p + ".name", "is required for role '" + msg.role + "'");
    }
    if (msg.role != "function" && msg.role != "tool") msg.name.clear();  // the template ignores it
    out.messages.push_back(std::move(msg));
  }
  return Status::ok();
}

Status parse_stop(const json& body, ParsedRequest& out) {
  if (const json* stop = member(body, "stop")) {
    if (stop->is_string()) {
      out.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > 4) return field_error("stop", "at most 4 stop sequences");
      for (size_t i = 0; i < stop->size(); ++i) {
        const json& s = (*stop)[i];
        if (!s.is_string()) {
          return field_error("stop[" + std::to_string(i) + "]", std::string("must be a string, got ") + type_name(s));
        }
        out.stop.push_back(s.get<std::string>());
      }
    } else {
      return field_error("stop", std::string("must be a string or an array of strings, got ") + type_name(*stop));
    }
    for (size_t i = 0; i < out.stop.size(); ++i) {
      if (out.stop[i].empty()) return field_error("stop", "stop sequences must not be empty");
    }
  }
  if (const json* ids = member(body, "stop_token_ids")) {
    if (!ids->is_array()) return field_error("stop_token_ids", std::string("must be an array, got ") + type_name(*ids));
    FULGUR_ASSIGN_OR_RETURN(out.stop_token_ids, as_token_array(*ids, "stop_token_ids"));
  }
  return Status::ok();
}

// Fields of the OpenAI API that this server does not implement: an explicit non-default value
// is refused rather than silently ignored.
Status reject_unsupported(const json& body, Endpoint endpoint) {
  if (const json* n = member(body, "n")) {
    FULGUR_ASSIGN_OR_RETURN(const int64_t v, as_int64(*n, "n"));
    if (v != 1) return field_error("n", "only n = 1 is supported", Errc::unsupported);
  }
  if (const json* b = member(body, "best_of")) {
    FULGUR_ASSIGN_OR_RETURN(const int64_t v, as_int64(*b, "best_of"));
    if (v != 1) return field_error("best_of", "only best_of = 1 is supported", Errc::unsupported);
  }
  if (const json* e = member(body, "echo")) {
    FULGUR_ASSIGN_OR_RETURN(const bool v, as_bool(*e, "echo"));
    if (v) return field_error("echo", "is not supported", Errc::unsupported);
  }
  if (const json* l = member(body, "logprobs")) {
    if (!(l->is_boolean() && !l->get<bool>())) return field_error("logprobs", "is not supported", Errc::unsupported);
  }
  if (const json* l = member(body, "top_logprobs")) {
    (void)l;
    return field_error("top_logprobs", "is not supported", Errc::unsupported);
  }
  if (endpoint == Endpoint::completions && member(body, "suffix")) {
    return field_error("suffix", "is not supported", Errc::unsupported);
  }
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    if (const json* p = member(body, name)) {
      FULGUR_ASSIGN_OR_RETURN(const double v, as_number(*p, name));
      if (v != 0.0) return field_error(name, "non-zero penalties are not supported", Errc::unsupported);
    }
  }
  if (endpoint == Endpoint::chat_completions) {
    if (const json* tools = member(body, "tools")) {
      if (!tools->is_array() || !tools->empty()) return field_error("tools", "is not supported", Errc::unsupported);
    }
  }
  return Status::ok();
}

Status parse_sampling(const json& body, Endpoint endpoint, ParsedRequest& out) {
  const char* max_name = "max_tokens";
  const json* max_tokens = member(body, "max_tokens");
  if (!max_tokens && endpoint == Endpoint::chat_completions) {
    max_name = "max_completion_tokens";
    max_tokens = member(body, max_name);
  }
  if (max_tokens) {
    FULGUR_ASSIGN_OR_RETURN(const int64_t v, as_int64(*max_tokens, max_name));
    if (v < 0) return field_error(max_name, "must be >= 0, got " + std::to_string(v));
    out.max_tokens = v;
  }
  if (const json* t = member(body, "temperature")) {
    FULGUR_ASSIGN_OR_RETURN(const double v, as_number(*t, "temperature"));
    if (v < 0.0 || v > 100.0) return field_error("temperature", "must be in [0, 100], got " + t->dump());
    out.temperature = static_cast<float>(v);
  }
  if (const json* p = member(body, "top_p")) {
    FULGUR_ASSIGN_OR_RETURN(const double v, as_number(*p, "top_p"));
    if (!(v > 0.0 && v <= 1.0)) return field_error("top_p", "must be in (0, 1], got " + p->dump());
    out.top_p = static_cast<float>(v);
  }
  if (const json* k = member(body, "top_k")) {
    FULGUR_ASSIGN_OR_RETURN(const int64_t v, as_int64(*k, "top_k"));
    if (v < -1) return field_error("top_k", "must be >= 0 (or -1 for off), got " + std::to_string(v));
    out.top_k = v < 0 ? 0 : v;
  }
  if (const json* s = member(body, "seed")) {
    if (s->is_number_unsigned()) {
      out.seed = s->get<uint64_t>();
    } else if (s->is_number_integer()) {
      out.seed = static_cast<uint64_t>(s->get<int64_t>());
    } else {
      return field_error("seed", std::string("must be an integer, got ") + type_name(*s));
    }
  }
  if (const json* s = member(body, "stream")) {
    FULGUR_ASSIGN_OR_RETURN(out.stream, as_bool(*s, "stream"));
  }
  if (const json* so = member(body, "stream_options")) {
    if (!so->is_object()) return field_error("stream_options", std::string("must be an object, got ") + type_name(*so));
  }
  return Status::ok();
}

}  // namespace

Expected<nlohmann::json> parse_json_body(std::string_view body) {
  try {
    return json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    return Status(Errc::parse_error, std::string("request body is not valid JSON (") + e.what() + ")");
  }
}

Expected<ParsedRequest> parse_completion_request(const nlohmann::json& body, Endpoint endpoint,
                                                 const RequestContext& ctx) {
  if (!body.is_object()) {
    return Status(Errc::invalid_argument, std::string("request body must be a JSON object, got ") + type_name(body));
  }
  ParsedRequest out;
  out.endpoint = endpoint;
  if (const json* model = member(body, "model")) {
    if (!model->is_string()) return field_error("model", std::string("must be a string, got ") + type_name(*model));
    if (model->get<std::string>() != ctx.served_model) {
      return field_error("model", "the model '" + model->get<std::string>() + "' does not exist (this server serves '" +
                                      ctx.served_model + "')",
                         Errc::not_found);
    }
  }
  if (endpoint == Endpoint::completions) {
    FULGUR_TRY(parse_prompt(body, out));
  } else {
    FULGUR_TRY(parse_messages(body, out));
  }
  FULGUR_TRY(parse_sampling(body, endpoint, out));
  FULGUR_TRY(parse_stop(body, out));
  FULGUR_TRY(reject_unsupported(body, endpoint));
  return out;
}

Expected<CompletionRequest> build_engine_request(const ParsedRequest& parsed, const Tokenizer& tokenizer,
                                                 const RequestContext& ctx, uint64_t seed_if_absent) {
  const bool chat = parsed.endpoint == Endpoint::chat_completions;
  const std::string prompt_param = chat ? "messages" : "prompt";
  CompletionRequest req;
  if (chat) {
    auto text = render_chat(parsed.messages, /*add_generation_prompt=*/true);
    if (!text) return field_error("messages", text.error().message());
    auto ids = tokenizer.encode(*text);
    if (!ids) return field_error("messages", ids.error().message());
    req.prompt = std::move(ids).value();
  } else if (parsed.prompt_text) {
    auto ids = tokenizer.encode(*parsed.prompt_text);
    if (!ids) return field_error("prompt", ids.error().message());
    req.prompt = std::move(ids).value();
  } else if (parsed.prompt_tokens) {
    req.prompt = *parsed.prompt_tokens;
    const int64_t vocab = tokenizer.vocab_size();
    for (size_t i = 0; i < req.prompt.size(); ++i) {
      if (req.prompt[i] >= vocab) {
        return field_error("prompt", "token id " + std::to_string(req.prompt[i]) + " at position " + std::to_string(i) +
                                         " is outside the vocabulary (size " + std::to_string(vocab) + ")");
      }
    }
  }
  if (req.prompt.empty()) return field_error(prompt_param, "the prompt has no tokens");
  const int64_t n_prompt = static_cast<int64_t>(req.prompt.size());
  if (n_prompt >= ctx.max_context) {
    return field_error(prompt_param, "the prompt is " + std::to_string(n_prompt) +
                                         " tokens long; this model's maximum context length is " +
                                         std::to_string(ctx.max_context) + " tokens (prompt and completion together)");
  }
  const int64_t room = ctx.max_context - n_prompt;
  if (parsed.max_tokens) {
    if (*parsed.max_tokens > room) {
      return field_error("max_tokens", "the prompt (" + std::to_string(n_prompt) + " tokens) plus max_tokens (" +
                                           std::to_string(*parsed.max_tokens) +
                                           ") exceeds this model's maximum context length of " +
                                           std::to_string(ctx.max_context) + " tokens");
    }
    req.max_tokens = *parsed.max_tokens;
  } else {
    req.max_tokens = chat ? room : std::min(ctx.default_max_tokens, room);
  }
  req.sampling.temperature = parsed.temperature;
  req.sampling.top_p = parsed.top_p;
  req.sampling.top_k = parsed.top_k;
  req.sampling.seed = parsed.seed ? *parsed.seed : seed_if_absent;
  req.stop_tokens = ctx.stop_tokens;
  const int64_t vocab = tokenizer.vocab_size();
  for (int32_t id : parsed.stop_token_ids) {
    if (id >= vocab) return field_error("stop_token_ids", "token id " + std::to_string(id) + " is outside the vocabulary");
    req.stop_tokens.push_back(id);
  }
  for (const std::string& s : parsed.stop) {
    auto ids = tokenizer.encode(s);
    if (!ids) return field_error("stop", ids.error().message());
    if (ids->size() != 1) {
      return field_error("stop", "stop sequence '" + s + "' is " + std::to_string(ids->size()) +
                                     " tokens; only stop sequences that are a single token are supported",
                         Errc::unsupported);
    }
    req.stop_tokens.push_back((*ids)[0]);
  }
  return req;
}

std::string error_param(const Status& status) {
  const std::string& m = status.message();
  const size_t colon = m.find(": ");
  if (colon == std::string::npos || colon == 0) return {};
  for (size_t i = 0; i < colon; ++i) {
    const unsigned char c = static_cast<unsigned char>(m[i]);
    if (!(std::isalnum(c) || c == '_' || c == '.' || c == '[' || c == ']')) return {};
  }
  return m.substr(0, colon);
}

}  // namespace fulgur::http
