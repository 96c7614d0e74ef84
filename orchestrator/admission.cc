#include "orchestrator/admission.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/coroutine_rules.h"

namespace kvferry::orchestrator {

http::Task<Admission::Outcome> Admission::acquire() {
  if (closed_) co_return Outcome{Slot(), Refusal::kClosed};
  if (inflight_ < max_inflight_ && waiters_.empty()) {
    ++inflight_;
    co_return Outcome{Slot(this), Refusal::kNone};
  }
  if (waiters_.size() >= max_queue_) co_return Outcome{Slot(), Refusal::kQueueFull};
  auto waiter = std::make_shared<Waiter>(io_);
  waiters_.push_back(waiter);
  waiter->timer.expires_after(queue_timeout_);
  // Woken by releaseSlot() (granted, timer cancelled) or by the timeout.
  auto [ec] = co_await waiter->timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  (void)ec;
  if (waiter->granted) co_return Outcome{Slot(this), Refusal::kNone};
  std::erase(waiters_, waiter);
  co_return Outcome{Slot(), closed_ ? Refusal::kClosed : Refusal::kQueueTimeout};
}

void Admission::close() {
  closed_ = true;
  for (const std::shared_ptr<Waiter>& waiter : waiters_) waiter->timer.cancel();
  waiters_.clear();
}

void Admission::releaseSlot() {
  // The slot passes to the oldest waiter still waiting; inflight_ stays the same then.
  if (!waiters_.empty()) {
    std::shared_ptr<Waiter> next = std::move(waiters_.front());
    waiters_.pop_front();
    next->granted = true;
    next->timer.cancel();
    return;
  }
  --inflight_;
}

}  // namespace kvferry::orchestrator
