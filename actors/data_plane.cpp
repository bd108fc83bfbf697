#include "actors/data_plane.h"

#include <caf/deep_to_string.hpp>

namespace fulgur::serving {

Expected<std::shared_ptr<DataPlane>> DataPlane::create(caf::node_id self, uint16_t process_index,
                                                       std::chrono::milliseconds receive_timeout) {
  FULGUR_ASSIGN_OR_RETURN(auto t, transport::UcxTransport::create(process_index));
  return std::shared_ptr<DataPlane>(new DataPlane(std::move(self), std::move(t), receive_timeout));
}

Status DataPlane::add_peer(const caf::node_id& node, const std::vector<uint8_t>& address, const std::string& name,
                           uint16_t process_index) {
  if (node == self_) return Status::ok();
  FULGUR_ASSIGN_OR_RETURN(transport::PeerId id, transport_->connect(address, name, process_index));
  std::lock_guard<std::mutex> lock(mu_);
  peers_[node] = {id, name};
  return Status::ok();
}

bool DataPlane::has_peer(const caf::node_id& node) const {
  std::lock_guard<std::mutex> lock(mu_);
  return peers_.count(node) != 0;
}

Expected<HiddenHandle> DataPlane::ship(const HiddenHandle& h, const caf::node_id& dest) {
  if (!dest || dest == self_) return h;
  transport::PeerId peer = -1;
  std::string name;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(dest);
    if (it == peers_.end()) {
      return Status(Errc::unavailable, "data plane: no UCX endpoint for node " + caf::to_string(dest));
    }
    peer = it->second.first;
    name = it->second.second;
  }
  if (!h.local) {
    return Status(Errc::internal, "data plane: cannot forward tensor " + std::to_string(h.ref.buffer_id) +
                                      " to " + name + ": it was never received here");
  }
  std::shared_ptr<Tensor> t = h.local;
  if (!t->is_contiguous()) t = std::make_shared<Tensor>(t->to_f32());
  HiddenHandle out;
  out.ref.buffer_id = transport_->next_tag();
  out.ref.owner_node = transport_->process_index();
  out.ref.shape = t->shape();
  out.ref.dtype = static_cast<uint8_t>(t->dtype());
  FULGUR_TRY(transport_->send(peer, out.ref.buffer_id, t->raw(), t->nbytes(), t));
  return out;  // out.local stays null: the descriptor is what travels
}

Expected<Tensor*> DataPlane::receive(HiddenHandle& h, const char* what) {
  if (h.local) return h.local.get();
  if (h.ref.dtype > static_cast<uint8_t>(DType::i64)) {
    return Status(Errc::invalid_argument, std::string(what) + ": descriptor names dtype " + std::to_string(h.ref.dtype));
  }
  for (int64_t d : h.ref.shape) {
    if (d < 0) return Status(Errc::invalid_argument, std::string(what) + ": descriptor has a negative dimension");
  }
  auto t = std::make_shared<Tensor>(Tensor::empty(static_cast<DType>(h.ref.dtype), h.ref.shape));
  const Status st = transport_->receive(h.ref.buffer_id, t->raw(), t->nbytes(), t, timeout_);
  if (!st.is_ok()) {
    return Status(st.code(), std::string(what) + " from process " + std::to_string(h.ref.owner_node) + ": " +
                                 st.message());
  }
  h.local = std::move(t);
  return h.local.get();
}

Expected<HiddenHandle> ship(DataPlane* dp, const HiddenHandle& h, const caf::node_id& dest) {
  if (dp) return dp->ship(h, dest);
  return h;  // single process: every actor shares the tensor
}

Expected<Tensor*> receive(DataPlane* dp, HiddenHandle& h, const char* what) {
  if (dp) return dp->receive(h, what);
  return resolve(h, what);
}

}  // namespace fulgur::serving
