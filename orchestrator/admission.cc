#include "orchestrator/admission.h"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/coroutine_rules.h"

namespace kvferry::orchestrator {

bool Admission::take(std::vector<NodeRegistry::KvRoom>& room, uint64_t blocks) {
  const bool could_fit = std::any_of(room.begin(), room.end(),
                                     [blocks](const auto& node) { return node.total >= blocks; });
  if (!could_fit) return true;  // nothing to wait for: the request flow answers it
  for (NodeRegistry::KvRoom& node : room) {
    if (node.available >= blocks) {
      node.available -= blocks;
      return true;
    }
  }
  return false;
}

http::Task<Admission::Outcome> Admission::acquire(uint64_t kv_blocks, Clock::time_point deadline) {
  if (closed_) co_return Outcome{Slot(), Refusal::kClosed};
  if (waiters_.empty() && room_waiters_.empty() && inflight_ < max_inflight_) {
    std::vector<NodeRegistry::KvRoom> room = room_();
    if (take(room, kv_blocks)) {
      ++inflight_;
      co_return Outcome{Slot(this), Refusal::kNone};
    }
  }
  if (waiters_.size() >= max_queue_) co_return Outcome{Slot(), Refusal::kQueueFull};
  auto waiter = std::make_shared<Waiter>(io_, kv_blocks);
  waiters_.push_back(waiter);
  const bool granted = co_await wait(waiter, waiters_, deadline);
  if (granted) co_return Outcome{Slot(this), Refusal::kNone};  // pump() counted it
  co_return Outcome{Slot(), closed_ ? Refusal::kClosed : Refusal::kQueueTimeout};
}

http::Task<Admission::Refusal> Admission::waitForRoom(uint64_t kv_blocks,
                                                      Clock::time_point deadline) {
  if (closed_) co_return Refusal::kClosed;
  auto waiter = std::make_shared<Waiter>(io_, kv_blocks);
  room_waiters_.push_back(waiter);
  const bool granted = co_await wait(waiter, room_waiters_, deadline);
  if (granted) co_return Refusal::kNone;
  co_return closed_ ? Refusal::kClosed : Refusal::kQueueTimeout;
}

http::Task<bool> Admission::wait(std::shared_ptr<Waiter> waiter, Waiters& list,
                                 Clock::time_point deadline) {
  waiter->timer.expires_at(deadline);
  // Woken by pump() (granted, timer cancelled), close() (cancelled) or the deadline.
  auto [ec] = co_await waiter->timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  (void)ec;
  if (waiter->granted) co_return true;
  std::erase(list, waiter);
  // It may have held back the ones behind it.
  pump();
  co_return false;
}

void Admission::pump() {
  if (closed_ || (waiters_.empty() && room_waiters_.empty())) return;
  std::vector<NodeRegistry::KvRoom> room = room_();
  while (!room_waiters_.empty()) {
    std::shared_ptr<Waiter>& next = room_waiters_.front();
    if (!take(room, next->kv_blocks)) return;  // the ones behind it wait too
    next->granted = true;
    next->timer.cancel();
    room_waiters_.pop_front();
  }
  while (!waiters_.empty() && inflight_ < max_inflight_) {
    std::shared_ptr<Waiter>& next = waiters_.front();
    if (!take(room, next->kv_blocks)) return;
    ++inflight_;
    next->granted = true;
    next->timer.cancel();
    waiters_.pop_front();
  }
}

void Admission::capacityChanged() { pump(); }

void Admission::close() {
  closed_ = true;
  for (Waiters* list : {&waiters_, &room_waiters_}) {
    for (const std::shared_ptr<Waiter>& waiter : *list) waiter->timer.cancel();
    list->clear();
  }
}

void Admission::releaseSlot() {
  --inflight_;
  pump();
}

}  // namespace kvferry::orchestrator
