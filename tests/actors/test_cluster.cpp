// The actor engine across processes, on loopback: real `fulgur node` child processes, the CAF
// middleman between them and UCX (UCX_TLS=tcp unless set) moving the hidden states.
//  - a 3-process placement (attention here, experts split over two nodes) and one with attention
//    layers on a node too give the same greedy and seeded tokens as one process, and the same
//    logits within 1e-5;
//  - 64 concurrent requests with random cancellations through 3 processes all end cleanly and
//    free every slot and page;
//  - a node that dies: requests with work there fail with a clear error, an expert with a live
//    replica keeps being served, and without one later requests fail at once instead of hanging.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <numeric>
#include <random>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "orchestration/checkpoint/checkpoint.h"
#include "orchestration/generate.h"
#include "orchestration/serving/actor_engine.h"
#include "orchestration/serving/local_nodes.h"
#include "test_actors_util.h"

namespace fulgur {
namespace {

namespace fs = std::filesystem;
using test::EventLog;

// A `fulgur node` child on a free loopback port (orchestration/serving/local_nodes.h).
class NodeProcess {
 public:
  NodeProcess(const fs::path& dir, const std::string& name) {
    auto n = LocalNode::start(std::string(FULGUR_BINARY_DIR) + "/bin/fulgur", dir.string(), name,
                              {"--receive-timeout-ms", "10000"});
    EXPECT_TRUE(n.has_value()) << n.error().to_string();
    if (n) node_ = std::move(*n);
  }
  void kill_now() { node_->kill_now(); }
  serving::NodeSpec spec() const { return node_ ? node_->spec() : serving::NodeSpec{}; }
  std::string read_log() const { return node_ ? node_->read_log() : std::string(); }

 private:
  std::unique_ptr<LocalNode> node_;
};

class Cluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("UCX_TLS", "tcp", /*overwrite=*/0);  // the children inherit it
    dir_ = fs::temp_directory_path() / ("fulgur-cluster-" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "model");
    const ModelConfig cfg = test::actor_test_config();
    ASSERT_TRUE(save_checkpoint((dir_ / "model").string(), random_model_weights(cfg, 21), cfg).is_ok());
    auto loaded = load_model_dir((dir_ / "model").string(), /*need_tokenizer=*/false, nullptr);
    ASSERT_TRUE(loaded.has_value()) << loaded.error().to_string();
    model_ = std::shared_ptr<const Model>(std::move(loaded->model));
  }
  static void TearDownTestSuite() {
    model_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static ActorEngineOptions options_for(serving::Placement p) {
    ActorEngineOptions ao;
    ao.placement = std::move(p);
    ao.model_dir = (dir_ / "model").string();
    ao.receive_timeout = std::chrono::milliseconds(10000);
    return ao;
  }

  static inline fs::path dir_;
  static inline std::shared_ptr<const Model> model_;
};

// Experts 0..E/2-1 on `a`, the rest on `b`; attention layers `remote_layers` on `a`.
serving::Placement split(const NodeProcess& a, const NodeProcess& b, int64_t E,
                         std::vector<int64_t> remote_layers = {}) {
  serving::Placement p;
  p.nodes = {serving::NodeSpec{}, a.spec(), b.spec()};
  serving::ExpertActorSpec ea{a.spec().name, {}}, eb{b.spec().name, {}};
  for (int32_t e = 0; e < E; ++e) (e < E / 2 ? ea : eb).experts.push_back(e);
  p.expert_actors = {ea, eb};
  if (!remote_layers.empty()) p.attention = {{a.spec().name, remote_layers}};
  p.group_tokens = 3;  // several groups per expert and step: pipelined dispatch across processes
  return p;
}

using LogitsMap = std::map<std::pair<RequestId, int64_t>, std::vector<float>>;

// Runs `reqs` concurrently through an engine with `ao`; tokens per request and every logits row.
std::pair<std::vector<std::vector<int32_t>>, LogitsMap> run_with_logits(std::shared_ptr<const Model> model,
                                                                        ActorEngineOptions ao,
                                                                        const std::vector<CompletionRequest>& reqs) {
  auto logits = std::make_shared<LogitsMap>();
  auto mu = std::make_shared<std::mutex>();
  ao.logits_hook = [logits, mu](RequestId id, int64_t idx, const std::vector<float>& l) {
    std::lock_guard<std::mutex> lock(*mu);
    (*logits)[{id, idx}] = l;
  };
  auto engine = test::make_engine(std::move(model), test::small_options(), ao);
  if (!engine) return {};
  auto tokens = test::run_all(*engine, reqs);
  test::expect_idle(*engine);
  std::lock_guard<std::mutex> lock(*mu);
  return {tokens, *logits};
}

TEST_F(Cluster, ThreeProcessPlacementsEqualOneProcess) {
  const int64_t E = model_->config().num_local_experts;
  auto reqs = test::mixed_requests(model_->config());
  reqs[1].sampling = {.temperature = 0.8f, .top_k = 0, .top_p = 0.9f, .seed = 77};  // seeded sampling too
  const auto [want_tokens, want_logits] = run_with_logits(model_, {}, reqs);
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(want_tokens[i], test::reference_tokens(*model_, reqs[i]));

  NodeProcess a(dir_, "a"), b(dir_, "b");
  for (const auto& remote_layers : {std::vector<int64_t>{}, std::vector<int64_t>{1, 2}}) {
    SCOPED_TRACE(remote_layers.empty() ? "attention in the serving process, experts on a and b"
                                       : "attention layers 1 and 2 on node a as well");
    const auto [tokens, logits] = run_with_logits(model_, options_for(split(a, b, E, remote_layers)), reqs);
    ASSERT_EQ(tokens.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(tokens[i], want_tokens[i]) << "request " << i;
    ASSERT_EQ(logits.size(), want_logits.size());
    double worst = 0;
    for (const auto& [key, want] : want_logits) {
      auto it = logits.find(key);
      ASSERT_NE(it, logits.end());
      ASSERT_EQ(it->second.size(), want.size());
      for (size_t v = 0; v < want.size(); ++v) {
        worst = std::max(worst, std::abs(static_cast<double>(it->second[v]) - want[v]) /
                                    std::max(1.0, std::abs(static_cast<double>(want[v]))));
      }
    }
    EXPECT_LE(worst, 1e-5);
  }
  EXPECT_EQ(a.read_log().find("error"), std::string::npos) << a.read_log();
}

TEST_F(Cluster, TopologyHopLatencyAndDataPlaneAcrossProcesses) {
  NodeProcess a(dir_, "a"), b(dir_, "b");
  auto engine = test::make_engine(model_, test::small_options(),
                                  options_for(split(a, b, model_->config().num_local_experts)));
  ASSERT_TRUE(engine);
  auto hop = engine->actor_round_trip_seconds("b", 50);
  ASSERT_TRUE(hop.has_value()) << hop.error().to_string();
  EXPECT_GT(*hop, 0.0);
  EXPECT_FALSE(engine->actor_round_trip_seconds("nowhere", 1).has_value());
  test::run_all(*engine, test::mixed_requests(model_->config()));
  const auto topo = engine->topology();
  ASSERT_EQ(topo["nodes"].size(), 3u);
  for (const auto& n : topo["nodes"]) {
    EXPECT_EQ(n["state"], "up");
    EXPECT_GT(n["pid"].get<int64_t>(), 0);
  }
  EXPECT_EQ(topo["nodes"][1]["address"], a.spec().address());
  EXPECT_GT(topo["data_plane"]["bytes_sent"].get<int64_t>(), 0);
  EXPECT_GT(topo["data_plane"]["bytes_received"].get<int64_t>(), 0);
  EXPECT_EQ(topo["data_plane"]["failed"].get<int64_t>(), 0);
}

TEST_F(Cluster, ConcurrentRequestsWithCancellationsAcrossProcessesCleanUp) {
  NodeProcess a(dir_, "a"), b(dir_, "b");
  EngineOptions o = test::small_options();
  o.max_running = 16;
  o.state_slots = 16;
  o.max_queued = 64;
  auto engine = test::make_engine(model_, o, options_for(split(a, b, model_->config().num_local_experts)));
  ASSERT_TRUE(engine);
  std::mt19937_64 rng(5);
  EventLog log;
  std::vector<RequestId> ids;
  std::vector<int> cancel_after(64);
  std::atomic<int> cancelled_sent{0};
  for (int i = 0; i < 64; ++i) {
    CompletionRequest r;
    r.prompt = test::random_prompt(1 + static_cast<int64_t>(rng() % 40), model_->config().vocab_size, 100 + i);
    r.max_tokens = 1 + static_cast<int64_t>(rng() % 12);
    cancel_after[i] = rng() % 3 == 0 ? static_cast<int>(rng() % 4) : -1;  // a third hang up partway
    auto slot = std::make_shared<std::atomic<RequestId>>(0);
    Engine* eng = engine.get();
    const int when = cancel_after[i];
    auto seen = std::make_shared<int>(0);
    auto id = engine->submit(r, [&log, slot, seen, eng, when, &cancelled_sent](const TokenEvent& ev) {
      while (slot->load() == 0) std::this_thread::yield();
      log.callback_for(slot->load())(ev);
      if (!ev.finished && when >= 0 && (*seen)++ == when) {
        eng->cancel(slot->load());
        ++cancelled_sent;
      }
    });
    ASSERT_TRUE(id.has_value()) << id.error().to_string();
    slot->store(*id);
    ids.push_back(*id);
    if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
  }
  ASSERT_TRUE(log.wait_finished(ids.size(), std::chrono::seconds(300)));
  int cancelled = 0;
  for (RequestId id : ids) {
    const auto rec = log.get(id);
    EXPECT_EQ(rec.finals, 1);
    EXPECT_EQ(rec.events_after_final, 0);
    const auto& why = rec.final_event.finish_reason;
    EXPECT_TRUE(why == "length" || why == "stop" || why == "cancelled") << why << " " << rec.final_event.error.to_string();
    cancelled += why == "cancelled";
  }
  EXPECT_GT(cancelled, 0);
  // Metrics back to zero once everything has ended.
  for (int i = 0; i < 100 && engine->stats().state_slots_used != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  test::expect_idle(*engine);
}

// Waits until `log` has `n` finals; false on timeout.
bool finished_within(EventLog& log, size_t n, std::chrono::seconds s) { return log.wait_finished(n, s); }

TEST_F(Cluster, ANodeThatDiesFailsOnlyWhatNeedsIt) {
  const int64_t E = model_->config().num_local_experts;
  std::vector<int32_t> all(E);
  std::iota(all.begin(), all.end(), 0);
  auto reqs = test::mixed_requests(model_->config());
  for (auto& r : reqs) r.max_tokens = 40;
  {
    // Every expert on both nodes: when b dies, a keeps serving every expert.
    NodeProcess a(dir_, "a"), b(dir_, "b");
    serving::Placement p;
    p.nodes = {serving::NodeSpec{}, a.spec(), b.spec()};
    p.expert_actors = {{"a", all}, {"b", all}};
    auto engine = test::make_engine(model_, test::small_options(), options_for(p));
    ASSERT_TRUE(engine);
    EventLog log;
    std::atomic<int> tokens_seen{0};
    for (size_t i = 0; i < reqs.size(); ++i) {
      auto id = engine->submit(reqs[i], log.callback_for(i + 1, [&](const TokenEvent&, size_t) { ++tokens_seen; }));
      ASSERT_TRUE(id.has_value());
      ASSERT_EQ(*id, i + 1);
    }
    while (tokens_seen < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    b.kill_now();
    ASSERT_TRUE(finished_within(log, reqs.size(), std::chrono::seconds(60))) << "requests hang after a node died";
    for (size_t i = 0; i < reqs.size(); ++i) {
      const auto rec = log.get(i + 1);
      EXPECT_EQ(rec.finals, 1);
      if (rec.final_event.finish_reason == "error") {
        EXPECT_EQ(rec.final_event.error.code(), Errc::unavailable);
        EXPECT_NE(rec.final_event.error.message().find("node 'b'"), std::string::npos)
            << rec.final_event.error.message();
      } else {
        EXPECT_EQ(rec.final_event.finish_reason, "length");
      }
    }
    // Later requests are served by the replicas on a, with the same tokens as before.
    auto later = test::mixed_requests(model_->config());
    const auto got = test::run_all(*engine, later);
    for (size_t i = 0; i < later.size(); ++i) EXPECT_EQ(got[i], test::reference_tokens(*model_, later[i]));
    test::expect_idle(*engine);
    const auto topo = engine->topology();
    EXPECT_EQ(topo["nodes"][2]["state"], "down");
    EXPECT_EQ(topo["nodes"][1]["state"], "up");
  }
  {
    // No replica, and attention layer 2 on the node that dies: later requests fail at once.
    NodeProcess c(dir_, "c"), d(dir_, "d");
    auto engine = test::make_engine(model_, test::small_options(), options_for(split(c, d, E, {2})));
    ASSERT_TRUE(engine);
    test::run_all(*engine, {reqs[0]});
    c.kill_now();
    EventLog log;
    const auto t0 = std::chrono::steady_clock::now();
    int ended = 0;
    for (int i = 0; i < 3; ++i) {
      auto id = engine->submit(reqs[1], log.callback_for(100 + i));
      if (!id.has_value()) {
        EXPECT_EQ(id.error().code(), Errc::unavailable) << id.error().to_string();
        EXPECT_NE(id.error().message().find("node 'c'"), std::string::npos) << id.error().message();
        ++ended;
        continue;
      }
      ASSERT_TRUE(finished_within(log, 1, std::chrono::seconds(30)));
      const auto rec = log.get(100 + i);
      EXPECT_EQ(rec.final_event.finish_reason, "error");
      EXPECT_EQ(rec.final_event.error.code(), Errc::unavailable);
      EXPECT_NE(rec.final_event.error.message().find("node 'c'"), std::string::npos) << rec.final_event.error.message();
      ++ended;
      break;
    }
    EXPECT_GT(ended, 0);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
    test::expect_idle(*engine);
  }
}

TEST_F(Cluster, BadNodesAreNamedAtStartup) {
  // Nobody listens there.
  serving::Placement p;
  p.nodes = {serving::NodeSpec{}, serving::NodeSpec{"ghost", "127.0.0.1", 1}};
  p.expert_actors = {{"ghost", {0, 1, 2, 3}}};
  ActorEngineOptions ao = options_for(p);
  ao.connect_timeout = std::chrono::milliseconds(300);
  auto e = make_actor_engine(model_, test::small_options(), ao);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code(), Errc::unavailable);
  EXPECT_NE(e.error().message().find("node 'ghost' (127.0.0.1:1)"), std::string::npos) << e.error().message();
  // A node that loads a different model.
  NodeProcess a(dir_, "a");
  const fs::path other = dir_ / "other";
  fs::create_directories(other);
  ModelConfig cfg = test::actor_test_config();
  ASSERT_TRUE(save_checkpoint(other.string(), random_model_weights(cfg, 99), cfg).is_ok());
  p.nodes = {serving::NodeSpec{}, a.spec()};
  p.expert_actors = {{"a", {0, 1, 2, 3}}};
  ao = options_for(p);
  ao.model_dir = other.string();
  e = make_actor_engine(model_, test::small_options(), ao);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message().find("node 'a' loaded a different model"), std::string::npos) << e.error().message();
  // No model directory for the nodes.
  ao.model_dir.clear();
  e = make_actor_engine(model_, test::small_options(), ao);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message().find("model directory"), std::string::npos) << e.error().message();
}

}  // namespace
}  // namespace fulgur
