// The data plane between processes: the UCX transport (two workers in this process, talking
// over UCX's own transports, UCX_TLS=tcp unless set) and DataPlane's ship/receive of hidden
// states by CAF node id.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>

#include <caf/node_id.hpp>

#include "actors/data_plane.h"
#include "devices/transport/ucx_transport.h"
#include "test_util.h"

namespace fulgur {
namespace {

using transport::UcxTransport;

class DataPlaneTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { setenv("UCX_TLS", "tcp", /*overwrite=*/0); }
};

std::unique_ptr<UcxTransport> make_transport(uint16_t index) {
  auto t = UcxTransport::create(index);
  EXPECT_TRUE(t.has_value()) << (t ? "" : t.error().to_string());
  return t ? std::move(*t) : nullptr;
}

TEST_F(DataPlaneTest, TransportMovesSmallAndLargeMessagesInAnyOrder) {
  auto a = make_transport(1), b = make_transport(2);
  ASSERT_TRUE(a && b);
  auto peer = a->connect(b->address(), "b");
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  EXPECT_EQ(*a->connect(b->address(), "b"), *peer);  // idempotent
  // Sizes around UCX's eager/rendezvous switch, a zero-length message, and 4 MiB.
  const std::vector<size_t> sizes = {0, 1, 255, 256, 257, 8191, 65536, 1 << 22};
  std::vector<std::shared_ptr<std::vector<uint8_t>>> sent;
  std::vector<uint64_t> tags;
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto buf = std::make_shared<std::vector<uint8_t>>(sizes[i]);
    for (size_t k = 0; k < buf->size(); ++k) (*buf)[k] = static_cast<uint8_t>(k * 31 + i);
    tags.push_back(a->next_tag());
    EXPECT_EQ(UcxTransport::process_of(tags.back()), 1u);  // the sender's process index
    ASSERT_TRUE(a->send(*peer, tags.back(), buf->data(), buf->size(), buf).is_ok());
    sent.push_back(buf);
  }
  // Received in reverse order: tags, not arrival order, match messages.
  for (size_t j = sizes.size(); j-- > 0;) {
    auto dst = std::make_shared<std::vector<uint8_t>>(sizes[j], 0xEE);
    const Status st = b->receive(tags[j], dst->data(), dst->size(), dst, std::chrono::seconds(10));
    ASSERT_TRUE(st.is_ok()) << "size " << sizes[j] << ": " << st.to_string();
    EXPECT_TRUE(*dst == *sent[j]) << "size " << sizes[j];
  }
  const auto stats = b->stats();
  EXPECT_EQ(stats.receives, static_cast<int64_t>(sizes.size()));
  EXPECT_EQ(stats.failed, 0);
}

TEST_F(DataPlaneTest, TransportTimesOutAndRefusesALengthThatDiffers) {
  auto a = make_transport(1), b = make_transport(2);
  ASSERT_TRUE(a && b);
  auto peer = *a->connect(b->address(), "b");
  auto dst = std::make_shared<std::vector<uint8_t>>(64);
  const auto t0 = std::chrono::steady_clock::now();
  Status st = b->receive(12345, dst->data(), dst->size(), dst, std::chrono::milliseconds(200));
  EXPECT_EQ(st.code(), Errc::unavailable);
  EXPECT_NE(st.message().find("within 200 ms"), std::string::npos) << st.message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  // A message of another length than the receiver expects is an error, not a silent truncation.
  auto src = std::make_shared<std::vector<uint8_t>>(32, 7);
  const uint64_t tag = a->next_tag();
  ASSERT_TRUE(a->send(peer, tag, src->data(), src->size(), src).is_ok());
  st = b->receive(tag, dst->data(), dst->size(), dst, std::chrono::seconds(10));
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("32 bytes"), std::string::npos) << st.message();
  EXPECT_EQ(a->send(99, tag, src->data(), 1, src).code(), Errc::invalid_argument);  // unknown peer
  EXPECT_FALSE(a->connect({}, "nobody").has_value());
}

TEST_F(DataPlaneTest, TagsDifferAcrossRestartsOfTheSameProcessIndex) {
  // A restarted process under the same index draws a new epoch: with 12 random bits, 8 restarts
  // all reusing one epoch would have probability 2^-84.
  std::set<uint64_t> first_tags;
  for (int i = 0; i < 8; ++i) first_tags.insert(make_transport(3)->next_tag());
  EXPECT_GT(first_tags.size(), 1u);
  EXPECT_FALSE(UcxTransport::create(UcxTransport::kMaxProcesses).has_value());
}

TEST_F(DataPlaneTest, AReceiveFromAPeerWhoseConnectionFailsEndsAtOnce) {
  auto a = make_transport(1), b = make_transport(2);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->connect(b->address(), "b", 2).has_value());
  ASSERT_TRUE(b->connect(a->address(), "node a", 1).has_value());
  const uint64_t tag = a->next_tag();  // a's tag: a never sends it, then goes away
  auto dst = std::make_shared<std::vector<uint8_t>>(64);
  Status st;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread waiter([&] { st = b->receive(tag, dst->data(), dst->size(), dst, std::chrono::seconds(60)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  a.reset();
  waiter.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
  EXPECT_EQ(st.code(), Errc::unavailable);
  EXPECT_NE(st.message().find("the connection to node a failed"), std::string::npos) << st.message();
  // Later receives of that process's tags fail at once.
  st = b->receive(tag + 1, dst->data(), dst->size(), dst, std::chrono::seconds(60));
  EXPECT_NE(st.message().find("the connection to node a failed"), std::string::npos) << st.message();
}

caf::node_id fake_node(uint32_t pid) {
  auto n = caf::make_node_id(pid, "0123456789abcdef0123456789abcdef01234567");
  EXPECT_TRUE(n);
  return *n;
}

TEST_F(DataPlaneTest, ShipsHiddenStatesByNodeAndHandsOverInProcessWithoutCopy) {
  using serving::DataPlane;
  using serving::HiddenHandle;
  const caf::node_id na = fake_node(1), nb = fake_node(2);
  auto a = DataPlane::create(na, 1, std::chrono::milliseconds(5000));
  auto b = DataPlane::create(nb, 2, std::chrono::milliseconds(5000));
  ASSERT_TRUE(a.has_value() && b.has_value());
  ASSERT_TRUE((*a)->add_peer(nb, (*b)->address(), "node b", 2).is_ok());
  ASSERT_TRUE((*b)->add_peer(na, (*a)->address(), "node a", 1).is_ok());
  for (int64_t rows : {1, 255, 256, 257}) {
    Tensor x = Tensor::empty(DType::f32, {rows, 48});
    const auto vals = test::random_floats(static_cast<size_t>(rows * 48), static_cast<uint64_t>(rows));
    std::copy(vals.begin(), vals.end(), x.data<float>());
    x.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();  // bytes, not floats: NaN survives
    x.data<float>()[1] = 1e-42f;                                      // and a denormal
    HiddenHandle h = HiddenHandle::wrap(x);
    // Same process: the very same tensor.
    auto same = (*a)->ship(h, na);
    ASSERT_TRUE(same.has_value());
    EXPECT_EQ(same->local.get(), h.local.get());
    // Another process: only the descriptor travels; the receiver fetches the bytes.
    auto out = (*a)->ship(h, nb);
    ASSERT_TRUE(out.has_value()) << out.error().to_string();
    EXPECT_FALSE(out->valid());
    EXPECT_EQ(out->ref.owner_node, 1u);
    EXPECT_EQ(out->ref.shape, x.shape());
    HiddenHandle arrived = *out;
    auto t = (*b)->receive(arrived, "test input");
    ASSERT_TRUE(t.has_value()) << t.error().to_string();
    ASSERT_EQ((*t)->shape(), x.shape());
    EXPECT_EQ(std::memcmp((*t)->raw(), x.raw(), x.nbytes()), 0) << rows << " rows";
    // Received once; a second receive returns the same tensor.
    EXPECT_EQ(*(*b)->receive(arrived, "again"), *t);
  }
  // A node without an endpoint, and a process without a data plane.
  auto unknown = (*a)->ship(HiddenHandle::wrap(Tensor::empty(DType::f32, {1, 2})), fake_node(3));
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code(), Errc::unavailable);
  HiddenHandle remote;
  remote.ref.shape = {2, 2};
  auto none = serving::receive(nullptr, remote, "input");
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), Errc::unavailable);
  // A descriptor whose bytes never come: a bounded wait and an error naming the sender.
  auto b_short = DataPlane::create(nb, 2, std::chrono::milliseconds(100));
  ASSERT_TRUE(b_short.has_value());
  HiddenHandle lost;
  lost.ref = {777, 1, {4, 4}, static_cast<uint8_t>(DType::f32)};
  auto r = (*b_short)->receive(lost, "lost input");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("from process 1"), std::string::npos) << r.error().message();
  lost.ref.dtype = 200;
  EXPECT_EQ((*b_short)->receive(lost, "bad").error().code(), Errc::invalid_argument);
}

}  // namespace
}  // namespace fulgur
