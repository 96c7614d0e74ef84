// Admission control for the OpenAI endpoints (and TokenBucket, the registrations' rate limit): at
// most `max_inflight` requests in the serving pipeline, and only while a decode-capable node has
// the KV room a request needs to start (its prompt's blocks). A request that cannot start now waits
// in a bounded queue (`max_queue`, arrival order) until a slot and room come free, or until its
// deadline; only a full queue is refused at once. The server answers a refusal with 429 and
// Retry-After.
//
// KV room is what NodeRegistry::decodeKvRoom() estimates from the agents' heartbeats and the
// orchestrator's own reservations; an agent may still find less (the estimate lags), and an
// admitted request that meets a full node waits again, keeping its slot (waitForRoom). Waiters
// are served in arrival order, those keeping a slot first: a request that needs more blocks
// than are free holds back the ones behind it (as vLLM's scheduler does), so a long prompt is
// not starved by a stream of short ones.
//
// Owner: the io_context's thread (no locks). acquire() and waitForRoom() suspend the calling
// coroutine while it waits; the slot acquire() returns is released by its destructor.
// capacityChanged() must be called when room may have come free (a heartbeat, a registration,
// a request's end).
#pragma once

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "common/http.h"
#include "orchestrator/registry.h"

namespace kvferry::orchestrator {

class Admission {
 public:
  // The KV room of each decode-capable node now (NodeRegistry::decodeKvRoom).
  using RoomFn = std::function<std::vector<NodeRegistry::KvRoom>()>;

  Admission(boost::asio::io_context& io, uint32_t max_inflight, uint32_t max_queue, RoomFn room)
      : io_(io), max_inflight_(max_inflight), max_queue_(max_queue), room_(std::move(room)) {}
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

  // Move-only; empty (false) when admission was refused. Releasing an empty slot does nothing.
  class Slot {
   public:
    Slot() = default;
    explicit Slot(Admission* owner) : owner_(owner) {}
    Slot(Slot&& other) noexcept : owner_(std::exchange(other.owner_, nullptr)) {}
    Slot& operator=(Slot&& other) noexcept {
      if (this != &other) {
        release();
        owner_ = std::exchange(other.owner_, nullptr);
      }
      return *this;
    }
    ~Slot() { release(); }
    explicit operator bool() const { return owner_ != nullptr; }
    void release() {
      if (owner_ != nullptr) std::exchange(owner_, nullptr)->releaseSlot();
    }

   private:
    Admission* owner_ = nullptr;
  };

  enum class Refusal { kNone, kQueueFull, kQueueTimeout, kClosed };
  struct Outcome {
    Slot slot;
    Refusal refusal = Refusal::kNone;
  };
  // A slot for a request whose start needs `kv_blocks` blocks on one decode node; waits until
  // `deadline` at most. A request that no node could ever hold, or one with no decode node to go
  // to, is let through (the request flow answers it).
  http::Task<Outcome> acquire(uint64_t kv_blocks, Clock::time_point deadline);
  // An admitted request (it keeps its slot) that found no node with room: waits until room may
  // have come free for `kv_blocks` (a later capacityChanged() finds it fits) or `deadline`.
  // kNone: look again; kQueueTimeout or kClosed. It never returns at once, so a request whose
  // estimate disagrees with the nodes' answers waits for news instead of spinning.
  http::Task<Refusal> waitForRoom(uint64_t kv_blocks, Clock::time_point deadline);
  // Room may have come free: waiters that fit now go on, in order.
  void capacityChanged();
  // Shutdown: the waiters and every later acquire() are refused with kClosed. Slots already
  // held stay valid.
  void close();

  uint32_t inflight() const { return inflight_; }
  size_t queued() const { return waiters_.size() + room_waiters_.size(); }

 private:
  struct Waiter {
    Waiter(boost::asio::io_context& io, uint64_t blocks) : timer(io), kv_blocks(blocks) {}
    boost::asio::steady_timer timer;
    uint64_t kv_blocks;
    bool granted = false;
  };
  using Waiters = std::deque<std::shared_ptr<Waiter>>;

  // Wakes the waiters that can go on now: first those that keep a slot, then the queue while a
  // slot is free, each in order and each only if the room left after the ones before fits it.
  void pump();
  // Whether `blocks` fit a node in `room` (the first with enough, taking them from it), or can
  // never fit one (no node, or more than any node holds): nothing to wait for then.
  static bool take(std::vector<NodeRegistry::KvRoom>& room, uint64_t blocks);
  // Suspends until `waiter` is granted or its deadline passes; true when granted.
  http::Task<bool> wait(std::shared_ptr<Waiter> waiter, Waiters& list, Clock::time_point deadline);
  void releaseSlot();

  boost::asio::io_context& io_;
  const uint32_t max_inflight_;
  const uint32_t max_queue_;
  const RoomFn room_;
  uint32_t inflight_ = 0;
  bool closed_ = false;
  Waiters waiters_;       // queued for a slot
  Waiters room_waiters_;  // holding a slot, waiting for KV room
};

// A rate limit: take() succeeds at most `per_s` times a second on average and at most `per_s`
// times in one burst (the bucket starts full). Owner: one thread (no locks).
class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;
  explicit TokenBucket(double per_s) : per_s_(per_s), tokens_(per_s) {}
  // One token, if there is one at `now` (times must not go backwards).
  bool take(Clock::time_point now) {
    if (last_ != Clock::time_point{}) {
      tokens_ =
          std::min(per_s_, tokens_ + per_s_ * std::chrono::duration<double>(now - last_).count());
    }
    last_ = now;
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }

 private:
  double per_s_;
  double tokens_;
  Clock::time_point last_{};
};

}  // namespace kvferry::orchestrator
