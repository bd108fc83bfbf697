// UCX host-memory transport: the data plane between processes (architecture.md §3).
//
// One UCP context and worker per process, driven by one progress thread that is the only thread
// calling into UCX (UCS_THREAD_MODE_SINGLE). Callers enqueue operations and wait on their own
// completion; the progress thread sleeps on the worker's event fd (UCP wakeup) and an eventfd
// for new operations, so an idle transport costs no CPU.
//
// Messages are UCX tag messages. A tag is unique per transfer: the sending process's index in
// the cluster (high 12 bits), a random epoch drawn when the transport is created (12 bits: a
// process restarted under the same index sends other tags) and a per-process counter (low 40
// bits), so a receiver posts a receive for exactly the tag a descriptor names. UCX buffers a
// message that arrives before its receive is posted (eager) or holds it at the sender until the
// receive is posted (rendezvous); a sender's buffer stays alive (`keepalive`) until UCX reports
// the send complete.
//
// When the connection to a peer process fails, its pending receives fail at once, later ones
// for its tags fail without waiting, and whatever it sent that nobody received is discarded.
//
// Which transports UCX uses is UCX's own configuration (UCX_TLS, UCX_NET_DEVICES, ...), read
// from the environment; `UCX_TLS=tcp` works on loopback and between hosts without RDMA.
//
// No CAF here: the actors carry descriptors (protocols/serving/messages.h) and call this.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "devices/status.h"

namespace fulgur::transport {

using PeerId = int32_t;

struct UcxStats {
  int64_t sends = 0, receives = 0, bytes_sent = 0, bytes_received = 0, failed = 0;
};

class UcxTransport {
 public:
  static constexpr uint16_t kMaxProcesses = 4096;
  // `process_index` (< kMaxProcesses) forms the high bits of the tags this process sends.
  static Expected<std::unique_ptr<UcxTransport>> create(uint16_t process_index);
  static uint16_t process_of(uint64_t tag) { return static_cast<uint16_t>(tag >> 52); }
  ~UcxTransport();
  UcxTransport(const UcxTransport&) = delete;
  UcxTransport& operator=(const UcxTransport&) = delete;

  // This worker's address, for peers to connect to (opaque bytes).
  const std::vector<uint8_t>& address() const;
  uint16_t process_index() const;
  Status set_process_index(uint16_t index);

  // An endpoint to the worker at `address` (idempotent per address). `name` appears in errors.
  // `peer_process` (>= 0) is that process's index: when the connection to it fails, receives
  // of its tags fail at once instead of waiting for their timeout.
  Expected<PeerId> connect(const std::vector<uint8_t>& address, const std::string& name, int32_t peer_process = -1);

  // A fresh tag for one transfer from this process.
  uint64_t next_tag();

  // Sends `bytes` at `data` to `peer` under `tag`, asynchronously; `keepalive` is held until the
  // send completed (or failed: the failure is counted and logged, the receiver times out).
  Status send(PeerId peer, uint64_t tag, const void* data, size_t bytes, std::shared_ptr<const void> keepalive);

  // Receives the message with `tag` into `data` (exactly `bytes` long), waiting at most
  // `timeout`. On timeout the receive is cancelled; `keepalive` (owning `data`) is held until
  // UCX has let go of the buffer, so the caller may drop its own reference at once.
  Status receive(uint64_t tag, void* data, size_t bytes, std::shared_ptr<void> keepalive,
                 std::chrono::milliseconds timeout);

  UcxStats stats() const;

  struct Impl;

 private:
  explicit UcxTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fulgur::transport
