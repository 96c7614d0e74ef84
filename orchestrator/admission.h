// Admission control for the OpenAI endpoints: at most `max_inflight` requests in the serving
// pipeline, up to `max_queue` more waiting for a slot in arrival order (FIFO), each for at most
// `queue_timeout`. A request that finds the queue full, or waits too long, is refused (the
// server answers 429 with Retry-After).
//
// Owner: the io_context's thread (no locks). acquire() suspends the calling coroutine while it
// waits; the slot it returns is released by its destructor and handed straight to the oldest
// waiter.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>

#include "common/http.h"

namespace kvferry::orchestrator {

class Admission {
 public:
  Admission(boost::asio::io_context& io, uint32_t max_inflight, uint32_t max_queue,
            std::chrono::milliseconds queue_timeout)
      : io_(io),
        max_inflight_(max_inflight),
        max_queue_(max_queue),
        queue_timeout_(queue_timeout) {}
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
  http::Task<Outcome> acquire();
  // Shutdown: the waiters and every later acquire() are refused with kClosed. Slots already
  // held stay valid.
  void close();

  uint32_t inflight() const { return inflight_; }
  size_t queued() const { return waiters_.size(); }

 private:
  struct Waiter {
    explicit Waiter(boost::asio::io_context& io) : timer(io) {}
    boost::asio::steady_timer timer;
    bool granted = false;
  };

  void releaseSlot();

  boost::asio::io_context& io_;
  const uint32_t max_inflight_;
  const uint32_t max_queue_;
  const std::chrono::milliseconds queue_timeout_;
  uint32_t inflight_ = 0;
  bool closed_ = false;
  std::deque<std::shared_ptr<Waiter>> waiters_;
};

}  // namespace kvferry::orchestrator
