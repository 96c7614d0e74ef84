// The queues between a transport's progress thread and its users: completions (with the
// queue-depth accounting every backend shares) and received immediates.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <span>

#include "rdma/transport.h"

namespace kvferry::rdma {

// A multi-producer, multi-consumer queue whose pop can wait a bounded time for the first item.
template <typename T>
class EventQueue {
 public:
  void push(T item) {
    {
      std::lock_guard lock(mu_);
      items_.push_back(std::move(item));
    }
    cv_.notify_one();
  }

  size_t pop(std::span<T> out, std::chrono::microseconds wait) {
    if (out.empty()) return 0;
    std::unique_lock lock(mu_);
    if (items_.empty() && wait.count() > 0) {
      cv_.wait_for(lock, wait, [&] { return !items_.empty(); });
    }
    size_t n = 0;
    while (n < out.size() && !items_.empty()) {
      out[n++] = std::move(items_.front());
      items_.pop_front();
    }
    return n;
  }

  size_t size() const {
    std::lock_guard lock(mu_);
    return items_.size();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
};

using ImmediateQueue = EventQueue<ImmediateEvent>;

// Completions, plus the bound on outstanding batches: a batch holds one of `depth` slots from
// a successful tryAcquire() until its completion is popped.
class CompletionQueue {
 public:
  explicit CompletionQueue(size_t depth) : depth_(depth) {}

  bool tryAcquire() {
    std::lock_guard lock(mu_);
    if (outstanding_ >= depth_) return false;
    ++outstanding_;
    return true;
  }
  // Gives back a slot whose batch was never posted.
  void release() {
    std::lock_guard lock(mu_);
    --outstanding_;
  }
  size_t outstanding() const {
    std::lock_guard lock(mu_);
    return outstanding_;
  }

  void push(Completion c) { queue_.push(std::move(c)); }
  size_t pop(std::span<Completion> out, std::chrono::microseconds wait) {
    size_t n = queue_.pop(out, wait);
    if (n > 0) {
      std::lock_guard lock(mu_);
      outstanding_ -= n;
    }
    return n;
  }

 private:
  EventQueue<Completion> queue_;
  mutable std::mutex mu_;
  size_t depth_;
  size_t outstanding_ = 0;
};

}  // namespace kvferry::rdma
