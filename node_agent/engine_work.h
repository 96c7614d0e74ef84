// The engine thread's side of the control plane, as the io thread's parts (ControlApi,
// Membership, the agent's drain) see it: every call runs ON THE ENGINE THREAD, posted there with
// onEngine() or asio::post; its answer comes back through the channel it was given
// (channels.h). EngineWorkImpl (engine_work_impl.h) routes each call to the part that serves it.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "common/control_wire.h"
#include "common/http.h"
#include "node_agent/channels.h"

namespace kvferry::agent {

// Prompt tokens and requests handed to the engine thread whose prefill has not started: the
// queued work the scheduler sees in heartbeats. The io thread adds when it posts a prefill or
// generate, the engine thread removes when it takes one up; only these counters, nothing else.
struct PrefillBacklog {
  std::atomic<uint64_t> tokens{0};
  std::atomic<uint32_t> requests{0};

  void add(uint64_t prompt_tokens) {
    tokens += prompt_tokens;
    ++requests;
  }
  void remove(uint64_t prompt_tokens) {
    tokens -= prompt_tokens;
    --requests;
  }
};

// What a heartbeat carries, gathered on the engine thread: load, the prefill cost model, and the
// prefix index's changes since the last report (or, for a snapshot, every cached block hash).
struct NodeReport {
  wire::Load load;
  wire::PrefillModel prefill_model;
  std::vector<uint64_t> stored;
  std::vector<uint64_t> evicted;
  bool overflowed = false;  // events were lost: the next report must be a snapshot
  std::optional<std::vector<uint64_t>> snapshot;
};

class EngineWork {
 public:
  virtual ~EngineWork() = default;

  // /agent/reserve: a lease on blocks for a prompt another agent prefills.
  virtual Reply reserve(const wire::ReserveRequest& request) = 0;
  // /agent/prefill: computes and sends the KV; `reply` gets exactly one Reply, maybe later
  // (after the peer is connected and every write completed). `stop` stops the compute.
  virtual void prefill(wire::PrefillRequest request, std::shared_ptr<ReplyChannel> reply,
                       std::shared_ptr<const StopFlag> stop) = 0;
  // /agent/decode: decodes a lease once its KV has landed; lines go to `stream`.
  virtual void decode(wire::DecodeRequest request, std::shared_ptr<Stream> stream) = 0;
  // /agent/generate: prefill and decode here.
  virtual void generate(wire::GenerateRequest request, std::shared_ptr<Stream> stream,
                        std::shared_ptr<const StopFlag> stop) = 0;
  // /agent/release: ends a lease (idempotent); `writer_done`: no write into it can land any more.
  virtual void release(uint64_t lease_id, bool writer_done) = 0;
  // /agent/cancel: ends every lease, sequence and waiting prefill of the request; work of it not
  // yet run is refused when it runs.
  virtual void cancel(uint64_t request_id) = 0;
  // The orchestrator no longer knows this node (it restarted, or judged the node dead): no request
  // it serves counts on a lease taken before, so every lease ends now (its blocks quarantined
  // while writes into them may still land) instead of holding them until it expires.
  virtual void forgotten() = 0;
  // No lease, sequence or prefill in progress (the drain waits for this).
  virtual bool idle() const = 0;
  virtual NodeReport report(bool snapshot) = 0;
};

// Runs fn(channel) on `engine` and awaits the one Reply that fn (or what it starts) sends, on
// the calling coroutine's executor `io`. 503 when the engine thread stops first.
template <typename Fn>
http::Task<Reply> onEngine(boost::asio::any_io_executor io, boost::asio::any_io_executor engine,
                           Fn fn) {
  auto channel = std::make_shared<ReplyChannel>(std::move(io), 1);
  boost::asio::post(engine, [channel, fn = std::move(fn)]() mutable { fn(channel); });
  auto [ec, reply] =
      co_await channel->async_receive(boost::asio::as_tuple(boost::asio::use_awaitable));
  if (ec) co_return errorReply(503, "the agent is stopping");
  co_return reply;
}

}  // namespace kvferry::agent
