// The shared-memory doorbells of cuda_ipc (rdma/doorbell_ring.h), on the CPU: delivery in order
// and naming the sender, the endpoint id as the admission proof, a full ring pushing back, each
// side seeing the other's end, and a real second process handing its ring over.
#include "rdma/doorbell_ring.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <thread>
#include <vector>

namespace kvferry::rdma {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kReceiverId = 0x1234567890abcdefULL;

// Polls `receiver` until `count` doorbells arrived or 5 s passed.
std::vector<ImmediateEvent> drain(DoorbellReceiver& receiver, size_t count) {
  std::vector<ImmediateEvent> got;
  std::array<ImmediateEvent, 64> batch;
  const auto give_up = Clock::now() + 5s;
  while (got.size() < count && Clock::now() < give_up) {
    const size_t n = receiver.poll(batch);
    got.insert(got.end(), batch.begin(), batch.begin() + n);
    if (n == 0) std::this_thread::sleep_for(100us);
  }
  return got;
}

// Polls `receiver` until it has dropped every sender or 5 s passed; the senders left.
size_t pollUntilNoSenders(DoorbellReceiver& receiver) {
  std::array<ImmediateEvent, 4> out;
  const auto give_up = Clock::now() + 5s;
  while (receiver.senders() > 0 && Clock::now() < give_up) {
    receiver.poll(out);
    std::this_thread::sleep_for(1ms);
  }
  return receiver.senders();
}

// Keeps polling the receiver (which admits senders) while `connect` runs on this thread's side.
class Pump {
 public:
  explicit Pump(DoorbellReceiver& receiver)
      : thread_([this, &receiver] {
          std::array<ImmediateEvent, 64> sink;
          while (!stop_) {
            const size_t n = receiver.poll(sink);
            delivered_ += n;
            std::this_thread::sleep_for(100us);
          }
        }) {}
  ~Pump() {
    stop_ = true;
    thread_.join();
  }
  size_t delivered() const { return delivered_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<size_t> delivered_{0};
  std::thread thread_;
};

std::unique_ptr<DoorbellSender> connectWhilePumping(DoorbellReceiver& receiver, uint64_t id,
                                                    uint64_t sender_id) {
  Pump pump(receiver);
  Result<std::unique_ptr<DoorbellSender>> sender =
      DoorbellSender::connect(receiver.socketName(), id, sender_id, 2000ms);
  EXPECT_TRUE(sender.isOk()) << sender.status().toString();
  return sender.isOk() ? std::move(sender).value() : nullptr;
}

TEST(DoorbellRingTest, DoorbellsArriveInOrderNamingTheirSender) {
  auto receiver = DoorbellReceiver::listen(kReceiverId);
  ASSERT_TRUE(receiver.isOk()) << receiver.status().toString();
  auto a = connectWhilePumping(**receiver, kReceiverId, 11);
  auto b = connectWhilePumping(**receiver, kReceiverId, 22);
  ASSERT_TRUE(a && b);
  EXPECT_EQ((*receiver)->senders(), 2u);
  for (uint32_t i = 0; i < 1000; ++i) {
    ASSERT_TRUE(a->ring(i));
    ASSERT_TRUE(b->ring(100000 + i));
  }
  const std::vector<ImmediateEvent> got = drain(**receiver, 2000);
  ASSERT_EQ(got.size(), 2000u);
  uint32_t next_a = 0, next_b = 100000;
  for (const ImmediateEvent& e : got) {
    if (e.source_id == 11) {
      EXPECT_EQ(e.imm, next_a++);
    } else {
      EXPECT_EQ(e.source_id, 22u);
      EXPECT_EQ(e.imm, next_b++);
    }
  }
  EXPECT_EQ(next_a, 1000u);
  EXPECT_EQ(next_b, 101000u);
}

TEST(DoorbellRingTest, ASenderWithoutTheEndpointIdIsRefused) {
  auto receiver = DoorbellReceiver::listen(kReceiverId);
  ASSERT_TRUE(receiver.isOk());
  Pump pump(**receiver);
  Result<std::unique_ptr<DoorbellSender>> wrong =
      DoorbellSender::connect((*receiver)->socketName(), kReceiverId + 1, 7, 2000ms);
  EXPECT_EQ(wrong.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(wrong.status().message().find("refused"), std::string::npos)
      << wrong.status().toString();
  EXPECT_EQ(
      DoorbellSender::connect("kvferry-doorbell-nobody", kReceiverId, 7, 200ms).status().code(),
      StatusCode::kUnavailable);
}

TEST(DoorbellRingTest, GarbageOnTheSocketIsDroppedAndTheReceiverGoesOn) {
  auto receiver = DoorbellReceiver::listen(kReceiverId);
  ASSERT_TRUE(receiver.isOk());
  // A client that sends bytes without a ring (no descriptor) is closed, not admitted.
  const int raw = ::socket(AF_UNIX, SOCK_SEQPACKET, 0);
  ASSERT_GE(raw, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string name = (*receiver)->socketName();
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  ASSERT_EQ(::connect(raw, reinterpret_cast<sockaddr*>(&address),
                      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())),
            0);
  const char junk[40] = "not a hello";
  ASSERT_EQ(::send(raw, junk, sizeof(junk), 0), static_cast<ssize_t>(sizeof(junk)));
  drain(**receiver, 0);
  std::array<ImmediateEvent, 4> out;
  for (int i = 0; i < 20; ++i) (*receiver)->poll(out);
  char answer = 0;
  EXPECT_EQ(::recv(raw, &answer, 1, 0), 0) << "the receiver should have closed it";
  ::close(raw);
  EXPECT_EQ((*receiver)->senders(), 0u);
  auto good = connectWhilePumping(**receiver, kReceiverId, 5);
  ASSERT_TRUE(good);
  ASSERT_TRUE(good->ring(9));
  const auto got = drain(**receiver, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].imm, 9u);
}

TEST(DoorbellRingTest, AFullRingPushesBackUntilTheReceiverReads) {
  auto receiver = DoorbellReceiver::listen(kReceiverId);
  ASSERT_TRUE(receiver.isOk());
  auto sender = connectWhilePumping(**receiver, kReceiverId, 3);
  ASSERT_TRUE(sender);
  for (uint64_t i = 0; i < kDoorbellRingEntries; ++i) ASSERT_TRUE(sender->ring(1)) << i;
  EXPECT_FALSE(sender->ring(2));
  std::array<ImmediateEvent, 10> some;
  EXPECT_EQ((*receiver)->poll(some), 10u);
  EXPECT_TRUE(sender->ring(2));
  EXPECT_EQ(drain(**receiver, kDoorbellRingEntries - 9).size(), kDoorbellRingEntries - 9);
}

TEST(DoorbellRingTest, EachSideSeesTheOthersEnd) {
  auto receiver = DoorbellReceiver::listen(kReceiverId);
  ASSERT_TRUE(receiver.isOk());
  auto sender = connectWhilePumping(**receiver, kReceiverId, 3);
  ASSERT_TRUE(sender);
  EXPECT_TRUE(sender->receiverAlive());
  // Rung just before closing: still delivered, then the sender is dropped.
  ASSERT_TRUE(sender->ring(77));
  sender.reset();
  const auto got = drain(**receiver, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].imm, 77u);
  EXPECT_EQ(pollUntilNoSenders(**receiver), 0u);

  auto second = connectWhilePumping(**receiver, kReceiverId, 4);
  ASSERT_TRUE(second);
  receiver->reset();
  EXPECT_FALSE(second->receiverAlive());
}

// A second process makes the ring and rings through it: the memfd really crosses processes.
TEST(DoorbellRingTest, ASecondProcessHandsOverItsRing) {
  auto receiver = DoorbellReceiver::listen(kReceiverId);
  ASSERT_TRUE(receiver.isOk());
  const std::string name = (*receiver)->socketName();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto sender = DoorbellSender::connect(name, kReceiverId, 99, 5000ms);
    if (!sender.isOk()) ::_exit(1);
    for (uint32_t i = 0; i < 100; ++i) {
      while (!(*sender)->ring(i)) std::this_thread::sleep_for(1ms);
    }
    ::_exit(0);  // dies without a goodbye: the receiver still reads all 100, then drops it
  }
  const std::vector<ImmediateEvent> got = drain(**receiver, 100);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(got.size(), 100u);
  for (uint32_t i = 0; i < 100; ++i) {
    EXPECT_EQ(got[i].source_id, 99u);
    EXPECT_EQ(got[i].imm, i);
  }
  EXPECT_EQ(pollUntilNoSenders(**receiver), 0u);
}

}  // namespace
}  // namespace kvferry::rdma
