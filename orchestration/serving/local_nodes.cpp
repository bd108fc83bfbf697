#include "orchestration/serving/local_nodes.h"

#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>

extern char** environ;

namespace fulgur {

namespace fs = std::filesystem;

Expected<std::unique_ptr<LocalNode>> LocalNode::start(const std::string& fulgur_bin, const std::string& dir,
                                                      const std::string& name, std::vector<std::string> extra_args,
                                                      int start_timeout_ms) {
  std::unique_ptr<LocalNode> n(new LocalNode());
  n->name_ = name;
  const fs::path port_file = fs::path(dir) / (name + ".port");
  n->log_ = (fs::path(dir) / (name + ".log")).string();
  std::error_code ec;
  fs::remove(port_file, ec);
  std::vector<std::string> args = {fulgur_bin, "node", "--listen", "127.0.0.1:0", "--port-file", port_file.string(),
                                   "--name", name};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, n->log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int rc = posix_spawn(&n->pid_, fulgur_bin.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    n->pid_ = -1;
    return Status(Errc::unavailable, "cannot start " + fulgur_bin + ": " + std::strerror(rc));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(start_timeout_ms);
  while (n->port_ == 0) {
    std::ifstream in(port_file);
    if (in >> n->port_) break;
    int status = 0;
    if (::waitpid(n->pid_, &status, WNOHANG) == n->pid_) {
      n->pid_ = -1;
      return Status(Errc::unavailable, "node '" + name + "' exited at start; its log:\n" + n->read_log());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Status(Errc::unavailable, "node '" + name + "' did not listen within " +
                                           std::to_string(start_timeout_ms) + " ms; its log:\n" + n->read_log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return n;
}

LocalNode::~LocalNode() { stop(SIGTERM); }

void LocalNode::kill_now() { stop(SIGKILL); }

std::string LocalNode::read_log() const {
  std::ifstream in(log_);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void LocalNode::stop(int sig) {
  if (pid_ <= 0) return;
  ::kill(pid_, sig);
  int status = 0;
  for (int i = 0; i < 250; ++i) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

}  // namespace fulgur
