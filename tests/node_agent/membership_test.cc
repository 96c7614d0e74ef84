// Membership against a fake orchestrator (register + heartbeat routes on 127.0.0.1): a step of
// the engine longer than several heartbeat intervals does not silence the node, and the events of
// the report that was late still reach the orchestrator; a node the orchestrator forgot registers
// again and tells its engine side.
#include "node_agent/membership.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "common/control_wire.h"
#include "common/http.h"

namespace kvferry::agent {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// An engine side whose reports each store one new block hash (1, 2, 3, …).
class ReportingWork final : public EngineWork {
 public:
  Reply reserve(const wire::ReserveRequest&) override { return {}; }
  void prefill(wire::PrefillRequest, std::shared_ptr<ReplyChannel>,
               std::shared_ptr<const StopFlag>) override {}
  void decode(wire::DecodeRequest, std::shared_ptr<Stream>) override {}
  void generate(wire::GenerateRequest, std::shared_ptr<Stream>,
                std::shared_ptr<const StopFlag>) override {}
  void release(uint64_t, bool) override {}
  void cancel(uint64_t) override {}
  void forgotten() override { ++forgotten_; }
  bool idle() const override { return true; }
  NodeReport report(bool snapshot) override {
    NodeReport r;
    r.load.free_kv_blocks = 100;
    r.load.total_kv_blocks = 100;
    const uint64_t n = ++reports_;
    r.load.kv_sequence = n;
    if (snapshot) {
      r.snapshot.emplace();
    } else {
      r.stored.push_back(n);
    }
    return r;
  }
  uint64_t reports() const { return reports_; }
  uint32_t forgottenCalls() const { return forgotten_; }

 private:
  std::atomic<uint64_t> reports_{0};
  std::atomic<uint32_t> forgotten_{0};
};

// What the fake orchestrator saw; heartbeats signal `changed`.
struct Seen {
  std::mutex mu;
  std::condition_variable changed;
  uint32_t registrations = 0;
  uint32_t heartbeats = 0;
  uint32_t forget = 0;            // the next this many heartbeats are answered 404 (node unknown)
  std::set<uint64_t> stored;      // every hash of every event batch
  std::set<uint64_t> sequences;   // event batches applied (a resent batch counts once)
  uint64_t last_kv_sequence = 0;  // of the last heartbeat's load
  bool hold = false;              // heartbeats get no answer until the harness releases them
};

// A fake orchestrator (register + heartbeat routes on 127.0.0.1), a Membership registered with it,
// and the io and engine threads they run on. On every way out of a test the agent leaves (its
// heartbeat loop ends) and the server closes, so the io thread runs out of work with no coroutine
// left suspended, and both threads are joined.
struct Harness {
  explicit Harness(uint32_t heartbeat_interval_ms = 20) {
    orchestrator.route(http::Verb::post, std::string(wire::route::kRegister),
                       [this, heartbeat_interval_ms](const http::Request&,
                                                     http::ResponseWriter& w) -> http::Task<void> {
                         {
                           std::lock_guard lock(seen.mu);
                           ++seen.registrations;
                           seen.changed.notify_all();
                         }
                         wire::RegisterResponse r{7, 99, heartbeat_interval_ms, 1000};
                         co_await w.sendJson(http::HttpStatus::ok, wire::encode(r));
                       });
    orchestrator.route(
        http::Verb::post, std::string(wire::route::kHeartbeat),
        [this](const http::Request& req, http::ResponseWriter& w) -> http::Task<void> {
          auto hb = wire::decode<wire::HeartbeatRequest>(req.body());
          EXPECT_TRUE(hb.isOk()) << hb.status().toString();
          bool forget = false;
          bool hold = false;
          if (hb.isOk()) {
            std::lock_guard lock(seen.mu);
            hold = seen.hold;
            ++seen.heartbeats;
            forget = seen.forget > 0;
            if (forget) --seen.forget;
            seen.last_kv_sequence = hb->load.kv_sequence;
            for (const wire::KvEventBatchWire& batch : hb->kv_events) {
              if (!forget && seen.sequences.insert(batch.sequence).second) {
                seen.stored.insert(batch.stored.begin(), batch.stored.end());
              }
            }
            seen.changed.notify_all();
          }
          if (hold) co_await release.async_wait(asio::as_tuple(asio::use_awaitable));
          if (forget) {
            co_await w.sendJson(http::HttpStatus::not_found, R"({"error":"unknown node"})");
          } else {
            co_await w.sendJson(http::HttpStatus::ok, wire::encode(wire::HeartbeatResponse{}));
          }
        });
    EXPECT_TRUE(orchestrator.listen("127.0.0.1:0").isOk());
    orchestrator.start();
    membership.emplace(
        io, client, http::tcp::endpoint(asio::ip::make_address("127.0.0.1"), orchestrator.port()),
        5s, work, engine.get_executor());
    // Named (GCC 12 at -O3 reads a temporary's string members as maybe uninitialized).
    wire::RegisterRequest registration;
    membership->start(std::move(registration), [](const Status& s) { FAIL() << s.toString(); });
    io_thread = std::thread([this] { io.run(); });
    engine_thread = std::thread([this] { engine.run(); });
  }
  ~Harness() {
    asio::post(io, [this] {
      release.cancel();
      orchestrator.stop();
      if (!membership) return;
      membership->drain();
      asio::co_spawn(io, membership->leave(), asio::detached);
    });
    io_guard.reset();
    io_thread.join();
    engine_guard.reset();
    engine_thread.join();
  }
  bool waitFor(const std::function<bool(const Seen&)>& done) {
    std::unique_lock lock(seen.mu);
    return seen.changed.wait_for(lock, 20s, [&] { return done(seen); });
  }

  Seen seen;
  asio::io_context io;
  http::ClientPool client{io};
  http::Server orchestrator{io, http::ServerOptions{}};
  asio::steady_timer release{io, asio::steady_timer::time_point::max()};  // of held heartbeats
  asio::io_context engine;
  ReportingWork work;
  std::optional<Membership> membership;  // once the orchestrator listens
  asio::executor_work_guard<asio::io_context::executor_type> io_guard{io.get_executor()};
  asio::executor_work_guard<asio::io_context::executor_type> engine_guard{engine.get_executor()};
  std::thread io_thread;
  std::thread engine_thread;
};

TEST(MembershipTest, ALongEngineStepDoesNotSilenceHeartbeatsNorLoseTheirEvents) {
  Harness h;
  Seen& seen = h.seen;
  ReportingWork& work = h.work;
  asio::io_context& engine = h.engine;
  const auto waitFor = [&h](auto done) { return h.waitFor(done); };
  // Running normally: a few heartbeats (every 20 ms), each with a fresh report.
  ASSERT_TRUE(waitFor([](const Seen& s) { return s.heartbeats >= 3; }));

  // The engine thread is now busy in one long "step" until the orchestrator has had ten more
  // heartbeats. Without them the step never ends (and the test fails after 20 s).
  uint32_t before = 0;
  {
    std::lock_guard lock(seen.mu);
    before = seen.heartbeats;
  }
  std::mutex step_mu;
  std::condition_variable step_done;
  bool step_ended = false;
  bool heartbeats_went_on = false;
  asio::post(engine, [&] {
    heartbeats_went_on = waitFor([before](const Seen& s) { return s.heartbeats >= before + 10; });
    std::lock_guard lock(step_mu);
    step_ended = true;
    step_done.notify_all();
  });
  {
    std::unique_lock lock(step_mu);
    step_done.wait(lock, [&] { return step_ended; });
  }
  EXPECT_TRUE(heartbeats_went_on) << "heartbeats stopped while the engine was busy";

  // After the step: the report that waited behind it, and later ones, arrive; every report's
  // hash reaches the orchestrator once the heartbeats catch up (none lost with the late one).
  const uint64_t after_step = work.reports();
  ASSERT_TRUE(
      waitFor([after_step](const Seen& s) { return s.last_kv_sequence >= after_step + 2; }));
  {
    std::lock_guard lock(seen.mu);
    for (uint64_t hash = 2; hash + 1 < seen.last_kv_sequence; ++hash) {
      EXPECT_TRUE(seen.stored.count(hash)) << "the events of report " << hash << " were lost";
    }
  }
}

// An orchestrator that no longer knows the node (it restarted, or judged the node dead): the
// agent registers again, and its engine side hears of it once, so it can end the leases that
// orchestrator took (EngineWork::forgotten).
TEST(MembershipTest, ANodeTheOrchestratorForgotRegistersAgainAndEndsItsLeases) {
  Harness h;
  ASSERT_TRUE(h.waitFor([](const Seen& s) { return s.heartbeats >= 2; }));
  EXPECT_EQ(h.work.forgottenCalls(), 0u);
  {
    std::lock_guard lock(h.seen.mu);
    h.seen.forget = 1;
  }
  ASSERT_TRUE(h.waitFor([](const Seen& s) { return s.registrations >= 2 && s.heartbeats >= 6; }));
  EXPECT_EQ(h.work.forgottenCalls(), 1u);
}

// An agent shutting down while a heartbeat waits on an orchestrator that does not answer: stop()
// ends the request at once and returns only after the heartbeat loop has, so the Membership and
// its client pool can be destroyed while the io_context lives on (node_agent's main destroys the
// agent first; a heartbeat frame left suspended there erased its connection from the freed pool).
// The heartbeat's own timeout here is 121 s: without the abort, stop() would not return in the 20
// s the test waits.
TEST(MembershipTest, StopEndsAHeartbeatInFlightAndReturnsAfterTheLoop) {
  Harness h(/*heartbeat_interval_ms=*/60000);
  {
    std::lock_guard lock(h.seen.mu);
    h.seen.hold = true;
  }
  ASSERT_TRUE(h.waitFor([](const Seen& s) { return s.heartbeats >= 1; }));
  bool stopped = false;
  asio::co_spawn(
      h.io,
      [&h, &stopped]() -> http::Task<void> {
        h.membership->drain();
        co_await h.membership->stop();
        h.membership.reset();  // nothing of it may be suspended in h.io now (ASan checks)
        std::lock_guard lock(h.seen.mu);
        stopped = true;
        h.seen.changed.notify_all();
      },
      asio::detached);
  EXPECT_TRUE(h.waitFor([&stopped](const Seen&) { return stopped; }))
      << "stop() did not end the heartbeat in flight";
}

}  // namespace
}  // namespace kvferry::agent
