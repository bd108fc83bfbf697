#include "orchestration/http/server.h"

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "orchestration/http/metrics.h"
#include "orchestration/http/request.h"
#include "orchestration/http/response.h"
#include "orchestration/tokenizer/tokenizer.h"

namespace fulgur::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;

namespace {

constexpr size_t kMonitorReadBytes = 4096;     // one read while a generation runs
constexpr size_t kMonitorBufferLimit = 64u << 10;  // stop watching a client that floods us meanwhile
constexpr const char* kServerName = "fulgur";

class Session;

class EventChannel;

// Every live EventChannel, so that stop() can cut them off the io_context before it goes away:
// after close(), no engine callback posts, and a channel destroyed later (an engine may keep a
// callback past the server) no longer holds an executor of the dead io_context.
struct Gate {
  std::mutex mu;
  bool open = true;
  std::unordered_set<EventChannel*> channels;
  void close();
};

struct ServerState {
  ServerState(Engine& e, ServedModel m, HttpServerOptions o) : engine(e), model(std::move(m)), opt(std::move(o)) {}
  Engine& engine;
  ServedModel model;
  HttpServerOptions opt;
  std::shared_ptr<Gate> gate = std::make_shared<Gate>();
  std::atomic<bool> stopping{false};
  std::atomic<int64_t> connections_open{0}, http_requests{0}, http_errors{0}, client_disconnects{0};
  std::atomic<uint64_t> seed_counter{0};
  uint64_t seed_base = std::random_device{}();
  std::atomic<uint64_t> next_session_id{1};
  std::mutex sessions_mu;
  std::unordered_map<uint64_t, std::weak_ptr<Session>> sessions;

  std::vector<std::shared_ptr<Session>> live_sessions() {
    std::vector<std::shared_ptr<Session>> out;
    std::lock_guard lock(sessions_mu);
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) out.push_back(std::move(s));
    }
    return out;
  }
  size_t session_count() {
    std::lock_guard lock(sessions_mu);
    return sessions.size();
  }
  uint64_t draw_seed() {
    uint64_t z = seed_base + 0x9E3779B97F4A7C15ull * (seed_counter.fetch_add(1) + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Events of one generation on their way from runtime threads to the connection's strand:
// bounded, one drain posted at a time, the final event kept aside so it is never dropped.
class EventChannel : public std::enable_shared_from_this<EventChannel> {
 public:
  struct Batch {
    std::vector<TokenEvent> events;
    std::optional<TokenEvent> final;
    bool overflow = false;
  };

  EventChannel(net::any_io_executor strand, std::weak_ptr<Session> session, std::shared_ptr<Gate> gate,
               size_t capacity)
      : session_(std::move(session)), gate_(std::move(gate)), capacity_(capacity) {
    std::lock_guard gate_lock(gate_->mu);
    if (gate_->open) strand_ = std::move(strand);
    gate_->channels.insert(this);
  }

  ~EventChannel() {
    std::lock_guard gate_lock(gate_->mu);
    gate_->channels.erase(this);
    std::lock_guard lock(mu_);
    strand_.reset();  // under the gate's lock: the io_context is still alive here
  }

  // Any thread; never blocks beyond a short critical section.
  void push(const TokenEvent& event) {
    std::lock_guard lock(mu_);
    if (!strand_) return;  // the server has stopped
    if (event.finished) {
      final_ = event;
    } else if (events_.size() >= capacity_) {
      overflow_ = true;
    } else {
      events_.push_back(event);
    }
    if (drain_posted_) return;
    drain_posted_ = true;
    net::post(*strand_, [self = shared_from_this()] { self->drain(); });
  }

  // Under the gate's lock (Gate::close).
  void detach() {
    std::lock_guard lock(mu_);
    strand_.reset();
  }

 private:
  void drain();

  std::optional<net::any_io_executor> strand_;  // empty once the server stopped
  std::weak_ptr<Session> session_;
  std::shared_ptr<Gate> gate_;
  size_t capacity_;
  std::mutex mu_;
  std::vector<TokenEvent> events_;
  std::optional<TokenEvent> final_;
  bool overflow_ = false;
  bool drain_posted_ = false;
};

// One generation in flight on a connection.
struct Generation {
  RequestId id = 0;
  std::shared_ptr<EventChannel> channel;
  bool stream = false;
  bool chunked = true;           // stream framing (false for HTTP/1.0 clients)
  ResponseMeta meta;
  TextStream text;
  std::string full_text;         // non-streaming: the text so far
  int64_t prompt_tokens = 0;
  int64_t tokens_seen = 0;
  bool finished = false;
};

// HTTP/1.1: one chunk of chunked transfer encoding; HTTP/1.0 (no chunked encoding): the bytes
// as they are, the end of the stream marked by closing the connection.
std::string frame(bool chunked, const std::string& data) {
  if (!chunked) return data;
  char size[32];
  std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  return size + data + "\r\n";
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, std::shared_ptr<ServerState> state)
      : stream_(std::move(socket)), state_(std::move(state)), sid_(state_->next_session_id.fetch_add(1)) {
    state_->connections_open.fetch_add(1);
  }

  ~Session() {
    if (gen_ && !gen_->finished) state_->engine.cancel(gen_->id);
    state_->connections_open.fetch_sub(1);
    std::lock_guard lock(state_->sessions_mu);
    state_->sessions.erase(sid_);
  }

  void run() {
    {
      std::lock_guard lock(state_->sessions_mu);
      state_->sessions[sid_] = weak_from_this();
    }
    net::dispatch(stream_.get_executor(), beast::bind_front_handler(&Session::do_read, shared_from_this()));
  }

  // Any thread. force = false: close when idle, let a running generation finish;
  // force = true: cancel the running generation too.
  void shutdown(bool force) {
    net::post(stream_.get_executor(), [self = shared_from_this(), force] { self->on_shutdown(force); });
  }

  // On the strand: what the engine sent since the last drain.
  void on_engine_events(EventChannel::Batch batch) {
    if (!gen_ || gen_->finished || closed_) return;
    for (const TokenEvent& ev : batch.events) on_token(ev.token);
    if (batch.overflow && !batch.final) {
      // The strand fell behind the engine by max_buffered_events: give up on this client.
      state_->engine.cancel(gen_->id);
      close();
      return;
    }
    if (batch.final) on_final(*batch.final);
    if (gen_ && out_pending_.size() > state_->opt.max_buffered_bytes) {
      client_gone();  // the client does not read its stream
      return;
    }
    flush();
  }

 private:
  // ---- reading requests ----------------------------------------------------------------
  void do_read() {
    if (closed_) return;
    if (state_->stopping.load()) {
      close();
      return;
    }
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(state_->opt.header_limit));
    parser_->body_limit(state_->opt.body_limit);
    stream_.expires_after(state_->opt.request_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    auto expect = parser_->get()[bhttp::field::expect];
    if (beast::iequals(expect, "100-continue") && !parser_->is_done()) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(kContinue),
                       [self = shared_from_this()](beast::error_code wec, std::size_t) {
                         if (wec) return self->close();
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  void read_body() {
    bhttp::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    state_->http_requests.fetch_add(1);
    stream_.expires_never();
    handle(parser_->release());
  }

  void on_read_error(beast::error_code ec) {
    keep_alive_ = false;
    if (ec == bhttp::error::body_limit) {
      state_->http_requests.fetch_add(1);
      return respond_error(413, "request body is larger than " + std::to_string(state_->opt.body_limit) + " bytes");
    }
    if (ec == bhttp::error::header_limit) {
      state_->http_requests.fetch_add(1);
      return respond_error(431, "request header block is larger than " + std::to_string(state_->opt.header_limit) +
                                    " bytes");
    }
    if (ec.category() == bhttp::make_error_code(bhttp::error::end_of_stream).category() &&
        ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
      state_->http_requests.fetch_add(1);
      return respond_error(400, "malformed HTTP request: " + ec.message());
    }
    close();  // end of stream, timeout, reset, shutdown
  }

  // ---- routing ---------------------------------------------------------------------------
  void handle(bhttp::request<bhttp::string_body> req) {
    keep_alive_ = req.keep_alive() && !state_->stopping.load();
    std::string_view target(req.target().data(), req.target().size());
    const std::string path(target.substr(0, target.find('?')));
    const bhttp::verb method = req.method();
    struct Route {
      const char* path;
      bhttp::verb method;
    };
    static const Route kRoutes[] = {
        {"/v1/completions", bhttp::verb::post}, {"/v1/chat/completions", bhttp::verb::post},
        {"/v1/models", bhttp::verb::get},       {"/health", bhttp::verb::get},
        {"/metrics", bhttp::verb::get},         {"/v1/admin/topology", bhttp::verb::get}};
    const Route* route = nullptr;
    for (const Route& r : kRoutes) {
      if (path == r.path) route = &r;
    }
    if (!route) return respond_error(404, "no route for " + std::string(req.method_string()) + " " + path);
    if (method != route->method) {
      const char* allow = route->method == bhttp::verb::post ? "POST" : "GET";
      return respond_error(405, std::string(req.method_string()) + " is not allowed on " + path + " (use " + allow + ")",
                           {}, {{"Allow", allow}});
    }
    if (path == "/v1/completions") return start_generation(Endpoint::completions, req.body(), req.version());
    if (path == "/v1/chat/completions") {
      return start_generation(Endpoint::chat_completions, req.body(), req.version());
    }
    if (path == "/v1/models") return respond_json(200, models_body());
    if (path == "/health") {
      const bool ready = state_->engine.ready();
      return respond_json(ready ? 200 : 503, json{{"status", ready ? "ok" : "loading"}});
    }
    if (path == "/metrics") {
      GatewayCounters g;
      g.connections_open = state_->connections_open.load();
      g.http_requests_total = state_->http_requests.load();
      g.http_errors_total = state_->http_errors.load();
      g.client_disconnects_total = state_->client_disconnects.load();
      return respond(200, "text/plain; version=0.0.4; charset=utf-8", format_prometheus(state_->engine.stats(), g));
    }
    return respond_json(200, state_->engine.topology());
  }

  json models_body() const {
    json model = {{"id", state_->model.id},
                  {"object", "model"},
                  {"created", state_->model.created},
                  {"owned_by", "fulgur"},
                  {"max_model_len", state_->engine.max_context()}};
    return json{{"object", "list"}, {"data", json::array({std::move(model)})}};
  }

  // ---- generation ------------------------------------------------------------------------
  void start_generation(Endpoint endpoint, const std::string& body, unsigned http_version) {
    if (!state_->engine.ready()) return respond_error(503, "the model is still loading; retry later");
    auto doc = parse_json_body(body);
    if (!doc) return respond_status(doc.error());
    RequestContext ctx;
    ctx.served_model = state_->model.id;
    ctx.max_context = state_->engine.max_context();
    ctx.stop_tokens = state_->model.stop_tokens;
    auto parsed = parse_completion_request(*doc, endpoint, ctx);
    if (!parsed) return respond_status(parsed.error());
    auto request = build_engine_request(*parsed, *state_->model.tokenizer, ctx, state_->draw_seed());
    if (!request) return respond_status(request.error());
    const int64_t prompt_tokens = static_cast<int64_t>(request->prompt.size());
    std::vector<int32_t> hidden = request->stop_tokens;

    auto channel = std::make_shared<EventChannel>(stream_.get_executor(), weak_from_this(), state_->gate,
                                                  state_->opt.max_buffered_events);
    auto id = state_->engine.submit(std::move(request).value(),
                                    [channel](const TokenEvent& ev) { channel->push(ev); });
    if (!id) return respond_status(id.error());

    const bool chat = endpoint == Endpoint::chat_completions;
    gen_.emplace(Generation{.id = *id,
                            .channel = std::move(channel),
                            .stream = parsed->stream,
                            .chunked = http_version >= 11,
                            .meta = {endpoint, (chat ? "chatcmpl-" : "cmpl-") + std::to_string(*id),
                                     state_->model.id, unix_now()},
                            .text = TextStream(*state_->model.tokenizer, std::move(hidden)),
                            .prompt_tokens = prompt_tokens});
    start_monitor();
    if (gen_->stream) {
      if (!gen_->chunked) keep_alive_ = false;
      std::string head = "HTTP/1.1 200 OK\r\nServer: fulgur\r\nContent-Type: text/event-stream\r\n"
                         "Cache-Control: no-cache\r\n";
      if (gen_->chunked) head += "Transfer-Encoding: chunked\r\n";
      head += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
      out_pending_ += head;
      if (chat) {
        out_pending_ += frame(gen_->chunked, sse_data(stream_chunk(gen_->meta, "", std::nullopt, std::nullopt, true)));
      }
      flush();
    }
  }

  static int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  void on_token(int32_t token) {
    ++gen_->tokens_seen;
    std::string text = gen_->text.push(token);
    if (text.empty()) return;
    if (gen_->stream) {
      out_pending_ += frame(gen_->chunked, sse_data(stream_chunk(gen_->meta, text, std::nullopt, std::nullopt)));
    } else {
      gen_->full_text += text;
    }
  }

  void on_final(const TokenEvent& ev) {
    gen_->finished = true;
    std::string rest = gen_->text.finish();
    Usage usage{ev.prompt_tokens > 0 ? ev.prompt_tokens : gen_->prompt_tokens,
                ev.completion_tokens > 0 ? ev.completion_tokens : gen_->tokens_seen};
    Status error = ev.error;
    if (ev.finish_reason == "error" && error.is_ok()) error = Status(Errc::internal, "generation failed");
    if (gen_->stream) {
      const bool chunked = gen_->chunked;
      if (ev.finish_reason == "error") out_pending_ += frame(chunked, sse_data(error_body(error)));
      out_pending_ += frame(chunked, sse_data(stream_chunk(gen_->meta, rest, ev.finish_reason, usage)));
      out_pending_ += frame(chunked, std::string(kSseDone));
      if (chunked) out_pending_ += "0\r\n\r\n";
      response_complete_ = true;
      gen_.reset();
      return;  // the caller flushes
    }
    const ResponseMeta meta = gen_->meta;
    std::string text = std::move(gen_->full_text) + rest;
    const std::string reason = ev.finish_reason;
    gen_.reset();
    if (reason == "error") return respond_status(error);
    if (reason == "cancelled") return respond_error(503, "the request was cancelled by the server");
    respond_json(200, completion_body(meta, text, reason, usage));
  }

  // A read stays outstanding while a generation runs: bytes that arrive are kept for the next
  // request; end of stream or an error means the client went away.
  void start_monitor() {
    if (monitoring_ || closed_) return;
    if (buffer_.size() >= kMonitorBufferLimit) return;
    monitoring_ = true;
    stream_.expires_never();
    stream_.async_read_some(buffer_.prepare(kMonitorReadBytes),
                            beast::bind_front_handler(&Session::on_monitor, shared_from_this()));
  }

  void on_monitor(beast::error_code ec, std::size_t n) {
    monitoring_ = false;
    if (!ec) buffer_.commit(n);
    if (closed_) return;
    if (monitor_cancelled_) {  // the response is out; now read the next request
      monitor_cancelled_ = false;
      if (ec && ec != net::error::operation_aborted) return close();
      return next_request();
    }
    if (ec) return client_gone();
    start_monitor();
  }

  void client_gone() {
    if (gen_ && !gen_->finished) {
      state_->engine.cancel(gen_->id);
      gen_->finished = true;
      state_->client_disconnects.fetch_add(1);
    }
    close();
  }

  void on_shutdown(bool force) {
    keep_alive_ = false;
    if (closed_) return;
    if (gen_ && !gen_->finished) {
      if (force) state_->engine.cancel(gen_->id);
      return;  // the final event completes the response, then the connection closes
    }
    if (!writing_ && !response_complete_) close();  // idle or reading a request
  }

  // ---- writing ---------------------------------------------------------------------------
  void respond(int status, const std::string& content_type, std::string body,
               std::vector<std::pair<std::string, std::string>> headers = {}) {
    if (status >= 400) state_->http_errors.fetch_add(1);
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), 11};
    res.set(bhttp::field::server, kServerName);
    res.set(bhttp::field::content_type, content_type);
    for (auto& [name, value] : headers) res.set(name, value);
    res.keep_alive(keep_alive_);
    res.body() = std::move(body);
    res.prepare_payload();
    std::ostringstream os;
    os << res;
    out_pending_ += os.str();
    response_complete_ = true;
    flush();
  }

  void respond_json(int status, const json& body, std::vector<std::pair<std::string, std::string>> headers = {}) {
    respond(status, "application/json", dump_json(body), std::move(headers));
  }

  void respond_error(int status, const std::string& message, const std::string& param = {},
                     std::vector<std::pair<std::string, std::string>> headers = {}) {
    respond_json(status, error_body(status, message, param), std::move(headers));
  }

  void respond_status(const Status& status) {
    std::vector<std::pair<std::string, std::string>> headers;
    const int code = http_status_for(status.code());
    if (code == 429) headers.emplace_back("Retry-After", std::to_string(state_->opt.retry_after_seconds));
    respond_json(code, error_body(status), std::move(headers));
  }

  void flush() {
    if (writing_ || closed_) return;
    if (out_pending_.empty()) {
      if (response_complete_) after_response();
      return;
    }
    out_writing_.swap(out_pending_);
    out_pending_.clear();
    writing_ = true;
    stream_.expires_after(state_->opt.write_timeout);
    net::async_write(stream_, net::buffer(out_writing_),
                     beast::bind_front_handler(&Session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    writing_ = false;
    out_writing_.clear();
    if (closed_) return;
    if (ec) return client_gone();
    flush();
  }

  // Every byte of the response is written.
  void after_response() {
    response_complete_ = false;
    if (monitoring_) {
      monitor_cancelled_ = true;
      stream_.cancel();  // no write is pending here; on_monitor continues with next_request()
      return;
    }
    next_request();
  }

  void next_request() {
    if (!keep_alive_ || state_->stopping.load()) return close();
    do_read();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::shared_ptr<ServerState> state_;
  uint64_t sid_;
  bool keep_alive_ = false;
  bool closed_ = false;
  std::string out_pending_, out_writing_;
  bool writing_ = false;
  bool response_complete_ = false;  // the current response is fully queued in out_pending_
  std::optional<Generation> gen_;
  bool monitoring_ = false;
  bool monitor_cancelled_ = false;
};

void Gate::close() {
  std::lock_guard lock(mu);
  open = false;
  for (EventChannel* channel : channels) channel->detach();
}

void EventChannel::drain() {
  Batch batch;
  {
    std::lock_guard lock(mu_);
    batch.events.swap(events_);
    batch.final = std::move(final_);
    final_.reset();
    batch.overflow = std::exchange(overflow_, false);
    drain_posted_ = false;
  }
  if (auto session = session_.lock()) session->on_engine_events(std::move(batch));
}

}  // namespace

struct HttpServer::Impl {
  Impl(Engine& engine, ServedModel model, HttpServerOptions options)
      : state(std::make_shared<ServerState>(engine, std::move(model), std::move(options))),
        ioc(std::max(1, state->opt.io_threads)),
        acceptor(net::make_strand(ioc)) {}

  void do_accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (!acceptor.is_open() || state->stopping.load()) return;
        // EMFILE and friends: keep accepting after a short pause rather than spinning.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      } else {
        std::make_shared<Session>(std::move(socket), state)->run();
      }
      if (!state->stopping.load()) do_accept();
    });
  }

  void wait_for_sessions(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (state->session_count() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  std::shared_ptr<ServerState> state;
  net::io_context ioc;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  uint16_t bound_port = 0;
  bool started = false, stopped = false;
};

HttpServer::HttpServer(Engine& engine, ServedModel model, HttpServerOptions options)
    : impl_(std::make_unique<Impl>(engine, std::move(model), std::move(options))) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  Impl& m = *impl_;
  const HttpServerOptions& opt = m.state->opt;
  if (m.started) return Status(Errc::invalid_argument, "the HTTP server is already started");
  if (!m.state->model.tokenizer) return Status(Errc::invalid_argument, "ServedModel.tokenizer is null");
  if (opt.io_threads < 1) return Status(Errc::invalid_argument, "io_threads must be >= 1");
  beast::error_code ec;
  const auto address = net::ip::make_address(opt.host, ec);
  if (ec) return Status(Errc::invalid_argument, "listen address '" + opt.host + "' is not an IP address");
  const tcp::endpoint endpoint(address, opt.port);
  const std::string where = opt.host + ":" + std::to_string(opt.port);
  m.acceptor.open(endpoint.protocol(), ec);
  if (!ec) m.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(endpoint, ec);
  if (!ec) m.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return Status(Errc::io_error, "cannot listen on " + where + ": " + ec.message());
  m.bound_port = m.acceptor.local_endpoint(ec).port();
  m.started = true;
  m.do_accept();
  for (int i = 0; i < opt.io_threads; ++i) {
    m.threads.emplace_back([&m] {
      for (;;) {
        try {
          m.ioc.run();
          return;
        } catch (const std::exception& e) {  // a handler must never take the server down
          std::fprintf(stderr, "fulgur http: handler threw: %s\n", e.what());
        }
      }
    });
  }
  return Status::ok();
}

uint16_t HttpServer::port() const { return impl_->bound_port; }

std::string HttpServer::url() const {
  return "http://" + impl_->state->opt.host + ":" + std::to_string(impl_->bound_port);
}

void HttpServer::stop() {
  Impl& m = *impl_;
  if (!m.started || m.stopped) return;
  m.stopped = true;
  m.state->stopping.store(true);
  net::post(m.acceptor.get_executor(), [&m] {
    beast::error_code ec;
    m.acceptor.close(ec);
  });
  for (auto& s : m.state->live_sessions()) s->shutdown(false);
  m.wait_for_sessions(m.state->opt.shutdown_grace);
  for (auto& s : m.state->live_sessions()) s->shutdown(true);
  m.wait_for_sessions(std::chrono::milliseconds(1000));
  m.state->gate->close();
  m.ioc.stop();
  for (auto& t : m.threads) t.join();
  m.threads.clear();
}

}  // namespace fulgur::http
