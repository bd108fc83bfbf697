// The data plane of one process, as the actors see it (architecture.md §3).
//
// Inside a process a HiddenHandle is handed on zero-copy: the message carries the shared tensor.
// Towards an actor in another process, the sender `ship`s the handle first: its bytes go to the
// destination process over UCX under a fresh tag, and the handle's descriptor (TensorRef: tag,
// owner process, shape, dtype — integers only) is what the CAF message carries. The receiving
// actor calls `receive`, which waits (bounded) for those bytes and fills in the handle's tensor.
// Every handle that arrived from another process must be received, or its bytes stay queued in
// UCX; the actors receive their inputs first thing in every handler.
//
// Peers: the engine tells every process the UCX worker address of every other process, keyed by
// the CAF node id of that process (add_peer), so a sender finds the endpoint from the
// destination actor's node().
//
// A process without a DataPlane (a single-process engine) ships nothing: shipping to another
// node is then an error, and so is receiving a handle without its tensor.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/node_id.hpp>

#include "devices/transport/ucx_transport.h"
#include "protocols/serving/messages.h"

namespace fulgur::serving {

class DataPlane {
 public:
  static Expected<std::shared_ptr<DataPlane>> create(caf::node_id self, uint16_t process_index,
                                                     std::chrono::milliseconds receive_timeout);

  const caf::node_id& node() const { return self_; }
  uint16_t process_index() const { return transport_->process_index(); }
  Status set_process_index(uint16_t index) { return transport_->set_process_index(index); }
  const std::vector<uint8_t>& address() const { return transport_->address(); }

  // The process of CAF node `node` (cluster index `process_index`) listens at UCX worker address
  // `address`.
  Status add_peer(const caf::node_id& node, const std::vector<uint8_t>& address, const std::string& name,
                  uint16_t process_index);
  bool has_peer(const caf::node_id& node) const;

  // `h` ready to travel to an actor on `dest` (see the file comment).
  Expected<HiddenHandle> ship(const HiddenHandle& h, const caf::node_id& dest);
  // The tensor behind `h`, received from its owner process when it is not here yet.
  Expected<Tensor*> receive(HiddenHandle& h, const char* what);

  transport::UcxStats stats() const { return transport_->stats(); }

 private:
  DataPlane(caf::node_id self, std::unique_ptr<transport::UcxTransport> t, std::chrono::milliseconds timeout)
      : self_(std::move(self)), transport_(std::move(t)), timeout_(timeout) {}

  caf::node_id self_;
  std::unique_ptr<transport::UcxTransport> transport_;
  std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;
  std::map<caf::node_id, std::pair<transport::PeerId, std::string>> peers_;
};

// The helpers the actors call; `dp` may be null (single process).
Expected<HiddenHandle> ship(DataPlane* dp, const HiddenHandle& h, const caf::node_id& dest);
Expected<Tensor*> receive(DataPlane* dp, HiddenHandle& h, const char* what);

}  // namespace fulgur::serving
