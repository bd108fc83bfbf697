// `fulgur node` child processes on this machine's loopback interface, for tests, benchmarks and
// local demos of a multi-process placement. Each child listens on a free port (written to a port
// file it creates once listening) and logs to `<dir>/<name>.log`.
#pragma once

#include <string>
#include <sys/types.h>

#include "devices/status.h"
#include "protocols/serving/placement.h"

namespace fulgur {

class LocalNode {
 public:
  // Starts `fulgur_bin node --listen 127.0.0.1:0 ...` and waits until it listens (at most
  // `start_timeout_ms`). `extra_args` are appended (e.g. "--threads 1").
  static Expected<std::unique_ptr<LocalNode>> start(const std::string& fulgur_bin, const std::string& dir,
                                                     const std::string& name, std::vector<std::string> extra_args = {},
                                                     int start_timeout_ms = 10000);
  ~LocalNode();  // SIGTERM, then SIGKILL after 5 s
  LocalNode(const LocalNode&) = delete;
  LocalNode& operator=(const LocalNode&) = delete;

  void kill_now();  // SIGKILL: a node that dies without saying goodbye
  serving::NodeSpec spec() const { return {name_, "127.0.0.1", port_}; }
  pid_t pid() const { return pid_; }
  std::string read_log() const;

 private:
  LocalNode() = default;
  void stop(int sig);
  std::string name_, log_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
};

}  // namespace fulgur
