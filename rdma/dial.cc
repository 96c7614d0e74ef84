#include "rdma/dial.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <future>
#include <memory>
#include <thread>
#include <utility>

#include "common/coroutine_rules.h"

namespace kvferry::rdma {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

// The attempt itself, on the io_context. `socket` belongs to dialOnce(), which waits for this.
asio::awaitable<Status> connectAndHandshake(tcp::socket& socket, tcp::endpoint peer,
                                            const SocketSetup& setup, const Handshake& handshake,
                                            std::string where) {
  boost::system::error_code ec;
  socket.open(peer.protocol(), ec);
  if (!ec && setup) setup(socket, ec);
  if (ec) co_return ioError("socket", ec.value());
  auto [connected] = co_await socket.async_connect(peer, kNoThrow);
  if (connected) co_return unavailable("connect " + where + ": " + connected.message());
  // Awaited into a local (common/coroutine_rules.h).
  Status answered = co_await handshake(socket);
  co_return answered;
}

}  // namespace

DialPolicy DialPolicy::fromConfig(const config::TransportConfig& config) {
  return {std::chrono::milliseconds(config.connect_timeout_ms), config.connect_retries,
          std::chrono::milliseconds(config.retry_backoff_ms)};
}

Result<tcp::socket> dialOnce(asio::io_context& io, const tcp::endpoint& peer,
                             std::chrono::milliseconds timeout, const SocketSetup& setup,
                             const Handshake& handshake, const std::string& where) {
  tcp::socket socket(io);
  // Shared with the completion handler, which may still be returning from set_value() when
  // this thread, woken by it, leaves.
  auto done = std::make_shared<std::promise<Status>>();
  std::future<Status> result = done->get_future();
  asio::co_spawn(
      io, [&] { return connectAndHandshake(socket, peer, setup, handshake, where); },
      [done, where](std::exception_ptr error, Status status) {
        done->set_value(error ? internalError("connect " + where + ": the handshake threw")
                              : std::move(status));
      });
  if (result.wait_for(timeout) != std::future_status::ready) {
    // Closing the socket on its own thread ends whatever the attempt waits for.
    asio::post(io, [&socket] {
      boost::system::error_code ignored;
      socket.close(ignored);
    });
    result.wait();
    return deadlineExceeded("connect to " + where + " took longer than connect_timeout_ms=" +
                            std::to_string(timeout.count()));
  }
  RETURN_IF_ERROR(result.get());
  // The attempt is over and none of its operations is pending: the socket is ours to hand over.
  return socket;
}

Status retryWithBackoff(const DialPolicy& policy, std::string_view what,
                        const std::function<Status()>& attempt,
                        const std::function<bool(const Status&)>& retryable) {
  Status last = attempt();
  std::chrono::milliseconds backoff = policy.backoff;
  for (uint32_t retry = 1; retry <= policy.retries && !last.isOk() && retryable(last); ++retry) {
    spdlog::info("{} failed ({}); retry {} of {} in {} ms", what, last.toString(), retry,
                 policy.retries, backoff.count());
    std::this_thread::sleep_for(backoff);
    backoff *= 2;
    last = attempt();
  }
  return last;
}

}  // namespace kvferry::rdma
