#include "common/http.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cerrno>
#include <cstdio>
#include <optional>
#include <span>

namespace kvferry::http {
namespace {

namespace bhttp = beast::http;
constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

std::string_view pathOf(std::string_view target) {
  size_t q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

}  // namespace

Result<tcp::endpoint> parseEndpoint(std::string_view host_port, std::string_view what) {
  size_t colon = host_port.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == host_port.size()) {
    return invalidArgument(std::string(what) + " '" + std::string(host_port) +
                           "' is not host:port");
  }
  std::string host(host_port.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  uint32_t port = 0;
  for (char c : host_port.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) {
      return invalidArgument(std::string(what) + " '" + std::string(host_port) +
                             "': port must be a number 0..65535");
    }
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (port > 65535) {
    return invalidArgument(std::string(what) + " '" + std::string(host_port) +
                           "': port must be a number 0..65535");
  }
  boost::system::error_code ec;
  asio::ip::address address = asio::ip::make_address(host, ec);
  if (ec) {
    return invalidArgument(std::string(what) + " '" + std::string(host_port) +
                           "': host must be an IP address (" + ec.message() + ")");
  }
  return tcp::endpoint(address, static_cast<uint16_t>(port));
}

std::string endpointText(const tcp::endpoint& endpoint) {
  if (endpoint.address().is_v6()) {
    return "[" + endpoint.address().to_string() + "]:" + std::to_string(endpoint.port());
  }
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

std::string errorBody(std::string_view message) {
  boost::json::object error;
  error["message"] = message;
  boost::json::object root;
  root["error"] = std::move(error);
  return boost::json::serialize(root);
}

// ---- ResponseWriter ----

Task<bool> ResponseWriter::send(HttpStatus status, std::string_view content_type, std::string body,
                                Headers headers) {
  if (state_ != State::kNone) co_return false;
  state_ = State::kDone;
  bhttp::response<bhttp::string_body> response{status, version_};
  response.set(bhttp::field::server, "kvferry");
  response.set(bhttp::field::content_type, content_type);
  for (const auto& [name, value] : headers) response.set(name, value);
  response.keep_alive(keep_alive_);
  response.body() = std::move(body);
  response.prepare_payload();
  stream_.expires_after(timeout_);
  auto [ec, bytes] = co_await bhttp::async_write(stream_, response, kNoThrow);
  (void)bytes;
  if (ec) failed_ = true;
  co_return !ec;
}

bhttp::response<bhttp::empty_body> ResponseWriter::streamHeader(HttpStatus status,
                                                                std::string_view content_type,
                                                                const Headers& headers) {
  state_ = State::kStreaming;
  bhttp::response<bhttp::empty_body> response{status, version_};
  response.set(bhttp::field::server, "kvferry");
  response.set(bhttp::field::content_type, content_type);
  response.set(bhttp::field::cache_control, "no-cache");
  for (const auto& [name, value] : headers) response.set(name, value);
  // HTTP/1.0 has no chunked encoding: the body is the bytes until the connection closes.
  chunked_ = version_ >= 11;
  if (!chunked_) keep_alive_ = false;
  response.keep_alive(keep_alive_);
  response.chunked(chunked_);
  return response;
}

Task<bool> ResponseWriter::beginStream(HttpStatus status, std::string_view content_type,
                                       Headers headers) {
  if (state_ != State::kNone) co_return false;
  bhttp::response<bhttp::empty_body> response = streamHeader(status, content_type, headers);
  bhttp::response_serializer<bhttp::empty_body> serializer{response};
  stream_.expires_after(timeout_);
  auto [ec, bytes] = co_await bhttp::async_write_header(stream_, serializer, kNoThrow);
  (void)bytes;
  if (ec) failed_ = true;
  co_return !ec;
}

void ResponseWriter::beginStreamWithNextWrite(HttpStatus status, std::string_view content_type,
                                              const Headers& headers) {
  if (state_ != State::kNone) return;
  bhttp::response<bhttp::empty_body> response = streamHeader(status, content_type, headers);
  bhttp::response_serializer<bhttp::empty_body> serializer{response};
  serializer.split(true);
  boost::system::error_code ec;
  while (!ec && !serializer.is_header_done()) {
    serializer.next(ec, [&](boost::system::error_code&, const auto& buffers) {
      for (const asio::const_buffer piece : beast::buffers_range_ref(buffers)) {
        held_header_.append(static_cast<const char*>(piece.data()), piece.size());
      }
      serializer.consume(beast::buffer_bytes(buffers));
    });
  }
}

Task<bool> ResponseWriter::writeChunk(std::string_view data) {
  if (state_ != State::kStreaming || failed_) co_return false;
  // An empty chunk would end the body.
  if (data.empty() && held_header_.empty()) co_return true;
  const bool written = co_await writeBody(data, false);
  co_return written;
}

Task<bool> ResponseWriter::endStream(std::string_view last_data) {
  if (state_ != State::kStreaming || failed_) co_return false;
  state_ = State::kDone;
  const bool written = co_await writeBody(last_data, true);
  co_return written;
}

Task<bool> ResponseWriter::writeBody(std::string_view data, bool last) {
  // The parts of one gather write: [held header] [chunk size, data, CRLF] [last chunk]; raw data
  // without chunked encoding, whose end is the connection's close.
  std::array<asio::const_buffer, 5> parts;
  size_t count = 0;
  char size_line[24];
  if (!held_header_.empty()) parts[count++] = asio::buffer(held_header_);
  if (!data.empty() && chunked_) {
    const int n = std::snprintf(size_line, sizeof(size_line), "%zx\r\n", data.size());
    parts[count++] = asio::const_buffer(size_line, static_cast<size_t>(n));
  }
  if (!data.empty()) parts[count++] = asio::const_buffer(data.data(), data.size());
  if (!data.empty() && chunked_) parts[count++] = asio::const_buffer("\r\n", 2);
  if (last && chunked_) parts[count++] = asio::const_buffer("0\r\n\r\n", 5);
  if (count == 0) co_return true;
  stream_.expires_after(timeout_);
  auto [ec, bytes] = co_await asio::async_write(stream_, std::span(parts.data(), count), kNoThrow);
  (void)bytes;
  held_header_.clear();
  if (ec) failed_ = true;
  co_return !ec;
}

void ResponseWriter::watchDisconnect(std::function<void()> on_gone) {
  if (watch_ == nullptr) watch_ = std::make_shared<Watch>();
  if (watch_->gone) {  // seen already, perhaps while nobody was listening
    if (on_gone) on_gone();
    return;
  }
  watch_->on_gone = std::move(on_gone);
  if (watch_->waiting || !watch_->on_gone) return;
  awaitReadable(watch_, stream_.socket());
}

// One wait for the socket to turn readable, with a plain handler: no coroutine or timer per
// request. The handler reads `state` first and touches `socket` only while the watch runs, which
// the server guarantees until stopWatch() (the session, and its socket, outlive that call).
void ResponseWriter::awaitReadable(std::shared_ptr<Watch> state, tcp::socket& socket) {
  state->waiting = true;
  socket.async_wait(tcp::socket::wait_read, [state, &socket](boost::system::error_code ec) {
    state->waiting = false;
    if (state->stopping) return;
    if (!ec) {
      // Readable means data (a pipelined request: not a disconnect) or end of stream; MSG_PEEK
      // tells them apart without consuming anything the next request needs.
      char byte;
      const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;  // the client sent more: it is there
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        awaitReadable(state, socket);
        return;
      }
    }
    state->gone = true;  // an error, 0 (orderly close) or < 0 (reset)
    if (state->on_gone) {
      auto callback = std::move(state->on_gone);
      callback();
    }
  });
}

void ResponseWriter::stopWatch() {
  if (watch_ == nullptr || !watch_->waiting) return;
  watch_->stopping = true;
  boost::system::error_code ignored;
  stream_.socket().cancel(ignored);  // only the watch has an operation pending now
}

// ---- Server ----

Server::Server(asio::io_context& io, ServerOptions options)
    : io_(io), options_(std::move(options)), acceptor_(io) {}

Server::~Server() { stop(); }

void Server::route(Verb verb, std::string path, Handler handler) {
  routes_[{verb, std::move(path)}] = std::move(handler);
}

void Server::routePrefix(Verb verb, std::string prefix, Handler handler) {
  prefix_routes_[{verb, std::move(prefix)}] = std::move(handler);
}

const Handler* Server::find(Verb verb, const std::string& path, std::string& route) const {
  if (auto it = routes_.find({verb, path}); it != routes_.end()) {
    route = path;
    return &it->second;
  }
  for (const auto& [key, handler] : prefix_routes_) {
    if (key.first == verb && path.size() > key.second.size() && path.starts_with(key.second)) {
      route = key.second;
      return &handler;
    }
  }
  return nullptr;
}

std::string Server::allowed(const std::string& path) const {
  std::set<std::string> verbs;
  for (const auto& [key, handler] : routes_) {
    if (key.second == path) verbs.insert(std::string(bhttp::to_string(key.first)));
  }
  for (const auto& [key, handler] : prefix_routes_) {
    if (path.size() > key.second.size() && path.starts_with(key.second)) {
      verbs.insert(std::string(bhttp::to_string(key.first)));
    }
  }
  std::string out;
  for (const std::string& verb : verbs) out += (out.empty() ? "" : ", ") + verb;
  return out;
}

Task<void> Server::answerError(ResponseWriter& writer, HttpStatus status, std::string_view route,
                               std::string message, ResponseWriter::Headers headers) {
  const unsigned code = static_cast<unsigned>(status);
  if (options_.on_error) options_.on_error(route, code);
  std::string body = options_.error_body ? options_.error_body(code, message) : errorBody(message);
  co_await writer.send(status, "application/json", std::move(body), std::move(headers));
}

Status Server::listen(std::string_view address) {
  auto endpoint = parseEndpoint(address, "listen address");
  if (!endpoint.isOk()) return endpoint.status();
  boost::system::error_code ec;
  acceptor_.open(endpoint->protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(*endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return unavailable("listen on " + std::string(address) + ": " + ec.message());
  port_ = acceptor_.local_endpoint().port();
  return Status::ok();
}

void Server::start() { asio::co_spawn(io_, acceptLoop(), asio::detached); }

void Server::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  for (beast::tcp_stream* stream : sessions_) stream->socket().close(ec);
}

Task<void> Server::acceptLoop() {
  while (!stopped_) {
    auto [ec, socket] = co_await acceptor_.async_accept(kNoThrow);
    if (ec) {
      if (stopped_ || ec == asio::error::operation_aborted) co_return;
      spdlog::warn("http: accept failed: {}", ec.message());
      continue;
    }
    asio::co_spawn(io_, session(std::move(socket)), asio::detached);
  }
}

Task<void> Server::session(tcp::socket socket) {
  // Streamed responses are many small writes: without TCP_NODELAY each waits for the previous
  // one's ACK (Nagle + delayed ACK, ~40 ms per token).
  boost::system::error_code nodelay_ec;
  socket.set_option(tcp::no_delay(true), nodelay_ec);
  beast::tcp_stream stream(std::move(socket));
  sessions_.insert(&stream);
  beast::flat_buffer buffer;
  bool client_closed = false;  // the last read ended at the client's end of stream
  for (bool first = true; !stopped_; first = false) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.body_limit(options_.max_body_bytes);
    parser.header_limit(options_.max_header_bytes);
    // The idle timeout covers the wait for a request to start; the read timeout the rest.
    stream.expires_after(first ? options_.read_timeout : options_.idle_timeout);
    auto [ec, bytes] = co_await bhttp::async_read(stream, buffer, parser, kNoThrow);
    (void)bytes;
    if (ec) {
      client_closed =
          (ec == bhttp::error::end_of_stream || ec == asio::error::eof) && buffer.size() == 0;
      if (ec == bhttp::error::body_limit) {
        const auto& header = parser.get();
        ResponseWriter writer(stream, header.version(), false, options_.write_timeout);
        std::string path(pathOf(header.target()));
        std::string route;
        if (find(header.method(), path, route) == nullptr) route.clear();
        co_await answerError(writer, HttpStatus::payload_too_large, route,
                             "The request body is larger than the " +
                                 std::to_string(options_.max_body_bytes) +
                                 " bytes this server accepts.");
      } else if (ec == bhttp::error::header_limit) {
        ResponseWriter writer(stream, 11, false, options_.write_timeout);
        co_await answerError(writer, HttpStatus::request_header_fields_too_large, "",
                             "The request line and headers are larger than the " +
                                 std::to_string(options_.max_header_bytes) +
                                 " bytes this server accepts.");
      } else if (ec != bhttp::error::end_of_stream && ec != asio::error::eof &&
                 ec != beast::error::timeout && ec != asio::error::operation_aborted &&
                 ec != asio::error::connection_reset && buffer.size() > 0) {
        ResponseWriter writer(stream, 11, false, options_.write_timeout);
        co_await answerError(writer, HttpStatus::bad_request, "",
                             "malformed HTTP request: " + ec.message());
      }
      break;
    }
    Request request = parser.release();
    ResponseWriter writer(stream, request.version(), request.keep_alive(), options_.write_timeout);
    std::string path(pathOf(request.target()));
    std::string route;
    if (const Handler* handler = find(request.method(), path, route)) {
      co_await (*handler)(request, writer);
      writer.stopWatch();
      if (!writer.responded()) {
        co_await answerError(writer, HttpStatus::internal_server_error, route,
                             "the handler produced no response");
      }
    } else if (std::string allow = allowed(path); !allow.empty()) {
      ResponseWriter::Headers headers;  // named (common/coroutine_rules.h)
      headers.emplace_back("Allow", allow);
      co_await answerError(writer, HttpStatus::method_not_allowed, path,
                           std::string(request.method_string()) + " is not allowed on " + path +
                               " (allowed: " + allow + ").",
                           std::move(headers));
    } else {
      co_await answerError(writer, HttpStatus::not_found, "",
                           "Invalid URL (" + std::string(request.method_string()) + " " + path +
                               "): no route for " + path + ".");
    }
    if (!writer.keepAlive()) break;
  }
  sessions_.erase(&stream);
  // Closing with bytes unread sends RST at once; shutdown() first sends FIN after the answer, so
  // the client reads the answer and the end before the reset. A client that closed first (the
  // usual end of a keep-alive connection) left nothing unread: close() alone, a call fewer.
  boost::system::error_code ignored;
  if (!client_closed) stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream.socket().close(ignored);
}

// ---- ClientPool ----

std::unique_ptr<beast::tcp_stream> ClientPool::takeIdle(const tcp::endpoint& endpoint) {
  std::lock_guard lock(mutex_);
  auto it = idle_.find(endpoint);
  if (it == idle_.end()) return nullptr;
  auto now = std::chrono::steady_clock::now();
  while (!it->second.empty()) {
    Idle idle = std::move(it->second.back());
    it->second.pop_back();
    if (now - idle.since < idle_keep_ && idle.stream->socket().is_open()) {
      return std::move(idle.stream);
    }
  }
  return nullptr;
}

void ClientPool::giveBack(const tcp::endpoint& endpoint,
                          std::unique_ptr<beast::tcp_stream> stream) {
  std::lock_guard lock(mutex_);
  auto& list = idle_[endpoint];
  if (list.size() >= 64) return;  // bound the pool; the stream closes here
  list.push_back({std::move(stream), std::chrono::steady_clock::now()});
}

void ClientPool::forget(const tcp::endpoint& endpoint) {
  std::lock_guard lock(mutex_);
  idle_.erase(endpoint);
}

void ClientPool::abort(const tcp::endpoint& endpoint) {
  std::lock_guard lock(mutex_);
  idle_.erase(endpoint);
  auto it = busy_.find(endpoint);
  if (it == busy_.end()) return;
  for (beast::tcp_stream* stream : it->second) {
    boost::system::error_code ignored;
    stream->socket().close(ignored);  // pending operations end with operation_aborted
  }
}

// A request's or stream's connection, listed in the pool while in use so abort() can end it.
class BusyStream {
 public:
  BusyStream(ClientPool& pool, const tcp::endpoint& endpoint, beast::tcp_stream* stream)
      : pool_(pool), endpoint_(endpoint), stream_(stream) {
    std::lock_guard lock(pool_.mutex_);
    pool_.busy_[endpoint_].insert(stream_);
  }
  ~BusyStream() {
    std::lock_guard lock(pool_.mutex_);
    auto it = pool_.busy_.find(endpoint_);
    if (it == pool_.busy_.end()) return;
    it->second.erase(stream_);
    if (it->second.empty()) pool_.busy_.erase(it);
  }
  BusyStream(const BusyStream&) = delete;
  BusyStream& operator=(const BusyStream&) = delete;

 private:
  ClientPool& pool_;
  const tcp::endpoint endpoint_;
  beast::tcp_stream* const stream_;
};

Task<Result<std::unique_ptr<beast::tcp_stream>>> ClientPool::connect(
    const tcp::endpoint& endpoint, std::chrono::milliseconds timeout) {
  auto stream = std::make_unique<beast::tcp_stream>(io_);
  stream->expires_after(timeout);
  std::optional<BusyStream> busy(std::in_place, *this, endpoint, stream.get());  // abort() ends it
  auto [ec] = co_await stream->async_connect(endpoint, kNoThrow);
  busy.reset();
  if (ec == beast::error::timeout) {
    co_return deadlineExceeded("connect to " + endpointText(endpoint) + " timed out");
  }
  if (ec) co_return unavailable("connect to " + endpointText(endpoint) + ": " + ec.message());
  boost::system::error_code ignored;
  stream->socket().set_option(tcp::no_delay(true), ignored);
  co_return std::move(stream);
}

Task<Result<std::unique_ptr<beast::tcp_stream>>> ClientPool::connection(
    const tcp::endpoint& endpoint, int attempt, bool& reused, std::chrono::milliseconds timeout) {
  std::unique_ptr<beast::tcp_stream> stream = attempt == 0 ? takeIdle(endpoint) : nullptr;
  reused = stream != nullptr;
  if (stream != nullptr) co_return std::move(stream);
  co_return co_await connect(endpoint, timeout);
}

namespace {

// Whether a reused connection failed as one the server had closed while it was idle: nothing of
// the response came, so the request may go again on a fresh connection.
bool closedWhileIdle(const boost::system::error_code& ec, const beast::flat_buffer& buffer) {
  return buffer.size() == 0 && (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
                                ec == asio::error::connection_reset);
}

// Whether the response parser can go on without waiting for the peer: the bytes already read hold
// a line end past what may be the closing CRLF of the chunk just parsed (the next chunk's size
// line, the last chunk), or more bytes have arrived on the socket. Only decides when on_drained
// runs: at worst, held lines wait for the rest of a write the peer has already sent.
bool readableWithoutWait(beast::tcp_stream& stream, const beast::flat_buffer& buffer) {
  const std::string_view bytes(static_cast<const char*>(buffer.data().data()), buffer.size());
  if (bytes.size() > 2 && bytes.find('\n', 2) != std::string_view::npos) return true;
  boost::system::error_code ec;
  return stream.socket().available(ec) > 0 && !ec;
}

Status transportError(const boost::system::error_code& ec, const tcp::endpoint& endpoint,
                      std::string_view what) {
  std::string message = std::string(what) + " " + endpointText(endpoint) + ": " + ec.message();
  if (ec == beast::error::timeout) return deadlineExceeded(std::move(message));
  return unavailable(std::move(message));
}

Request makeRequest(const tcp::endpoint& endpoint, Verb verb, std::string target,
                    std::string body) {
  Request request{verb, target, 11};
  request.set(bhttp::field::host, endpointText(endpoint));
  request.set(bhttp::field::user_agent, "kvferry");
  if (!body.empty()) request.set(bhttp::field::content_type, "application/json");
  request.keep_alive(true);
  request.body() = std::move(body);
  request.prepare_payload();
  return request;
}

template <typename Parser>
Response responseOf(Parser& parser) {
  Response response;
  auto& message = parser.get();
  response.status = message.result_int();
  if (auto it = message.find(bhttp::field::content_type); it != message.end()) {
    response.content_type = std::string(it->value());
  }
  if (auto it = message.find(bhttp::field::retry_after); it != message.end()) {
    response.retry_after = std::string(it->value());
  }
  return response;
}

}  // namespace

Task<Result<std::unique_ptr<beast::tcp_stream>>> ClientPool::send(
    const tcp::endpoint& endpoint, Request& request, int attempt, bool& reused,
    std::optional<BusyStream>& busy, std::chrono::milliseconds timeout) {
  if (sign_) sign_(request);  // again on a retry: a nonce is for one delivery
  CO_ASSIGN_OR_RETURN(std::unique_ptr<beast::tcp_stream> stream,
                      co_await connection(endpoint, attempt, reused, timeout));
  busy.emplace(*this, endpoint, stream.get());
  stream->expires_after(timeout);
  auto [ec, written] = co_await bhttp::async_write(*stream, request, kNoThrow);
  (void)written;
  if (!ec) co_return std::move(stream);
  busy.reset();
  if (reused && ec != asio::error::operation_aborted) {
    co_return std::unique_ptr<beast::tcp_stream>();  // the server closed it while idle
  }
  co_return transportError(ec, endpoint, "send to");
}

Task<Result<Response>> ClientPool::request(tcp::endpoint endpoint, Verb verb, std::string target,
                                           std::string body, std::chrono::milliseconds timeout) {
  Request request = makeRequest(endpoint, verb, std::move(target), std::move(body));
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool reused = false;
    std::optional<BusyStream> busy;
    CO_ASSIGN_OR_RETURN(std::unique_ptr<beast::tcp_stream> stream,
                        co_await send(endpoint, request, attempt, reused, busy, timeout));
    if (stream == nullptr) continue;  // a reused connection the server had closed
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 << 20);
    auto [read_ec, read] = co_await bhttp::async_read(*stream, buffer, parser, kNoThrow);
    (void)read;
    if (read_ec) {
      // The server closed the idle connection: one more try on a fresh one.
      if (reused && closedWhileIdle(read_ec, buffer)) continue;
      co_return transportError(read_ec, endpoint, "read from");
    }
    Response response = responseOf(parser);
    response.body = std::move(parser.get().body());
    if (parser.get().keep_alive()) giveBack(endpoint, std::move(stream));
    co_return response;
  }
  co_return unavailable("request to " + endpointText(endpoint) + " failed twice");
}

Task<Result<Response>> ClientPool::streamLines(tcp::endpoint endpoint, Verb verb,
                                               std::string target, std::string body,
                                               std::chrono::milliseconds first_byte_timeout,
                                               std::chrono::milliseconds idle_timeout,
                                               std::function<Task<bool>(std::string_view)> on_line,
                                               std::function<Task<bool>()> on_drained) {
  Request request = makeRequest(endpoint, verb, std::move(target), std::move(body));
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool reused = false;
    std::optional<BusyStream> busy;
    CO_ASSIGN_OR_RETURN(std::unique_ptr<beast::tcp_stream> stream,
                        co_await send(endpoint, request, fresh_streams_ ? 1 : attempt, reused, busy,
                                      first_byte_timeout));
    if (stream == nullptr) continue;  // a reused connection the server had closed
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::buffer_body> parser;
    parser.body_limit(boost::none);
    auto [header_ec, header_bytes] =
        co_await bhttp::async_read_header(*stream, buffer, parser, kNoThrow);
    (void)header_bytes;
    if (header_ec) {
      if (reused && closedWhileIdle(header_ec, buffer)) continue;
      co_return transportError(header_ec, endpoint, "read from");
    }
    Response response = responseOf(parser);
    const bool success = response.status >= 200 && response.status < 300;

    std::string pending;
    char chunk[16384];
    bool handed = false;  // lines went to on_line since on_drained last ran
    while (!parser.is_done()) {
      if (handed && on_drained && !readableWithoutWait(*stream, buffer)) {
        handed = false;
        // Awaited into a local (common/coroutine_rules.h).
        const bool more = co_await on_drained();
        if (!more) co_return response;  // the stream closes with the connection
      }
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof(chunk);
      stream->expires_after(idle_timeout);
      auto [ec, n] = co_await bhttp::async_read_some(*stream, buffer, parser, kNoThrow);
      (void)n;
      if (ec && ec != bhttp::error::need_buffer) {
        co_return transportError(ec, endpoint, "stream from");
      }
      size_t got = sizeof(chunk) - parser.get().body().size;
      if (!success) {
        response.body.append(chunk, got);
        if (response.body.size() > (1 << 20)) break;
        continue;
      }
      pending.append(chunk, got);
      size_t start = 0;
      for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
        handed = true;
        const bool more = co_await on_line(std::string_view(pending).substr(start, nl - start));
        if (!more) co_return response;  // the stream closes with the connection
      }
      pending.erase(0, start);
    }
    if (success && !pending.empty()) co_await on_line(pending);
    // Read to its end: the connection may carry the next request.
    if (parser.is_done() && parser.get().keep_alive() && !fresh_streams_) {
      giveBack(endpoint, std::move(stream));
    }
    co_return response;
  }
  co_return unavailable("stream from " + endpointText(endpoint) + " failed twice");
}

}  // namespace kvferry::http
