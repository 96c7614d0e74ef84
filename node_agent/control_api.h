// The agent's control API (docs/control_plane.md, "Orchestrator → agent"): the HTTP handlers of
// /agent/{reserve,prefill,decode,generate,release,cancel}, /health and /metrics. A handler checks
// role, drain and body, hands the work to the engine thread (EngineWork, through a post) and
// writes what comes back: one reply, or a stream of NDJSON lines.
//
// A cancel must reach a prefill that is computing, which holds the engine thread until its next
// chunk: each prefill and generate gets a StopFlag, kept here by request id while its handler
// runs, and /agent/cancel raises the request's flags before it posts the cancel itself.
//
// Thread: the io thread owns it and everything in it (handlers, the stop flags' index).
#pragma once

#include <prometheus/registry.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/control_auth.h"
#include "common/http.h"
#include "config/config.h"
#include "node_agent/channels.h"
#include "node_agent/engine_work.h"
#include "node_agent/metrics.h"

namespace kvferry::agent {

class ControlApi {
 public:
  // `engine` is the engine thread's executor, where `work` runs; `node_id` answers /health.
  ControlApi(boost::asio::io_context& io, config::NodeRole role, EngineWork& work,
             boost::asio::any_io_executor engine, PrefillBacklog& backlog, AgentMetrics& metrics,
             prometheus::Registry& registry, std::function<std::optional<uint32_t>()> node_id,
             std::shared_ptr<control_auth::Authenticator> auth);

  Status listen(std::string_view address) { return server_.listen(address); }
  uint16_t port() const { return server_.port(); }
  void start() { server_.start(); }
  void stop() { server_.stop(); }
  // From now on new work is refused with 503; decode streams of granted leases still run.
  void drain() { draining_ = true; }

  // Who may make a call: refused with 503 while draining (when `drain_refuses`: decode lets
  // granted work finish), with 400 on an agent of `wrong_role`, saying `why`.
  struct Admission {
    bool drain_refuses = false;
    std::optional<config::NodeRole> wrong_role;
    std::string_view why;
  };

 private:
  using Task = http::Task<void>;

  void routes();
  Task handleReserve(const http::Request& request, http::ResponseWriter& writer);
  Task handlePrefill(const http::Request& request, http::ResponseWriter& writer);
  Task handleDecode(const http::Request& request, http::ResponseWriter& writer);
  Task handleGenerate(const http::Request& request, http::ResponseWriter& writer);
  Task handleRelease(const http::Request& request, http::ResponseWriter& writer);
  Task handleCancel(const http::Request& request, http::ResponseWriter& writer);
  // /agent/release and /agent/cancel (`kind` says which): the id, then the call on the engine
  // thread; a cancel first raises the request's stop flags.
  Task handleHealth(const http::Request& request, http::ResponseWriter& writer);
  Task handleMetrics(const http::Request& request, http::ResponseWriter& writer);
  Task writeStream(std::shared_ptr<Stream> stream, http::ResponseWriter& writer,
                   AgentMetrics::Kind kind);
  // The call's body, or nullopt once the call has been answered (refused, or 400 for a body that
  // is not a T, naming the field). Counted under `kind` when answered here.
  template <typename T>
  http::Task<std::optional<T>> accept(const http::Request& request, http::ResponseWriter& writer,
                                      AgentMetrics::Kind kind, Admission admission);
  // Writes a whole-body reply and counts it under `kind`.
  Task answer(http::ResponseWriter& writer, AgentMetrics::Kind kind, const Reply& reply);
  // Runs fn(channel) on the engine thread and awaits its Reply.
  template <typename Fn>
  http::Task<Reply> onEngine(Fn fn) {
    return agent::onEngine(io_.get_executor(), engine_, std::move(fn));
  }
  void cancelStream(const std::shared_ptr<Stream>& stream);

  // The stop flag of a prefill or generate of `request_id`, indexed until forgetStop().
  using StopIndex = std::unordered_multimap<uint64_t, std::shared_ptr<StopFlag>>;
  StopIndex::iterator newStop(uint64_t request_id);
  void forgetStop(StopIndex::iterator it) { stops_.erase(it); }

  boost::asio::io_context& io_;
  const config::NodeRole role_;
  EngineWork& work_;
  const boost::asio::any_io_executor engine_;
  PrefillBacklog& backlog_;
  AgentMetrics& metrics_;
  prometheus::Registry& registry_;
  const std::function<std::optional<uint32_t>()> node_id_;
  const std::shared_ptr<control_auth::Authenticator> auth_;  // null: the control API is open
  http::Server server_;
  bool draining_ = false;
  StopIndex stops_;
};

}  // namespace kvferry::agent
