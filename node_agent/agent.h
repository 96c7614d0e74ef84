// The node agent (DESIGN.md §1, §3): registers its KV pools with the transfer engine, registers
// with the orchestrator, serves the control API of docs/control_plane.md, runs the engine's
// continuous batching loop and publishes KV events in its heartbeats. docs/node_agent.md maps
// its parts; this class wires them and owns the threads and the teardown order.
//
// Parts (each header says what it owns):
//   io thread:      ControlApi (control_api.h), Membership (membership.h)
//   engine thread:  EngineWorkImpl (engine_work_impl.h) routes the control calls to
//                   BatchLoop (batch_loop.h), kv_transfer::KvSender (kv_transfer/kv_sender.h)
//                   and kv_transfer::KvReceiver (kv_transfer/kv_receiver.h), which share the
//                   PrefillRunner (prefill_runner.h); the receiver hands a landed lease to the
//                   batch loop through a callback, so no part calls back into the one using it.
//
// Threads:
//   io thread (the caller's io_context): the control API, registration and heartbeats;
//   engine thread ("kvf-engine"): owns the Engine and every sequence, lease and pending prefill;
//     BatchLoop::run is its body: it runs what other threads post to it between decode steps,
//     and never blocks on the network or sleeps;
//   transfer thread ("kvf-transfer"): polls the transport's completions and immediates and
//     posts them to the engine thread;
//   connect threads ("kvf-connect", kv_transfer/peer_connector.h): Transport::connect, whose
//     results are posted to the engine thread.
// Data crosses threads only through asio::post onto the engine thread's queue and through
// per-request concurrent channels back to the io thread (channels.h), with no locks. The
// documented exceptions are single-purpose atomics, each written by one side: Stream::cancelled
// and StopFlag (the io thread raises, the engine thread reads between prefill chunks and decode
// steps), PrefillBacklog (the io thread adds, the engine thread subtracts), and the flag that
// stops the threads.
//
// Teardown (the destructor): the engine thread stops and is joined, then the transfer thread,
// then the connect threads (a connect in progress is waited for: at most the connect timeout ×
// (retries + 1) plus backoff); then the parts; then the transport, which closes its connections
// and registrations; then the Engine, whose pools the transport had registered.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "config/config.h"

namespace kvferry::engine {
class Engine;
}
namespace kvferry::rdma {
class Transport;
}

namespace kvferry::agent {

// What the orchestrator compares at registration to admit an agent to the cluster
// (model/cluster_identity.h): hex texts of the model fingerprint, the tokenizer hash and the
// block-hash seed's public id.
struct ModelIdentity {
  std::string model_fingerprint;
  std::string tokenizer_hash;
  std::string hash_seed_id;
  std::string device = "cpu";  // reported at registration: "cpu" or the GPU's name and index
  uint64_t device_memory_bytes = 0;
};

class NodeAgent {
 public:
  // Takes the model runtime and the transfer engine its creator built from the config (main()
  // does, with loadModel() and rdma::makeTransport(); a test passes a small engine and a
  // loopback or fault-injecting transport), registers the engine's KV pools with the transport
  // and binds the control API; nothing runs yet.
  static Result<std::unique_ptr<NodeAgent>> create(const config::NodeAgentConfig& config,
                                                   boost::asio::io_context& io,
                                                   std::unique_ptr<engine::Engine> engine,
                                                   std::unique_ptr<rdma::Transport> transport,
                                                   ModelIdentity identity);
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
