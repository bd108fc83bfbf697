#include "devices/transport/ucx_transport.h"

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <ucp/api/ucp.h>

namespace fulgur::transport {

namespace {

Status ucx_error(const std::string& what, ucs_status_t st) {
  return Status(Errc::unavailable, "UCX: " + what + ": " + ucs_status_string(st));
}

constexpr uint64_t kCounterMask = (uint64_t{1} << 40) - 1;
constexpr uint64_t kProcessMask = uint64_t{0xFFF} << 52;

}  // namespace

struct UcxTransport::Impl {
  struct Peer {
    ucp_ep_h ep = nullptr;
    std::string name;
    int32_t process = -1;
    PeerId id = -1;
    std::atomic<bool> failed{false};
    Impl* impl = nullptr;
  };

  struct SendOp {
    Impl* impl;
    PeerId peer;
    size_t bytes;
    std::shared_ptr<const void> keepalive;
  };

  struct RecvOp {
    Impl* impl = nullptr;
    uint64_t tag = 0;
    std::string cancel_reason;  // why it was cancelled (timeout, peer failure)
    void* data = nullptr;
    size_t bytes = 0;
    std::shared_ptr<void> keepalive;
    void* request = nullptr;  // UCX request while pending (progress thread only)
    bool done = false;        // progress thread only
    bool cancelled = false;   // progress thread only
    std::promise<Status> promise;
  };

  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  int worker_fd = -1, wake_fd = -1, epoll_fd = -1;
  std::vector<uint8_t> address;
  std::atomic<uint16_t> index{0};
  uint64_t epoch = 0;  // 12 random bits
  std::atomic<uint64_t> counter{1};

  std::mutex mu;  // queue, peers_by_address
  std::deque<std::function<void()>> queue;
  std::map<std::string, PeerId> peers_by_address;  // keyed by the address bytes
  std::deque<Peer> peers;  // stable addresses; appended on the progress thread under `mu`
  // Progress thread only: receives posted to UCX, and processes whose connection failed.
  std::multimap<uint64_t, std::shared_ptr<RecvOp>> pending;
  std::map<uint16_t, std::string> failed_processes;
  std::map<uint16_t, PeerId> process_peer;  // the current endpoint of each peer process

  mutable std::mutex stats_mu;
  UcxStats stats;

  std::atomic<bool> stop{false};
  std::atomic<bool> closing{false};  // our own shutdown: peers going away is expected
  std::thread thread;

  ~Impl() { shutdown(); }

  void post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu);
      queue.push_back(std::move(fn));
    }
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd, &one, sizeof one);
  }

  void count(bool ok, bool is_send, size_t bytes) {
    std::lock_guard<std::mutex> lock(stats_mu);
    if (!ok) {
      ++stats.failed;
    } else if (is_send) {
      ++stats.sends;
      stats.bytes_sent += static_cast<int64_t>(bytes);
    } else {
      ++stats.receives;
      stats.bytes_received += static_cast<int64_t>(bytes);
    }
  }

  static void on_send(void* request, ucs_status_t status, void* user) {
    auto* op = static_cast<SendOp*>(user);
    finish_send(op, status);
    ucp_request_free(request);
  }

  static void finish_send(SendOp* op, ucs_status_t status) {
    op->impl->count(status == UCS_OK, true, op->bytes);
    if (status != UCS_OK && status != UCS_ERR_CANCELED) {
      std::fprintf(stderr, "fulgur: UCX send of %zu bytes to %s failed: %s\n", op->bytes,
                   op->impl->peers[op->peer].name.c_str(), ucs_status_string(status));
    }
    delete op;
  }

  static void on_recv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info, void* user) {
    auto* holder = static_cast<std::shared_ptr<RecvOp>*>(user);
    finish_recv(**holder, status, info);
    delete holder;
    ucp_request_free(request);
  }

  static void finish_recv(RecvOp& op, ucs_status_t status, const ucp_tag_recv_info_t* info) {
    op.done = true;
    op.request = nullptr;
    if (op.impl) {
      auto range = op.impl->pending.equal_range(op.tag);
      for (auto it = range.first; it != range.second; ++it) {
        if (it->second.get() == &op) {
          op.impl->pending.erase(it);
          break;
        }
      }
    }
    Status result = Status::ok();
    if (status == UCS_ERR_CANCELED) {
      result = Status(Errc::unavailable, "UCX receive of tag " + std::to_string(op.tag) + " was cancelled" +
                                             (op.cancel_reason.empty() ? "" : ": " + op.cancel_reason));
    } else if (status != UCS_OK) {
      result = ucx_error("receive of tag " + std::to_string(op.tag), status);
    } else if (info != nullptr && info->length != op.bytes) {
      result = Status(Errc::internal, "UCX message with tag " + std::to_string(op.tag) + " has " +
                                          std::to_string(info->length) + " bytes, the descriptor says " +
                                          std::to_string(op.bytes));
    }
    op.keepalive.reset();
    op.promise.set_value(result);
  }

  static void on_peer_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* peer = static_cast<Peer*>(arg);
    if (peer->failed.exchange(true)) return;
    if (!peer->impl->closing) std::fprintf(stderr, "fulgur: UCX connection to %s failed: %s\n", peer->name.c_str(), ucs_status_string(status));
    if (peer->process < 0) return;
    // Receives of that process's tags will never complete: fail them now (outside UCX's callback).
    Impl* impl = peer->impl;
    const uint16_t process = static_cast<uint16_t>(peer->process);
    const PeerId id = peer->id;
    const std::string why = "the connection to " + peer->name + " failed (" + ucs_status_string(status) + ")";
    impl->post([impl, process, id, why] {
      auto cur = impl->process_peer.find(process);
      if (cur == impl->process_peer.end() || cur->second != id) return;  // an older endpoint of that index
      impl->failed_processes[process] = why;
      impl->discard_unexpected(process);
      std::vector<std::shared_ptr<RecvOp>> doomed;
      for (auto& [tag, op] : impl->pending) {
        if (UcxTransport::process_of(tag) == process) doomed.push_back(op);
      }
      for (auto& op : doomed) {
        if (op->done || op->request == nullptr) continue;
        op->cancel_reason = why;
        ucp_request_cancel(impl->worker, op->request);
      }
    });
  }

  // Receives and drops every message of `process` that arrived and was never received (its
  // steps failed), so a later process under the same index cannot meet them.
  void discard_unexpected(uint16_t process) {
    const uint64_t tag = static_cast<uint64_t>(process) << 52;
    for (;;) {
      ucp_tag_recv_info_t info{};
      ucp_tag_message_h msg = ucp_tag_probe_nb(worker, tag, kProcessMask, 1, &info);
      if (msg == nullptr) break;
      auto* buf = new std::vector<uint8_t>(info.length);
      ucp_request_param_t prm{};
      prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      prm.cb.recv = [](void* req, ucs_status_t, const ucp_tag_recv_info_t*, void* user) {
        delete static_cast<std::vector<uint8_t>*>(user);
        ucp_request_free(req);
      };
      prm.user_data = buf;
      ucs_status_ptr_t r = ucp_tag_msg_recv_nbx(worker, buf->data(), buf->size(), msg, &prm);
      if (r == nullptr || UCS_PTR_IS_ERR(r)) delete buf;
    }
  }

  void run() {
    std::deque<std::function<void()>> batch;
    while (!stop.load()) {
      {
        std::lock_guard<std::mutex> lock(mu);
        batch.swap(queue);
      }
      for (auto& fn : batch) fn();
      batch.clear();
      while (ucp_worker_progress(worker) != 0) {
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!queue.empty()) continue;
      }
      const ucs_status_t armed = ucp_worker_arm(worker);
      if (armed == UCS_ERR_BUSY) continue;
      epoll_event events[2];
      const int n = ::epoll_wait(epoll_fd, events, 2, 100);
      for (int i = 0; i < n; ++i) {
        if (events[i].data.fd == wake_fd) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = ::read(wake_fd, &v, sizeof v);
        }
      }
    }
  }

  void shutdown() {
    closing = true;
    if (thread.joinable()) {
      // Close endpoints on the progress thread, then stop it.
      std::promise<void> closed;
      post([this, &closed] {
        std::vector<void*> pending;
        for (auto& p : peers) {
          if (!p.ep) continue;
          ucp_request_param_t prm{};
          prm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
          prm.flags = UCP_EP_CLOSE_FLAG_FORCE;
          void* r = ucp_ep_close_nbx(p.ep, &prm);
          if (UCS_PTR_IS_PTR(r)) pending.push_back(r);
          p.ep = nullptr;
        }
        for (void* r : pending) {
          while (ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(worker);
          ucp_request_free(r);
        }
        closed.set_value();
      });
      closed.get_future().wait();
      stop = true;
      post([] {});
      thread.join();
    }
    if (worker) ucp_worker_destroy(worker);
    if (context) ucp_cleanup(context);
    worker = nullptr;
    context = nullptr;
    for (int fd : {wake_fd, epoll_fd}) {
      if (fd >= 0) ::close(fd);
    }
    wake_fd = epoll_fd = -1;
  }
};

Expected<std::unique_ptr<UcxTransport>> UcxTransport::create(uint16_t process_index) {
  if (process_index >= kMaxProcesses) {
    return Status(Errc::invalid_argument, "UCX transport: process index " + std::to_string(process_index) +
                                              " >= " + std::to_string(kMaxProcesses));
  }
  auto impl = std::make_unique<Impl>();
  impl->index = process_index;
  impl->epoch = std::random_device{}() & 0xFFF;
  ucp_config_t* config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) return ucx_error("reading the configuration (UCX_* environment variables)", st);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  st = ucp_init(&params, config, &impl->context);
  ucp_config_release(config);
  if (st != UCS_OK) return ucx_error("initialising the context", st);
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  st = ucp_worker_create(impl->context, &wp, &impl->worker);
  if (st != UCS_OK) return ucx_error("creating the worker", st);
  ucp_address_t* addr = nullptr;
  size_t len = 0;
  st = ucp_worker_get_address(impl->worker, &addr, &len);
  if (st != UCS_OK) return ucx_error("reading the worker address", st);
  impl->address.assign(reinterpret_cast<const uint8_t*>(addr), reinterpret_cast<const uint8_t*>(addr) + len);
  ucp_worker_release_address(impl->worker, addr);
  st = ucp_worker_get_efd(impl->worker, &impl->worker_fd);
  if (st != UCS_OK) return ucx_error("reading the worker's event fd", st);
  impl->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  impl->epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (impl->wake_fd < 0 || impl->epoll_fd < 0) {
    return Status(Errc::internal, std::string("UCX transport: eventfd/epoll: ") + std::strerror(errno));
  }
  for (int fd : {impl->worker_fd, impl->wake_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(impl->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return Status(Errc::internal, std::string("UCX transport: epoll_ctl: ") + std::strerror(errno));
    }
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<UcxTransport>(new UcxTransport(std::move(impl)));
}

UcxTransport::UcxTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UcxTransport::~UcxTransport() = default;

const std::vector<uint8_t>& UcxTransport::address() const { return impl_->address; }

uint16_t UcxTransport::process_index() const { return impl_->index; }

Status UcxTransport::set_process_index(uint16_t index) {
  if (index >= kMaxProcesses) {
    return Status(Errc::invalid_argument, "UCX transport: process index " + std::to_string(index) + " >= " +
                                              std::to_string(kMaxProcesses));
  }
  impl_->index = index;
  return Status::ok();
}

uint64_t UcxTransport::next_tag() {
  return (static_cast<uint64_t>(impl_->index.load()) << 52) | (impl_->epoch << 40) |
         (impl_->counter.fetch_add(1) & kCounterMask);
}

Expected<PeerId> UcxTransport::connect(const std::vector<uint8_t>& address, const std::string& name,
                                       int32_t peer_process) {
  if (address.empty()) return Status(Errc::invalid_argument, "UCX: empty worker address for " + name);
  const std::string key(address.begin(), address.end());
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->peers_by_address.find(key);
    if (it != impl_->peers_by_address.end()) return it->second;
  }
  std::promise<Expected<PeerId>> done;
  Impl* impl = impl_.get();
  impl->post([impl, &address, &key, &name, &done, peer_process] {
    {
      std::lock_guard<std::mutex> lock(impl->mu);
      auto it = impl->peers_by_address.find(key);
      if (it != impl->peers_by_address.end()) {
        done.set_value(it->second);
        return;
      }
    }
    Impl::Peer* added = nullptr;
    {
      std::lock_guard<std::mutex> lock(impl->mu);  // send() reads the deque from other threads
      impl->peers.emplace_back();
      added = &impl->peers.back();
      added->name = name;
      added->process = peer_process;
      added->impl = impl;
      added->id = static_cast<PeerId>(impl->peers.size() - 1);
    }
    Impl::Peer& peer = *added;
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = reinterpret_cast<const ucp_address_t*>(address.data());
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &Impl::on_peer_error;
    ep.err_handler.arg = &peer;
    const ucs_status_t st = ucp_ep_create(impl->worker, &ep, &peer.ep);
    if (st != UCS_OK) {
      peer.failed = true;
      done.set_value(ucx_error("connecting to " + name, st));
      return;
    }
    const PeerId id = peer.id;
    if (peer_process >= 0) {
      // A (new) process under this index: its tags are fine again.
      impl->process_peer[static_cast<uint16_t>(peer_process)] = id;
      impl->failed_processes.erase(static_cast<uint16_t>(peer_process));
    }
    {
      std::lock_guard<std::mutex> lock(impl->mu);
      impl->peers_by_address[key] = id;
    }
    done.set_value(id);
  });
  return done.get_future().get();
}

Status UcxTransport::send(PeerId peer, uint64_t tag, const void* data, size_t bytes,
                          std::shared_ptr<const void> keepalive) {
  Impl* impl = impl_.get();
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    if (peer < 0 || static_cast<size_t>(peer) >= impl->peers.size()) {
      return Status(Errc::invalid_argument, "UCX: unknown peer " + std::to_string(peer));
    }
    if (impl->peers[peer].failed) {
      return Status(Errc::unavailable, "UCX: the connection to " + impl->peers[peer].name + " has failed");
    }
  }
  auto* op = new Impl::SendOp{impl, peer, bytes, std::move(keepalive)};
  impl->post([impl, op, tag, data] {
    Impl::Peer& p = impl->peers[op->peer];
    if (p.failed || p.ep == nullptr) {
      Impl::finish_send(op, UCS_ERR_CONNECTION_RESET);
      return;
    }
    ucp_request_param_t prm{};
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    prm.cb.send = &Impl::on_send;
    prm.user_data = op;
    ucs_status_ptr_t r = ucp_tag_send_nbx(p.ep, data, op->bytes, tag, &prm);
    if (r == nullptr) {
      Impl::finish_send(op, UCS_OK);
    } else if (UCS_PTR_IS_ERR(r)) {
      Impl::finish_send(op, UCS_PTR_STATUS(r));
    }
  });
  return Status::ok();
}

Status UcxTransport::receive(uint64_t tag, void* data, size_t bytes, std::shared_ptr<void> keepalive,
                             std::chrono::milliseconds timeout) {
  Impl* impl = impl_.get();
  auto op = std::make_shared<Impl::RecvOp>();
  op->impl = impl;
  op->tag = tag;
  op->data = data;
  op->bytes = bytes;
  op->keepalive = std::move(keepalive);
  auto result = op->promise.get_future();
  impl->post([impl, op] {
    if (op->cancelled || op->done) return;
    if (auto f = impl->failed_processes.find(UcxTransport::process_of(op->tag));
        f != impl->failed_processes.end()) {
      op->cancel_reason = f->second;
      Impl::finish_recv(*op, UCS_ERR_CANCELED, nullptr);
      return;
    }
    impl->pending.emplace(op->tag, op);
    auto* holder = new std::shared_ptr<Impl::RecvOp>(op);
    ucp_tag_recv_info_t info{};
    ucp_request_param_t prm{};
    // Always through the callback, which gets the received length (UCX 1.13 leaves recv_info
    // unset on immediate completion).
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_RECV_INFO |
                       UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    prm.cb.recv = &Impl::on_recv;
    prm.user_data = holder;
    prm.recv_info.tag_info = &info;
    ucs_status_ptr_t r = ucp_tag_recv_nbx(impl->worker, op->data, op->bytes, op->tag, ~uint64_t{0}, &prm);
    if (r == nullptr) {
      Impl::finish_recv(*op, UCS_OK, &info);
      delete holder;
    } else if (UCS_PTR_IS_ERR(r)) {
      Impl::finish_recv(*op, UCS_PTR_STATUS(r), nullptr);
      delete holder;
    } else {
      op->request = r;
    }
  });
  if (result.wait_for(timeout) != std::future_status::ready) {
    impl->post([impl, op] {
      if (op->done) return;
      if (op->request == nullptr) {  // never posted
        op->cancelled = true;
        op->done = true;
        op->keepalive.reset();
        op->promise.set_value(Status(Errc::unavailable, "cancelled before posting"));
        return;
      }
      ucp_request_cancel(impl->worker, op->request);  // on_recv runs with UCS_ERR_CANCELED
    });
    impl->count(false, false, 0);
    return Status(Errc::unavailable, "UCX: no data for tag " + std::to_string(tag) + " (" + std::to_string(bytes) +
                                     " bytes) within " + std::to_string(timeout.count()) +
                                     " ms: its sender is gone or stalled");
  }
  Status st = result.get();
  impl->count(st.is_ok(), false, bytes);
  return st;
}

UcxStats UcxTransport::stats() const {
  std::lock_guard<std::mutex> lock(impl_->stats_mu);
  return impl_->stats;
}

}  // namespace fulgur::transport
