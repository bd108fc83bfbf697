// Unit tests of the actor runtime's pieces: allocators, placement JSON, error mapping, message
// descriptors, and single actors driven directly (expert actor, global router).
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include <caf/all.hpp>

#include "actors/allocators.h"
#include "actors/layer_actors.h"
#include "actors/router_actor.h"
#include "protocols/serving/caf_config.h"
#include "protocols/serving/placement.h"
#include "test_actors_util.h"

namespace fulgur {
namespace {

using namespace serving;

TEST(SlotAllocator, AllocatesLowestFreeAndRefusesWhenFull) {
  SlotAllocator a(3);
  EXPECT_EQ(a.capacity(), 3);
  EXPECT_EQ(*a.allocate(), 0);
  EXPECT_EQ(*a.allocate(), 1);
  EXPECT_EQ(*a.allocate(), 2);
  EXPECT_FALSE(a.allocate().has_value());
  EXPECT_EQ(a.used(), 3);
  EXPECT_TRUE(a.free(1).is_ok());
  EXPECT_EQ(a.available(), 1);
  EXPECT_EQ(*a.allocate(), 1);
  EXPECT_EQ(a.free(7).code(), Errc::invalid_argument);
  EXPECT_TRUE(a.free(0).is_ok());
  EXPECT_EQ(a.free(0).code(), Errc::invalid_argument);  // double free
  EXPECT_EQ(a.used(), 2);
}

TEST(BlockAllocator, AllOrNothingPagesPerSequence) {
  BlockAllocator b(5, 4);
  EXPECT_EQ(b.blocks_for_tokens(1), 1);
  EXPECT_EQ(b.blocks_for_tokens(4), 1);
  EXPECT_EQ(b.blocks_for_tokens(5), 2);
  auto p1 = b.allocate_for_tokens(9);  // 3 pages
  ASSERT_TRUE(p1.has_value());
  EXPECT_EQ(*p1, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_FALSE(b.allocate_for_tokens(12).has_value());  // needs 3, 2 left: nothing taken
  EXPECT_EQ(b.used(), 3);
  auto p2 = b.allocate_for_tokens(8);
  ASSERT_TRUE(p2.has_value());
  EXPECT_EQ(b.available(), 0);
  EXPECT_TRUE(b.free(*p1).is_ok());
  EXPECT_TRUE(b.free(*p2).is_ok());
  EXPECT_EQ(b.used(), 0);
  EXPECT_EQ(b.free({0}).code(), Errc::invalid_argument);
}

TEST(Placement, JsonRoundTripAndValidation) {
  Placement p = Placement::grouped(8, 3);
  p.expert_actors.push_back({"local", {0, 5}});  // replicas of 0 and 5
  p.group_tokens = 7;
  auto back = placement_from_json(nlohmann::json::parse(to_json(p).dump()));
  ASSERT_TRUE(back.has_value()) << back.error().to_string();
  EXPECT_EQ(to_json(*back), to_json(p));
  EXPECT_TRUE(back->validate(8).is_ok());
  const auto reps = back->replicas(8);
  EXPECT_EQ(reps[0], (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(reps[5], (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(reps[1], (std::vector<int32_t>{1}));
  // Defaults: one actor per expert.
  EXPECT_EQ(Placement{}.resolved(4).expert_actors.size(), 4u);
  // Errors name the problem.
  Placement missing = Placement::grouped(4, 2);
  missing.expert_actors[1].experts = {1};
  EXPECT_EQ(missing.validate(4).code(), Errc::invalid_argument);
  EXPECT_NE(missing.validate(4).message().find("expert 3"), std::string::npos);
  Placement range = Placement::one_per_expert(2);
  range.expert_actors[0].experts = {9};
  EXPECT_EQ(range.validate(2).code(), Errc::invalid_argument);
  EXPECT_FALSE(placement_from_json(nlohmann::json::parse(R"({"expert_actors": [{"experts": "x"}]})")).has_value());
  EXPECT_FALSE(placement_from_json(nlohmann::json::parse(R"({"group_tokens": "a"})")).has_value());
  EXPECT_FALSE(placement_from_json(nlohmann::json::parse("[1]")).has_value());
}

TEST(Protocol, ErrorsMapBothWays) {
  const Status st(Errc::overloaded, "queue full");
  const caf::error err = to_caf_error(st);
  EXPECT_EQ(err.category(), kErrorCategory);
  const Status back = from_caf_error(err);
  EXPECT_EQ(back.code(), Errc::overloaded);
  EXPECT_EQ(back.message(), "queue full");
  EXPECT_EQ(from_caf_error(caf::make_error(caf::sec::request_timeout)).code(), Errc::unavailable);
  EXPECT_EQ(from_caf_error(caf::make_error(caf::sec::request_receiver_down)).code(), Errc::unavailable);
  EXPECT_EQ(from_caf_error(caf::make_error(caf::sec::unexpected_message)).code(), Errc::internal);
  EXPECT_TRUE(from_caf_error(caf::error{}).is_ok());
}

TEST(Protocol, SamplingTravelsAsBitPatterns) {
  kernels::SamplingParams p{.temperature = 0.7f, .top_k = 5, .top_p = 0.93f, .seed = 11, .step = 3};
  const SamplingDesc d = to_desc(p);
  const auto q = from_desc(d);
  EXPECT_EQ(q.temperature, p.temperature);
  EXPECT_EQ(q.top_p, p.top_p);
  EXPECT_EQ(q.top_k, 5);
  EXPECT_EQ(q.seed, 11u);
  EXPECT_EQ(q.step, 3u);
  EXPECT_EQ(from_desc(SamplingDesc{}).top_p, 1.0f);
}

TEST(Protocol, HiddenHandleSerialisesOnlyTheDescriptor) {
  caf::actor_system_config cfg;
  configure(cfg, RuntimeOptions{1});
  caf::actor_system sys{cfg};
  HiddenHandle h = HiddenHandle::wrap(Tensor::zeros(DType::f32, {3, 4}));
  EXPECT_TRUE(h.valid());
  EXPECT_EQ(h.ref.shape, (std::vector<int64_t>{3, 4}));
  std::vector<char> buf;
  caf::binary_serializer out{sys, buf};
  ASSERT_FALSE(out(h));
  HiddenHandle back;
  caf::binary_deserializer in{sys, buf};
  ASSERT_FALSE(in(back));
  EXPECT_EQ(back.ref.buffer_id, h.ref.buffer_id);
  EXPECT_EQ(back.ref.shape, h.ref.shape);
  EXPECT_FALSE(back.valid());  // the tensor itself never travels inside a message
  auto r = resolve(back, "test");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::unavailable);
  // A step descriptor round-trips exactly.
  StepDescriptor s;
  s.step_id = 9;
  s.seq_ids = {4, 5};
  s.num_tokens = 3;
  s.cu_seqlens = {0, 2, 3};
  s.sampling = {to_desc({.temperature = 0.5f})};
  std::vector<char> buf2;
  caf::binary_serializer out2{sys, buf2};
  ASSERT_FALSE(out2(s));
  StepDescriptor s2;
  caf::binary_deserializer in2{sys, buf2};
  ASSERT_FALSE(in2(s2));
  EXPECT_EQ(caf::deep_to_string(s), caf::deep_to_string(s2));
}

TEST(ExpertActor, ComputesSwiGluOnItsGroupAndRefusesForeignExperts) {
  auto model = test::make_test_model(5);
  const int64_t hidden = model->config().hidden_size;
  caf::actor_system_config cfg;
  configure(cfg, RuntimeOptions{2});
  caf::actor_system sys{cfg};
  auto expert = spawn_expert(sys, model, 0, {2});
  Tensor h2 = Tensor::empty(DType::f32, {5, hidden});
  const auto vals = test::random_floats(5 * hidden, 3);
  std::copy(vals.begin(), vals.end(), h2.data<float>());
  HiddenHandle h = HiddenHandle::wrap(h2);
  caf::scoped_actor self{sys};
  TokenGroup g{.step_id = 1, .layer = 1, .expert = 2, .group_idx = 0, .rows = {1, 4}};
  Tensor want = Tensor::empty(DType::f32, {2, hidden});
  Tensor xg = Tensor::empty(DType::f32, {2, hidden});
  std::copy_n(h2.data<float>() + 1 * hidden, hidden, xg.data<float>());
  std::copy_n(h2.data<float>() + 4 * hidden, hidden, xg.data<float>() + hidden);
  MoeBlock moe(model->config(), 1, model->weights().layers[1].moe);
  ASSERT_TRUE(moe.expert_forward(2, xg.data<float>(), 2, want.data<float>()).is_ok());
  bool answered = false;
  self->request(expert, std::chrono::seconds(10), expert_atom_v, g, h)
      .receive(
          [&](GroupDone& done, HiddenHandle& y) {
            answered = true;
            EXPECT_EQ(done.group_idx, 0);
            EXPECT_LE(done.compute_begin_ns, done.compute_end_ns);
            ASSERT_TRUE(y.valid());
            for (int64_t i = 0; i < 2 * hidden; ++i) ASSERT_EQ(y.local->data<float>()[i], want.data<float>()[i]);
          },
          [&](caf::error& e) { ADD_FAILURE() << caf::to_string(e); });
  EXPECT_TRUE(answered);
  g.expert = 3;
  Status failure;
  self->request(expert, std::chrono::seconds(10), expert_atom_v, g, h)
      .receive([&](GroupDone&, HiddenHandle&) { ADD_FAILURE() << "expert 3 is not hosted"; },
               [&](caf::error& e) { failure = from_caf_error(e); });
  EXPECT_EQ(failure.code(), Errc::invalid_argument);
  EXPECT_NE(failure.message().find("does not host expert 3"), std::string::npos);
}

TEST(GlobalRouter, ChoosesTheLeastLoadedReplicaAndDrains) {
  caf::actor_system_config cfg;
  configure(cfg, RuntimeOptions{2});
  caf::actor_system sys{cfg};
  // Expert 0 on actors {0, 1}, expert 1 on actor 1 only.
  auto model = test::make_test_model(5);
  auto global = spawn_global_router(sys, {{0, 1}, {1}}, {spawn_expert(sys, model, 0, {0}), spawn_expert(sys, model, 1, {0, 1})});
  caf::scoped_actor self{sys};
  auto plan = [&](std::vector<int32_t> experts, std::vector<int64_t> tokens) {
    std::vector<int32_t> out;
    self->request(global, std::chrono::seconds(5), plan_atom_v, DispatchPlanRequest{0, experts, tokens})
        .receive([&](std::vector<int32_t>& r) { out = r; }, [&](caf::error& e) { ADD_FAILURE() << caf::to_string(e); });
    return out;
  };
  // Expert 1's 10 tokens load actor 1, so expert 0's groups prefer actor 0 until it is busier.
  EXPECT_EQ(plan({1, 0, 0, 0}, {10, 4, 4, 4}), (std::vector<int32_t>{1, 0, 0, 0}));
  EXPECT_EQ(plan({0}, {1}), (std::vector<int32_t>{1}));  // actor 0: 12 pending, actor 1: 10
  self->send(global, done_atom_v, int32_t{0}, int64_t{12});
  self->send(global, done_atom_v, int32_t{1}, int64_t{11});
  LoadSnapshot load;
  self->request(global, std::chrono::seconds(5), load_atom_v)
      .receive([&](LoadSnapshot& l) { load = l; }, [&](caf::error& e) { ADD_FAILURE() << caf::to_string(e); });
  EXPECT_EQ(load.pending_per_actor, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(load.tokens_per_actor, (std::vector<int64_t>{12, 11}));
  EXPECT_EQ(load.tokens_per_expert, (std::vector<int64_t>{13, 10}));
}

TEST(GlobalRouter, SkipsReplicasThatWentDownAndNamesExpertsWithNoneLeft) {
  caf::actor_system_config cfg;
  configure(cfg, RuntimeOptions{2});
  caf::actor_system sys{cfg};
  auto model = test::make_test_model(5);
  auto a0 = spawn_expert(sys, model, 0, {0});
  auto a1 = spawn_expert(sys, model, 1, {0, 1});
  auto global = spawn_global_router(sys, {{0, 1}, {1}}, {a0, a1}, {"expert actor 0 on node 'x'", "expert actor 1 on node 'y'"});
  caf::scoped_actor self{sys};
  auto plan = [&](std::vector<int32_t> experts, std::vector<int64_t> tokens) -> Expected<std::vector<int32_t>> {
    Expected<std::vector<int32_t>> out = Status(Errc::internal, "no answer");
    self->request(global, std::chrono::seconds(5), plan_atom_v, DispatchPlanRequest{0, experts, tokens})
        .receive([&](std::vector<int32_t>& r) { out = r; }, [&](caf::error& e) { out = from_caf_error(e); });
    return out;
  };
  EXPECT_EQ(*plan({0}, {4}), (std::vector<int32_t>{0}));
  self->send(global, done_atom_v, int32_t{0}, int64_t{4});
  // Actor 0 goes down: expert 0 is served by its replica on actor 1 from then on.
  self->send_exit(a0, caf::exit_reason::kill);
  std::vector<int32_t> chosen;
  for (int i = 0; i < 100 && chosen != std::vector<int32_t>{1}; ++i) {  // the down message is asynchronous
    chosen = *plan({0}, {1});
    self->send(global, done_atom_v, chosen.front(), int64_t{1});
    if (chosen != std::vector<int32_t>{1}) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(chosen, (std::vector<int32_t>{1}));
  // Actor 1 goes down too: nothing hosts expert 1 or 0; the plan fails, names them, and leaves
  // no pending tokens behind.
  self->send_exit(a1, caf::exit_reason::kill);
  Expected<std::vector<int32_t>> r = std::vector<int32_t>{};
  for (int i = 0; i < 100 && r.has_value(); ++i) {
    r = plan({0, 1}, {3, 5});
    if (r.has_value()) {
      for (size_t g = 0; g < r->size(); ++g) self->send(global, done_atom_v, (*r)[g], int64_t{g == 0 ? 3 : 5});
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::unavailable);
  EXPECT_NE(r.error().message().find("expert actor 0 on node 'x'"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("expert actor 1 on node 'y'"), std::string::npos) << r.error().message();
  LoadSnapshot load;
  self->request(global, std::chrono::seconds(5), load_atom_v)
      .receive([&](LoadSnapshot& l) { load = l; }, [&](caf::error& e) { ADD_FAILURE() << caf::to_string(e); });
  EXPECT_EQ(load.pending_per_actor, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(load.down_actors, (std::vector<int32_t>{0, 1}));
}

TEST(Placement, ReadsNodesAttentionAndExpertsAndNamesWhatIsWrong) {
  const auto j = nlohmann::json::parse(R"({
    "nodes": ["local", {"name": "a", "address": "127.0.0.1:7101"}, "10.0.0.2:7102"],
    "attention": [{"node": "a", "layers": [1, 2]}],
    "expert_actors": [{"node": "a", "experts": [0, 1]}, {"node": "10.0.0.2:7102", "experts": [2, 3]}]
  })");
  auto p = placement_from_json(j);
  ASSERT_TRUE(p.has_value()) << p.error().to_string();
  ASSERT_EQ(p->nodes.size(), 3u);
  EXPECT_TRUE(p->nodes[0].is_local());
  EXPECT_EQ(p->nodes[1].host, "127.0.0.1");
  EXPECT_EQ(p->nodes[1].port, 7101);
  EXPECT_EQ(p->nodes[2].name, "10.0.0.2:7102");
  EXPECT_EQ(p->nodes[2].port, 7102);
  EXPECT_TRUE(p->multi_process());
  EXPECT_EQ(p->attention_node(0), "local");
  EXPECT_EQ(p->attention_node(2), "a");
  EXPECT_TRUE(p->validate(4, 3).is_ok()) << p->validate(4, 3).to_string();
  // Round trip through JSON.
  auto back = placement_from_json(to_json(*p));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(to_json(*back), to_json(*p));
  // Without "local" in the list it is added.
  auto q = placement_from_json(nlohmann::json::parse(R"({"nodes": [{"name": "a", "address": "h:1"}]})"));
  ASSERT_TRUE(q.has_value());
  EXPECT_TRUE(q->resolved(2).find_node("local") != nullptr);
  struct Bad {
    const char* json;
    int64_t layers;
    const char* says;
  };
  for (const Bad& b : std::vector<Bad>{
           {R"({"nodes": [{"name": "a", "address": "nohost"}]})", 3, "not host:port"},
           {R"({"nodes": [{"name": "a", "address": "h:70000"}]})", 3, "[1, 65535]"},
           {R"({"nodes": [{"name": "a"}]})", 3, "needs an address"},
           {R"({"nodes": [{"name": "local", "address": "h:5"}]})", 3, "takes no address"},
           {R"({"nodes": ["h:5", "h:5"]})", 3, "named twice"},
           {R"({"nodes": [3]})", 3, "each node is"},
           {R"({"attention": [{"node": "zz", "layers": [0]}]})", 3, "unknown node 'zz'"},
           {R"({"attention": [{"node": "local", "layers": [3]}]})", 3, "outside [0, 3)"},
           {R"({"attention": [{"node": "local", "layers": [1, 1]}]})", 3, "placed twice"},
           {R"({"attention": [{"node": "local"}]})", 3, "'layers' array"},
           {R"({"expert_actors": [{"node": "zz", "experts": [0, 1, 2, 3]}]})", 3, "unknown node 'zz'"},
       }) {
    auto parsed = placement_from_json(nlohmann::json::parse(b.json));
    Status st = parsed.has_value() ? parsed->resolved(4).validate(4, b.layers) : parsed.error();
    EXPECT_FALSE(st.is_ok()) << b.json;
    EXPECT_NE(st.message().find(b.says), std::string::npos) << b.json << " -> " << st.message();
  }
}

}  // namespace
}  // namespace fulgur
