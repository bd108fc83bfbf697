#include "orchestration/serving/scheduler_actor.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>

#include <caf/all.hpp>

#include "actors/allocators.h"
#include "protocols/serving/errors.h"

namespace fulgur {

using namespace serving;
using clock_type = std::chrono::steady_clock;

const std::vector<double>& latency_bucket_bounds() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return b;
}

namespace {

struct Sequence {
  RequestId id = 0;
  CompletionRequest req;
  TokenCallback cb;
  int64_t max_len = 0;           // min(prompt + max_tokens, max_context)
  int32_t slot = -1;
  std::vector<int32_t> blocks;
  int64_t fed = 0;               // tokens whose state is in the pools
  std::vector<int32_t> generated;
  bool cancelled = false;
  bool in_step = false;
  clock_type::time_point submitted, last_token;
};
using SeqPtr = std::shared_ptr<Sequence>;

struct Histogram {
  std::vector<uint64_t> buckets = std::vector<uint64_t>(latency_bucket_bounds().size() + 1, 0);
  double sum = 0;
  uint64_t count = 0;
  void add(double s) {
    const auto& b = latency_bucket_bounds();
    ++buckets[std::lower_bound(b.begin(), b.end(), s) - b.begin()];
    sum += s;
    ++count;
  }
};

// One sequence's part of the in-flight step.
struct StepEntry {
  SeqPtr seq;
  int64_t num_tokens = 0;
  bool samples = false;
};

struct SchedulerState {
  SchedulerConfig config;
  embed_actor embed;
  std::unique_ptr<SlotAllocator> slots;
  std::unique_ptr<BlockAllocator> blocks;
  std::deque<SeqPtr> waiting;
  std::vector<SeqPtr> running;  // admission order
  bool step_in_flight = false;
  uint64_t in_flight_step = 0;  // its id; a late answer for another id is ignored
  std::shared_ptr<std::vector<StepEntry>> in_flight_entries;
  std::string broken;           // non-empty once a pipeline actor went down
  uint64_t next_step_id = 1;
  int64_t tokens_generated = 0, requests_total = 0, requests_rejected = 0;
  Histogram ttft, itl;
  static inline const char* name = "fulgur.scheduler";
};

using sched_ptr = scheduler_actor::stateful_pointer<SchedulerState>;

void emit_final(Sequence& s, const std::string& reason, Status error = Status::ok()) {
  TokenEvent ev;
  ev.finished = true;
  ev.finish_reason = reason;
  ev.error = std::move(error);
  ev.prompt_tokens = static_cast<int64_t>(s.req.prompt.size());
  ev.completion_tokens = static_cast<int64_t>(s.generated.size());
  if (s.cb) s.cb(ev);
}

// Frees what a running sequence holds and removes it from the running batch.
void release(SchedulerState& st, const SeqPtr& seq) {
  if (seq->slot >= 0) (void)st.slots->free(seq->slot);
  (void)st.blocks->free(seq->blocks);
  seq->slot = -1;
  seq->blocks.clear();
  st.running.erase(std::remove(st.running.begin(), st.running.end(), seq), st.running.end());
}

void admit(SchedulerState& st) {
  while (!st.waiting.empty() && static_cast<int64_t>(st.running.size()) < st.config.options.max_running &&
         st.slots->available() > 0) {
    SeqPtr seq = st.waiting.front();
    auto pages = st.blocks->allocate_for_tokens(seq->max_len);
    if (!pages) break;  // FIFO: the head of the queue waits for pages
    seq->slot = *st.slots->allocate();
    seq->blocks = std::move(*pages);
    st.waiting.pop_front();
    st.running.push_back(std::move(seq));
  }
}

void schedule(sched_ptr self);

void on_step_done(sched_ptr self, const std::vector<StepEntry>& entries, StepResult& r) {
  auto& st = self->state;
  st.step_in_flight = false;
  const auto now = clock_type::now();
  size_t sample_idx = 0;
  for (const StepEntry& e : entries) {
    Sequence& s = *e.seq;
    s.in_step = false;
    s.fed += e.num_tokens;
    if (s.cancelled) {
      release(st, e.seq);
      emit_final(s, "cancelled");
      if (e.samples) ++sample_idx;
      continue;
    }
    if (!e.samples) continue;
    if (sample_idx >= r.tokens.size()) {
      release(st, e.seq);
      emit_final(s, "error", Status(Errc::internal, "head returned too few tokens"));
      continue;
    }
    const int32_t token = r.tokens[sample_idx];
    if (st.config.logits_hook && r.logits.valid()) {
      const Tensor& l = *r.logits.local;
      const int64_t V = l.size(1);
      std::vector<float> row(l.data<float>() + sample_idx * V, l.data<float>() + (sample_idx + 1) * V);
      st.config.logits_hook(s.id, static_cast<int64_t>(s.generated.size()), row);
    }
    ++sample_idx;
    s.generated.push_back(token);
    ++st.tokens_generated;
    if (s.generated.size() == 1) {
      st.ttft.add(std::chrono::duration<double>(now - s.submitted).count());
    } else {
      st.itl.add(std::chrono::duration<double>(now - s.last_token).count());
    }
    s.last_token = now;
    TokenEvent ev;
    ev.token = token;
    if (s.cb) s.cb(ev);
    const auto& stops = s.req.stop_tokens;
    if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
      release(st, e.seq);
      emit_final(s, "stop");
    } else if (static_cast<int64_t>(s.generated.size()) >= s.req.max_tokens || s.fed >= s.max_len) {
      release(st, e.seq);
      emit_final(s, "length");
    }
  }
  schedule(self);
}

void on_step_failed(sched_ptr self, const std::vector<StepEntry>& entries, const caf::error& err) {
  auto& st = self->state;
  st.step_in_flight = false;
  st.in_flight_step = 0;
  st.in_flight_entries.reset();
  const Status status = from_caf_error(err);
  for (const StepEntry& e : entries) {
    e.seq->in_step = false;
    release(st, e.seq);
    if (e.seq->cancelled) {
      emit_final(*e.seq, "cancelled");
    } else {
      emit_final(*e.seq, "error", status);
    }
  }
  schedule(self);
}

// Builds and sends the next step when none is in flight and there is work.
void schedule(sched_ptr self) {
  auto& st = self->state;
  if (st.step_in_flight) return;
  if (!st.broken.empty()) {
    // Nothing can run any more: every request held ends now (restarting and re-placing actors
    // are not supported yet).
    const Status why(Errc::unavailable, st.broken);
    for (auto& seq : st.waiting) emit_final(*seq, "error", why);
    st.waiting.clear();
    auto running = st.running;
    for (auto& seq : running) {
      release(st, seq);
      emit_final(*seq, seq->cancelled ? "cancelled" : "error", why);
    }
    return;
  }
  admit(st);
  if (st.running.empty()) return;
  const EngineOptions& opt = st.config.options;
  const int64_t page = st.blocks->page_size();
  int64_t budget = opt.step_token_budget;
  std::vector<StepEntry> entries;
  std::vector<int32_t> tokens;
  StepDescriptor step;
  step.step_id = st.next_step_id++;
  step.cu_seqlens = {0};
  step.return_logits = static_cast<bool>(st.config.logits_hook);
  // Decodes first (each one token), then prefill chunks, in admission order.
  for (int pass = 0; pass < 2 && budget > 0; ++pass) {
    for (const SeqPtr& seq : st.running) {
      if (budget <= 0) break;
      Sequence& s = *seq;
      const int64_t P = static_cast<int64_t>(s.req.prompt.size());
      const bool decoding = s.fed >= P;
      if (decoding != (pass == 0)) continue;
      int64_t n = 1;
      if (!decoding) n = std::min({opt.prefill_chunk, P - s.fed, budget});
      const int64_t row_begin = static_cast<int64_t>(tokens.size());
      if (decoding) {
        tokens.push_back(s.generated.back());
      } else {
        tokens.insert(tokens.end(), s.req.prompt.begin() + s.fed, s.req.prompt.begin() + s.fed + n);
      }
      const bool samples = decoding || s.fed + n == P;
      if (s.fed == 0) step.reset_slots.push_back(s.slot);
      step.seq_ids.push_back(s.id);
      step.state_slots.push_back(s.slot);
      step.context_lens.push_back(static_cast<int32_t>(s.fed + n));
      for (int64_t i = 0; i < n; ++i) {
        const int64_t pos = s.fed + i;
        step.positions.push_back(static_cast<int32_t>(pos));
        step.kv_slot_mapping.push_back(static_cast<int64_t>(s.blocks[pos / page]) * page + pos % page);
      }
      step.cu_seqlens.push_back(static_cast<int32_t>(tokens.size()));
      if (samples) {
        step.logits_rows.push_back(static_cast<int64_t>(tokens.size()) - 1);
        kernels::SamplingParams sp = s.req.sampling;
        sp.step = static_cast<uint64_t>(s.generated.size());
        step.sampling.push_back(to_desc(sp));
      }
      (void)row_begin;
      s.in_step = true;
      entries.push_back({seq, n, samples});
      budget -= n;
    }
  }
  if (entries.empty()) return;
  step.num_tokens = static_cast<int64_t>(tokens.size());
  int64_t max_blocks = 1;
  for (const auto& e : entries) max_blocks = std::max<int64_t>(max_blocks, static_cast<int64_t>(e.seq->blocks.size()));
  step.max_blocks_per_seq = max_blocks;
  for (const auto& e : entries) {
    for (int64_t b = 0; b < max_blocks; ++b) {
      step.block_tables.push_back(b < static_cast<int64_t>(e.seq->blocks.size()) ? e.seq->blocks[b] : 0);
    }
  }
  st.step_in_flight = true;
  auto shared_entries = std::make_shared<std::vector<StepEntry>>(std::move(entries));
  const uint64_t step_id = step.step_id;
  st.in_flight_step = step_id;
  st.in_flight_entries = shared_entries;
  self->request(st.embed, std::chrono::milliseconds(st.config.step_timeout_ms), embed_atom_v, std::move(step),
                std::move(tokens))
      .then(
          [self, shared_entries, step_id](StepResult& r) {
            if (self->state.in_flight_step != step_id) return;  // abandoned (an actor went down)
            self->state.in_flight_step = 0;
            self->state.in_flight_entries.reset();
            on_step_done(self, *shared_entries, r);
          },
          [self, shared_entries, step_id](caf::error& err) {
            if (self->state.in_flight_step != step_id) return;
            on_step_failed(self, *shared_entries, err);
          });
}

EngineStats make_stats(const SchedulerState& st) {
  EngineStats s;
  s.queued = static_cast<int64_t>(st.waiting.size());
  s.running = static_cast<int64_t>(st.running.size());
  s.state_slots_used = st.slots->used();
  s.state_slots_total = st.slots->capacity();
  s.kv_blocks_used = st.blocks->used();
  s.kv_blocks_total = st.blocks->capacity();
  s.tokens_generated_total = st.tokens_generated;
  s.requests_total = st.requests_total;
  s.requests_rejected_total = st.requests_rejected;
  s.bucket_bounds = latency_bucket_bounds();
  s.ttft_buckets = st.ttft.buckets;
  s.itl_buckets = st.itl.buckets;
  s.ttft_sum = st.ttft.sum;
  s.itl_sum = st.itl.sum;
  s.ttft_count = st.ttft.count;
  s.itl_count = st.itl.count;
  return s;
}

scheduler_actor::behavior_type scheduler_fn(sched_ptr self, SchedulerConfig config, embed_actor embed) {
  auto& st = self->state;
  st.config = std::move(config);
  st.embed = std::move(embed);
  st.slots = std::make_unique<SlotAllocator>(st.config.options.state_slots);
  st.blocks = std::make_unique<BlockAllocator>(st.config.options.kv_blocks, st.config.options.page_size);
  // A pipeline actor that goes down (its process died or disconnected) fails the step in flight
  // at once and every request after it: each step passes through every one of them.
  for (const auto& a : st.config.watch) self->monitor(a);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (!st.broken.empty()) return;
    std::string who = "an actor";
    for (size_t i = 0; i < st.config.watch.size(); ++i) {
      if (caf::actor_cast<caf::actor_addr>(st.config.watch[i]) == dm.source) {
        who = i < st.config.watch_names.size() ? st.config.watch_names[i] : "actor " + std::to_string(i);
      }
    }
    st.broken = who + " is down (" + caf::to_string(dm.reason) + "); restarting and re-placing are not supported yet";
    std::fprintf(stderr, "fulgur: %s\n", st.broken.c_str());
    if (st.step_in_flight && st.in_flight_entries) {
      auto entries = st.in_flight_entries;
      on_step_failed(self, *entries, to_caf_error(Status(Errc::unavailable, st.broken)));
    } else {
      schedule(self);
    }
  });
  // Shutdown: every request still held gets its final event.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    const Status why(Errc::unavailable, "the engine is shutting down");
    for (auto& seq : st.waiting) emit_final(*seq, "error", why);
    st.waiting.clear();
    auto running = st.running;
    for (auto& seq : running) {
      release(st, seq);
      emit_final(*seq, seq->cancelled ? "cancelled" : "error", why);
    }
    self->quit(msg.reason);
  });
  return {
      [self](submit_atom, SubmitPayload& p) -> caf::result<uint64_t> {
        auto& st = self->state;
        if (!st.broken.empty()) return to_caf_error(Status(Errc::unavailable, st.broken));
        if (static_cast<int64_t>(st.waiting.size()) >= st.config.options.max_queued) {
          ++st.requests_rejected;
          return to_caf_error(Status(Errc::overloaded, "the wait queue is full (" +
                                                           std::to_string(st.config.options.max_queued) +
                                                           " requests); retry later"));
        }
        ++st.requests_total;
        auto seq = std::make_shared<Sequence>();
        seq->id = p.id;
        seq->req = std::move(p.request);
        seq->cb = std::move(p.on_event);
        seq->submitted = clock_type::now();
        const int64_t P = static_cast<int64_t>(seq->req.prompt.size());
        seq->max_len = std::min(P + seq->req.max_tokens, st.config.options.max_context);
        if (seq->req.max_tokens == 0) {
          emit_final(*seq, "length");
          return p.id;
        }
        st.waiting.push_back(std::move(seq));
        // Admission happens when the next step is built; kick it asynchronously so the
        // submitter gets its answer first.
        self->send(self, step_atom_v);
        return p.id;
      },
      [self](cancel_atom, uint64_t id) {
        auto& st = self->state;
        for (auto it = st.waiting.begin(); it != st.waiting.end(); ++it) {
          if ((*it)->id == id) {
            SeqPtr seq = *it;
            st.waiting.erase(it);
            emit_final(*seq, "cancelled");
            return;
          }
        }
        for (const SeqPtr& seq : st.running) {
          if (seq->id != id || seq->cancelled) continue;
          seq->cancelled = true;
          if (!seq->in_step) {
            SeqPtr keep = seq;
            release(st, keep);
            emit_final(*keep, "cancelled");
            schedule(self);
          }
          return;
        }
      },
      [self](stats_atom) { return make_stats(self->state); },
      [self](step_atom) { schedule(self); },
  };
}

}  // namespace

scheduler_actor spawn_scheduler(caf::actor_system& sys, SchedulerConfig config, embed_actor embed) {
  return sys.spawn(scheduler_fn, std::move(config), std::move(embed));
}

namespace {
constexpr auto kSchedulerAnswerTimeout = std::chrono::seconds(30);
}

Expected<RequestId> scheduler_submit(caf::actor_system& sys, const scheduler_actor& scheduler, SubmitPayload payload) {
  caf::scoped_actor self{sys};
  Expected<RequestId> out = Status(Errc::internal, "scheduler did not answer");
  self->request(scheduler, kSchedulerAnswerTimeout, submit_atom_v, std::move(payload))
      .receive([&](uint64_t got) { out = got; }, [&](caf::error& err) { out = from_caf_error(err); });
  return out;
}

EngineStats scheduler_stats(caf::actor_system& sys, const scheduler_actor& scheduler) {
  caf::scoped_actor self{sys};
  EngineStats out;
  self->request(scheduler, kSchedulerAnswerTimeout, stats_atom_v)
      .receive([&](EngineStats& s) { out = std::move(s); }, [&](caf::error&) {});
  return out;
}

}  // namespace fulgur
