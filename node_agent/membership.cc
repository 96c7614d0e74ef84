#include "node_agent/membership.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "node_agent/kv_transfer/kv_regions.h"

// GCC 12 flags Asio's coroutine frames (aligned_alloc'd, freed with free() by
// awaitable_frame_base::operator delete) as -Wmismatched-new-delete when it inlines the frame
// allocation: a false positive (GCC PR 109224, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace kvferry::agent {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

}  // namespace

wire::RegisterRequest registrationOf(const config::NodeAgentConfig& config,
                                     const ModelIdentity& identity, uint16_t control_port,
                                     const engine::KvGeometry& geometry,
                                     uint32_t max_sequence_tokens, std::string_view transport,
                                     std::string transport_blob) {
  wire::RegisterRequest r;
  std::string address = "127.0.0.1:" + std::to_string(control_port);
  if (auto ep = http::parseEndpoint(config.control_address, "control_address"); ep.isOk()) {
    if (!ep->address().is_unspecified()) {
      address = http::endpointText(http::tcp::endpoint(ep->address(), control_port));
    }
  }
  r.name = config.name.empty() ? address : config.name;
  r.role = config::nodeRoleName(config.role);
  r.control_address = address;
  r.model_fingerprint = identity.model_fingerprint;
  r.tokenizer_hash = identity.tokenizer_hash;
  r.hash_seed_id = identity.hash_seed_id;
  r.device = identity.device;
  r.device_memory_bytes = identity.device_memory_bytes;
  r.block_tokens = geometry.block_tokens;
  r.kv_layout = kv_transfer::kvLayoutOf(geometry);
  r.transport = std::string(transport);
  r.transport_blob = std::move(transport_blob);
  r.kv_blocks = geometry.num_blocks;
  r.max_sequence_tokens = max_sequence_tokens;
  return r;
}

Membership::Membership(asio::io_context& io, http::ClientPool& client,
                       http::tcp::endpoint orchestrator, milliseconds register_timeout,
                       EngineWork& work, asio::any_io_executor engine)
    : io_(io),
      client_(client),
      orchestrator_(std::move(orchestrator)),
      register_timeout_(register_timeout),
      work_(work),
      engine_(std::move(engine)),
      gather_(std::make_shared<Gather>(io)),
      wake_(io),
      loop_ended_(io) {}

void Membership::startGather(bool snapshot) {
  gather_->in_flight = true;
  asio::post(engine_, [gather = gather_, &work = work_, &io = io_, snapshot] {
    NodeReport report = work.report(snapshot);
    asio::post(io, [gather, report = std::move(report)]() mutable {
      gather->report = std::move(report);
      gather->in_flight = false;
      gather->ready.cancel();
    });
  });
}

void Membership::start(wire::RegisterRequest registration,
                       std::function<void(const Status&)> on_fatal) {
  registration_ = std::move(registration);
  on_fatal_ = std::move(on_fatal);
  loop_running_ = true;
  asio::co_spawn(
      io_,
      [this]() -> http::Task<void> {
        co_await heartbeatLoop();
        loop_running_ = false;
        loop_ended_.cancel();
      },
      asio::detached);
}

http::Task<void> Membership::stop() {
  stopping_ = true;
  client_.abort(orchestrator_);
  wake_.cancel();
  gather_->ready.cancel();
  while (loop_running_) {
    loop_ended_.expires_at(asio::steady_timer::time_point::max());
    co_await loop_ended_.async_wait(kNoThrow);
  }
}

http::Task<void> Membership::sleep(milliseconds delay) {
  wake_.expires_after(delay);
  co_await wake_.async_wait(kNoThrow);
}

http::Task<void> Membership::leave() {
  if (!node_id_ || left_) co_return;
  wire::LeaveRequest leave{*node_id_, node_token_};
  auto r = co_await client_.request(orchestrator_, http::Verb::post, wire::route::kLeave,
                                    wire::encode(leave), milliseconds(2000));
  if (!r.isOk()) spdlog::warn("node agent: leave failed: {}", r.status().toString());
  left_ = true;
}

http::Task<Status> Membership::registerOnce() {
  auto response = co_await client_.request(orchestrator_, http::Verb::post, wire::route::kRegister,
                                           wire::encode(registration_), milliseconds(5000));
  if (!response.isOk()) co_return response.status();
  if (response->status == 409 || response->status == 400) {
    co_return failedPrecondition("the orchestrator refused this agent: " + response->body);
  }
  if (response->status == 401) {
    co_return failedPrecondition(
        "the orchestrator refused this agent's signature (" + response->body +
        "): the agent and the orchestrator must use the same cluster secret file "
        "(auth.cluster_secret_file)");
  }
  if (response->status != 200) {
    co_return unavailable("register: HTTP " + std::to_string(response->status) + ": " +
                          response->body);
  }
  CO_ASSIGN_OR_RETURN(wire::RegisterResponse r,
                      wire::decode<wire::RegisterResponse>(response->body));
  node_id_ = r.node_id;
  node_token_ = r.node_token;
  heartbeat_interval_ms_ = std::max<uint32_t>(r.heartbeat_interval_ms, 10);
  event_sequence_ = 0;
  unacked_.clear();
  need_snapshot_ = true;
  spdlog::info("node agent: registered with {} as node {} (heartbeat every {} ms)",
               http::endpointText(orchestrator_), r.node_id, heartbeat_interval_ms_);
  co_return Status::ok();
}

http::Task<void> Membership::heartbeatLoop() {
  auto first_deadline = Clock::now() + register_timeout_;
  milliseconds backoff(50);
  Clock::time_point last_warning{};
  while (!stopping_ && (!draining_ || (node_id_ && !left_))) {
    if (left_) co_return;
    if (!node_id_) {
      Status s = co_await registerOnce();
      if (stopping_) co_return;
      if (!s.isOk()) {
        bool fatal = s.code() == StatusCode::kFailedPrecondition ||
                     (!ever_registered_ && Clock::now() >= first_deadline);
        if (fatal) {
          spdlog::error("node agent: {}", s.toString());
          if (on_fatal_) on_fatal_(s);
          co_return;
        }
        if (Clock::now() - last_warning > std::chrono::seconds(5)) {
          spdlog::warn("node agent: cannot register yet: {}", s.toString());
          last_warning = Clock::now();
        }
        co_await sleep(backoff);
        backoff = std::min(backoff * 2, milliseconds(1000));
        continue;
      }
      ever_registered_ = true;
      backoff = milliseconds(50);
    }

    if (!gather_->report && !gather_->in_flight) {
      startGather(need_snapshot_ || unacked_.size() > 64);
    }
    if (!gather_->report) {
      // Until a first report there is no load to repeat: wait for it.
      gather_->ready.expires_at(last_load_ ? Clock::now() + milliseconds(heartbeat_interval_ms_)
                                           : asio::steady_timer::time_point::max());
      co_await gather_->ready.async_wait(kNoThrow);
      if (stopping_) co_return;
    }
    NodeReport report;
    if (gather_->report) {
      report = std::move(*gather_->report);
      gather_->report.reset();
      last_load_ = report.load;
      // A registration after a 404 tells the cost model as it stands now.
      registration_.prefill_model = report.prefill_model;
    } else {
      spdlog::debug("node agent: the engine is in a long step; heartbeat with the last load");
      report.load = *last_load_;
      report.prefill_model = registration_.prefill_model;
    }
    wire::HeartbeatRequest hb;
    hb.node_id = *node_id_;
    hb.node_token = node_token_;
    hb.load = report.load;
    hb.prefill_model = report.prefill_model;
    hb.draining = draining_;
    if (report.snapshot) {
      unacked_.clear();  // the snapshot includes every event drained with it
      hb.kv_snapshot = wire::KvEventBatchWire{event_sequence_, std::move(*report.snapshot), {}};
    } else if (report.overflowed) {
      need_snapshot_ = true;  // events were lost: the next heartbeat sends a snapshot
    } else if (!report.stored.empty() || !report.evicted.empty()) {
      unacked_.push_back({++event_sequence_, std::move(report.stored), std::move(report.evicted)});
    }
    hb.kv_events = unacked_;
    auto response =
        co_await client_.request(orchestrator_, http::Verb::post, wire::route::kHeartbeat,
                                 wire::encode(hb), milliseconds(heartbeat_interval_ms_ * 2 + 1000));
    if (stopping_) co_return;
    if (!response.isOk() || (response->status != 200 && response->status != 404)) {
      if (Clock::now() - last_warning > std::chrono::seconds(5)) {
        spdlog::warn("node agent: heartbeat failed: {}",
                     response.isOk() ? "HTTP " + std::to_string(response->status)
                                     : response.status().toString());
        last_warning = Clock::now();
      }
      if (report.snapshot) need_snapshot_ = true;
    } else if (response->status == 404) {
      spdlog::warn("node agent: the orchestrator no longer knows node {}; registering again",
                   *node_id_);
      node_id_.reset();
      asio::post(engine_, [&work = work_] { work.forgotten(); });
      continue;
    } else {
      unacked_.clear();
      if (report.snapshot) need_snapshot_ = false;
      auto answer = wire::decode<wire::HeartbeatResponse>(response->body);
      if (answer.isOk() && answer->resync) need_snapshot_ = true;
    }
    if (draining_ && left_) co_return;
    co_await sleep(milliseconds(heartbeat_interval_ms_));
  }
}

}  // namespace kvferry::agent
