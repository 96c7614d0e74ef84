// The control plane's HTTP layer over real sockets on 127.0.0.1: routes, errors, keep-alive
// reuse, streamed responses read line by line, and a client that stops a stream early.
#include "common/http.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <future>
#include <thread>

namespace kvferry::http {
namespace {

using namespace std::chrono_literals;

ServerOptions withBodyLimit(uint64_t bytes) {
  ServerOptions options;
  options.max_body_bytes = bytes;
  return options;
}

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.route(Verb::get, "/hello", [](const Request&, ResponseWriter& w) -> Task<void> {
      co_await w.send(HttpStatus::ok, "text/plain", "hello");
    });
    server_.route(Verb::post, "/echo", [](const Request& r, ResponseWriter& w) -> Task<void> {
      co_await w.sendJson(HttpStatus::ok, r.body());
    });
    server_.route(Verb::get, "/silent",
                  [](const Request&, ResponseWriter&) -> Task<void> { co_return; });
    server_.route(Verb::get, "/lines", [this](const Request& r, ResponseWriter& w) -> Task<void> {
      int count = std::stoi(std::string(r.target().substr(r.target().find('=') + 1)));
      const bool started = co_await w.beginStream(HttpStatus::ok, "application/x-ndjson");
      if (!started) co_return;
      for (int i = 0; i < count; ++i) {
        asio::steady_timer timer(io_, 1ms);
        co_await timer.async_wait(asio::use_awaitable);
        const bool written = co_await w.writeChunk("line " + std::to_string(i) + "\n");
        if (!written) {
          ++stream_write_failures_;
          co_return;
        }
      }
      co_await w.endStream();
    });
    // `n` lines in one write, with the stream's end.
    server_.route(Verb::get, "/burst", [](const Request& r, ResponseWriter& w) -> Task<void> {
      int count = std::stoi(std::string(r.target().substr(r.target().find('=') + 1)));
      const bool started = co_await w.beginStream(HttpStatus::ok, "application/x-ndjson");
      if (!started) co_return;
      std::string lines;
      for (int i = 0; i < count; ++i) lines += "line " + std::to_string(i) + "\n";
      co_await w.endStream(lines);
    });
    // Waits up to 5 s for its client to leave; answers whether it saw that.
    server_.route(Verb::get, "/wait", [this](const Request&, ResponseWriter& w) -> Task<void> {
      bool left = false;
      w.watchDisconnect([&left] { left = true; });
      for (int i = 0; i < 500 && !left; ++i) {
        asio::steady_timer timer(io_, 10ms);
        co_await timer.async_wait(asio::use_awaitable);
      }
      if (left) ++disconnects_seen_;
      co_await w.send(HttpStatus::ok, "text/plain", left ? "left" : "stayed");
    });
    // Watches without listening, waits for its client to leave, then asks to be told: a
    // callback set after the watch saw the client go runs at once.
    server_.route(Verb::get, "/rewatch", [this](const Request&, ResponseWriter& w) -> Task<void> {
      w.watchDisconnect([] {});
      w.watchDisconnect(nullptr);
      for (int i = 0; i < 500 && !w.gone(); ++i) {
        asio::steady_timer timer(io_, 10ms);
        co_await timer.async_wait(asio::use_awaitable);
      }
      bool told = false;
      w.watchDisconnect([&told] { told = true; });
      if (told) ++late_callbacks_;
    });
    ASSERT_TRUE(server_.listen("127.0.0.1:0").isOk());
    server_.start();
    endpoint_ = tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_.port());
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    asio::post(io_, [this] { server_.stop(); });
    work_.reset();
    io_.stop();
    thread_.join();
  }

  // Runs a coroutine on the server's io_context and waits for its value.
  template <typename T>
  T run(Task<T> task) {
    std::promise<T> promise;
    asio::co_spawn(
        io_,
        [&promise, task = std::move(task)]() mutable -> Task<void> {
          promise.set_value(co_await std::move(task));
        },
        asio::detached);
    return promise.get_future().get();
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  Server server_{io_, withBodyLimit(1024)};
  ClientPool pool_{io_};
  tcp::endpoint endpoint_;
  std::thread thread_;
  int stream_write_failures_ = 0;
  int disconnects_seen_ = 0;
  int late_callbacks_ = 0;
};

TEST_F(HttpTest, RoutesAndDefaultErrors) {
  auto r = run(pool_.request(endpoint_, Verb::get, "/hello", "", 2s));
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->body, "hello");
  r = run(pool_.request(endpoint_, Verb::post, "/echo?x=1", R"({"a":1})", 2s));
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->body, R"({"a":1})");
  EXPECT_EQ(r->content_type, "application/json");
  r = run(pool_.request(endpoint_, Verb::get, "/nope", "", 2s));
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->status, 404u);
  EXPECT_NE(r->body.find("no route for /nope"), std::string::npos);
  r = run(pool_.request(endpoint_, Verb::post, "/hello", "", 2s));
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->status, 405u);
  EXPECT_NE(r->body.find("POST is not allowed on /hello (allowed: GET)"), std::string::npos)
      << r->body;
  r = run(pool_.request(endpoint_, Verb::get, "/silent", "", 2s));
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->status, 500u);
  r = run(pool_.request(endpoint_, Verb::post, "/echo", std::string(2000, 'x'), 2s));
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->status, 413u);
}

// Sends `request` on a fresh connection and reads until the server closes it.
std::string rawExchange(const tcp::endpoint& endpoint, const std::string& request) {
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(endpoint);
  asio::write(socket, asio::buffer(request));
  std::string response;
  char chunk[4096];
  boost::system::error_code ec;
  for (;;) {
    const size_t n = socket.read_some(asio::buffer(chunk), ec);
    response.append(chunk, n);
    if (ec) break;
  }
  EXPECT_EQ(ec, asio::error::eof) << ec.message();  // the server closed the connection
  return response;
}

// Headers past ServerOptions::max_header_bytes (16 KiB) get 431 in the JSON error shape, and the
// connection closes.
TEST_F(HttpTest, OversizedHeadersAre431) {
  const std::string big(20000, 'x');
  const std::string response =
      rawExchange(endpoint_, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n");
  ASSERT_TRUE(response.starts_with("HTTP/1.1 431 ")) << response.substr(0, 200);
  EXPECT_NE(response.find(R"({"error":{"message":"The request line and headers are larger than)"),
            std::string::npos)
      << response;
  std::string many = "GET /hello HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 2000; ++i) many += "X-" + std::to_string(i) + ": y\r\n";
  EXPECT_TRUE(rawExchange(endpoint_, many + "\r\n").starts_with("HTTP/1.1 431 "));
  // Within the limit, the same server answers.
  auto r = run(pool_.request(endpoint_, Verb::get, "/hello", "", 2s));
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->status, 200u);
}

TEST_F(HttpTest, AStreamToAnHttp10ClientIsUnchunkedAndEndsWithTheClose) {
  const std::string response =
      rawExchange(endpoint_, "GET /lines?n=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  ASSERT_TRUE(response.starts_with("HTTP/1.0 200 OK\r\n")) << response;
  const size_t body = response.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos);
  const std::string header = response.substr(0, body);
  EXPECT_EQ(header.find("Transfer-Encoding"), std::string::npos) << header;
  EXPECT_EQ(header.find("keep-alive"), std::string::npos) << header;
  EXPECT_EQ(response.substr(body + 4), "line 0\nline 1\nline 2\n");
  // HTTP/1.1 keeps the chunked encoding.
  const std::string chunked =
      rawExchange(endpoint_, "GET /lines?n=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(chunked.find("Transfer-Encoding: chunked"), std::string::npos) << chunked;
}

TEST(HttpServerTest, PrefixRoutesErrorBodiesAndTheirCount) {
  asio::io_context io;
  std::vector<std::pair<std::string, unsigned>> errors;
  ServerOptions options = withBodyLimit(16);
  options.error_body = [](unsigned status, std::string_view message) {
    return "{\"status\":" + std::to_string(status) + ",\"message\":\"" + std::string(message) +
           "\"}";
  };
  options.on_error = [&errors](std::string_view route, unsigned status) {
    errors.emplace_back(route, status);
  };
  Server server(io, options);
  server.route(Verb::get, "/items", [](const Request&, ResponseWriter& w) -> Task<void> {
    co_await w.send(HttpStatus::ok, "text/plain", "all");
  });
  server.routePrefix(Verb::get, "/items/", [](const Request& r, ResponseWriter& w) -> Task<void> {
    co_await w.send(HttpStatus::ok, "text/plain", std::string(r.target().substr(7)));
  });
  server.route(Verb::post, "/upload", [](const Request&, ResponseWriter& w) -> Task<void> {
    co_await w.send(HttpStatus::ok, "text/plain", "ok");
  });
  ASSERT_TRUE(server.listen("127.0.0.1:0").isOk());
  server.start();
  const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), server.port());
  std::thread thread([&io] { io.run(); });
  const auto get = [&](const std::string& request) { return rawExchange(endpoint, request); };

  EXPECT_TRUE(get("GET /items HTTP/1.0\r\n\r\n").ends_with("all"));
  EXPECT_TRUE(get("GET /items/a/b HTTP/1.0\r\n\r\n").ends_with("a/b"));  // the rest, '/' too
  std::string r = get("DELETE /items/a HTTP/1.0\r\n\r\n");
  EXPECT_TRUE(r.starts_with("HTTP/1.0 405")) << r;
  EXPECT_NE(r.find("Allow: GET"), std::string::npos) << r;
  EXPECT_NE(r.find(R"({"status":405,"message":"DELETE is not allowed on /items/a)"),
            std::string::npos)
      << r;
  r = get("GET /other HTTP/1.0\r\n\r\n");
  EXPECT_TRUE(r.starts_with("HTTP/1.0 404")) << r;
  EXPECT_NE(r.find("Invalid URL (GET /other)"), std::string::npos) << r;
  r = get("POST /upload HTTP/1.0\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'x'));
  EXPECT_TRUE(r.starts_with("HTTP/1.0 413")) << r;
  EXPECT_NE(r.find(R"({"status":413)"), std::string::npos) << r;

  asio::post(io, [&server] { server.stop(); });
  thread.join();
  // Each error the server answered itself, with the route it was for ("" for none).
  EXPECT_EQ(errors, (std::vector<std::pair<std::string, unsigned>>{
                        {"/items/a", 405}, {"", 404}, {"/upload", 413}}));
}

TEST_F(HttpTest, ManySequentialRequestsShareConnections) {
  for (int i = 0; i < 50; ++i) {
    auto r = run(pool_.request(endpoint_, Verb::post, "/echo", std::to_string(i), 2s));
    ASSERT_TRUE(r.isOk()) << r.status().toString();
    EXPECT_EQ(r->body, std::to_string(i));
  }
}

TEST_F(HttpTest, StreamsLines) {
  std::vector<std::string> lines;
  auto r = run(pool_.streamLines(endpoint_, Verb::get, "/lines?n=20", "", 2s, 2s,
                                 [&](std::string_view line) -> Task<bool> {
                                   lines.emplace_back(line);
                                   co_return true;
                                 }));
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(r->status, 200u);
  ASSERT_EQ(lines.size(), 20u);
  EXPECT_EQ(lines[19], "line 19");
}

// on_drained runs when the lines read so far were handed over and the stream waits for more:
// between lines that come apart, never twice without a line between, and not for lines that
// came in one write with the body's end.
TEST_F(HttpTest, DrainedRunsWhenTheStreamWaitsForMore) {
  for (const char* target : {"/lines?n=5", "/burst?n=50"}) {
    std::vector<std::string> events;
    const std::function<Task<bool>()> drained = [&events]() -> Task<bool> {
      events.emplace_back("drained");
      co_return true;
    };
    auto r = run(pool_.streamLines(
        endpoint_, Verb::get, target, "", 2s, 2s,
        [&events](std::string_view line) -> Task<bool> {
          events.emplace_back(line);
          co_return true;
        },
        drained));
    ASSERT_TRUE(r.isOk()) << r.status().toString();
    const auto count = std::count(events.begin(), events.end(), "drained");
    EXPECT_EQ(events.size() - static_cast<size_t>(count), target[1] == 'l' ? 5u : 50u);
    ASSERT_FALSE(events.empty());
    EXPECT_NE(events.front(), "drained") << target;
    for (size_t i = 1; i < events.size(); ++i) {
      EXPECT_FALSE(events[i] == "drained" && events[i - 1] == "drained") << target;
    }
    if (target[1] == 'b') {
      EXPECT_EQ(count, 0) << "one write needs no wait";
    }
  }
}

TEST_F(HttpTest, StoppingAStreamMakesTheServerWritesFail) {
  int seen = 0;
  auto r = run(pool_.streamLines(endpoint_, Verb::get, "/lines?n=100000", "", 2s, 2s,
                                 [&](std::string_view) -> Task<bool> { co_return ++seen < 3; }));
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(seen, 3);
  // The handler notices within a few writes once the connection is gone.
  for (int i = 0;
       i < 500 && run([this]() -> Task<int> { co_return stream_write_failures_; }()) == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(run([this]() -> Task<int> { co_return stream_write_failures_; }()), 1);
}

TEST_F(HttpTest, AWatchedHandlerLearnsItsClientLeft) {
  tcp::socket socket(io_);
  socket.connect(endpoint_);
  std::string request = "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n";
  asio::write(socket, asio::buffer(request));
  std::this_thread::sleep_for(50ms);
  socket.close();
  for (int i = 0; i < 300 && run([this]() -> Task<int> { co_return disconnects_seen_; }()) == 0;
       ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(run([this]() -> Task<int> { co_return disconnects_seen_; }()), 1);
}

TEST_F(HttpTest, ACallbackSetAfterTheClientLeftRunsAtOnce) {
  tcp::socket socket(io_);
  socket.connect(endpoint_);
  std::string request = "GET /rewatch HTTP/1.1\r\nHost: x\r\n\r\n";
  asio::write(socket, asio::buffer(request));
  std::this_thread::sleep_for(50ms);
  socket.close();
  for (int i = 0; i < 300 && run([this]() -> Task<int> { co_return late_callbacks_; }()) == 0;
       ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(run([this]() -> Task<int> { co_return late_callbacks_; }()), 1);
}

TEST_F(HttpTest, AWatchEndsWithItsHandlerAndKeepAliveGoesOn) {
  // The watch stops when /echo answers... here /wait answers after its 5 s only if nobody
  // leaves, so use a pipelined second request: the watch sees data, not a disconnect.
  tcp::socket socket(io_);
  socket.connect(endpoint_);
  std::string two = "GET /wait HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
  asio::write(socket, asio::buffer(two));
  beast::flat_buffer buffer;
  beast::http::response<beast::http::string_body> first;
  beast::http::read(socket, buffer, first);
  EXPECT_EQ(first.body(), "stayed");
  beast::http::response<beast::http::string_body> second;
  beast::http::read(socket, buffer, second);
  EXPECT_EQ(second.body(), "hello");
  EXPECT_EQ(run([this]() -> Task<int> { co_return disconnects_seen_; }()), 0);
}

// abort() ends the calls in progress to an endpoint (a node declared dead while frozen) at
// once: /wait would answer only after 5 s, the stream would run for minutes.
TEST_F(HttpTest, AbortEndsTheRequestsAndStreamsInProgress) {
  std::promise<Result<Response>> waited, streamed;
  asio::co_spawn(
      io_,
      [&]() -> Task<void> {
        waited.set_value(co_await pool_.request(endpoint_, Verb::get, "/wait", "", 60s));
      },
      asio::detached);
  asio::co_spawn(
      io_,
      [&]() -> Task<void> {
        auto on_line = [](std::string_view) -> Task<bool> { co_return true; };
        streamed.set_value(co_await pool_.streamLines(endpoint_, Verb::get, "/lines?n=1000000", "",
                                                      60s, 60s, on_line));
      },
      asio::detached);
  std::this_thread::sleep_for(200ms);  // both are in progress (the stream well under way)
  asio::post(io_, [this] { pool_.abort(endpoint_); });
  Result<Response> a = waited.get_future().get();
  Result<Response> b = streamed.get_future().get();
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable) << a.status().toString();
  EXPECT_EQ(b.status().code(), StatusCode::kUnavailable) << b.status().toString();
  // The pool still works for the endpoint afterwards.
  auto r = run(pool_.request(endpoint_, Verb::get, "/hello", "", 2s));
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(r->body, "hello");
}

TEST_F(HttpTest, UnreachableServerIsUnavailable) {
  tcp::endpoint closed(asio::ip::make_address("127.0.0.1"), 1);
  auto r = run(pool_.request(closed, Verb::get, "/", "", 2s));
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
}

TEST(HttpEndpoint, ParsesAndRejects) {
  auto ep = parseEndpoint("127.0.0.1:8000", "x");
  ASSERT_TRUE(ep.isOk());
  EXPECT_EQ(endpointText(*ep), "127.0.0.1:8000");
  EXPECT_TRUE(parseEndpoint("[::1]:80", "x").isOk());
  EXPECT_FALSE(parseEndpoint("localhost:80", "x").isOk());
  EXPECT_FALSE(parseEndpoint("127.0.0.1", "x").isOk());
  EXPECT_FALSE(parseEndpoint("127.0.0.1:99999", "x").isOk());
}

}  // namespace
}  // namespace kvferry::http
