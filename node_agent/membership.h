// The agent's membership in the cluster (docs/control_plane.md, "Agent → orchestrator"):
// registration (retried until register_timeout_ms, again after a heartbeat's 404), heartbeats
// every heartbeat_interval_ms with load and the prefix index's KV events, and leaving. KV event
// batches are numbered per registration and resent until a heartbeat carrying them succeeds; a
// lost event (the engine's queue overflowed) or the orchestrator's resync asks for a full
// snapshot instead.
//
// Thread: the io thread owns it; the load and events are gathered on the engine thread
// (EngineWork::report, between two of its steps) and posted back. A heartbeat waits for them at
// most one interval: past it (the engine is in a long step, a big prefill chunk) it carries the
// last report's load again and no new events, so a busy node is never taken for a dead one; the
// report still on its way goes with the next heartbeat, so no event is lost.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/control_wire.h"
#include "common/http.h"
#include "config/config.h"
#include "node_agent/agent.h"
#include "node_agent/engine/model_runner.h"
#include "node_agent/engine_work.h"

namespace kvferry::agent {

// What an agent registers with (docs/control_plane.md): its control address (the configured
// host, or 127.0.0.1 when that is unspecified, with the bound port), its name (that address
// unless agent.name says), role, the model's identity, its KV layout and capacity, its transport.
wire::RegisterRequest registrationOf(const config::NodeAgentConfig& config,
                                     const ModelIdentity& identity, uint16_t control_port,
                                     const engine::KvGeometry& geometry,
                                     uint32_t max_sequence_tokens, std::string_view transport,
                                     std::string transport_blob);

class Membership {
 public:
  Membership(boost::asio::io_context& io, http::ClientPool& client,
             http::tcp::endpoint orchestrator, std::chrono::milliseconds register_timeout,
             EngineWork& work, boost::asio::any_io_executor engine);

  // Starts registering as `registration` says, then heartbeats. `on_fatal` runs (on the io
  // thread) when the orchestrator refuses this agent or the first registration times out.
  void start(wire::RegisterRequest registration, std::function<void(const Status&)> on_fatal);
  // Heartbeats say the agent is draining; they stop once it has left.
  void drain() { draining_ = true; }
  // Tells the orchestrator this node leaves (once; a no-op when it never registered).
  http::Task<void> leave();
  // Ends the heartbeat loop at once: a registration or heartbeat in flight is aborted, a wait cut
  // short. Returns when the loop has returned, so nothing of this Membership is left suspended in
  // the io_context and it may be destroyed before it (the agent is, at exit).
  http::Task<void> stop();
  std::optional<uint32_t> nodeId() const { return node_id_; }

 private:
  http::Task<void> heartbeatLoop();
  // Waits `delay` on wake_ (stop() cuts it short).
  http::Task<void> sleep(std::chrono::milliseconds delay);
  http::Task<Status> registerOnce();
  // Asks the engine thread for a report (EngineWork::report(snapshot)) into gather_.
  void startGather(bool snapshot);

  // The engine's report on its way to the next heartbeat. Shared with the gather in flight,
  // which may land after this Membership is gone.
  struct Gather {
    explicit Gather(boost::asio::io_context& io) : ready(io) {}
    boost::asio::steady_timer ready;  // cancelled when `report` lands
    std::optional<NodeReport> report;
    bool in_flight = false;
  };

  boost::asio::io_context& io_;
  http::ClientPool& client_;
  const http::tcp::endpoint orchestrator_;
  const std::chrono::milliseconds register_timeout_;
  EngineWork& work_;
  const boost::asio::any_io_executor engine_;
  wire::RegisterRequest registration_;
  std::function<void(const Status&)> on_fatal_;

  std::optional<uint32_t> node_id_;
  uint64_t node_token_ = 0;  // the registration's, sent with every heartbeat and the leave
  bool ever_registered_ = false;
  uint32_t heartbeat_interval_ms_ = 1000;
  uint64_t event_sequence_ = 0;
  std::vector<wire::KvEventBatchWire> unacked_;
  std::shared_ptr<Gather> gather_;
  std::optional<wire::Load> last_load_;  // the last report's: sent again while the engine is busy
  bool need_snapshot_ = true;
  bool draining_ = false;
  bool left_ = false;
  bool stopping_ = false;
  bool loop_running_ = false;
  boost::asio::steady_timer wake_;        // the loop's sleeps between tries and heartbeats
  boost::asio::steady_timer loop_ended_;  // cancelled when the loop returns (stop() waits on it)
};

}  // namespace kvferry::agent
