// The node agent (DESIGN.md §1, §3): loads the model, registers its KV pools with the transfer
// engine, registers with the orchestrator, serves the control API of docs/control_plane.md, runs
// the engine's continuous batching loop and publishes KV events in its heartbeats.
//
// Threads:
//   io thread (the caller's io_context): the control API, registration and heartbeats;
//   engine thread: owns the Engine and every sequence, lease and stream state; it runs the tasks
//     the io thread posts to it between decode steps;
//   transfer thread: polls the transport's completions and immediates and posts them to the
//     engine thread.
// Data crosses threads only through asio::post onto the engine thread's queue and through
// per-request concurrent channels back to the io thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>

#include "common/status.h"
#include "config/config.h"

namespace kvferry::agent {

class NodeAgent {
 public:
  // Loads the model and the transfer engine and binds the control API; nothing runs yet.
  static Result<std::unique_ptr<NodeAgent>> create(const config::NodeAgentConfig& config,
                                                   boost::asio::io_context& io);
  virtual ~NodeAgent() = default;

  // Starts the engine and transfer threads, the control API and registration (which retries
  // until register_timeout_ms; failing that, onFatal is called).
  virtual void start() = 0;
  // Drains (new work is refused, running requests finish within drain_timeout_ms), leaves the
  // cluster and stops; `done` runs on the io thread when everything has stopped.
  virtual void shutdown(std::function<void()> done) = 0;
  // The bound control API port.
  virtual uint16_t controlPort() const = 0;
  // Called on the io thread when the agent cannot go on (e.g. the orchestrator refused it).
  virtual void onFatal(std::function<void(const Status&)> handler) = 0;
};

}  // namespace kvferry::agent
