// Admission: slots, a bounded FIFO queue with deadlines, and KV room — a request that does not
// fit waits until room comes free (or its deadline), and only a full queue is refused at once.
#include "orchestrator/admission.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <vector>

#include "common/coroutine_rules.h"

namespace kvferry::orchestrator {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using Refusal = Admission::Refusal;

class AdmissionTest : public ::testing::Test {
 protected:
  template <typename T>
  using Task = http::Task<T>;

  // One decode node with `available` of `total` blocks unless a test changes room_.
  std::vector<NodeRegistry::KvRoom> room_ = {{10, 10}};
  asio::io_context io_;
  Admission admission_{io_, 2, 2, [this] { return room_; }};

  // A request's admission as it goes: refusal, and the slot while held.
  struct Ticket {
    bool done = false;
    Refusal refusal = Refusal::kNone;
    Admission::Slot slot;
  };
  // acquire() (or, `keeping_slot`, waitForRoom()) for `blocks`, run until it waits or ends.
  std::shared_ptr<Ticket> admit(uint64_t blocks, std::chrono::milliseconds within,
                                bool keeping_slot) {
    auto ticket = std::make_shared<Ticket>();
    asio::co_spawn(io_, take(ticket, blocks, Clock::now() + within, keeping_slot), asio::detached);
    settle();
    return ticket;
  }
  Task<void> take(std::shared_ptr<Ticket> ticket, uint64_t blocks, Clock::time_point deadline,
                  bool keeping_slot) {
    if (keeping_slot) {
      ticket->refusal = co_await admission_.waitForRoom(blocks, deadline);
    } else {
      Admission::Outcome outcome = co_await admission_.acquire(blocks, deadline);
      ticket->refusal = outcome.refusal;
      ticket->slot = std::move(outcome.slot);
    }
    ticket->done = true;
  }
  std::shared_ptr<Ticket> acquire(uint64_t blocks, std::chrono::milliseconds within = 10s) {
    return admit(blocks, within, false);
  }
  std::shared_ptr<Ticket> waitForRoom(uint64_t blocks, std::chrono::milliseconds within = 10s) {
    return admit(blocks, within, true);
  }
  // Runs what is ready (timers that are due included).
  void settle() {
    io_.restart();
    io_.poll();
  }
  void runFor(std::chrono::milliseconds time) {
    io_.restart();
    io_.run_for(time);
  }
};

TEST_F(AdmissionTest, ARequestThatFitsIsAdmittedAtOnce) {
  auto first = acquire(4);
  ASSERT_TRUE(first->done);
  EXPECT_TRUE(first->slot);
  EXPECT_EQ(admission_.inflight(), 1u);
}

TEST_F(AdmissionTest, ARequestWithoutRoomWaitsUntilRoomComesFree) {
  room_ = {{3, 10}};
  auto waiting = acquire(4);
  EXPECT_FALSE(waiting->done);
  EXPECT_EQ(admission_.queued(), 1u);
  admission_.capacityChanged();  // nothing changed
  settle();
  EXPECT_FALSE(waiting->done);
  room_ = {{3, 10}, {5, 10}};  // another node fits it
  admission_.capacityChanged();
  settle();
  ASSERT_TRUE(waiting->done);
  EXPECT_TRUE(waiting->slot);
  EXPECT_EQ(admission_.queued(), 0u);
}

TEST_F(AdmissionTest, WaitersGoInOrderAndALargeOneHoldsBackTheSmallOnesBehindIt) {
  room_ = {{2, 10}};
  auto large = acquire(8);
  auto small = acquire(1);  // would fit, but arrived later
  EXPECT_FALSE(large->done);
  EXPECT_FALSE(small->done);
  room_ = {{9, 10}};  // room for the large one, and the small one after it
  admission_.capacityChanged();
  settle();
  EXPECT_TRUE(large->done && large->slot);
  EXPECT_TRUE(small->done && small->slot);
}

TEST_F(AdmissionTest, OneRoundOfGrantsDoesNotPromiseTheSameBlocksTwice) {
  room_ = {{0, 10}};
  auto a = acquire(6);
  auto b = acquire(6);
  room_ = {{10, 10}};
  admission_.capacityChanged();
  settle();
  EXPECT_TRUE(a->done);
  EXPECT_FALSE(b->done);  // 6 + 6 > 10
}

TEST_F(AdmissionTest, OnlyAFullQueueIsRefusedAtOnce) {
  room_ = {{0, 10}};
  auto a = acquire(1);
  auto b = acquire(1);
  auto c = acquire(1);  // max_queue 2
  EXPECT_FALSE(a->done);
  EXPECT_FALSE(b->done);
  ASSERT_TRUE(c->done);
  EXPECT_EQ(c->refusal, Refusal::kQueueFull);
}

TEST_F(AdmissionTest, AWaiterGivesUpAtItsDeadline) {
  room_ = {{0, 10}};
  auto waiting = acquire(1, 20ms);
  runFor(200ms);
  ASSERT_TRUE(waiting->done);
  EXPECT_EQ(waiting->refusal, Refusal::kQueueTimeout);
  EXPECT_EQ(admission_.queued(), 0u);
}

TEST_F(AdmissionTest, NothingToWaitForIsLetThrough) {
  room_ = {};  // no decode node: the request flow answers 503
  EXPECT_TRUE(acquire(1)->slot);
  room_ = {{1, 4}};  // more than the node could ever hold: the flow answers that too
  EXPECT_TRUE(acquire(5)->slot);
}

TEST_F(AdmissionTest, ASlotFreedGoesToTheNextWaiterThatFits) {
  auto a = acquire(1);
  auto b = acquire(1);
  auto c = acquire(1);  // max_inflight 2
  EXPECT_FALSE(c->done);
  a->slot.release();
  settle();
  EXPECT_TRUE(c->done && c->slot);
  EXPECT_EQ(admission_.inflight(), 2u);
}

TEST_F(AdmissionTest, WaitingForRoomNeverReturnsAtOnceAndGoesOnWhenItFits) {
  auto room = waitForRoom(4);
  EXPECT_FALSE(room->done);  // even with room now: the caller saw none, so news must come first
  admission_.capacityChanged();
  settle();
  ASSERT_TRUE(room->done);
  EXPECT_EQ(room->refusal, Refusal::kNone);
  // Those keeping a slot go before the queue.
  room_ = {{0, 10}};
  auto queued = acquire(3);
  auto again = waitForRoom(3);
  room_ = {{4, 10}};
  admission_.capacityChanged();
  settle();
  EXPECT_TRUE(again->done);
  EXPECT_FALSE(queued->done);
  auto late = waitForRoom(3, 20ms);
  runFor(200ms);
  EXPECT_EQ(late->refusal, Refusal::kQueueTimeout);
}

TEST_F(AdmissionTest, ClosingRefusesTheWaitersAndLaterRequests) {
  room_ = {{0, 10}};
  auto waiting = acquire(1);
  auto room = waitForRoom(1);
  admission_.close();
  settle();
  EXPECT_EQ(waiting->refusal, Refusal::kClosed);
  EXPECT_EQ(room->refusal, Refusal::kClosed);
  EXPECT_EQ(acquire(1)->refusal, Refusal::kClosed);
}

// A burst of per_s, then one take per 1/per_s seconds; idle time refills to per_s, no more.
TEST(TokenBucketTest, BurstsUpToItsRateThenRefillsWithTime) {
  using Clock = TokenBucket::Clock;
  TokenBucket bucket(4);
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(bucket.take(t0)) << i;
  EXPECT_FALSE(bucket.take(t0));
  EXPECT_FALSE(bucket.take(t0 + 200ms));  // 0.8 of a token
  EXPECT_TRUE(bucket.take(t0 + 250ms));   // a whole one
  EXPECT_FALSE(bucket.take(t0 + 250ms));
  const Clock::time_point later = t0 + 1h;  // a long idle refills to the burst, not beyond
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(bucket.take(later)) << i;
  EXPECT_FALSE(bucket.take(later));
}

}  // namespace
}  // namespace kvferry::orchestrator
