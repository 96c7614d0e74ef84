// The orchestrator's HTTP server (DESIGN.md §2–§3): the OpenAI API for clients, the registry
// API for node agents, health and introspection.
//
//   POST /v1/chat/completions, POST /v1/completions   OpenAI API, streamed (SSE) or not
//   GET  /v1/models                                    the one model served
//   GET  /health                                       200 when a live node can prefill and one
//                                                      can decode, else 503 saying what is missing
//   GET  /v1/nodes                                     the registry, one JSON object per node
//   GET  /metrics                                      Prometheus text format (metrics.h)
//   POST /v1/agents/register | heartbeat | leave       docs/control_plane.md
//
// Threading: everything runs on the io_context passed to create(), which one thread runs.
// Lifetime: create() → listen() → start() → (run the io_context) → shutdown() → stop running the
// io_context → destroy this object → destroy the io_context. Request coroutines still suspended
// at that point keep the server's state alive until the io_context destroys them.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/http.h"
#include "common/status.h"
#include "config/config.h"

namespace kvferry::orchestrator {

class OrchestratorServer {
 public:
  // Loads config.model.path (tokenizer, chat template, identity) and the scheduling policy.
  // INVALID_ARGUMENT for a missing or unreadable model, a bad hash seed or an unknown policy.
  static Result<std::unique_ptr<OrchestratorServer>> create(boost::asio::io_context& io,
                                                            config::OrchestratorConfig config);
  ~OrchestratorServer();
  OrchestratorServer(const OrchestratorServer&) = delete;
  OrchestratorServer& operator=(const OrchestratorServer&) = delete;

  // Binds config.listen_address (port 0 picks a free port; port() tells which).
  Status listen();
  uint16_t port() const;
  // Starts accepting and the heartbeat-expiry timer (call on or before running the io_context).
  void start();
  // On the io_context's thread: refuses new OpenAI requests (503) and the admission queue, waits
  // up to `grace` for the requests in flight, then closes every connection and stops the timer.
  http::Task<void> shutdown(std::chrono::milliseconds grace);

  const std::string& modelName() const;
  std::string_view policyName() const;

  class Impl;

 private:
  explicit OrchestratorServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

  std::shared_ptr<Impl> impl_;
};

}  // namespace kvferry::orchestrator
