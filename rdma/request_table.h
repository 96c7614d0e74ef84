// The in-flight batches of one transport: a fixed array of queue_depth slots, each named on the
// wire by a request id (slot index + generation, so a late answer for a recycled slot is
// recognised and dropped), with the deadline and the peer every backend needs to fail batches.
// Thread-safe; `Payload` is the backend's per-batch state (work requests, gather lists, …).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "common/status.h"
#include "rdma/event_queue.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

template <typename Payload>
class RequestTable {
 public:
  using Clock = std::chrono::steady_clock;

  struct Slot {
    bool in_use = false;
    uint32_t generation = 0;
    uint64_t cookie = 0;
    PeerId peer = 0;
    Clock::time_point deadline;
    Payload payload;
  };

  // `completions` must outlive the table; its tryAcquire() bounds how many slots are taken.
  explicit RequestTable(CompletionQueue& completions, size_t depth)
      : completions_(completions), slots_(depth) {
    free_.reserve(depth);
    for (size_t i = depth; i-- > 0;) free_.push_back(static_cast<uint32_t>(i));
  }

  // Takes a slot for a new batch, or RESOURCE_EXHAUSTED when queue_depth batches are out. The
  // slot is the caller's to fill until publish() or giveBack().
  Result<Slot*> acquire() {
    if (!completions_.tryAcquire()) {
      return resourceExhausted("queue depth " + std::to_string(slots_.size()) +
                               " reached; poll completions first");
    }
    std::lock_guard lock(mu_);
    Slot* slot = &slots_[free_.back()];  // never empty: there are as many slots as the depth
    free_.pop_back();
    return slot;
  }

  // Returns an unpublished slot (the batch was refused before anything was sent). Its payload
  // is released here: a refusal part-way through checkBatch() leaves the regions of the ops
  // checked so far pinned, and a pin kept on the free list would stall deregisterRegion().
  Status giveBack(Slot* slot, Status why) {
    slot->payload.release();
    {
      std::lock_guard lock(mu_);
      free_.push_back(indexOf(*slot));
    }
    completions_.release();
    return why;
  }

  uint64_t idOf(const Slot& slot) const {
    return (static_cast<uint64_t>(slot.generation) << 32) | indexOf(slot);
  }

  // Makes the batch visible to complete()/failPeer()/the deadline sweep.
  void publish(Slot* slot, uint64_t cookie, PeerId peer, std::chrono::milliseconds timeout) {
    std::lock_guard lock(mu_);
    slot->in_use = true;
    slot->cookie = cookie;
    slot->peer = peer;
    slot->deadline = Clock::now() + timeout;
  }

  // Completes the batch `id` unless it already completed; false if no such batch is in flight.
  bool complete(uint64_t id, Status status) {
    std::lock_guard lock(mu_);
    Slot* slot = find(id);
    if (slot == nullptr) return false;
    finish(*slot, std::move(status));
    return true;
  }

  // Runs fn(Slot&) under the table's lock if batch `id` is in flight; fn returns an optional
  // Status: a value completes the batch with it. Returns false for an unknown id.
  template <typename Fn>
  bool update(uint64_t id, Fn&& fn) {
    std::lock_guard lock(mu_);
    Slot* slot = find(id);
    if (slot == nullptr) return false;
    std::optional<Status> done = fn(*slot);
    if (done) finish(*slot, std::move(*done));
    return true;
  }

  // Completes every in-flight batch of `peer` with `reason`.
  void failPeer(PeerId peer, const Status& reason) {
    std::lock_guard lock(mu_);
    for (Slot& slot : slots_) {
      if (slot.in_use && slot.peer == peer) finish(slot, reason);
    }
  }

  // Peers with a batch past its deadline (each once).
  std::vector<PeerId> latePeers() {
    std::vector<PeerId> late;
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    for (const Slot& slot : slots_) {
      if (slot.in_use && slot.deadline <= now &&
          std::find(late.begin(), late.end(), slot.peer) == late.end()) {
        late.push_back(slot.peer);
      }
    }
    return late;
  }

 private:
  uint32_t indexOf(const Slot& slot) const { return static_cast<uint32_t>(&slot - slots_.data()); }

  Slot* find(uint64_t id) {
    const uint64_t index = id & 0xffffffffu;
    if (index >= slots_.size()) return nullptr;
    Slot& slot = slots_[index];
    if (!slot.in_use || slot.generation != (id >> 32)) return nullptr;
    return &slot;
  }

  // mu_ held.
  void finish(Slot& slot, Status status) {
    completions_.push(Completion{slot.cookie, std::move(status)});
    slot.in_use = false;
    ++slot.generation;
    slot.payload.release();  // drops pins; keeps capacity
    free_.push_back(indexOf(slot));
  }

  CompletionQueue& completions_;
  std::mutex mu_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
};

}  // namespace kvferry::rdma
