// rdma/dial.h: the connect-with-deadline and retry-with-backoff both TCP-speaking backends use.
#include "rdma/dial.h"

#include <gtest/gtest.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <thread>
#include <vector>

#include "common/coroutine_rules.h"

namespace kvferry::rdma {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

// A backend's io_context on its own thread, as the transports run theirs.
class DialTest : public ::testing::Test {
 protected:
  DialTest() : thread_([this] { io_.run(); }) {}
  ~DialTest() override {
    work_.reset();
    thread_.join();
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::thread thread_;
};

// Sends one byte and waits for one back.
asio::awaitable<Status> pingPong(tcp::socket& socket, std::thread::id* ran_on) {
  *ran_on = std::this_thread::get_id();
  char byte = 'p';
  auto [sent, n] = co_await asio::async_write(socket, asio::buffer(&byte, 1), kNoThrow);
  if (sent) co_return unavailable("ping: " + sent.message());
  auto [got, m] = co_await asio::async_read(socket, asio::buffer(&byte, 1), kNoThrow);
  if (got) co_return unavailable("pong: " + got.message());
  co_return Status::ok();
}

TEST_F(DialTest, AHandshakeThatCompletesHandsTheConnectedSocketBack) {
  asio::io_context peer_io;
  tcp::acceptor listener(peer_io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::thread peer([&] {
    tcp::socket s = listener.accept();
    char byte = 0;
    asio::read(s, asio::buffer(&byte, 1));
    asio::write(s, asio::buffer(&byte, 1));
  });
  std::thread::id ran_on;
  bool set_up = false;
  const SocketSetup setup = [&](tcp::socket&, boost::system::error_code&) { set_up = true; };
  const Handshake handshake = [&](tcp::socket& s) { return pingPong(s, &ran_on); };
  Result<tcp::socket> socket =
      dialOnce(io_, listener.local_endpoint(), 2s, setup, handshake, "the peer");
  peer.join();
  ASSERT_TRUE(socket.isOk()) << socket.status().toString();
  EXPECT_TRUE(socket->is_open());
  EXPECT_TRUE(set_up);
  EXPECT_EQ(ran_on, thread_.get_id());  // on the backend's thread, not the caller's
}

TEST_F(DialTest, APeerThatNeverAnswersIsDeadlineExceededAfterTheTimeout) {
  asio::io_context peer_io;
  tcp::acceptor listener(peer_io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::thread::id ran_on;
  const Handshake handshake = [&](tcp::socket& s) { return pingPong(s, &ran_on); };
  const auto start = std::chrono::steady_clock::now();
  // The kernel completes the connect from its backlog; nobody ever answers the ping.
  Result<tcp::socket> socket =
      dialOnce(io_, listener.local_endpoint(), 200ms, nullptr, handshake, "the silent peer");
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(socket.isOk());
  EXPECT_EQ(socket.status().code(), StatusCode::kDeadlineExceeded) << socket.status().toString();
  EXPECT_EQ(socket.status().message(),
            "connect to the silent peer took longer than connect_timeout_ms=200");
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 5s);
}

TEST_F(DialTest, NothingListeningIsUnavailableNamingThePeer) {
  asio::io_context peer_io;
  tcp::acceptor closed(peer_io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const tcp::endpoint gone = closed.local_endpoint();
  closed.close();
  const Handshake never = [](tcp::socket&) -> asio::awaitable<Status> {
    co_return internalError("the handshake must not run");
  };
  Result<tcp::socket> socket = dialOnce(io_, gone, 2s, nullptr, never, "127.0.0.1:1");
  ASSERT_FALSE(socket.isOk());
  EXPECT_EQ(socket.status().code(), StatusCode::kUnavailable) << socket.status().toString();
  EXPECT_TRUE(socket.status().message().starts_with("connect 127.0.0.1:1: "));
}

TEST(RetryWithBackoffTest, RetriesTheConfiguredTimesWithDoublingWaits) {
  std::vector<std::chrono::steady_clock::time_point> at;
  const DialPolicy policy{1s, 3, 20ms};
  Status last = retryWithBackoff(
      policy, "test",
      [&] {
        at.push_back(std::chrono::steady_clock::now());
        return unavailable("down");
      },
      [](const Status&) { return true; });
  EXPECT_EQ(last.code(), StatusCode::kUnavailable);
  ASSERT_EQ(at.size(), 4u);  // the first attempt and three retries
  EXPECT_GE(at[1] - at[0], 20ms);
  EXPECT_GE(at[2] - at[1], 40ms);
  EXPECT_GE(at[3] - at[2], 80ms);
}

TEST(RetryWithBackoffTest, StopsAtSuccessAndAtAnErrorARetryCannotChange) {
  int calls = 0;
  Status ok = retryWithBackoff(
      DialPolicy{1s, 5, 1ms}, "test",
      [&] { return ++calls < 2 ? unavailable("down") : Status::ok(); },
      [](const Status&) { return true; });
  EXPECT_TRUE(ok.isOk());
  EXPECT_EQ(calls, 2);
  calls = 0;
  Status refused = retryWithBackoff(
      DialPolicy{1s, 5, 1ms}, "test",
      [&] {
        ++calls;
        return failedPrecondition("stale endpoint blob");
      },
      [](const Status& s) { return s.code() != StatusCode::kFailedPrecondition; });
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(DialPolicy::fromConfig(config::TransportConfig{}).retries, 3u);
}

}  // namespace
}  // namespace kvferry::rdma
