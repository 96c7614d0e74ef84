// The orchestrator's HTTP server in-process on 127.0.0.1:0, with fake node agents written here on
// common/http.h and registered through the real /v1/agents/register route: request validation,
// health, the colocated (generate) and split (reserve → prefill → decode) paths, SSE framing,
// usage, admission (429) and retrying on another decode node.
#include "orchestrator/server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/control_auth.h"
#include "common/control_wire.h"
#include "common/coroutine_rules.h"
#include "model/test_data.h"
#include "orchestrator/registration.h"
#include "orchestrator/request_flow.h"

namespace kvferry::orchestrator {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using http::HttpStatus;
using http::Request;
using http::ResponseWriter;
using http::Task;
using http::Verb;

// A node agent's control API, minimal: generate and decode stream `tokens` (the first one comes
// from prefill on the split path), reserve hands out a lease, release and cancel are counted.
class FakeAgent {
 public:
  FakeAgent(asio::io_context& io, std::string role, std::vector<int32_t> tokens)
      : io_(io), role_(std::move(role)), tokens_(std::move(tokens)), server_(io, {}) {
    server_.route(Verb::post, wire::route::kGenerate,
                  [this](const Request& r, ResponseWriter& w) { return generate(r, w); });
    server_.route(Verb::post, wire::route::kReserve,
                  [this](const Request& r, ResponseWriter& w) { return reserve(r, w); });
    server_.route(Verb::post, wire::route::kPrefill,
                  [this](const Request& r, ResponseWriter& w) { return prefill(r, w); });
    server_.route(Verb::post, wire::route::kDecode,
                  [this](const Request& r, ResponseWriter& w) { return decode(r, w); });
    server_.route(Verb::post, wire::route::kRelease, [this](const Request& r, ResponseWriter& w) {
      auto release = wire::decode<wire::ReleaseRequest>(r.body());
      last_release_writer_done = release.isOk() && release->writer_done;
      ++releases;
      return ok(w);
    });
    server_.route(Verb::post, wire::route::kCancel, [this](const Request&, ResponseWriter& w) {
      ++cancels;
      return ok(w);
    });
    EXPECT_TRUE(server_.listen("127.0.0.1:0").isOk());
    server_.start();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(server_.port()); }
  const std::string& role() const { return role_; }
  std::string blob() const { return "blob-of-" + address(); }
  void stop() { server_.stop(); }

  std::atomic<bool> refuse_reserve{false};
  std::atomic<bool> no_room{false};  // reserve answers kv_capacity
  std::atomic<bool> hold{false};     // streams wait while set
  std::atomic<uint32_t> cached_tokens{0};
  std::atomic<int> generates{0}, reserves{0}, prefills{0}, decodes{0}, releases{0}, cancels{0};
  std::atomic<int> streams_open{0};
  std::string last_auth, last_target, last_body;  // of the last generate (read after it answered)
  std::atomic<int> streams_cut{0};                // streams whose reader hung up before the end
  std::atomic<int> token_delay_ms{0};
  std::atomic<int> prefill_delay_ms{0};
  std::atomic<int> fail_after{-1};   // >= 0: finish with "error" after this many tokens
  std::atomic<int> pause_after{-1};  // >= 0: after this many tokens, wait until released
  std::atomic<bool> released{false};
  std::atomic<bool> last_release_writer_done{false};
  std::string last_prefill_blob;  // written on the io thread, read after the request completed
  // What the last prefill / generate call carried: answer tokens at the end of its prompt (a
  // resumed answer) and random draws to skip.
  std::atomic<int> last_resumed_from{-1};
  std::atomic<uint64_t> last_rng_draws{0};
  std::atomic<uint64_t> last_decode_rng_draws{0};
  std::atomic<uint64_t> last_request_id{0};  // the control plane's id of the last generate

 private:
  static Task<void> ok(ResponseWriter& w) {
    co_await w.send(HttpStatus::ok, "application/json", "{}");
  }
  static Task<void> fail(ResponseWriter& w, HttpStatus status, std::string message) {
    co_await w.send(status, "application/json", http::errorBody(message));
  }

  // How many of the script's first tokens end `tokens`: an orchestrator resuming an answer sends
  // the prompt followed by the answer so far, and the script goes on from there.
  size_t answered(const std::vector<int32_t>& tokens) const {
    for (size_t k = std::min(tokens.size(), tokens_.size() - 1); k > 0; --k) {
      if (std::equal(tokens_.begin(), tokens_.begin() + static_cast<std::ptrdiff_t>(k),
                     tokens.end() - static_cast<std::ptrdiff_t>(k))) {
        return k;
      }
    }
    return 0;
  }

  // Streams tokens_[from, from + budget) then the finish line (common/coroutine_rules.h: no
  // co_await inside a condition).
  Task<void> stream(ResponseWriter& w, size_t from, uint32_t budget, bool with_cached) {
    ++streams_open;
    bool alive = co_await w.beginStream(HttpStatus::ok, "application/x-ndjson");
    while (alive && hold) {
      asio::steady_timer timer(io_, 5ms);
      co_await timer.async_wait(asio::use_awaitable);
    }
    const size_t end = std::min(tokens_.size(), from + budget);
    for (size_t i = from; i < end && alive; ++i) {
      while (pause_after >= 0 && i - from == static_cast<size_t>(pause_after) && !released) {
        asio::steady_timer timer(io_, 5ms);
        co_await timer.async_wait(asio::use_awaitable);
      }
      if (fail_after >= 0 && i - from == static_cast<size_t>(fail_after)) {
        wire::StreamLine error;
        error.finish = "error";
        error.message = "decode step failed";
        alive = co_await w.writeChunk(wire::encode(error) + "\n");
        if (alive) co_await w.endStream();
        --streams_open;
        co_return;
      }
      if (token_delay_ms > 0) {
        asio::steady_timer timer(io_, std::chrono::milliseconds(token_delay_ms.load()));
        co_await timer.async_wait(asio::use_awaitable);
      }
      wire::StreamLine line;
      line.token = tokens_[i];
      if (with_cached && i == from) line.cached_tokens = cached_tokens.load();
      alive = co_await w.writeChunk(wire::encode(line) + "\n");
    }
    if (alive) {
      wire::StreamLine last;
      last.finish = end - from == budget ? "length" : "stop";
      alive = co_await w.writeChunk(wire::encode(last) + "\n");
    }
    if (alive) co_await w.endStream();
    if (!alive) ++streams_cut;
    --streams_open;
  }

  Task<void> generate(const Request& r, ResponseWriter& w) {
    ++generates;
    last_auth = std::string(r[control_auth::kHeader]);
    last_target = std::string(r.target());
    last_body = r.body();
    auto g = wire::decode<wire::GenerateRequest>(r.body());
    if (!g.isOk()) {
      co_await fail(w, HttpStatus::bad_request, g.status().message());
      co_return;
    }
    const size_t from = answered(g->tokens);
    last_resumed_from = static_cast<int>(from);
    last_rng_draws = g->rng_draws;
    last_request_id = g->request_id;
    co_await stream(w, from, g->max_new_tokens, true);
  }
  Task<void> reserve(const Request& r, ResponseWriter& w) {
    ++reserves;
    auto q = wire::decode<wire::ReserveRequest>(r.body());
    if (!q.isOk()) {
      co_await fail(w, HttpStatus::bad_request, q.status().message());
      co_return;
    }
    if (refuse_reserve) {
      {
        co_await fail(w, HttpStatus::service_unavailable, "KV pool full");
        co_return;
      }
    }
    if (no_room) {
      // Built into a local (common/coroutine_rules.h).
      std::string body = wire::encode(wire::AgentError{
          "reserve: need 9 new KV blocks, 2 are available", wire::error_code::kKvCapacity, false});
      co_await w.send(HttpStatus::service_unavailable, "application/json", std::move(body));
      co_return;
    }
    wire::ReserveResponse lease;
    lease.lease_id = 1000 + reserves;
    lease_from_[lease.lease_id] = answered(q->tokens);
    lease.slot = 7;
    lease.block_ids = {3, 4};
    lease.regions = {0, 1, 2, 3};
    co_await w.send(HttpStatus::ok, "application/json", wire::encode(lease));
  }
  Task<void> prefill(const Request& r, ResponseWriter& w) {
    ++prefills;
    auto p = wire::decode<wire::PrefillRequest>(r.body());
    if (!p.isOk()) {
      co_await fail(w, HttpStatus::bad_request, p.status().message());
      co_return;
    }
    last_prefill_blob = p->target.transport_blob;
    if (prefill_delay_ms > 0) {
      asio::steady_timer timer(io_, std::chrono::milliseconds(prefill_delay_ms.load()));
      co_await timer.async_wait(asio::use_awaitable);
    }
    const size_t from = answered(p->tokens);
    last_resumed_from = static_cast<int>(from);
    last_rng_draws = p->rng_draws;
    wire::PrefillResponse first;
    first.first_token = tokens_[from];
    first.cached_tokens = cached_tokens;
    first.rng_draws = p->rng_draws + wire::randomDrawsPerToken(p->sampling);
    co_await w.send(HttpStatus::ok, "application/json", wire::encode(first));
  }
  Task<void> decode(const Request& r, ResponseWriter& w) {
    ++decodes;
    auto d = wire::decode<wire::DecodeRequest>(r.body());
    if (!d.isOk()) {
      co_await fail(w, HttpStatus::bad_request, d.status().message());
      co_return;
    }
    const size_t from = lease_from_[d->lease_id];
    last_decode_rng_draws = d->rng_draws;
    if (d->first_token != tokens_[from]) {
      {
        co_await fail(w, HttpStatus::bad_request, "wrong first token");
        co_return;
      }
    }
    co_await stream(w, from + 1, d->max_new_tokens, false);
  }

  asio::io_context& io_;
  const std::string role_;
  const std::vector<int32_t> tokens_;
  std::map<uint64_t, size_t> lease_from_;  // lease id → answer tokens its prompt ends with
  http::Server server_;
};

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    config::ModelConfig model;
    model.path = model::testing::storiesPath();
    auto served = ServedModel::load(model);
    ASSERT_TRUE(served.isOk()) << served.status().toString();
    served_ = new ServedModel(std::move(served).value());
  }
  static void TearDownTestSuite() { delete served_; }

  void SetUp() override {
    config_.listen_address = "127.0.0.1:0";
    config_.model.path = model::testing::storiesPath();
    config_.heartbeat_interval_ms = 100;
    config_.heartbeat_timeout_ms = 60000;  // the fakes send no heartbeats
    config_.agent_timeout_ms = 5000;
    thread_ = std::thread([this] { io_.run(); });
  }

  void start() {
    auto server = OrchestratorServer::create(io_, config_);
    ASSERT_TRUE(server.isOk()) << server.status().toString();
    server_ = std::move(server).value();
    ASSERT_TRUE(server_->listen().isOk());
    server_->start();
    endpoint_ = http::tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port());
  }

  void TearDown() override {
    for (auto& agent : agents_) {
      agent->hold = false;
      agent->released = true;
    }
    if (server_) run(shutdown());
    asio::post(io_, [this] {
      for (auto& agent : agents_) agent->stop();
    });
    work_.reset();
    io_.stop();
    thread_.join();
  }

  Task<bool> shutdown() {
    co_await server_->shutdown(2s);
    co_return true;
  }

  template <typename T>
  T run(Task<T> task) {
    std::promise<T> promise;
    auto future = promise.get_future();
    asio::co_spawn(
        io_,
        [&promise, task = std::move(task)]() mutable -> Task<void> {
          promise.set_value(co_await std::move(task));
        },
        asio::detached);
    return future.get();
  }

  http::Response call(Verb verb, const std::string& target, std::string body = "") {
    auto r = run(pool_.request(endpoint_, verb, target, std::move(body), 10s));
    EXPECT_TRUE(r.isOk()) << r.status().toString();
    return r.isOk() ? *r : http::Response{};
  }
  http::Response post(const std::string& target, std::string body) {
    return call(Verb::post, target, std::move(body));
  }
  // A request whose answer is awaited later.
  std::future<http::Response> postLater(const std::string& target, std::string body) {
    auto promise = std::make_shared<std::promise<http::Response>>();
    auto future = promise->get_future();
    asio::co_spawn(
        io_,
        [this, promise, target, body]() -> Task<void> {
          auto r = co_await pool_.request(endpoint_, Verb::post, target, body, 10s);
          promise->set_value(r.isOk() ? *r : http::Response{});
        },
        asio::detached);
    return future;
  }

  static std::vector<int32_t> encode(std::string_view text) {
    model::EncodeOptions options;
    options.add_bos = false;
    auto ids = served_->tokenizer->encode(text, options);
    EXPECT_TRUE(ids.isOk());
    return ids.isOk() ? *ids : std::vector<int32_t>{};
  }

  FakeAgent& addAgent(std::string role, uint32_t max_sequence_tokens = 0) {
    agents_.push_back(std::make_unique<FakeAgent>(io_, role, encode("upon a time there was")));
    FakeAgent& agent = *agents_.back();
    http::Response r =
        post(wire::route::kRegister, wire::encode(registration(agent, max_sequence_tokens)));
    EXPECT_EQ(r.status, 200u) << r.body;
    auto registered = wire::decode<wire::RegisterResponse>(r.body);
    if (registered.isOk()) node_tokens_.push_back(registered->node_token);
    return agent;
  }

  wire::RegisterRequest registration(const FakeAgent& agent, uint32_t max_sequence_tokens) const {
    return testing::registrationFor(served_->identity, "fake-" + agent.role(), agent.role(),
                                    agent.address(), agent.blob(), max_sequence_tokens);
  }

  static json::value parse(const std::string& body) {
    boost::system::error_code ec;
    json::value v = json::parse(body, ec);
    EXPECT_FALSE(ec) << body;
    return v;
  }
  static std::string errorMessage(const http::Response& r) {
    json::value v = parse(r.body);
    if (!v.is_object() || !v.as_object().contains("error")) return "";
    return std::string(v.at("error").at("message").as_string());
  }
  static std::string errorType(const http::Response& r) {
    json::value v = parse(r.body);
    return std::string(v.at("error").at("type").as_string());
  }

  static ServedModel* served_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  http::ClientPool pool_{io_};
  config::OrchestratorConfig config_;
  std::unique_ptr<OrchestratorServer> server_;
  std::vector<std::unique_ptr<FakeAgent>> agents_;
  std::vector<uint64_t> node_tokens_;  // of addAgent()'s registrations, in order
  http::tcp::endpoint endpoint_;
  std::thread thread_;
};

ServedModel* ServerTest::served_ = nullptr;

TEST_F(ServerTest, BadInputsGetStatusAndMessage) {
  start();
  auto r = post("/v1/completions", "{not json");
  EXPECT_EQ(r.status, 400u);
  EXPECT_FALSE(errorMessage(r).empty()) << r.body;
  EXPECT_EQ(errorType(r), "invalid_request_error");

  r = post("/v1/completions", R"({"model":"stories260K","prompt":5})");
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(errorMessage(r).find("prompt"), std::string::npos) << r.body;

  r = post("/v1/chat/completions", R"({"model":"stories260K","messages":"hi"})");
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(errorMessage(r).find("messages"), std::string::npos) << r.body;

  r = post("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":0})");
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(errorMessage(r).find("max_tokens"), std::string::npos) << r.body;

  r = post("/v1/completions", R"({"model":"gpt-4","prompt":"Once"})");
  EXPECT_EQ(r.status, 404u);
  EXPECT_NE(errorMessage(r).find("gpt-4"), std::string::npos) << r.body;
  EXPECT_NE(errorMessage(r).find("stories260K"), std::string::npos) << r.body;

  r = post("/v1/completions", "{\"model\":\"stories260K\",\"prompt\":\"Once \xff\"}");
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(errorMessage(r).find("UTF-8"), std::string::npos) << r.body;

  // Longer than the model's context (no agents yet: the model file's context_length).
  const uint32_t context = served_->params.context_length;
  std::string long_prompt;
  for (uint32_t i = 0; i < context + 10; ++i) long_prompt += "a ";
  r = post("/v1/completions", R"({"model":"stories260K","prompt":")" + long_prompt + "\"}");
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(errorMessage(r).find("maximum context length is " + std::to_string(context)),
            std::string::npos)
      << errorMessage(r);

  // The smallest max_sequence_tokens of the live agents bounds it further.
  addAgent("both", 8);
  r = post("/v1/completions",
           R"({"model":"stories260K","prompt":"Once upon a time there was a little girl"})");
  EXPECT_EQ(r.status, 400u);
  std::string message = errorMessage(r);
  EXPECT_NE(message.find("maximum context length is 8 tokens"), std::string::npos) << message;
  EXPECT_NE(message.find("the prompt has "), std::string::npos) << message;
}

TEST_F(ServerTest, HealthTurnsOkWhenAPrefillAndADecodeNodeAreLive) {
  start();
  auto r = call(Verb::get, "/health");
  EXPECT_EQ(r.status, 503u);
  EXPECT_NE(r.body.find("no live node can prefill or decode"), std::string::npos) << r.body;
  addAgent("prefill");
  r = call(Verb::get, "/health");
  EXPECT_EQ(r.status, 503u);
  EXPECT_NE(r.body.find("no live node can decode"), std::string::npos) << r.body;
  addAgent("decode");
  r = call(Verb::get, "/health");
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(parse(r.body).at("status").as_string(), "ok");

  r = call(Verb::get, "/v1/models");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(parse(r.body).at("data").at(0).at("id").as_string(), "stories260K");

  r = call(Verb::get, "/v1/nodes");
  ASSERT_EQ(r.status, 200u);
  json::value nodes = parse(r.body);
  ASSERT_EQ(nodes.as_array().size(), 2u);
  EXPECT_EQ(nodes.at(0).at("role").as_string(), "prefill");
  EXPECT_EQ(nodes.at(1).at("id").as_int64(), 1);
  EXPECT_TRUE(nodes.at(1).at("alive").as_bool());
  EXPECT_EQ(nodes.at(1).at("total_kv_blocks").as_int64(), 1000);
  EXPECT_TRUE(nodes.at(1).as_object().contains("cached_blocks"));
  EXPECT_TRUE(nodes.at(1).as_object().contains("last_heartbeat_ms_ago"));

  // Leaving takes the node out at once; only with the registration's token (a copied node id
  // alone does not remove a node).
  r = post(wire::route::kLeave, wire::encode(wire::LeaveRequest{1, node_tokens_.at(1) + 1}));
  EXPECT_EQ(r.status, 404u) << r.body;
  EXPECT_EQ(call(Verb::get, "/health").status, 200u);
  r = post(wire::route::kLeave, wire::encode(wire::LeaveRequest{1, node_tokens_.at(1)}));
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(call(Verb::get, "/health").status, 503u);
  // Decode nodes alone serve whole requests: healthy, and saying so.
  addAgent("decode");
  r = post(wire::route::kLeave, wire::encode(wire::LeaveRequest{0, node_tokens_.at(0)}));
  r = call(Verb::get, "/health");
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_NE(r.body.find("the decode nodes serve whole requests"), std::string::npos) << r.body;
}

TEST_F(ServerTest, AgentRoutesValidateAndRefuseOtherClusters) {
  start();
  agents_.push_back(std::make_unique<FakeAgent>(io_, "decode", std::vector<int32_t>{1}));
  wire::RegisterRequest r = registration(*agents_.back(), 0);
  r.block_tokens = served_->identity.block_tokens * 2;
  auto answer = post(wire::route::kRegister, wire::encode(r));
  EXPECT_EQ(answer.status, 409u);
  EXPECT_NE(errorMessage(answer).find("block_tokens " + std::to_string(r.block_tokens) +
                                      " differs from the cluster's " +
                                      std::to_string(served_->identity.block_tokens)),
            std::string::npos)
      << answer.body;
  r = registration(*agents_.back(), 0);
  r.role = "gpu";
  EXPECT_EQ(post(wire::route::kRegister, wire::encode(r)).status, 400u);
  EXPECT_EQ(post(wire::route::kRegister, "{}").status, 400u);

  r = registration(*agents_.back(), 0);
  answer = post(wire::route::kRegister, wire::encode(r));
  ASSERT_EQ(answer.status, 200u) << answer.body;
  auto registered = wire::decode<wire::RegisterResponse>(answer.body);
  ASSERT_TRUE(registered.isOk());
  EXPECT_EQ(registered->node_id, 0u);
  EXPECT_EQ(registered->heartbeat_interval_ms, 100u);
  EXPECT_EQ(registered->heartbeat_timeout_ms, 60000u);

  wire::HeartbeatRequest hb;
  hb.node_id = 0;
  hb.node_token = registered->node_token + 1;  // another registration's id
  hb.kv_events = {{1, {10, 11}, {}}};
  answer = post(wire::route::kHeartbeat, wire::encode(hb));
  EXPECT_EQ(answer.status, 404u) << answer.body;
  hb.node_token = registered->node_token;
  answer = post(wire::route::kHeartbeat, wire::encode(hb));
  EXPECT_EQ(answer.status, 200u) << answer.body;
  EXPECT_EQ(parse(call(Verb::get, "/v1/nodes").body).at(0).at("cached_blocks").as_int64(), 2);
  hb.node_id = 5;
  answer = post(wire::route::kHeartbeat, wire::encode(hb));
  EXPECT_EQ(answer.status, 404u);
}

TEST_F(ServerTest, StreamedChatHasExactSseFraming) {
  start();
  addAgent("both");
  auto r = post("/v1/chat/completions", R"({"model":"stories260K","stream":true,
      "messages":[{"role":"user","content":"Once"}],"max_tokens":3,
      "stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.content_type, "text/event-stream");
  ASSERT_TRUE(r.body.ends_with("\n\ndata: [DONE]\n\n")) << r.body;
  std::vector<json::value> chunks;
  size_t start = 0;
  for (size_t end; (end = r.body.find("\n\n", start)) != std::string::npos; start = end + 2) {
    std::string event = r.body.substr(start, end - start);
    ASSERT_TRUE(event.starts_with("data: ")) << event;
    if (event == "data: [DONE]") break;
    chunks.push_back(parse(event.substr(6)));
  }
  EXPECT_EQ(start + std::string("data: [DONE]\n\n").size(), r.body.size());
  ASSERT_GE(chunks.size(), 4u);  // role, text…, finish, usage
  EXPECT_EQ(chunks[0].at("object").as_string(), "chat.completion.chunk");
  EXPECT_EQ(chunks[0].at("choices").at(0).at("delta").at("role").as_string(), "assistant");
  std::string text;
  for (size_t i = 1; i + 2 < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i].at("id"), chunks[0].at("id"));
    text += chunks[i].at("choices").at(0).at("delta").at("content").as_string();
  }
  EXPECT_EQ(text, " upon a time");
  const json::value& finish = chunks[chunks.size() - 2];
  EXPECT_EQ(finish.at("choices").at(0).at("finish_reason").as_string(), "length");
  const json::value& usage = chunks.back();
  EXPECT_TRUE(usage.at("choices").as_array().empty());
  EXPECT_EQ(usage.at("usage").at("completion_tokens").as_int64(), 3);
  EXPECT_EQ(agents_[0]->generates, 1);
}

TEST_F(ServerTest, NonStreamedCompletionHasUsageAndStopsAtAStopString) {
  start();
  FakeAgent& agent = addAgent("both");
  agent.cached_tokens = 16;
  auto r = post("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":10})");
  ASSERT_EQ(r.status, 200u) << r.body;
  json::value v = parse(r.body);
  EXPECT_EQ(v.at("object").as_string(), "text_completion");
  EXPECT_EQ(v.at("choices").at(0).at("text").as_string(), " upon a time there was");
  EXPECT_EQ(v.at("choices").at(0).at("finish_reason").as_string(), "stop");  // the stream ended
  const json::value& usage = v.at("usage");
  EXPECT_EQ(usage.at("prompt_tokens").as_int64(), 2);  // BOS, "▁Once"
  EXPECT_EQ(usage.at("completion_tokens").as_int64(), 5);
  EXPECT_EQ(usage.at("total_tokens").as_int64(), 7);
  EXPECT_EQ(usage.at("prompt_tokens_details").at("cached_tokens").as_int64(), 16);

  r = post("/v1/completions",
           R"({"model":"stories260K","prompt":"Once","max_tokens":10,"stop":[" time"]})");
  ASSERT_EQ(r.status, 200u) << r.body;
  v = parse(r.body);
  EXPECT_EQ(v.at("choices").at(0).at("text").as_string(), " upon a");
  EXPECT_EQ(v.at("choices").at(0).at("finish_reason").as_string(), "stop");
}

TEST_F(ServerTest, TheIdsClientsSeeAreRandomAndApartFromTheAgentsIds) {
  start();
  FakeAgent& agent = addAgent("both");
  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto r = post("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":2})");
    ASSERT_EQ(r.status, 200u) << r.body;
    const std::string id(parse(r.body).at("id").as_string());
    EXPECT_EQ(id.size(), 5u + 32u) << id;
    EXPECT_TRUE(id.starts_with("cmpl-")) << id;
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef", 5), std::string::npos) << id;
    char internal[17];
    std::snprintf(internal, sizeof internal, "%016llx",
                  static_cast<unsigned long long>(agent.last_request_id.load()));
    EXPECT_EQ(id.find(internal), std::string::npos) << id << " shows the agents' id " << internal;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 3u);
}

TEST_F(ServerTest, SplitPathReservesPrefillsAndDecodes) {
  start();
  FakeAgent& prefill = addAgent("prefill");
  FakeAgent& decode = addAgent("decode");
  prefill.cached_tokens = 4;
  auto r = post("/v1/completions",
                R"({"model":"stories260K","prompt":"Once","max_tokens":4,"stream":true})");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_NE(r.body.find(R"("text":" upon")"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(R"("finish_reason":"length")"), std::string::npos) << r.body;
  EXPECT_TRUE(r.body.ends_with("data: [DONE]\n\n"));
  EXPECT_EQ(decode.reserves, 1);
  EXPECT_EQ(prefill.prefills, 1);
  EXPECT_EQ(decode.decodes, 1);
  EXPECT_EQ(prefill.generates + decode.generates, 0);
  EXPECT_EQ(prefill.last_prefill_blob, decode.blob());

  // max_tokens 1: the prefill's token is the whole answer; the lease is released, not decoded.
  r = post("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":1})");
  ASSERT_EQ(r.status, 200u) << r.body;
  json::value v = parse(r.body);
  EXPECT_EQ(v.at("choices").at(0).at("text").as_string(), " upon");
  EXPECT_EQ(v.at("usage").at("prompt_tokens_details").at("cached_tokens").as_int64(), 4);
  EXPECT_EQ(decode.decodes, 1);
  for (int i = 0; i < 200 && decode.releases == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(decode.releases, 1);
}

TEST_F(ServerTest, RefusedReservationRetriesOnAnotherDecodeNode) {
  start();
  FakeAgent& prefill = addAgent("prefill");
  FakeAgent& full = addAgent("decode");
  FakeAgent& roomy = addAgent("decode");
  full.refuse_reserve = true;
  for (int i = 0; i < 4; ++i) {
    auto r = post("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":3})");
    ASSERT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(parse(r.body).at("choices").at(0).at("text").as_string(), " upon a time");
  }
  EXPECT_GE(full.reserves, 1);  // tried, refused, excluded for that request
  EXPECT_EQ(full.decodes, 0);
  EXPECT_EQ(roomy.decodes, 4);
  EXPECT_EQ(prefill.prefills, 4);

  // With no decode node left to try, the client gets a 503 naming the last failure.
  roomy.refuse_reserve = true;
  auto r = post("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":3})");
  EXPECT_EQ(r.status, 503u) << r.body;
  EXPECT_NE(errorMessage(r).find("KV pool full"), std::string::npos) << r.body;
}

// Issue #18: a request that finds no KV room waits for it instead of failing with 503.
TEST_F(ServerTest, ARequestWithoutKvRoomWaitsUntilANodeReportsRoom) {
  start();
  addAgent("prefill");
  FakeAgent& decode = addAgent("decode");
  decode.no_room = true;
  auto waiting =
      postLater("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":3})");
  for (int i = 0; i < 400 && decode.reserves == 0; ++i) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(decode.reserves, 1);  // refused once; waiting now, not retrying in a loop
  EXPECT_NE(call(Verb::get, "/metrics").body.find("kvferry_admission_queued_requests 1"),
            std::string::npos);
  decode.no_room = false;
  wire::HeartbeatRequest hb;  // the node reports room
  hb.node_id = 1;
  hb.node_token = node_tokens_.at(1);
  hb.load.free_kv_blocks = 1000;
  hb.load.total_kv_blocks = 1000;
  EXPECT_EQ(post(wire::route::kHeartbeat, wire::encode(hb)).status, 200u);
  http::Response done = waiting.get();
  EXPECT_EQ(done.status, 200u) << done.body;
  EXPECT_EQ(decode.reserves, 2);
  EXPECT_EQ(decode.decodes, 1);
}

TEST_F(ServerTest, AdmissionRefusesBeyondInflightAndQueue) {
  config_.max_inflight = 1;
  config_.max_queue = 0;
  config_.retry_after_s = 7;
  start();
  FakeAgent& agent = addAgent("both");
  agent.hold = true;
  auto first =
      postLater("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":3})");
  for (int i = 0; i < 400 && agent.streams_open == 0; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(agent.streams_open, 1);

  auto r = post("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":3})");
  EXPECT_EQ(r.status, 429u) << r.body;
  EXPECT_EQ(r.retry_after, "7");
  json::value v = parse(r.body);
  EXPECT_EQ(v.at("error").at("code").as_string(), "rate_limit_exceeded");
  EXPECT_EQ(v.at("error").at("type").as_string(), "rate_limit_error");

  agent.hold = false;
  http::Response done = first.get();
  EXPECT_EQ(done.status, 200u) << done.body;
  // The slot is free again.
  r = post("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":3})");
  EXPECT_EQ(r.status, 200u) << r.body;
}

TEST_F(ServerTest, AdmissionQueueIsFifoAndTimesOut) {
  config_.max_inflight = 1;
  config_.max_queue = 1;
  config_.queue_timeout_ms = 100;
  start();
  FakeAgent& agent = addAgent("both");
  const std::string body = R"({"model":"stories260K","prompt":"Once","max_tokens":3})";
  agent.hold = true;
  auto first = postLater("/v1/completions", body);
  for (int i = 0; i < 400 && agent.streams_open == 0; ++i) std::this_thread::sleep_for(5ms);
  auto queued = postLater("/v1/completions", body);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(post("/v1/completions", body).status, 429u);  // the queue (1) is full
  http::Response timed_out = queued.get();                // after queue_timeout_ms
  EXPECT_EQ(timed_out.status, 429u);
  EXPECT_NE(errorMessage(timed_out).find("waited 100 ms"), std::string::npos) << timed_out.body;

  // A waiting request gets the slot as soon as the one in flight finishes.
  queued = postLater("/v1/completions", body);
  std::this_thread::sleep_for(20ms);
  agent.hold = false;
  EXPECT_EQ(first.get().status, 200u);
  EXPECT_EQ(queued.get().status, 200u);
}

TEST_F(ServerTest, AFailureAfterTheFirstByteEndsTheStreamWithAnErrorEvent) {
  start();
  addAgent("prefill");
  FakeAgent& decode = addAgent("decode");
  decode.fail_after = 2;
  auto r = post("/v1/chat/completions", R"({"model":"stories260K","stream":true,
      "messages":[{"role":"user","content":"Once"}],"max_tokens":10})");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_NE(r.body.find(R"("content":" upon")"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("data: {\"error\":{"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("decode step failed"), std::string::npos) << r.body;
  EXPECT_TRUE(r.body.ends_with("data: [DONE]\n\n")) << r.body;
  EXPECT_EQ(r.body.find("finish_reason\":\"length"), std::string::npos) << r.body;
}

TEST_F(ServerTest, NonStreamedAnswersResumeOnAnotherPair) {
  config_.policy = "round_robin";  // node 0 first each time
  start();
  FakeAgent& broken = addAgent("both");
  FakeAgent& healthy = addAgent("both");
  broken.fail_after = 2;
  for (int i = 0; i < 3; ++i) {
    const bool greedy = i == 0;
    auto r = post("/v1/completions",
                  std::string(R"({"model":"stories260K","prompt":"Once","max_tokens":10,)") +
                      (greedy ? R"("temperature":0})" : R"("temperature":0.7,"seed":3})"));
    ASSERT_EQ(r.status, 200u) << r.body;
    json::value v = parse(r.body);
    EXPECT_EQ(v.at("choices").at(0).at("text").as_string(), " upon a time there was");
    EXPECT_EQ(v.at("usage").at("completion_tokens").as_int64(), 5);  // each token once
    EXPECT_EQ(healthy.last_resumed_from, 2);  // went on after the broken node's two tokens
    // The two tokens used one draw each when sampled, none when greedy.
    EXPECT_EQ(healthy.last_rng_draws, greedy ? 0u : 2u);
  }
  EXPECT_EQ(healthy.generates, 3);
  EXPECT_EQ(broken.generates, 3);  // tried, failed mid-answer, excluded for that request
}

// DESIGN.md §2: a stream that breaks after the client has tokens goes on on another pair, from
// the prompt plus those tokens; the client sees one unbroken answer.
TEST_F(ServerTest, ABrokenStreamResumesOnAnotherPairAfterTheFirstByte) {
  config_.policy = "round_robin";  // the first decode node first
  start();
  FakeAgent& prefill = addAgent("prefill");
  FakeAgent& broken = addAgent("decode");
  FakeAgent& healthy = addAgent("decode");
  broken.fail_after = 1;  // the prefill's token, one decoded token, then an error
  auto r = post("/v1/completions", R"({"model":"stories260K","prompt":"Once","max_tokens":10,
      "stream":true,"temperature":0.8,"seed":5,"stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200u) << r.body;
  std::string text;
  for (size_t at = r.body.find(R"("text":")"); at != std::string::npos;
       at = r.body.find(R"("text":")", at + 1)) {
    text += r.body.substr(at + 8, r.body.find('"', at + 8) - at - 8);
  }
  EXPECT_EQ(text, " upon a time there was") << r.body;
  EXPECT_EQ(r.body.find(R"({"error")"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(R"("completion_tokens":5)"), std::string::npos) << r.body;
  EXPECT_TRUE(r.body.ends_with("data: [DONE]\n\n")) << r.body;
  EXPECT_EQ(broken.decodes, 1);
  EXPECT_EQ(healthy.decodes, 1);
  EXPECT_EQ(prefill.prefills, 2);
  // The second prefill had the prompt + " upon a" and skipped the two draws they used.
  EXPECT_EQ(prefill.last_resumed_from, 2);
  EXPECT_EQ(prefill.last_rng_draws, 2u);
  EXPECT_EQ(healthy.last_decode_rng_draws, 3u);  // and the decode node skips the prefill's too
  // The client heard from us while the answer moved (an SSE comment, which clients ignore).
  EXPECT_NE(r.body.find(": resuming the answer on another node\n\n"), std::string::npos);
  EXPECT_NE(call(Verb::get, "/metrics").body.find("kvferry_request_resumes_total 1"),
            std::string::npos);
}

// A client that leaves while its answer waits on a stuck agent: the attempt fails later, and
// nothing is resumed for nobody.
TEST_F(ServerTest, AnAnswerWhoseClientLeftIsNotResumed) {
  config_.policy = "round_robin";  // node 0 first
  start();
  FakeAgent& stuck = addAgent("both");
  FakeAgent& healthy = addAgent("both");
  stuck.pause_after = 2;
  stuck.fail_after = 2;
  int texts = 0;
  auto r = run(pool_.streamLines(
      endpoint_, Verb::post, "/v1/completions",
      R"({"model":"stories260K","prompt":"Once","max_tokens":10,"stream":true,"temperature":0})",
      5s, 5s, [&](std::string_view line) -> Task<bool> {
        if (line.find(R"("text")") != std::string_view::npos) ++texts;
        co_return texts < 2;  // hang up after the second token
      }));
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(texts, 2);
  std::this_thread::sleep_for(100ms);  // the orchestrator sees the connection close
  stuck.released = true;               // now the stuck agent fails the stream
  for (int i = 0; i < 400 && stuck.streams_open > 0; ++i) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(stuck.streams_open, 0);
  EXPECT_EQ(healthy.generates, 0);
  EXPECT_NE(call(Verb::get, "/metrics").body.find("kvferry_request_resumes_total 0"),
            std::string::npos);
}

TEST_F(ServerTest, AClientThatHangsUpStopsTheAgentStream) {
  start();
  FakeAgent& agent = addAgent("both");
  agent.token_delay_ms = 20;
  int lines = 0;
  auto r = run(
      pool_.streamLines(endpoint_, Verb::post, "/v1/completions",
                        R"({"model":"stories260K","prompt":"Once","max_tokens":5,"stream":true})",
                        5s, 5s, [&](std::string_view line) -> Task<bool> {
                          if (!line.empty()) ++lines;
                          co_return lines < 1;  // hang up after the first event
                        }));
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  for (int i = 0; i < 400 && (agent.streams_open > 0 || agent.streams_cut == 0); ++i) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(agent.streams_open, 0);
  EXPECT_EQ(agent.streams_cut, 1);
}

TEST_F(ServerTest, AClientThatLeavesDuringThePrefillCancelsItAndFreesTheLease) {
  start();
  FakeAgent& prefill = addAgent("prefill");
  FakeAgent& decode = addAgent("decode");
  prefill.prefill_delay_ms = 1500;
  asio::io_context client_io;
  http::tcp::socket socket(client_io);
  socket.connect(endpoint_);
  const std::string body = R"({"model":"stories260K","prompt":"Once","max_tokens":4})";
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  asio::write(socket, asio::buffer(request));
  for (int i = 0; i < 200 && prefill.prefills == 0; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(prefill.prefills, 1);
  socket.close();  // the client leaves while the prefill runs
  // Noticed long before the prefill answers: the prefill is cancelled at once.
  for (int i = 0; i < 200 && prefill.cancels == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(prefill.cancels, 1);
  // The lease goes once the prefill answered (nothing it wrote can land later), marked so, so
  // the decode node frees its blocks at once instead of after the writer's timeout.
  EXPECT_EQ(decode.releases, 0);
  for (int i = 0; i < 600 && decode.releases == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(decode.releases, 1);
  EXPECT_TRUE(decode.last_release_writer_done);
  std::this_thread::sleep_for(100ms);  // nothing is decoded or retried
  EXPECT_EQ(decode.decodes, 0);
  EXPECT_EQ(prefill.prefills, 1);
  EXPECT_EQ(decode.reserves, 1);
}

TEST_F(ServerTest, ModelsByIdAsTheOfficialClientRetrievesThem) {
  start();
  auto r = call(Verb::get, "/v1/models/stories260K");
  ASSERT_EQ(r.status, 200u) << r.body;
  const json::value model = parse(r.body);
  EXPECT_EQ(model.at("id").as_string(), "stories260K");
  EXPECT_EQ(model.at("object").as_string(), "model");
  EXPECT_EQ(model.at("owned_by").as_string(), "kvferry");
  EXPECT_TRUE(model.at("created").is_int64());
  EXPECT_EQ(call(Verb::get, "/v1/models/stories%32%360K").status, 200u);  // percent-encoded
  r = call(Verb::get, "/v1/models/org/gpt-4");
  EXPECT_EQ(r.status, 404u);
  const json::value error = parse(r.body).at("error");
  EXPECT_EQ(error.at("code").as_string(), "model_not_found");
  EXPECT_EQ(error.at("param").as_string(), "model");
  EXPECT_NE(error.at("message").as_string().find("`org/gpt-4`"), std::string::npos) << r.body;
}

std::pair<unsigned, std::string> rawRequest(const http::tcp::endpoint& endpoint, std::string method,
                                            std::string target, std::string headers,
                                            std::string body = "");

TEST_F(ServerTest, HttpErrorsHaveOpenAisShapeAndAreCounted) {
  start();
  const auto expectShape = [&](const http::Response& r, unsigned status, std::string_view code) {
    EXPECT_EQ(r.status, status) << r.body;
    const json::value error = parse(r.body).at("error");
    EXPECT_EQ(error.at("type").as_string(), "invalid_request_error") << r.body;
    EXPECT_EQ(error.at("code").as_string(), code) << r.body;
    EXPECT_TRUE(error.at("param").is_null()) << r.body;
    EXPECT_FALSE(error.at("message").as_string().empty());
  };
  expectShape(call(Verb::get, "/v1/completions"), 405, "method_not_allowed");
  expectShape(call(Verb::post, "/v1/embeddings", "{}"), 404, "unknown_url");
  // A body over the limit, announced: the answer comes before the body is sent.
  asio::io_context client_io;
  http::tcp::socket socket(client_io);
  socket.connect(endpoint_);
  asio::write(socket, asio::buffer(std::string("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                               "Content-Length: 9000000\r\n\r\n")));
  std::string raw;
  char chunk[4096];
  boost::system::error_code ec;
  while (!ec) raw.append(chunk, socket.read_some(asio::buffer(chunk), ec));
  ASSERT_TRUE(raw.starts_with("HTTP/1.1 413")) << raw;
  http::Response too_large;
  too_large.status = 413;
  too_large.body = raw.substr(raw.find("\r\n\r\n") + 4);
  expectShape(too_large, 413, "request_too_large");
  // Headers past the limit: 431, in the same shape.
  auto [header_status, header_body] =
      rawRequest(endpoint_, "GET", "/v1/models", "X-Big: " + std::string(20000, 'x') + "\r\n");
  http::Response too_many_headers;
  too_many_headers.status = header_status;
  too_many_headers.body = header_body;
  expectShape(too_many_headers, 431, "request_header_fields_too_large");
  const std::string metrics = call(Verb::get, "/metrics").body;
  for (std::string_view series :
       {R"(kvferry_requests_total{endpoint="/v1/completions",status="405"} 1)",
        R"(kvferry_requests_total{endpoint="other",status="404"} 1)",
        R"(kvferry_requests_total{endpoint="/v1/chat/completions",status="413"} 1)"}) {
    EXPECT_NE(metrics.find(series), std::string::npos) << series;
  }
}

// One request on a connection of its own, with `headers` ("Name: value\r\n" each) and
// `request_body`; the status and the body (read until the server closes).
std::pair<unsigned, std::string> rawRequest(const http::tcp::endpoint& endpoint, std::string method,
                                            std::string target, std::string headers,
                                            std::string request_body) {
  asio::io_context client_io;
  http::tcp::socket socket(client_io);
  socket.connect(endpoint);
  asio::write(socket,
              asio::buffer(method + " " + target + " HTTP/1.1\r\nHost: x\r\n" + headers +
                           "Connection: close\r\nContent-Length: " +
                           std::to_string(request_body.size()) + "\r\n\r\n" + request_body));
  std::string raw;
  char chunk[4096];
  boost::system::error_code ec;
  while (!ec) raw.append(chunk, socket.read_some(asio::buffer(chunk), ec));
  const size_t body = raw.find("\r\n\r\n");
  if (raw.size() < 12 || body == std::string::npos) return {0, raw};
  return {static_cast<unsigned>(std::stoi(raw.substr(9, 3))), raw.substr(body + 4)};
}

TEST_F(ServerTest, WithApiKeysOnlyAKeyedRequestReachesTheApi) {
  const std::string key = "sk-kvferry-0123456789abcdef";
  const std::string path = ::testing::TempDir() + "server_test_api_keys.txt";
  std::ofstream(path) << "# test keys\n" << key << "\n";
  config_.api_keys_file = path;
  start();
  std::remove(path.c_str());
  addAgent("both");  // the control plane is not behind the API keys
  for (const std::string& headers :
       {std::string(), std::string("Authorization: Bearer sk-kvferry-0123456789abcdeX\r\n"),
        "Authorization: Basic " + key + "\r\n"}) {
    auto [status, body] = rawRequest(endpoint_, "GET", "/v1/models", headers);
    ASSERT_EQ(status, 401u) << body;
    const json::value error = parse(body).at("error");
    EXPECT_EQ(error.at("code").as_string(), "invalid_api_key") << body;
    EXPECT_EQ(error.at("type").as_string(), "invalid_request_error") << body;
    EXPECT_EQ(body.find(key.substr(0, 12)), std::string::npos) << body;  // no key echoed
  }
  const std::string bearer = "Authorization: Bearer " + key + "\r\n";
  EXPECT_EQ(rawRequest(endpoint_, "GET", "/v1/models", bearer).first, 200u);
  EXPECT_EQ(rawRequest(endpoint_, "GET", "/v1/models/stories260K", bearer).first, 200u);
  EXPECT_EQ(rawRequest(endpoint_, "GET", "/v1/nodes", "").first, 401u);
  EXPECT_EQ(rawRequest(endpoint_, "POST", "/v1/completions", "").first, 401u);
  EXPECT_EQ(agents_[0]->generates.load(), 0);  // a refused request never reached an agent
  // Health and metrics stay open unless auth.keyed_health_and_metrics; 401s are counted.
  EXPECT_EQ(call(Verb::get, "/health").status, 200u);
  const std::string metrics = call(Verb::get, "/metrics").body;
  EXPECT_NE(metrics.find(R"(kvferry_requests_total{endpoint="/v1/models",status="401"} 3)"),
            std::string::npos)
      << metrics;
  EXPECT_EQ(metrics.find(key), std::string::npos);
}

// admission.max_requests_per_key: a key at its limit gets 429 with Retry-After; another key and
// the same key once a request ended go on.
TEST_F(ServerTest, AKeyAtItsLimitIsRefusedAndTheOthersAreNot) {
  const std::string key_a = "sk-kvferry-aaaaaaaaaaaaaaaa";
  const std::string key_b = "sk-kvferry-bbbbbbbbbbbbbbbb";
  config_.api_keys_file = ::testing::TempDir() + "server_test_api_keys_limit.txt";
  std::ofstream(config_.api_keys_file) << key_a << "\n" << key_b << "\n";
  config_.max_requests_per_key = 1;
  config_.retry_after_s = 3;
  start();
  std::remove(config_.api_keys_file.c_str());
  FakeAgent& agent = addAgent("both");
  agent.hold = true;
  const std::string body = R"({"model":"stories260K","prompt":"Once","max_tokens":3})";
  const auto completion = [&](const std::string& key) {
    return rawRequest(endpoint_, "POST", "/v1/completions",
                      "Authorization: Bearer " + key + "\r\nContent-Type: application/json\r\n",
                      body);
  };
  auto first = std::async(std::launch::async, completion, key_a);
  for (int i = 0; i < 400 && agent.streams_open == 0; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(agent.streams_open, 1);

  const auto [status, refused] = completion(key_a);
  EXPECT_EQ(status, 429u) << refused;
  const json::value error = parse(refused).at("error");
  EXPECT_EQ(error.at("code").as_string(), "rate_limit_exceeded") << refused;
  EXPECT_NE(std::string(error.at("message").as_string()).find("already has 1 requests under way"),
            std::string::npos)
      << refused;
  EXPECT_EQ(refused.find(key_a), std::string::npos);

  auto other = std::async(std::launch::async, completion, key_b);  // not this key's limit
  for (int i = 0; i < 400 && agent.streams_open < 2; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(agent.streams_open, 2);
  agent.hold = false;
  EXPECT_EQ(first.get().first, 200u);
  EXPECT_EQ(other.get().first, 200u);
  EXPECT_EQ(completion(key_a).first, 200u);  // its request ended: under the limit again
  EXPECT_NE(
      call(Verb::get, "/metrics").body.find(R"(kvferry_rejections_total{reason="key_limit"} 1)"),
      std::string::npos);
}

// With a cluster secret, only a signed registration joins, the orchestrator signs its calls to
// the agents, and /v1/nodes is for the secret's holders (operators), not for API keys.
TEST_F(ServerTest, WithAClusterSecretOnlySignedAgentsJoinAndEveryCallIsSigned) {
  const std::string secret = "0123456789abcdef0123456789abcdef-server-test";
  config_.cluster_secret_file = ::testing::TempDir() + "server_test_cluster.secret";
  std::ofstream(config_.cluster_secret_file) << secret << "\n";
  start();
  std::remove(config_.cluster_secret_file.c_str());
  auto auth = control_auth::Authenticator::create(secret);
  ASSERT_TRUE(auth.isOk());

  agents_.push_back(std::make_unique<FakeAgent>(io_, "both", encode("upon a time there was")));
  FakeAgent& agent = *agents_.back();
  const std::string registration_body = wire::encode(registration(agent, 0));
  http::Response refused = post(wire::route::kRegister, registration_body);
  EXPECT_EQ(refused.status, 401u) << refused.body;
  EXPECT_EQ(refused.body.find(secret), std::string::npos);
  http::ClientPool signing(io_);
  signing.signRequests([a = *auth](http::Request& r) { a->sign(r); });
  auto joined =
      run(signing.request(endpoint_, Verb::post, wire::route::kRegister, registration_body, 10s));
  ASSERT_TRUE(joined.isOk());
  ASSERT_EQ(joined->status, 200u) << joined->body;

  http::Response answer = post("/v1/completions", R"({"model":"stories260K","prompt":"Once",
                                                     "max_tokens":3})");
  EXPECT_EQ(answer.status, 200u) << answer.body;
  ASSERT_EQ(agent.generates.load(), 1);
  http::Request seen(Verb::post, agent.last_target, 11);
  seen.body() = agent.last_body;
  seen.set(control_auth::kHeader, agent.last_auth);
  EXPECT_TRUE((*auth)->verify(seen).isOk())
      << "the orchestrator's call to the agent: '" << agent.last_auth << "'";

  EXPECT_EQ(call(Verb::get, "/v1/nodes").status, 401u);
  EXPECT_EQ(
      rawRequest(endpoint_, "GET", "/v1/nodes", "Authorization: Bearer " + secret + "\r\n").first,
      200u);
}

// Registrations beyond registry.max_registrations_per_s are refused with 429 and Retry-After.
TEST_F(ServerTest, RegistrationsAreRateLimited) {
  config_.max_registrations_per_s = 2;
  start();
  int accepted = 0, limited = 0;
  for (int i = 0; i < 6; ++i) {
    agents_.push_back(std::make_unique<FakeAgent>(io_, "both", encode("upon a time there was")));
    http::Response r = post(wire::route::kRegister, wire::encode(registration(*agents_.back(), 0)));
    if (r.status == 200) ++accepted;
    if (r.status == 429) {
      ++limited;
      EXPECT_EQ(r.retry_after, "1");
      EXPECT_NE(errorMessage(r).find("registrations"), std::string::npos) << r.body;
    }
  }
  EXPECT_EQ(accepted + limited, 6);
  EXPECT_GE(accepted, 2);  // the burst
  EXPECT_GE(limited, 1);
}

TEST_F(ServerTest, KeyedHealthAndMetricsWantAKeyToo) {
  config_.api_keys_file = ::testing::TempDir() + "server_test_api_keys_ops.txt";
  std::ofstream(config_.api_keys_file) << "sk-kvferry-0123456789abcdef\n";
  config_.keyed_health_and_metrics = true;
  start();
  std::remove(config_.api_keys_file.c_str());
  EXPECT_EQ(call(Verb::get, "/health").status, 401u);
  EXPECT_EQ(call(Verb::get, "/metrics").status, 401u);
  const std::string bearer = "Authorization: Bearer sk-kvferry-0123456789abcdef\r\n";
  EXPECT_EQ(rawRequest(endpoint_, "GET", "/metrics", bearer).first, 200u);
}

TEST_F(ServerTest, AStreamToAnHttp10ClientIsUnchunkedAndClosed) {
  start();
  addAgent("both");
  asio::io_context client_io;
  http::tcp::socket socket(client_io);
  socket.connect(endpoint_);
  const std::string body =
      R"({"model":"stories260K","prompt":"Once","max_tokens":3,"stream":true})";
  asio::write(socket, asio::buffer("POST /v1/completions HTTP/1.0\r\nContent-Type: "
                                   "application/json\r\nContent-Length: " +
                                   std::to_string(body.size()) + "\r\n\r\n" + body));
  std::string response;
  char chunk[4096];
  boost::system::error_code ec;
  while (!ec) response.append(chunk, socket.read_some(asio::buffer(chunk), ec));
  EXPECT_EQ(ec, asio::error::eof);
  ASSERT_TRUE(response.starts_with("HTTP/1.0 200 OK")) << response;
  EXPECT_EQ(response.find("Transfer-Encoding"), std::string::npos) << response;
  EXPECT_NE(response.find("\r\n\r\ndata: {"), std::string::npos) << response;
  EXPECT_TRUE(response.ends_with("data: [DONE]\n\n")) << response;
}

TEST_F(ServerTest, NoDecodeNodeIs503SayingWhichRoleIsMissing) {
  start();
  addAgent("prefill");
  auto r = post("/v1/completions", R"({"model":"stories260K","prompt":"Once"})");
  EXPECT_EQ(r.status, 503u);
  EXPECT_NE(errorMessage(r).find("no live node can decode"), std::string::npos) << r.body;
}

}  // namespace
}  // namespace kvferry::orchestrator
