// HTTP/1.1 on Boost.Beast for the control plane (DESIGN.md §3) and the orchestrator's public
// API: a small coroutine server with exact-path routes, whole and chunked (streamed) responses,
// keep-alive; and a client with a keep-alive connection pool and line-by-line streaming reads.
//
// Threading: a Server and a ClientPool each belong to one io_context. Handlers run as coroutines
// on that io_context; when it is run by one thread (what kvferry's binaries do) handlers need no
// locks among themselves. Work on other threads hands results back through asio::post or an
// asio concurrent_channel.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

// RETURN_IF_ERROR / ASSIGN_OR_RETURN for coroutines (which must `co_return`).
#define CO_RETURN_IF_ERROR(expr)                    \
  do {                                              \
    ::kvferry::Status kvf_status_ = (expr);         \
    if (!kvf_status_.isOk()) co_return kvf_status_; \
  } while (0)
#define CO_ASSIGN_OR_RETURN(lhs, expr) \
  CO_ASSIGN_OR_RETURN_IMPL_(KVF_CONCAT_(kvf_co_result_, __LINE__), lhs, expr)
#define CO_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.isOk()) co_return tmp.status();        \
  lhs = std::move(tmp).value()

namespace kvferry::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using Verb = beast::http::verb;
using HttpStatus = beast::http::status;
using Request = beast::http::request<beast::http::string_body>;
template <typename T>
using Task = asio::awaitable<T>;

// "host:port" with an IP address host → endpoint; `what` names the value in errors.
Result<tcp::endpoint> parseEndpoint(std::string_view host_port, std::string_view what);
std::string endpointText(const tcp::endpoint& endpoint);

// The response side of one request. A handler calls send() once, or beginStream(), any number
// of writeChunk() and endStream(). Each returns false when the client is gone (the handler then
// stops its work). A handler that returns without responding gets a 500. A stream to an HTTP/1.0
// client, which knows no chunked encoding, goes unchunked and ends by closing the connection.
class ResponseWriter {
 public:
  ResponseWriter(beast::tcp_stream& stream, unsigned version, bool keep_alive,
                 std::chrono::milliseconds write_timeout)
      : stream_(stream), version_(version), keep_alive_(keep_alive), timeout_(write_timeout) {}

  using Headers = std::vector<std::pair<std::string, std::string>>;

  Task<bool> send(HttpStatus status, std::string_view content_type, std::string body,
                  Headers headers = {});
  Task<bool> sendJson(HttpStatus status, std::string body) {
    return send(status, "application/json", std::move(body));
  }
  Task<bool> beginStream(HttpStatus status, std::string_view content_type, Headers headers = {});
  // beginStream() without a write of its own: the header goes out with the next writeChunk() or
  // endStream(), in the same write (one send, and one wake-up of the client, fewer). For a
  // handler whose client has nothing to do with the header before the first bytes; the handler
  // must then write or end the stream.
  void beginStreamWithNextWrite(HttpStatus status, std::string_view content_type,
                                const Headers& headers = {});
  Task<bool> writeChunk(std::string_view data);
  // Ends the stream; `last_data`, when not empty, goes out as its last chunk in the same write
  // (one send instead of two).
  Task<bool> endStream(std::string_view last_data = {});

  bool responded() const { return state_ != State::kNone; }
  // Whether the connection may carry another request after this response.
  bool keepAlive() const { return keep_alive_ && !failed_ && !gone(); }

  // Calls `on_gone` (on the io thread, at most once) if the client closes its connection while
  // the handler still runs: for handlers that wait a long time before their first write (a
  // write to a departed client fails by itself). A later call replaces the callback; nullptr
  // stops caring, but the watch goes on, and a callback set after it saw the client go runs at
  // once, here. The server stops the watch when the handler returns.
  void watchDisconnect(std::function<void()> on_gone);
  // Whether the watch saw the client close its connection.
  bool gone() const { return watch_ != nullptr && watch_->gone; }

  // The watch's state, shared with its pending wait's handler (which may run after this writer
  // is gone, so it holds the state, not the writer).
  struct Watch {
    std::function<void()> on_gone;
    bool waiting = false;   // an async_wait is pending on the socket
    bool stopping = false;  // stopWatch() ran: the handler does nothing more
    bool gone = false;
  };
  // Server side: ends the watch (its pending wait is cancelled; the handler then only finds it
  // stopped), so the socket is free for the next request and the stream may be destroyed.
  void stopWatch();

 private:
  enum class State { kNone, kStreaming, kDone };

  // A stream's header (state_ becomes kStreaming; chunked_ and keep_alive_ are settled).
  beast::http::response<beast::http::empty_body> streamHeader(HttpStatus status,
                                                              std::string_view content_type,
                                                              const Headers& headers);
  // The held header, then `data` as a chunk (raw without chunked encoding), then with `last` the
  // body's end: one write.
  Task<bool> writeBody(std::string_view data, bool last);
  static void awaitReadable(std::shared_ptr<Watch> state, tcp::socket& socket);

  beast::tcp_stream& stream_;
  unsigned version_;
  bool keep_alive_;
  std::chrono::milliseconds timeout_;
  State state_ = State::kNone;
  bool chunked_ = true;  // the stream's encoding; HTTP/1.0 streams are raw until the close
  bool failed_ = false;
  std::string held_header_;  // beginStreamWithNextWrite()'s, until that write
  std::shared_ptr<Watch> watch_;
};

using Handler = std::function<Task<void>(const Request&, ResponseWriter&)>;

struct ServerOptions {
  uint64_t max_body_bytes = 8 << 20;               // larger requests get 413
  uint32_t max_header_bytes = 16 << 10;            // the request line and headers; more: 431
  std::chrono::milliseconds idle_timeout{60000};   // keep-alive connection with no request
  std::chrono::milliseconds read_timeout{30000};   // one request, header to last byte
  std::chrono::milliseconds write_timeout{30000};  // one response write
  std::string server_name = "kvferry";
  // The JSON body of an error the server answers itself (404, 405, 413, 431, 400 for malformed
  // HTTP, 500 for a handler that did not answer); null: errorBody(message).
  std::function<std::string(unsigned status, std::string_view message)> error_body;
  // Told of each of those answers, on the io thread: the route it was for (a routed path, or ""
  // for a path no route serves) and the status. For request metrics; may be null.
  std::function<void(std::string_view route, unsigned status)> on_error;
};

// Owner: the io_context's thread. Routes are exact paths or, with routePrefix, every path under
// a prefix (the query string is ignored for matching; exact routes win). An unknown path is 404,
// a known path with another method 405 (with Allow), both as JSON bodies (ServerOptions::
// error_body; {"error":{"message":...}} by default).
class Server {
 public:
  Server(asio::io_context& io, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void route(Verb verb, std::string path, Handler handler);
  // Every path that starts with `prefix` (and is longer), for handlers that read a resource id
  // from the rest of the path.
  void routePrefix(Verb verb, std::string prefix, Handler handler);
  // Binds and listens ("127.0.0.1:0" picks a free port; port() tells which).
  Status listen(std::string_view address);
  uint16_t port() const { return port_; }
  // Starts accepting (call on or before running the io_context).
  void start();
  // Stops accepting and closes every connection; handlers in flight see their writes fail.
  void stop();

 private:
  Task<void> acceptLoop();
  Task<void> session(tcp::socket socket);
  // The handler for `verb` on `path` (nullptr when none), and the route's name for on_error.
  const Handler* find(Verb verb, const std::string& path, std::string& route) const;
  // The methods some route serves `path` with ("GET, POST"); "" when none.
  std::string allowed(const std::string& path) const;
  // Answers an error the server itself found, and tells on_error.
  Task<void> answerError(ResponseWriter& writer, HttpStatus status, std::string_view route,
                         std::string message, ResponseWriter::Headers headers = {});

  asio::io_context& io_;
  const ServerOptions options_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::map<std::pair<Verb, std::string>, Handler> routes_;
  std::map<std::pair<Verb, std::string>, Handler> prefix_routes_;
  std::set<beast::tcp_stream*> sessions_;
  bool stopped_ = false;
};

struct Response {
  unsigned status = 0;
  std::string body;
  std::string content_type;
  std::string retry_after;  // the Retry-After header, empty when absent
};

class BusyStream;  // a connection in use, listed for abort() (http.cc)

// Outgoing requests with pooled keep-alive connections, one pool per io_context. A request on a
// reused connection that fails before any response byte is retried once on a fresh connection
// (the server may have closed an idle connection).
class ClientPool {
 public:
  explicit ClientPool(asio::io_context& io, std::chrono::milliseconds idle_keep = {})
      : io_(io), idle_keep_(idle_keep.count() ? idle_keep : std::chrono::milliseconds(20000)) {}

  // A whole request/response. UNAVAILABLE when the server cannot be reached or drops the
  // connection, DEADLINE_EXCEEDED after `timeout`. Any HTTP status is a successful Response.
  Task<Result<Response>> request(tcp::endpoint endpoint, Verb verb, std::string target,
                                 std::string body, std::chrono::milliseconds timeout);

  // A request whose response body is read as it arrives and handed to `on_line` one line at a
  // time ('\n' stripped); `on_line` returning false stops reading and closes the connection.
  // `on_drained` (optional) runs whenever every line that has arrived was handed over and the
  // body goes on: before each wait for more of it. A caller that holds back what it makes of
  // the lines (to write them out together) sends it there; false stops reading, as from on_line.
  // `first_byte_timeout` bounds the wait for the response header, `idle_timeout` the wait for
  // each later piece of body. A non-2xx status returns a Response with the whole body and no
  // lines; OK with status 2xx when the body ended (or on_line stopped it). Like request(), it
  // uses an idle keep-alive connection when there is one (retried once on a fresh connection if
  // that fails before any response byte), and keeps the connection for later requests when the
  // body was read to its end (unless freshConnectionPerStream()).
  Task<Result<Response>> streamLines(tcp::endpoint endpoint, Verb verb, std::string target,
                                     std::string body, std::chrono::milliseconds first_byte_timeout,
                                     std::chrono::milliseconds idle_timeout,
                                     std::function<Task<bool>(std::string_view)> on_line,
                                     std::function<Task<bool>()> on_drained = nullptr);

  // From now on every streamLines() opens a connection of its own and closes it at the end, as a
  // new client would (a load generator that measures the connect in each request's latency).
  void freshConnectionPerStream() { fresh_streams_ = true; }

  // Called on every request just before it is sent (its method, target and body final), e.g. to
  // add the control plane's MAC (common/control_auth.h). Set before the first request.
  void signRequests(std::function<void(Request&)> sign) { sign_ = std::move(sign); }

  // Closes idle connections (e.g. to a node that died).
  void forget(const tcp::endpoint& endpoint);
  // forget(), and every request and stream in progress to `endpoint` (connecting, sending or
  // reading) ends now with UNAVAILABLE
  // (e.g. a node declared dead while frozen: its calls would otherwise wait out their timeouts).
  // Call it on the thread that runs the pool's io_context.
  void abort(const tcp::endpoint& endpoint);

 private:
  struct Idle {
    std::unique_ptr<beast::tcp_stream> stream;
    std::chrono::steady_clock::time_point since;
  };
  std::unique_ptr<beast::tcp_stream> takeIdle(const tcp::endpoint& endpoint);
  void giveBack(const tcp::endpoint& endpoint, std::unique_ptr<beast::tcp_stream> stream);
  Task<Result<std::unique_ptr<beast::tcp_stream>>> connect(const tcp::endpoint& endpoint,
                                                           std::chrono::milliseconds timeout);
  // `request`, signed, written on connection(): nullptr when a reused connection failed the
  // write (the server had closed it; try again). `busy` lists the connection for abort() from
  // before the write until the caller is done with it.
  Task<Result<std::unique_ptr<beast::tcp_stream>>> send(const tcp::endpoint& endpoint,
                                                        Request& request, int attempt, bool& reused,
                                                        std::optional<BusyStream>& busy,
                                                        std::chrono::milliseconds timeout);
  // An idle connection to `endpoint` (on the first attempt, when there is one: `reused` says so)
  // or a new one.
  Task<Result<std::unique_ptr<beast::tcp_stream>>> connection(const tcp::endpoint& endpoint,
                                                              int attempt, bool& reused,
                                                              std::chrono::milliseconds timeout);

  asio::io_context& io_;
  std::chrono::milliseconds idle_keep_;
  std::function<void(Request&)> sign_;
  bool fresh_streams_ = false;
  std::mutex mutex_;
  std::map<tcp::endpoint, std::vector<Idle>> idle_;
  std::map<tcp::endpoint, std::set<beast::tcp_stream*>> busy_;  // requests and streams in progress

  friend class BusyStream;
};

// A JSON error body {"error":{"message":...}} for the control plane and default routes.
std::string errorBody(std::string_view message);

}  // namespace kvferry::http
