// Reaching a peer's listener: the one implementation of connect-with-deadline and
// retry-with-backoff that the backends speaking TCP share (tcp's data connections, the verbs
// QP handshake).
//
// The connect and the backend's handshake run as one coroutine on the backend's io_context
// (its progress or handshake thread, which owns the socket); the calling thread — a user thread
// inside Transport::connect(), which is synchronous — waits for it with the deadline, and sleeps
// between attempts.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "config/config.h"

namespace kvferry::rdma {

// What a backend says over the socket it just connected, as a coroutine on the io_context: OK
// when the peer accepted the connection. It must not outlive the socket's use: dialOnce()
// waits for it to finish.
using Handshake = std::function<boost::asio::awaitable<Status>(boost::asio::ip::tcp::socket&)>;
// Socket options to set between open and connect (buffer sizes cannot change after); may be
// empty.
using SocketSetup = std::function<void(boost::asio::ip::tcp::socket&, boost::system::error_code&)>;

struct DialPolicy {
  std::chrono::milliseconds timeout{5000};  // one attempt: connect and handshake
  uint32_t retries = 0;                     // further attempts after the first
  std::chrono::milliseconds backoff{100};   // before the first retry, doubled before each next

  // connect_timeout_ms, connect_retries, retry_backoff_ms.
  static DialPolicy fromConfig(const config::TransportConfig& config);
};

// One attempt. On `io` (which a thread must be running): opens a socket, applies `setup`,
// connects to `peer` and runs `handshake`, while the calling thread waits at most `timeout`.
// Past it the socket is closed, which ends the handshake, and the result is DEADLINE_EXCEEDED.
// Errors: IO_ERROR (socket), UNAVAILABLE (connect), or the handshake's. On success the socket
// is returned with no operation pending, so the caller may hand it to its owner. `where`
// ("10.0.0.2:7000") names the peer in messages. Not to be called on `io`'s own thread.
Result<boost::asio::ip::tcp::socket> dialOnce(boost::asio::io_context& io,
                                              const boost::asio::ip::tcp::endpoint& peer,
                                              std::chrono::milliseconds timeout,
                                              const SocketSetup& setup, const Handshake& handshake,
                                              const std::string& where);

// Runs `attempt` until it succeeds, fails with an error `retryable` says no to, or
// policy.retries retries are spent, sleeping policy.backoff, then twice that, … before each
// retry (on the calling thread). Returns the last attempt's status. Each retry is logged at
// info, as "`what` failed (<error>); retry 1 of 3 in 100 ms".
Status retryWithBackoff(const DialPolicy& policy, std::string_view what,
                        const std::function<Status()>& attempt,
                        const std::function<bool(const Status&)>& retryable);

}  // namespace kvferry::rdma
