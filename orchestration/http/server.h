// The HTTP gateway: an HTTP/1.1 server (Boost.Beast over Asio) that speaks the OpenAI API and
// drives an Engine. Beast stays inside server.cpp; request/response/metrics logic is in the pure
// modules beside it (request.h, response.h, metrics.h).
//
// Routes
//   POST /v1/completions, /v1/chat/completions   generation (JSON, or SSE with "stream": true)
//   GET  /v1/models                              the one served model
//   GET  /health                                 200 when engine.ready(), else 503
//   GET  /metrics                                Prometheus text (metrics.h)
//   GET  /v1/admin/topology                      engine.topology()
//   a known path with another method -> 405 (Allow header); anything else -> 404.
// Every error is an OpenAI error body (response.h). Engine errors from submit: overloaded ->
// 429 with Retry-After, unavailable -> 503, invalid_argument -> 400. Transport limits: a body
// over body_limit -> 413, a header block over header_limit -> 431, unparsable HTTP -> 400, and
// the connection is closed after each of these.
//
// Threads and ownership. `io_threads` threads run one io_context; each connection runs on its
// own strand and serves one request at a time (keep-alive; pipelined requests wait in the read
// buffer). Engine callbacks (runtime threads) only append the event to the connection's bounded
// event queue under a short lock and post one drain to the strand; they never block or write.
// While a generation runs, the connection keeps a read outstanding: end of stream or a reset
// means the client went away and the request is cancelled (engine.cancel) at once. A client
// that half-closes its sending side after the request counts as gone too. Unsent output is
// bounded (max_buffered_bytes): a client that does not read is treated as gone.
//
// The Engine and the Tokenizer must outlive the server. stop() (also run by the destructor)
// stops accepting, closes idle connections, lets running generations finish for
// shutdown_grace, then cancels what is left and joins the threads; no engine callback touches
// the server afterwards.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "devices/status.h"
#include "orchestration/serving/engine.h"

namespace fulgur {

class Tokenizer;

namespace http {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;                             // 0: an ephemeral port (see HttpServer::port)
  int io_threads = 2;
  size_t body_limit = 4u << 20;                     // bytes of request body (413 beyond)
  size_t header_limit = 16u << 10;                  // bytes of request line + headers (431 beyond)
  std::chrono::milliseconds request_timeout{30000}; // to read one whole request; also idle keep-alive
  std::chrono::milliseconds write_timeout{30000};   // for one write to complete
  size_t max_buffered_bytes = 1u << 20;             // unsent response bytes per connection
  size_t max_buffered_events = 4096;                // engine events waiting for a connection's strand
  std::chrono::milliseconds shutdown_grace{5000};   // running generations may finish during stop()
  int retry_after_seconds = 1;                      // Retry-After of a 429
};

// The model the server answers for.
struct ServedModel {
  std::string id;                    // "model" of requests and responses; GET /v1/models
  const Tokenizer* tokenizer = nullptr;  // not owned; must outlive the server
  std::vector<int32_t> stop_tokens;  // default_stop_tokens(): ends generation, never emitted as text
  int64_t created = 0;               // unix seconds reported by /v1/models and in responses
};

class HttpServer {
 public:
  HttpServer(Engine& engine, ServedModel model, HttpServerOptions options = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens on host:port and starts the I/O threads. Errc::io_error naming the
  // address when it cannot bind; Errc::invalid_argument for a bad host or option.
  Status start();
  // The bound port (after start; useful with port 0).
  uint16_t port() const;
  // "http://HOST:PORT"
  std::string url() const;
  // Graceful shutdown (see above); idempotent.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace http
}  // namespace fulgur
