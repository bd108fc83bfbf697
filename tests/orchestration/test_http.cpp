// The HTTP gateway against a fake Engine: request parsing (table + bounded fuzz), response and
// metrics formatting, and the Beast server over loopback with a synchronous Beast client --
// every route, every error class, malformed HTTP, disconnects, 64 concurrent streams. Last, the
// same 64 streaming clients against the real actor engine over a tiny model: every stream ends
// cleanly and /metrics shows every state slot and KV page free again.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <thread>
#include <unordered_map>

#ifdef FULGUR_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif
#include "orchestration/http/metrics.h"
#include "orchestration/http/request.h"
#include "orchestration/http/response.h"
#include "orchestration/http/server.h"
#include "orchestration/serving/cuda_engine.h"
#include "orchestration/serving/engine_factory.h"
#include "orchestration/tokenizer/chat_template.h"
#include "orchestration/tokenizer/tokenizer.h"
#include "test_models.h"

namespace fulgur {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;
using namespace std::chrono_literals;

constexpr int64_t kVocab = 320;
constexpr int64_t kMaxContext = 256;
const std::string kModelName = "tiny-minimax";
// Multi-byte characters on purpose: the fake engine emits one byte token per byte, so every
// non-ASCII character is split across tokens and must be reassembled.
const std::string kScriptText = "H\xC3\xA9llo \xF0\x9F\x99\x82 w\xC3\xB6rld \xE2\x9C\x93!";

const Tokenizer& test_tokenizer() {
  static const Tokenizer tok = [] {
    auto text = Tokenizer::make_byte_level_json(
        kVocab, {"<end_of_sentence>", "<beginning_of_sentence>"},
        "the quick brown fox jumps over the lazy dog. hello world, hello there. user system ai name assistant");
    if (!text) std::abort();
    auto t = Tokenizer::from_json(*text);
    if (!t) std::abort();
    return std::move(t).value();
  }();
  return tok;
}

int32_t eos_id() { return *test_tokenizer().token_to_id("<end_of_sentence>"); }

// Byte tokens of kScriptText, then <end_of_sentence>.
std::vector<int32_t> script_tokens() {
  std::vector<int32_t> ids;
  for (unsigned char c : kScriptText) ids.push_back(static_cast<int32_t>(c));
  ids.push_back(eos_id());
  return ids;
}

http::RequestContext test_context() {
  http::RequestContext ctx;
  ctx.served_model = kModelName;
  ctx.max_context = kMaxContext;
  ctx.stop_tokens = {eos_id()};
  return ctx;
}

// Aborts the process when a test hangs (the sync client has no timeouts of its own).
class Watchdog {
 public:
  explicit Watchdog(std::chrono::seconds limit) : thread_([this, limit] {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
      std::fprintf(stderr, "test_http: watchdog: test exceeded %lld s\n", static_cast<long long>(limit.count()));
      std::abort();
    }
  }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// ---- the fake engine ------------------------------------------------------------------------
// One "scheduler" thread steps every `step` and gives each running request its next token:
// script[i % script.size()]; a stop token ends it with "stop", max_tokens with "length", a
// cancel() with "cancelled" at the next step. Callbacks run on that thread, outside the lock.
class FakeEngine : public Engine {
 public:
  FakeEngine() : thread_([this] { loop(); }) {}
  ~FakeEngine() override {
    {
      std::lock_guard lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  Expected<RequestId> submit(CompletionRequest request, TokenCallback on_event) override {
    if (overloaded.load()) return Status(Errc::overloaded, "queue full");
    if (unavailable.load()) return Status(Errc::unavailable, "node 2 is gone");
    if (request.prompt.empty()) return Status(Errc::invalid_argument, "prompt: empty");
    std::lock_guard lock(mu_);
    const RequestId id = next_id_++;
    last_request_ = request;
    active_.emplace(id, Active{std::move(request), std::move(on_event)});
    ++submitted_;
    cv_.notify_all();
    return id;
  }

  void cancel(RequestId id) override {
    std::lock_guard lock(mu_);
    cancel_times_.emplace(id, std::chrono::steady_clock::now());
    auto it = active_.find(id);
    if (it != active_.end()) it->second.cancelled = true;
  }

  bool ready() const override { return ready_flag.load(); }
  EngineStats stats() const override {
    EngineStats s;
    s.queued = 2;
    s.running = 3;
    s.state_slots_used = 3, s.state_slots_total = 8;
    s.kv_blocks_used = 5, s.kv_blocks_total = 64;
    s.tokens_generated_total = 1234;
    s.requests_total = 10, s.requests_rejected_total = 1;
    s.bucket_bounds = {0.01, 0.1, 1.0};
    s.ttft_buckets = {1, 3, 4, 5};
    s.itl_buckets = {7, 8, 9, 9};
    s.ttft_sum = 1.5, s.itl_sum = 0.25;
    s.ttft_count = 5, s.itl_count = 9;
    return s;
  }
  json topology() const override {
    return json{{"nodes", json::array({{{"name", "fake-node"}, {"devices", json::array({"cpu"})}}})},
                {"actors", json::array({{{"kind", "expert"}, {"layer", 0}, {"experts", {0, 1}}}})}};
  }
  int64_t max_context() const override { return kMaxContext; }

  size_t active_count() {
    std::lock_guard lock(mu_);
    return active_.size();
  }
  std::optional<std::chrono::steady_clock::time_point> cancel_time(RequestId id) {
    std::lock_guard lock(mu_);
    auto it = cancel_times_.find(id);
    if (it == cancel_times_.end()) return std::nullopt;
    return it->second;
  }
  size_t cancel_count() {
    std::lock_guard lock(mu_);
    return cancel_times_.size();
  }
  CompletionRequest last_request() {
    std::lock_guard lock(mu_);
    return last_request_;
  }
  RequestId last_id() {
    std::lock_guard lock(mu_);
    return next_id_ - 1;
  }
  int64_t submitted() {
    std::lock_guard lock(mu_);
    return submitted_;
  }
  int64_t finals() {
    std::lock_guard lock(mu_);
    return finals_;
  }
  bool wait_idle(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (active_count() == 0) return true;
      std::this_thread::sleep_for(2ms);
    }
    return active_count() == 0;
  }

  std::atomic<bool> ready_flag{true}, overloaded{false}, unavailable{false};
  std::atomic<int> step_ms{1};
  std::vector<int32_t> script = script_tokens();

 private:
  struct Active {
    CompletionRequest request;
    TokenCallback callback;
    int64_t emitted = 0;
    bool cancelled = false;
  };

  void loop() {
    for (;;) {
      std::vector<std::pair<TokenCallback, TokenEvent>> out;
      {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(step_ms.load()), [this] { return quit_; });
        if (quit_) return;
        for (auto it = active_.begin(); it != active_.end();) {
          Active& a = it->second;
          TokenEvent final;
          final.finished = true;
          final.prompt_tokens = static_cast<int64_t>(a.request.prompt.size());
          if (a.cancelled) {
            final.finish_reason = "cancelled";
          } else if (a.emitted >= a.request.max_tokens) {
            final.finish_reason = "length";
          } else {
            TokenEvent tok;
            tok.token = script[a.emitted % script.size()];
            ++a.emitted;
            out.emplace_back(a.callback, tok);
            const auto& stops = a.request.stop_tokens;
            if (std::find(stops.begin(), stops.end(), tok.token) != stops.end()) {
              final.finish_reason = "stop";
            } else if (a.emitted >= a.request.max_tokens) {
              final.finish_reason = "length";
            } else {
              ++it;
              continue;
            }
          }
          final.completion_tokens = a.emitted;
          out.emplace_back(std::move(a.callback), final);
          ++finals_;
          it = active_.erase(it);
        }
      }
      for (auto& [cb, ev] : out) cb(ev);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool quit_ = false;
  RequestId next_id_ = 1;
  std::map<RequestId, Active> active_;
  std::unordered_map<RequestId, std::chrono::steady_clock::time_point> cancel_times_;
  CompletionRequest last_request_;
  int64_t submitted_ = 0, finals_ = 0;
  std::thread thread_;  // last: starts after the members above exist
};

// ---- a synchronous Beast client --------------------------------------------------------------
struct Reply {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  json body_json() const { return json::parse(body, nullptr, false); }
};

tcp::socket connect_to(net::io_context& ioc, uint16_t port) {
  tcp::socket sock(ioc);
  sock.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  return sock;
}

Reply read_reply(tcp::socket& sock, beast::flat_buffer& buf) {
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64u << 20);
  beast::error_code ec;
  bhttp::read(sock, buf, parser, ec);
  Reply r;
  if (ec) {
    std::fprintf(stderr, "read_reply: %s (got %zu body bytes)\n", ec.message().c_str(), parser.get().body().size());
    return r;  // status 0
  }
  const auto& res = parser.get();
  r.status = static_cast<int>(res.result_int());
  r.body = res.body();
  for (const auto& f : res) {
    std::string name(f.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.headers[name] = std::string(f.value());
  }
  return r;
}

void write_request(tcp::socket& sock, bhttp::verb method, const std::string& target, const std::string& body,
                   bool keep_alive = false) {
  bhttp::request<bhttp::string_body> req{method, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
  req.body() = body;
  req.keep_alive(keep_alive);
  req.prepare_payload();
  bhttp::write(sock, req);
}

Reply request(uint16_t port, bhttp::verb method, const std::string& target, const std::string& body = "") {
  net::io_context ioc;
  tcp::socket sock = connect_to(ioc, port);
  write_request(sock, method, target, body);
  beast::flat_buffer buf;
  return read_reply(sock, buf);
}

Reply post(uint16_t port, const std::string& target, const json& body) {
  return request(port, bhttp::verb::post, target, body.dump());
}
Reply get(uint16_t port, const std::string& target) { return request(port, bhttp::verb::get, target); }

// Raw bytes in, whatever comes back until the server closes (or `limit` passes).
std::string raw_exchange(uint16_t port, const std::string& bytes, std::chrono::milliseconds limit = 3000ms) {
  net::io_context ioc;
  tcp::socket sock = connect_to(ioc, port);
  beast::error_code ec;
  net::write(sock, net::buffer(bytes), ec);
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  sock.non_blocking(true);
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    const size_t n = sock.read_some(net::buffer(buf), ec);
    if (ec == net::error::would_block) {
      std::this_thread::sleep_for(2ms);
      continue;
    }
    if (ec) break;
    out.append(buf, n);
  }
  return out;
}

// "data: X\n\n"... -> the X's, checking the framing on the way.
std::vector<std::string> parse_sse(const std::string& body) {
  std::vector<std::string> events;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated event at " << pos;
    if (end == std::string::npos) break;
    const std::string event = body.substr(pos, end - pos);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << "event without data: prefix: " << event;
    events.push_back(event.substr(6));
    pos = end + 2;
  }
  return events;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// ---- fixture ----------------------------------------------------------------------------------
class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }

  void start(http::HttpServerOptions opt) {
    server_.reset();
    opt.host = "127.0.0.1";
    opt.port = 0;
    if (opt.request_timeout == std::chrono::milliseconds(30000)) opt.request_timeout = 2000ms;
    if (opt.shutdown_grace == std::chrono::milliseconds(5000)) opt.shutdown_grace = 500ms;
    http::ServedModel model{kModelName, &test_tokenizer(), {eos_id()}, 1700000000};
    server_ = std::make_unique<http::HttpServer>(engine_, model, opt);
    ASSERT_TRUE(server_->start().is_ok());
    port_ = server_->port();
    ASSERT_NE(port_, 0);
  }

  void TearDown() override { server_.reset(); }

  FakeEngine engine_;
  std::unique_ptr<http::HttpServer> server_;
  uint16_t port_ = 0;
  Watchdog watchdog_{std::chrono::seconds(20)};
};

// ---- pure parts -------------------------------------------------------------------------------
TEST(HttpUtf8, CompletePrefixHoldsBackOnlyIncompleteTail) {
  using http::utf8_complete_prefix;
  EXPECT_EQ(utf8_complete_prefix(""), 0u);
  EXPECT_EQ(utf8_complete_prefix("abc"), 3u);
  EXPECT_EQ(utf8_complete_prefix("a\xC3"), 1u);                 // 2-byte lead alone
  EXPECT_EQ(utf8_complete_prefix("a\xC3\xA9"), 3u);             // complete é
  EXPECT_EQ(utf8_complete_prefix("a\xF0\x9F\x99"), 1u);         // 3 of 4 bytes
  EXPECT_EQ(utf8_complete_prefix("a\xF0\x9F\x99\x82"), 5u);     // complete emoji
  EXPECT_EQ(utf8_complete_prefix("a\xE2\x9C"), 1u);
  EXPECT_EQ(utf8_complete_prefix("a\x80\x80\x80\x80"), 5u);     // stray continuations: not waited for
  EXPECT_EQ(utf8_complete_prefix("a\xFF"), 2u);                 // invalid lead: not waited for
}

TEST(HttpUtf8, TextStreamReassemblesCharactersAndHidesStops) {
  http::TextStream ts(test_tokenizer(), {eos_id()});
  std::string all;
  for (int32_t id : script_tokens()) {
    const std::string piece = ts.push(id);
    EXPECT_TRUE(valid_utf8(piece)) << "split character in a piece";
    all += piece;
  }
  all += ts.finish();
  EXPECT_EQ(all, kScriptText);  // the eos gives no text
  http::TextStream cut(test_tokenizer(), {});
  EXPECT_EQ(cut.push(0xF0), "");
  EXPECT_EQ(cut.finish(), "\xF0");  // an incomplete tail comes out at the end
}

TEST(HttpRequest, ValidCompletionAndChat) {
  const auto ctx = test_context();
  json body = {{"model", kModelName}, {"prompt", "hello world"}, {"max_tokens", 5},  {"temperature", 0.5},
               {"top_p", 0.9},        {"top_k", 7},              {"seed", 42},       {"stream", true},
               {"n", 1},              {"stop", "<end_of_sentence>"}};
  auto parsed = http::parse_completion_request(body, http::Endpoint::completions, ctx);
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  EXPECT_TRUE(parsed->stream);
  auto req = http::build_engine_request(*parsed, test_tokenizer(), ctx, 99);
  ASSERT_TRUE(req) << req.error().to_string();
  EXPECT_EQ(req->prompt, *test_tokenizer().encode("hello world"));
  EXPECT_EQ(req->max_tokens, 5);
  EXPECT_FLOAT_EQ(req->sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(req->sampling.top_p, 0.9f);
  EXPECT_EQ(req->sampling.top_k, 7);
  EXPECT_EQ(req->sampling.seed, 42u);
  EXPECT_EQ(req->stop_tokens, (std::vector<int32_t>{eos_id(), eos_id()}));

  json chat = {{"messages", {{{"role", "system"}, {"content", "Be brief."}},
                             {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Hi"}}}}}}}};
  auto pc = http::parse_completion_request(chat, http::Endpoint::chat_completions, ctx);
  ASSERT_TRUE(pc) << pc.error().to_string();
  auto rc = http::build_engine_request(*pc, test_tokenizer(), ctx, 7);
  ASSERT_TRUE(rc) << rc.error().to_string();
  const std::string rendered = *render_chat({{"system", "Be brief."}, {"user", "Hi"}}, true);
  EXPECT_EQ(rc->prompt, *test_tokenizer().encode(rendered));
  EXPECT_EQ(rc->max_tokens, kMaxContext - static_cast<int64_t>(rc->prompt.size()));  // chat default: the rest
  EXPECT_EQ(rc->sampling.seed, 7u);                                                   // seed_if_absent

  json tokens = {{"prompt", {1, 2, 3}}};
  auto pt = http::parse_completion_request(tokens, http::Endpoint::completions, ctx);
  ASSERT_TRUE(pt);
  auto rt = http::build_engine_request(*pt, test_tokenizer(), ctx, 0);
  ASSERT_TRUE(rt);
  EXPECT_EQ(rt->prompt, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(rt->max_tokens, 16);  // OpenAI's default for completions
}

struct BadCase {
  http::Endpoint endpoint;
  std::string body;
  Errc code;
  std::string param;  // "" = none
};

TEST(HttpRequest, EveryErrorNamesItsField) {
  using E = http::Endpoint;
  std::vector<int32_t> long_prompt(kMaxContext + 5, 65);
  const std::vector<BadCase> cases = {
      {E::completions, "[1,2]", Errc::invalid_argument, ""},
      {E::completions, "{}", Errc::invalid_argument, "prompt"},
      {E::completions, R"({"prompt": 5})", Errc::invalid_argument, "prompt"},
      {E::completions, R"({"prompt": ""})", Errc::invalid_argument, "prompt"},
      {E::completions, R"({"prompt": [1, -1]})", Errc::invalid_argument, "prompt[1]"},
      {E::completions, R"({"prompt": [1, "a"]})", Errc::invalid_argument, "prompt[1]"},
      {E::completions, R"({"prompt": ["a", "b"]})", Errc::unsupported, "prompt"},
      {E::completions, R"({"prompt": [100000]})", Errc::invalid_argument, "prompt"},
      {E::completions, json{{"prompt", long_prompt}}.dump(), Errc::invalid_argument, "prompt"},
      {E::completions, R"({"prompt": "hi", "max_tokens": 1000})", Errc::invalid_argument, "max_tokens"},
      {E::completions, R"({"prompt": "hi", "max_tokens": -1})", Errc::invalid_argument, "max_tokens"},
      {E::completions, R"({"prompt": "hi", "max_tokens": 1.5})", Errc::invalid_argument, "max_tokens"},
      {E::completions, R"({"prompt": "hi", "max_tokens": "8"})", Errc::invalid_argument, "max_tokens"},
      {E::completions, R"({"prompt": "hi", "temperature": -0.1})", Errc::invalid_argument, "temperature"},
      {E::completions, R"({"prompt": "hi", "temperature": "hot"})", Errc::invalid_argument, "temperature"},
      {E::completions, R"({"prompt": "hi", "top_p": 0})", Errc::invalid_argument, "top_p"},
      {E::completions, R"({"prompt": "hi", "top_p": 1.5})", Errc::invalid_argument, "top_p"},
      {E::completions, R"({"prompt": "hi", "top_k": -2})", Errc::invalid_argument, "top_k"},
      {E::completions, R"({"prompt": "hi", "seed": "x"})", Errc::invalid_argument, "seed"},
      {E::completions, R"({"prompt": "hi", "stream": "yes"})", Errc::invalid_argument, "stream"},
      {E::completions, R"({"prompt": "hi", "n": 2})", Errc::unsupported, "n"},
      {E::completions, R"({"prompt": "hi", "echo": true})", Errc::unsupported, "echo"},
      {E::completions, R"({"prompt": "hi", "logprobs": 3})", Errc::unsupported, "logprobs"},
      {E::completions, R"({"prompt": "hi", "presence_penalty": 0.5})", Errc::unsupported, "presence_penalty"},
      {E::completions, R"({"prompt": "hi", "stop": 3})", Errc::invalid_argument, "stop"},
      {E::completions, R"({"prompt": "hi", "stop": ["a", 1]})", Errc::invalid_argument, "stop[1]"},
      {E::completions, R"({"prompt": "hi", "stop": "the lazy brown fox"})", Errc::unsupported, "stop"},
      {E::completions, R"({"prompt": "hi", "stop_token_ids": [99999]})", Errc::invalid_argument, "stop_token_ids"},
      {E::completions, R"({"prompt": "hi", "model": 3})", Errc::invalid_argument, "model"},
      {E::completions, R"({"prompt": "hi", "model": "gpt-4"})", Errc::not_found, "model"},
      {E::chat_completions, "{}", Errc::invalid_argument, "messages"},
      {E::chat_completions, R"({"messages": "hi"})", Errc::invalid_argument, "messages"},
      {E::chat_completions, R"({"messages": []})", Errc::invalid_argument, "messages"},
      {E::chat_completions, R"({"messages": [3]})", Errc::invalid_argument, "messages[0]"},
      {E::chat_completions, R"({"messages": [{"content": "x"}]})", Errc::invalid_argument, "messages[0].role"},
      {E::chat_completions, R"({"messages": [{"role": "bot", "content": "x"}]})", Errc::invalid_argument,
       "messages[0].role"},
      {E::chat_completions, R"({"messages": [{"role": "user"}]})", Errc::invalid_argument, "messages[0].content"},
      {E::chat_completions, R"({"messages": [{"role": "user", "content": 5}]})", Errc::invalid_argument,
       "messages[0].content"},
      {E::chat_completions, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       Errc::unsupported, "messages[0].content[0].type"},
      {E::chat_completions, R"({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "r"}]})",
       Errc::invalid_argument, "messages[1].name"},
      {E::chat_completions, R"({"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": -3})",
       Errc::invalid_argument, "max_completion_tokens"},
  };
  const auto ctx = test_context();
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.body.substr(0, 120));
    auto doc = http::parse_json_body(c.body);
    ASSERT_TRUE(doc);
    Status error;
    auto parsed = http::parse_completion_request(*doc, c.endpoint, ctx);
    if (!parsed) {
      error = parsed.error();
    } else {
      auto built = http::build_engine_request(*parsed, test_tokenizer(), ctx, 0);
      ASSERT_FALSE(built) << "accepted";
      error = built.error();
    }
    EXPECT_EQ(error.code(), c.code) << error.to_string();
    EXPECT_EQ(http::error_param(error), c.param) << error.to_string();
    const json body = http::error_body(error);
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
    if (c.param.empty()) {
      EXPECT_TRUE(body["error"]["param"].is_null());
    } else {
      EXPECT_EQ(body["error"]["param"], c.param);
    }
  }
  auto bad = http::parse_json_body("{\"prompt\": ");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::parse_error);
  EXPECT_EQ(http::error_param(bad.error()), "");
}

// Random mutations of valid bodies through the parser and builder: no crash, no exception, and
// every accepted request satisfies the engine's contract.
TEST(HttpRequest, FuzzBodies) {
  const auto ctx = test_context();
  const std::vector<std::pair<http::Endpoint, json>> seeds = {
      {http::Endpoint::completions,
       {{"model", kModelName}, {"prompt", "hello"}, {"max_tokens", 4}, {"temperature", 0.7}, {"top_p", 0.9},
        {"top_k", 3}, {"seed", 1}, {"stream", false}, {"stop", {"<end_of_sentence>"}}}},
      {http::Endpoint::completions, {{"prompt", {1, 2, 3}}, {"n", 1}, {"stop_token_ids", {5}}}},
      {http::Endpoint::chat_completions,
       {{"messages",
         {{{"role", "system"}, {"content", "s"}},
          {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hi"}}}}},
          {{"role", "tool"}, {"name", "f"}, {"content", "{}"}}}},
        {"max_completion_tokens", 8},
        {"stream", true}}},
  };
  std::mt19937_64 rng(20240611);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  auto random_value = [&](int depth, auto& self) -> json {
    switch (pick(depth > 2 ? 7 : 9)) {
      case 0: return nullptr;
      case 1: return pick(2) == 0;
      case 2: return static_cast<int64_t>(rng()) >> pick(64);
      case 3: return static_cast<uint64_t>(rng());
      case 4: return std::ldexp(static_cast<double>(static_cast<int64_t>(rng() % 2001) - 1000) / 997.0,
                                static_cast<int>(pick(40)) - 20);
      case 5: {
        std::string s;
        const size_t n = pick(12);
        for (size_t i = 0; i < n; ++i) s += static_cast<char>(pick(2) ? 'a' + pick(26) : pick(256));
        return s;
      }
      case 6: return pick(2) ? "<end_of_sentence>" : "user";
      case 7: {
        json a = json::array();
        const size_t n = pick(4);
        for (size_t i = 0; i < n; ++i) a.push_back(self(depth + 1, self));
        return a;
      }
      default: {
        json o = json::object();
        const char* keys[] = {"role", "content", "name", "type", "text"};
        const size_t n = pick(4);
        for (size_t i = 0; i < n; ++i) o[keys[pick(5)]] = self(depth + 1, self);
        return o;
      }
    }
  };
  // Mutates some field somewhere in the document (arrays and objects recursively).
  auto mutate = [&](json& doc, auto& self, int depth) -> void {
    if (doc.is_object() && !doc.empty() && pick(4) != 0) {
      auto it = doc.begin();
      std::advance(it, pick(doc.size()));
      if (pick(3) == 0 || depth > 3) {
        if (pick(5) == 0) {
          doc.erase(it);
        } else {
          *it = random_value(0, random_value);
        }
      } else {
        self(*it, self, depth + 1);
      }
    } else if (doc.is_array() && !doc.empty() && pick(4) != 0) {
      self(doc[pick(doc.size())], self, depth + 1);
    } else if (doc.is_object()) {
      const char* keys[] = {"prompt", "messages", "max_tokens", "temperature", "top_p", "top_k", "seed",
                            "stream", "n", "stop", "echo", "logprobs", "model", "stop_token_ids", "x"};
      doc[keys[pick(15)]] = random_value(0, random_value);
    } else {
      doc = random_value(0, random_value);
    }
  };
  int accepted = 0, rejected = 0, not_json = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    const auto& [endpoint, seed] = seeds[pick(seeds.size())];
    json doc = seed;
    const int rounds = 1 + static_cast<int>(pick(3));
    for (int r = 0; r < rounds; ++r) mutate(doc, mutate, 0);
    std::string text = http::dump_json(doc);
    if (pick(4) == 0) {  // byte-level damage on top
      const size_t n = 1 + pick(3);
      for (size_t k = 0; k < n && !text.empty(); ++k) {
        const size_t at = pick(text.size());
        switch (pick(3)) {
          case 0: text[at] = static_cast<char>(pick(256)); break;
          case 1: text.erase(at, 1 + pick(4)); break;
          default: text.insert(at, 1, "{}[]\",:0"[pick(8)]); break;
        }
      }
    }
    auto body = http::parse_json_body(text);
    if (!body) {
      ++not_json;
      EXPECT_EQ(body.error().code(), Errc::parse_error);
      continue;
    }
    auto parsed = http::parse_completion_request(*body, endpoint, ctx);
    if (!parsed) {
      ++rejected;
      EXPECT_FALSE(parsed.error().message().empty());
      if (body->is_object() && parsed.error().code() != Errc::parse_error) {
        EXPECT_NE(http::error_param(parsed.error()), "") << parsed.error().to_string();
      }
      continue;
    }
    auto built = http::build_engine_request(*parsed, test_tokenizer(), ctx, 5);
    if (!built) {
      ++rejected;
      EXPECT_NE(http::error_param(built.error()), "") << built.error().to_string();
      continue;
    }
    ++accepted;
    EXPECT_FALSE(built->prompt.empty());
    EXPECT_GE(built->max_tokens, 0);
    EXPECT_LE(static_cast<int64_t>(built->prompt.size()) + built->max_tokens, kMaxContext);
    EXPECT_GE(built->sampling.temperature, 0.f);
    EXPECT_GT(built->sampling.top_p, 0.f);
    EXPECT_LE(built->sampling.top_p, 1.f);
    EXPECT_GE(built->sampling.top_k, 0);
    for (int32_t id : built->prompt) EXPECT_TRUE(id >= 0 && id < kVocab);
  }
  EXPECT_GT(accepted, 100);
  EXPECT_GT(rejected, 100);
  EXPECT_GT(not_json, 50);
}

// Every line of the exposition is a comment (# HELP/# TYPE) or `name{labels} value`.
void expect_prometheus_lines(const std::string& text, std::map<std::string, double>* samples = nullptr) {
  static const std::regex kHelp(R"(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*)");
  static const std::regex kType(R"(# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped))");
  static const std::regex kSample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})?) (\S+))");
  ASSERT_FALSE(text.empty());
  ASSERT_EQ(text.back(), '\n');
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find('\n', pos);
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    std::smatch m;
    if (line.rfind("# HELP", 0) == 0) {
      EXPECT_TRUE(std::regex_match(line, kHelp)) << line;
    } else if (line.rfind("# TYPE", 0) == 0) {
      EXPECT_TRUE(std::regex_match(line, kType)) << line;
    } else {
      ASSERT_TRUE(std::regex_match(line, m, kSample)) << line;
      char* endp = nullptr;
      const std::string v = m[4];
      const double value = v == "+Inf" ? INFINITY : std::strtod(v.c_str(), &endp);
      if (v != "+Inf") EXPECT_EQ(*endp, '\0') << line;
      if (samples) (*samples)[m[1]] = value;
    }
  }
}

// /metrics until fulgur_http_connections_open reads `want` (connections the client closed a
// moment ago may still be winding down on the server); the last samples.
std::map<std::string, double> metrics_when_connections(uint16_t port, double want) {
  std::map<std::string, double> samples;
  for (int tries = 0; tries < 200; ++tries) {
    samples.clear();
    expect_prometheus_lines(get(port, "/metrics").body, &samples);
    if (samples["fulgur_http_connections_open"] == want) break;
    std::this_thread::sleep_for(10ms);
  }
  return samples;
}

TEST(HttpMetrics, PrometheusFormat) {
  FakeEngine engine;
  http::GatewayCounters g{1, 2, 3, 4};
  std::map<std::string, double> s;
  expect_prometheus_lines(http::format_prometheus(engine.stats(), g), &s);
  EXPECT_EQ(s["fulgur_queue_length"], 2);
  EXPECT_EQ(s["fulgur_running_sequences"], 3);
  EXPECT_EQ(s["fulgur_state_slots_used"], 3);
  EXPECT_EQ(s["fulgur_state_slots_total"], 8);
  EXPECT_EQ(s["fulgur_kv_blocks_used"], 5);
  EXPECT_EQ(s["fulgur_kv_blocks_total"], 64);
  EXPECT_EQ(s["fulgur_tokens_generated_total"], 1234);
  EXPECT_EQ(s["fulgur_requests_total"], 10);
  EXPECT_EQ(s["fulgur_requests_rejected_total"], 1);
  EXPECT_EQ(s["fulgur_time_to_first_token_seconds_bucket{le=\"0.01\"}"], 1);
  EXPECT_EQ(s["fulgur_time_to_first_token_seconds_bucket{le=\"1\"}"], 4);
  EXPECT_EQ(s["fulgur_time_to_first_token_seconds_bucket{le=\"+Inf\"}"], 5);
  EXPECT_EQ(s["fulgur_time_to_first_token_seconds_sum"], 1.5);
  EXPECT_EQ(s["fulgur_inter_token_latency_seconds_count"], 9);
  EXPECT_EQ(s["fulgur_http_client_disconnects_total"], 4);
}

// ---- the server -------------------------------------------------------------------------------
TEST_F(HttpServerTest, CompletionNonStreaming) {
  const Reply r = post(port_, "/v1/completions",
                       {{"model", kModelName}, {"prompt", "hello world"}, {"max_tokens", 100}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers.at("content-type"), "application/json");
  const json j = r.body_json();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], kModelName);
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_EQ(j["choices"][0]["text"], kScriptText);  // the eos is not emitted
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  const int64_t n_prompt = static_cast<int64_t>(test_tokenizer().encode("hello world")->size());
  EXPECT_EQ(j["usage"]["prompt_tokens"], n_prompt);
  EXPECT_EQ(j["usage"]["completion_tokens"], static_cast<int64_t>(script_tokens().size()));
  EXPECT_EQ(j["usage"]["total_tokens"], n_prompt + static_cast<int64_t>(script_tokens().size()));
  EXPECT_EQ(engine_.last_request().stop_tokens, std::vector<int32_t>{eos_id()});

  const Reply len = post(port_, "/v1/completions", {{"prompt", {5, 6}}, {"max_tokens", 3}});
  ASSERT_EQ(len.status, 200) << len.body;
  EXPECT_EQ(len.body_json()["choices"][0]["text"], "H\xC3\xA9");
  EXPECT_EQ(len.body_json()["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(len.body_json()["usage"]["completion_tokens"], 3);
}

TEST_F(HttpServerTest, CompletionStreaming) {
  const Reply r = post(port_, "/v1/completions", {{"prompt", "hello"}, {"max_tokens", 100}, {"stream", true}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.at("content-type"), "text/event-stream");
  const auto events = parse_sse(r.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    EXPECT_EQ(chunk["model"], kModelName);
    ASSERT_EQ(chunk["choices"].size(), 1u);
    const std::string piece = chunk["choices"][0]["text"].get<std::string>();
    EXPECT_TRUE(valid_utf8(piece));
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "a character was split";
    text += piece;
    const bool last = i + 2 == events.size();
    if (last) {
      EXPECT_EQ(chunk["choices"][0]["finish_reason"], "stop");
      EXPECT_EQ(chunk["usage"]["completion_tokens"], static_cast<int64_t>(script_tokens().size()));
      EXPECT_EQ(chunk["usage"]["total_tokens"],
                chunk["usage"]["prompt_tokens"].get<int64_t>() + chunk["usage"]["completion_tokens"].get<int64_t>());
    } else {
      EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
      EXPECT_FALSE(chunk.contains("usage"));
    }
  }
  EXPECT_EQ(text, kScriptText);
}

TEST_F(HttpServerTest, ChatNonStreamingAndStreaming) {
  const json messages = {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}};
  const Reply r = post(port_, "/v1/chat/completions", {{"messages", messages}, {"max_tokens", 50}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.body_json();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], kScriptText);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  const auto expected_prompt = *test_tokenizer().encode(*render_chat({{"system", "Be brief."}, {"user", "Hi"}}, true));
  EXPECT_EQ(engine_.last_request().prompt, expected_prompt);
  EXPECT_EQ(j["usage"]["prompt_tokens"], static_cast<int64_t>(expected_prompt.size()));

  const Reply s = post(port_, "/v1/chat/completions", {{"messages", messages}, {"max_tokens", 4}, {"stream", true}});
  ASSERT_EQ(s.status, 200);
  const auto events = parse_sse(s.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json first = json::parse(events.front());
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    if (chunk["choices"][0]["delta"].contains("content")) {
      text += chunk["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  const json last = json::parse(events[events.size() - 2]);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["completion_tokens"], 4);
  EXPECT_EQ(text, "H\xC3\xA9l");
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  net::io_context ioc;
  tcp::socket sock = connect_to(ioc, port_);
  beast::flat_buffer buf;
  write_request(sock, bhttp::verb::post, "/v1/completions",
                json{{"prompt", "hi"}, {"max_tokens", 3}, {"stream", true}}.dump(), true);
  Reply a = read_reply(sock, buf);
  ASSERT_EQ(a.status, 200);
  EXPECT_EQ(parse_sse(a.body).back(), "[DONE]");
  write_request(sock, bhttp::verb::post, "/v1/completions", json{{"prompt", "hi"}, {"max_tokens", 2}}.dump(), true);
  Reply b = read_reply(sock, buf);
  ASSERT_EQ(b.status, 200);
  EXPECT_EQ(b.body_json()["usage"]["completion_tokens"], 2);
  write_request(sock, bhttp::verb::get, "/health", "", true);
  EXPECT_EQ(read_reply(sock, buf).status, 200);
}

TEST_F(HttpServerTest, Http10StreamIsUnchunkedAndExpectContinueIsAnswered) {
  const std::string body = json{{"prompt", "hi"}, {"max_tokens", 3}, {"stream", true}}.dump();
  const std::string reply = raw_exchange(port_, "POST /v1/completions HTTP/1.0\r\nContent-Length: " +
                                                    std::to_string(body.size()) + "\r\n\r\n" + body);
  ASSERT_EQ(reply.rfind("HTTP/1.1 200", 0), 0u) << reply;
  EXPECT_EQ(reply.find("chunked"), std::string::npos);
  const size_t head_end = reply.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos);
  const auto events = parse_sse(reply.substr(head_end + 4));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");

  net::io_context ioc;
  tcp::socket sock = connect_to(ioc, port_);
  const std::string plain = json{{"prompt", "hi"}, {"max_tokens", 2}}.dump();
  net::write(sock, net::buffer("POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                               "Content-Length: " + std::to_string(plain.size()) + "\r\n\r\n"));
  std::string got;
  char buf[256];
  while (got.find("\r\n\r\n") == std::string::npos) got.append(buf, sock.read_some(net::buffer(buf)));
  EXPECT_EQ(got, "HTTP/1.1 100 Continue\r\n\r\n");
  net::write(sock, net::buffer(plain));
  beast::flat_buffer fb;
  const Reply r = read_reply(sock, fb);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body_json()["usage"]["completion_tokens"], 2);
}

TEST_F(HttpServerTest, ModelsHealthMetricsTopology) {
  const Reply models = get(port_, "/v1/models");
  ASSERT_EQ(models.status, 200);
  const json m = models.body_json();
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], kModelName);
  EXPECT_EQ(m["data"][0]["object"], "model");

  engine_.ready_flag = false;
  EXPECT_EQ(get(port_, "/health").status, 503);
  const Reply loading = post(port_, "/v1/completions", {{"prompt", "hi"}});
  EXPECT_EQ(loading.status, 503);
  EXPECT_EQ(loading.body_json()["error"]["type"], "service_unavailable");
  engine_.ready_flag = true;
  EXPECT_EQ(get(port_, "/health").status, 200);

  const Reply metrics = get(port_, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.headers.at("content-type").rfind("text/plain", 0), 0u);
  expect_prometheus_lines(metrics.body);
  std::map<std::string, double> samples = metrics_when_connections(port_, 1);
  EXPECT_EQ(samples["fulgur_kv_blocks_total"], 64);
  EXPECT_EQ(samples["fulgur_http_connections_open"], 1);
  EXPECT_GE(samples["fulgur_http_errors_total"], 2);

  const Reply topo = get(port_, "/v1/admin/topology?verbose=1");
  ASSERT_EQ(topo.status, 200);
  EXPECT_EQ(topo.body_json(), engine_.topology());
}

TEST_F(HttpServerTest, ErrorStatusesOverHttp) {
  auto expect_error = [](const Reply& r, int status, const std::string& param) {
    EXPECT_EQ(r.status, status) << r.body;
    const json j = r.body_json();
    ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["type"].is_string());
    EXPECT_TRUE(j["error"].contains("code"));
    if (param.empty()) {
      EXPECT_TRUE(j["error"]["param"].is_null()) << r.body;
    } else {
      EXPECT_EQ(j["error"]["param"], param) << r.body;
    }
  };
  expect_error(request(port_, bhttp::verb::post, "/v1/completions", "{\"prompt\": \"hi\""), 400, "");
  expect_error(post(port_, "/v1/completions", {{"prompt", "hi"}, {"temperature", -1}}), 400, "temperature");
  expect_error(post(port_, "/v1/completions", {{"prompt", "hi"}, {"top_p", 2}}), 400, "top_p");
  expect_error(post(port_, "/v1/completions", {{"prompt", "hi"}, {"max_tokens", -5}}), 400, "max_tokens");
  expect_error(post(port_, "/v1/completions", {{"prompt", "hi"}, {"n", 3}}), 400, "n");
  expect_error(post(port_, "/v1/completions", {{"prompt", std::vector<int>(kMaxContext + 1, 7)}}), 400, "prompt");
  expect_error(post(port_, "/v1/completions", {{"max_tokens", 3}}), 400, "prompt");
  expect_error(post(port_, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", 1}}}}}), 400,
               "messages[0].content");
  expect_error(post(port_, "/v1/completions", {{"prompt", "hi"}, {"model", "nope"}}), 404, "model");
  expect_error(get(port_, "/v2/everything"), 404, "");
  const Reply wrong = get(port_, "/v1/completions");
  expect_error(wrong, 405, "");
  EXPECT_EQ(wrong.headers.at("allow"), "POST");
  expect_error(request(port_, bhttp::verb::post, "/health", "{}"), 405, "");

  engine_.overloaded = true;
  const Reply busy = post(port_, "/v1/completions", {{"prompt", "hi"}});
  expect_error(busy, 429, "");
  EXPECT_EQ(busy.headers.at("retry-after"), "1");
  EXPECT_EQ(busy.body_json()["error"]["type"], "rate_limit_error");
  engine_.overloaded = false;
  engine_.unavailable = true;
  expect_error(post(port_, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "x"}}}}}), 503, "");
  engine_.unavailable = false;
  EXPECT_EQ(post(port_, "/v1/completions", {{"prompt", "hi"}, {"max_tokens", 1}}).status, 200);
}

TEST_F(HttpServerTest, BodyTooLargeIs413) {
  start({.body_limit = 1024});
  // Only the header says how big: the server refuses before reading the body.
  const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Content-Length: 100000\r\n\r\n{\"prompt\":";
  const std::string reply = raw_exchange(port_, head);
  EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply.substr(0, 200);
  EXPECT_NE(reply.find("\"invalid_request_error\""), std::string::npos);
  const Reply full = post(port_, "/v1/completions", {{"prompt", std::string(2000, 'a')}});
  EXPECT_EQ(full.status, 413);
  EXPECT_EQ(post(port_, "/v1/completions", {{"prompt", "hi"}, {"max_tokens", 1}}).status, 200);
}

TEST_F(HttpServerTest, MalformedHttpDoesNotHurtOthers) {
  // A client that sends half a request and waits keeps its connection open meanwhile.
  net::io_context ioc;
  tcp::socket slow = connect_to(ioc, port_);
  net::write(slow, net::buffer(std::string("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")));

  static const char kTlsHello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n";
  const std::string garbage_replies[] = {
      raw_exchange(port_, std::string(kTlsHello, sizeof(kTlsHello) - 1)),
      raw_exchange(port_, "GET / HTTP/9.9\r\n\r\n"),
      raw_exchange(port_, "NOT A REQUEST\r\n\r\n"),
      raw_exchange(port_, "POST /v1/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n"),
      raw_exchange(port_, "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
  };
  for (const std::string& r : garbage_replies) {
    if (!r.empty()) EXPECT_EQ(r.rfind("HTTP/1.1 4", 0), 0u) << r.substr(0, 120);
  }
  const std::string huge = "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 << 10, 'a') + "\r\n\r\n";
  const std::string big_reply = raw_exchange(port_, huge);
  EXPECT_EQ(big_reply.rfind("HTTP/1.1 431", 0), 0u) << big_reply.substr(0, 120);
  std::mt19937 rng(7);
  for (int i = 0; i < 20; ++i) {  // random bytes
    std::string junk(1 + rng() % 300, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    raw_exchange(port_, junk + "\r\n\r\n", 500ms);
  }
  // Everyone else is still served.
  const Reply ok = post(port_, "/v1/completions", {{"prompt", "hi"}, {"max_tokens", 2}});
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(get(port_, "/health").status, 200);
}

TEST_F(HttpServerTest, IdleConnectionTimesOut) {
  start({.request_timeout = 300ms});
  const auto t0 = std::chrono::steady_clock::now();
  const std::string reply = raw_exchange(port_, "GET /health HTTP/1.1\r\n", 3000ms);  // never finished
  EXPECT_EQ(reply, "");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2500ms) << "the server did not close the stalled connection";
}

TEST_F(HttpServerTest, DisconnectMidStreamCancels) {
  engine_.step_ms = 20;
  engine_.script = {72, 105, 32};  // no stop token: runs until cancelled  // slow enough that the stream is far from done
  net::io_context ioc;
  tcp::socket sock = connect_to(ioc, port_);
  write_request(sock, bhttp::verb::post, "/v1/completions",
                json{{"prompt", "hi"}, {"max_tokens", 200}, {"stream", true}}.dump());
  std::string got;
  char buf[1024];
  while (got.find("data: ") == std::string::npos) got.append(buf, sock.read_some(net::buffer(buf)));
  const RequestId id = engine_.last_id();
  const auto closed_at = std::chrono::steady_clock::now();
  sock.close();
  while (!engine_.cancel_time(id) && std::chrono::steady_clock::now() - closed_at < 2s) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(engine_.cancel_time(id)) << "no cancel within 2 s";
  EXPECT_LT(*engine_.cancel_time(id) - closed_at, 500ms);
  EXPECT_TRUE(engine_.wait_idle(2000ms));
}

TEST_F(HttpServerTest, DisconnectDuringNonStreamingRequestCancels) {
  engine_.step_ms = 20;
  engine_.script = {72, 105, 32};  // no stop token: runs until cancelled
  net::io_context ioc;
  tcp::socket sock = connect_to(ioc, port_);
  write_request(sock, bhttp::verb::post, "/v1/chat/completions",
                json{{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"max_tokens", 200}}.dump());
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (engine_.active_count() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(engine_.active_count(), 1u);
  const RequestId id = engine_.last_id();
  const auto closed_at = std::chrono::steady_clock::now();
  sock.close();
  while (!engine_.cancel_time(id) && std::chrono::steady_clock::now() - closed_at < 2s) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(engine_.cancel_time(id));
  EXPECT_LT(*engine_.cancel_time(id) - closed_at, 500ms);
  EXPECT_TRUE(engine_.wait_idle(2000ms));
}

TEST_F(HttpServerTest, SixtyFourConcurrentStreamsWithRandomCancellations) {
  engine_.step_ms = 2;
  constexpr int kClients = 64;
  std::atomic<int> finished{0}, disconnected{0}, failures{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937 rng(1000 + c);
      const int max_tokens = 1 + static_cast<int>(rng() % 60);
      const bool drop = rng() % 3 == 0;
      const bool chat = rng() % 2 == 0;
      const json body = chat ? json{{"messages", {{{"role", "user"}, {"content", "hi " + std::to_string(c)}}}},
                                    {"max_tokens", max_tokens}, {"stream", true}}
                             : json{{"prompt", "hello " + std::to_string(c)}, {"max_tokens", max_tokens},
                                    {"stream", true}};
      try {
        net::io_context ioc;
        tcp::socket sock = connect_to(ioc, port_);
        write_request(sock, bhttp::verb::post, chat ? "/v1/chat/completions" : "/v1/completions", body.dump());
        if (drop) {
          const size_t want = 200 + rng() % 800;  // bytes before hanging up
          std::string got;
          char buf[512];
          beast::error_code ec;
          while (got.size() < want && !ec) got.append(buf, sock.read_some(net::buffer(buf), ec));
          sock.close();
          ++disconnected;
          return;
        }
        beast::flat_buffer buf;
        const Reply r = read_reply(sock, buf);
        const auto events = parse_sse(r.body);
        if (r.status != 200 || events.empty() || events.back() != "[DONE]") {
          ++failures;
          return;
        }
        const json last = json::parse(events[events.size() - 2]);
        const int64_t completion = last["usage"]["completion_tokens"];
        const int64_t expect = std::min<int64_t>(max_tokens, static_cast<int64_t>(script_tokens().size()));
        if (completion != expect) ++failures;
        ++finished;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "client %d: %s\n", c, e.what());
        ++failures;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(finished.load() + disconnected.load(), kClients);
  EXPECT_TRUE(engine_.wait_idle(3000ms)) << engine_.active_count() << " requests still active";
  EXPECT_EQ(engine_.submitted(), kClients);
  EXPECT_EQ(engine_.finals(), kClients);
  // Connections wind down too (only the /metrics request itself is left).
  EXPECT_EQ(metrics_when_connections(port_, 1)["fulgur_http_connections_open"], 1);
}

TEST_F(HttpServerTest, StopEndsRunningStreamsAndReturns) {
  engine_.step_ms = 20;
  engine_.script = {72, 105, 32};  // no stop token: runs until cancelled
  std::thread client([&] {
    const Reply r = post(port_, "/v1/completions", {{"prompt", "hi"}, {"max_tokens", 200}, {"stream", true}});
    EXPECT_EQ(r.status, 200) << r.body;
    const auto events = parse_sse(r.body);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back(), "[DONE]");
    const json last = json::parse(events[events.size() - 2]);
    EXPECT_EQ(last["choices"][0]["finish_reason"], "cancelled");
  });
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (engine_.active_count() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(engine_.active_count(), 1u);
  const auto t0 = std::chrono::steady_clock::now();
  server_->stop();  // grace 500 ms, then cancel
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  client.join();
  EXPECT_TRUE(engine_.wait_idle(1000ms));
}

EngineOptions sixty_four_streams_options() {
  EngineOptions eo;
  eo.max_running = 8;  // most requests wait their turn: admission and the queue are exercised
  eo.state_slots = 8;
  eo.max_queued = 64;
  eo.page_size = 8;
  eo.step_token_budget = 48;
  eo.prefill_chunk = 16;
  return eo;
}

std::shared_ptr<const Model> sixty_four_streams_model() {
  ModelConfig cfg = test::actor_test_config();
  cfg.vocab_size = kVocab;  // the test tokenizer's vocabulary
  return test::make_test_model(31, cfg);
}

// 64 clients over HTTP, a third of them hanging up mid-stream; afterwards every slot and page is free.
void run_sixty_four_streams(Engine& engine) {
  http::HttpServerOptions opt;
  opt.host = "127.0.0.1";
  opt.port = 0;
  http::HttpServer server(engine, http::ServedModel{kModelName, &test_tokenizer(), {eos_id()}, 1700000000}, opt);
  ASSERT_TRUE(server.start().is_ok());
  const uint16_t port = server.port();
  constexpr int kClients = 64;
  std::atomic<int> finished{0}, disconnected{0}, failures{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937 rng(2000 + c);
      const int max_tokens = 1 + static_cast<int>(rng() % 24);
      const bool drop = rng() % 3 == 0;
      std::string prompt;
      const int words = 1 + static_cast<int>(rng() % 30);  // random prompt lengths
      for (int w = 0; w < words; ++w) prompt += (rng() % 2 ? "hello " : "the quick fox ");
      const json body = {{"prompt", prompt}, {"max_tokens", max_tokens}, {"stream", true},
                         {"temperature", rng() % 2 ? 0.0 : 0.7}, {"seed", c}};
      try {
        net::io_context ioc;
        tcp::socket sock = connect_to(ioc, port);
        write_request(sock, bhttp::verb::post, "/v1/completions", body.dump());
        if (drop) {
          const size_t want = 150 + rng() % 600;  // bytes before hanging up
          std::string got;
          char buf[512];
          beast::error_code ec;
          while (got.size() < want && !ec) got.append(buf, sock.read_some(net::buffer(buf), ec));
          sock.close();
          ++disconnected;
          return;
        }
        beast::flat_buffer buf;
        const Reply r = read_reply(sock, buf);
        const auto events = parse_sse(r.body);
        if (r.status != 200 || events.size() < 2 || events.back() != "[DONE]") {
          std::fprintf(stderr, "client %d: status %d, body %s\n", c, r.status, r.body.substr(0, 300).c_str());
          ++failures;
          return;
        }
        const json last = json::parse(events[events.size() - 2]);
        const int64_t completion = last["usage"]["completion_tokens"];
        if (completion < 1 || completion > max_tokens) ++failures;
        ++finished;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "client %d: %s\n", c, e.what());
        ++failures;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(finished.load() + disconnected.load(), kClients);
  EXPECT_GT(disconnected.load(), 0);
  // Every slot and page comes back once the cancelled streams are noticed.
  std::map<std::string, double> m;
  for (int tries = 0; tries < 500; ++tries) {
    m.clear();
    expect_prometheus_lines(get(port, "/metrics").body, &m);
    if (m["fulgur_state_slots_used"] == 0 && m["fulgur_kv_blocks_used"] == 0 && m["fulgur_running_sequences"] == 0 &&
        m["fulgur_queue_length"] == 0) {
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(m["fulgur_state_slots_used"], 0);
  EXPECT_EQ(m["fulgur_kv_blocks_used"], 0);
  EXPECT_EQ(m["fulgur_running_sequences"], 0);
  EXPECT_EQ(m["fulgur_queue_length"], 0);
  EXPECT_EQ(m["fulgur_state_slots_total"], 8);
  EXPECT_GT(m["fulgur_tokens_generated_total"], 0);
  server.stop();
}

TEST(HttpOverActors, SixtyFourStreamsWithRandomDisconnectsFreeEverySlotAndPage) {
  auto engine = make_local_engine(sixty_four_streams_model(), sixty_four_streams_options());
  ASSERT_TRUE(engine.has_value()) << engine.error().to_string();
  run_sixty_four_streams(**engine);
}

// The same over the engine on one GPU (`fulgur serve --device cuda`).
TEST(HttpOverCuda, SixtyFourStreamsWithRandomDisconnectsFreeEverySlotAndPage) {
#ifdef FULGUR_HAVE_CUDA
  if (kernels::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine: GPU test skipped";
  auto engine = make_cuda_engine(sixty_four_streams_model(), sixty_four_streams_options(), {});
  ASSERT_TRUE(engine.has_value()) << engine.error().to_string();
  run_sixty_four_streams(**engine);
#else
  GTEST_SKIP() << "this build has no CUDA backend: GPU test skipped";
#endif
}

}  // namespace
}  // namespace fulgur
