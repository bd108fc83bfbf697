// fulgur serve: load a model directory, build the actor engine (in this process, or across the
// `fulgur node` processes a --placement names), serve the OpenAI API over HTTP until
// SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iterator>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <pthread.h>

#include "devices/device.h"
#include "orchestration/cli/commands.h"
#include "orchestration/serving/actor_engine.h"
#include "orchestration/serving/cuda_engine.h"
#include "protocols/serving/placement.h"
#include "orchestration/generate.h"
#include "orchestration/http/server.h"
#include "orchestration/serving/engine_factory.h"

namespace fulgur::cli {

namespace {
struct ServeArgs {
  std::string model_dir, listen = "127.0.0.1:8000", placement, served_model_name, device = "cpu";
  ComputeOptions compute;
  int64_t max_running = 64, max_queued = 256, max_context = 0, kv_blocks = 0;
  double kv_cache_gib = 0;
  int io_threads = 2;
};

// "HOST:PORT" or "[V6]:PORT" -> host, port.
Status split_listen(const std::string& listen, std::string& host, uint16_t& port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) {
    return Status(Errc::invalid_argument, "--listen: expected HOST:PORT, got '" + listen + "'");
  }
  host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port_text = listen.substr(colon + 1);
  char* end = nullptr;
  const long value = std::strtol(port_text.c_str(), &end, 10);
  if (*end != '\0' || value < 0 || value > 65535) {
    return Status(Errc::invalid_argument, "--listen: port '" + port_text + "' is not a number in [0, 65535]");
  }
  port = static_cast<uint16_t>(value);
  return Status::ok();
}

// A placement plan (placement.h): nodes, attention layers and expert actors per node, replicas,
// token groups. Remote nodes are `fulgur node --listen` processes.
Expected<serving::Placement> read_placement(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status(Errc::not_found, "--placement " + path + ": cannot open the file");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status(Errc::parse_error, "--placement " + path + ": not valid JSON");
  auto placement = serving::placement_from_json(j);
  if (!placement) return Status(placement.error().code(), "--placement " + path + ": " + placement.error().message());
  return placement;
}

int run_serve(const ServeArgs& a) {
  auto device = select_device(a.device);
  if (!device) return fail("serve", device.error());
  if (auto st = check_compute_options(*device, a.compute); !st) return fail("serve", st);
  if (device->kind == DeviceKind::cpu && a.kv_cache_gib > 0) {
    return fail("serve", Status(Errc::invalid_argument,
                                "--kv-cache-gib sizes the KV cache of a GPU; on the CPU give --kv-blocks"));
  }
  if (device->kind != DeviceKind::cpu && !a.placement.empty()) {
    return fail("serve", Status(Errc::invalid_argument,
                                "--placement spreads the CPU actor pipeline over processes; with --device cuda the "
                                "whole model is one actor on that GPU"));
  }
  ActorEngineOptions actor_options;
  if (!a.placement.empty()) {
    auto placement = read_placement(a.placement);
    if (!placement) return fail("serve", placement.error());
    actor_options.placement = std::move(*placement);
  }
  // The nodes load the checkpoint themselves, from the same path.
  actor_options.model_dir = std::filesystem::absolute(a.model_dir).lexically_normal().string();
  http::HttpServerOptions hopt;
  if (auto st = split_listen(a.listen, hopt.host, hopt.port); !st) return fail("serve", st);
  hopt.io_threads = a.io_threads;

  // SIGINT/SIGTERM are blocked in every thread (the runtime's and the server's inherit this
  // mask) and taken by sigwait below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto loaded = load_model_dir(a.model_dir, /*need_tokenizer=*/true);
  if (!loaded) return fail("serve", loaded.error());
  const Tokenizer& tokenizer = *loaded->tokenizer;
  const ModelConfig config = loaded->model->config();
  EngineOptions eopt;
  eopt.max_running = a.max_running;
  eopt.max_queued = a.max_queued;
  eopt.state_slots = a.max_running;
  eopt.max_context = a.max_context;
  eopt.kv_blocks = a.kv_blocks;
  Expected<std::unique_ptr<Engine>> engine = Status(Errc::internal, "no engine");
  if (device->kind == DeviceKind::cpu) {
    auto actors = make_actor_engine(std::shared_ptr<const Model>(std::move(loaded->model)), eopt, actor_options);
    if (actors) engine = std::unique_ptr<Engine>(std::move(*actors));
    else engine = actors.error();
  } else {
    // The host copy of the weights goes once they are on the GPU.
    CudaEngineOptions copt;
    copt.device = device->index;
    copt.dtype = a.compute.dtype;
    copt.int8_experts = a.compute.int8_experts;
    copt.kv_cache_bytes = static_cast<size_t>(a.kv_cache_gib * double(size_t(1) << 30));
    engine = make_cuda_engine(std::shared_ptr<const Model>(std::move(loaded->model)), eopt, copt);
  }
  if (!engine) return fail("serve", engine.error());

  http::ServedModel served;
  served.id = a.served_model_name;
  if (served.id.empty()) served.id = std::filesystem::path(a.model_dir).lexically_normal().filename().string();
  if (served.id.empty()) served.id = std::filesystem::path(a.model_dir).lexically_normal().parent_path().filename().string();
  served.tokenizer = &tokenizer;
  served.stop_tokens = default_stop_tokens(config, &tokenizer);
  served.created = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();

  http::HttpServer server(**engine, served, hopt);
  if (auto st = server.start(); !st) return fail("serve", st);
  std::fprintf(stderr, "fulgur serve: model '%s' on %s listening on %s (max context %lld tokens)\n", served.id.c_str(),
               a.device.c_str(), server.url().c_str(), static_cast<long long>((*engine)->max_context()));

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "fulgur serve: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.stop();  // before the engine goes away
  return 0;
}
}  // namespace

Run add_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  app.add_option("--model", a->model_dir, "Model directory (config.json, safetensors, tokenizer.json)")->required();
  app.add_option("--listen", a->listen, "HOST:PORT to listen on (port 0: any free port)");
  app.add_option("--placement", a->placement, "Placement plan (JSON) for a multi-process cluster (CPU)");
  app.add_option("--device", a->device, "Device to serve on: cpu (the actor pipeline), cuda or cuda:N (one GPU)");
  add_compute_options(app, a->compute);
  app.add_option("--served-model-name", a->served_model_name,
                 "Model id in the API (default: the model directory's name)");
  app.add_option("--max-running", a->max_running, "Sequences in one running batch")->check(CLI::PositiveNumber);
  app.add_option("--max-queued", a->max_queued, "Requests waiting for room; beyond this the API answers 429")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-context", a->max_context,
                 "Longest prompt + completion accepted (default: the model's max_position_embeddings)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--kv-blocks", a->kv_blocks,
                 "Softmax KV-cache pages of 16 tokens (default: --max-running full contexts; on a GPU, as many as its free "
                 "memory holds up to that, the default context lowered to what they hold); sequences wait for pages")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--kv-cache-gib", a->kv_cache_gib,
                 "GPU: at most this many GiB of KV-cache pages (default: all the free memory holds); not with --kv-blocks")
      ->check(CLI::Range(0.0, 1.0e6));
  app.add_option("--io-threads", a->io_threads, "HTTP I/O threads")->check(CLI::Range(1, 64));
  return [a] { return run_serve(*a); };
}

}  // namespace fulgur::cli
