// fulgur node: a worker process that hosts actors for a serving process (`fulgur serve
// --placement`). It publishes its node agent with the CAF middleman on --listen and waits; the
// serving process connects, names the model directory (the node loads it itself) and asks for
// the actors the placement puts here. Hidden states between processes move over UCX.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <pthread.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/node_agent.h"
#include "orchestration/cli/commands.h"
#include "orchestration/generate.h"
#include "protocols/serving/caf_config.h"
#include "protocols/serving/placement.h"

namespace fulgur::cli {

namespace {

struct NodeArgs {
  std::string listen, port_file, name;
  size_t threads = 2;
  int64_t receive_timeout_ms = 30000;
};

int run_node(const NodeArgs& a) {
  auto hp = serving::parse_host_port(a.listen);
  std::string host;
  uint16_t port = 0;
  if (hp) {
    host = hp->first;
    port = hp->second;
  } else if (a.listen.size() > 2 && a.listen.substr(a.listen.size() - 2) == ":0") {
    host = a.listen.substr(0, a.listen.size() - 2);  // port 0: any free port (see --port-file)
  } else {
    return fail("node", Status(Errc::invalid_argument, "--listen: " + hp.error().message()));
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  caf::actor_system_config cfg;
  serving::configure(cfg, serving::RuntimeOptions{a.threads});
  serving::enable_middleman(cfg);
  caf::actor_system sys{cfg};

  serving::NodeAgentOptions opt;
  opt.name = a.name.empty() ? a.listen : a.name;
  opt.receive_timeout = std::chrono::milliseconds(a.receive_timeout_ms);
  opt.load = [](const std::string& dir) -> Expected<std::shared_ptr<const Model>> {
    FULGUR_ASSIGN_OR_RETURN(LoadedModel m, load_model_dir(dir, /*need_tokenizer=*/false));
    return std::shared_ptr<const Model>(std::move(m.model));
  };
  auto agent = serving::spawn_node_agent(sys, std::move(opt));
  auto published = sys.middleman().publish(agent, port, host.c_str(), /*reuse_addr=*/true);
  if (!published) {
    caf::anon_send_exit(agent, caf::exit_reason::user_shutdown);
    return fail("node", Status(Errc::unavailable, "cannot listen on " + a.listen + ": " +
                                                      caf::to_string(published.error())));
  }
  std::fprintf(stderr, "fulgur node: listening on %s:%u\n", host.c_str(), static_cast<unsigned>(*published));
  if (!a.port_file.empty()) {
    const std::string tmp = a.port_file + ".tmp";
    {
      std::ofstream out(tmp);
      out << *published << "\n";
    }
    std::rename(tmp.c_str(), a.port_file.c_str());  // readers never see a half-written file
  }
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "fulgur node: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  // Unpublish first: the middleman holds the published agent, and ~actor_system waits for the
  // detached agent's thread, which waits for its last reference.
  (void)sys.middleman().unpublish(agent, *published);
  caf::anon_send_exit(agent, caf::exit_reason::user_shutdown);
  agent = nullptr;
  return 0;
}

}  // namespace

Run add_node(CLI::App& app) {
  auto a = std::make_shared<NodeArgs>();
  app.add_option("--listen", a->listen, "HOST:PORT to listen on for a serving process (port 0: any free port)")
      ->required();
  app.add_option("--port-file", a->port_file, "Write the port listened on to this file once listening");
  app.add_option("--name", a->name, "Name in logs (default: the --listen address)");
  app.add_option("--threads", a->threads, "CAF worker threads")->check(CLI::Range(1, 256));
  app.add_option("--receive-timeout-ms", a->receive_timeout_ms,
                 "How long an actor waits for a hidden state another process announced")
      ->check(CLI::PositiveNumber);
  return [a] { return run_node(*a); };
}

}  // namespace fulgur::cli
