// The whole agent in this process (no orchestrator: it keeps trying to register, which does not
// stop it serving), over HTTP on 127.0.0.1, with a fake engine and the real TCP transport: a
// decode peer that never answers holds neither the sequences this agent decodes nor the cancel
// of the prefill that waits for it.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/json/serialize.hpp>
#include <future>
#include <mutex>

#include "common/http.h"
#include "node_agent/agent.h"
#include "node_agent/engine/engine.h"
#include "rdma/endpoint_blob.h"
#include "rdma/factory.h"
#include "tests/node_agent/agent_test_util.h"

namespace kvferry::agent {
namespace {

namespace asio = boost::asio;
using namespace agent::testing;
using Clock = std::chrono::steady_clock;
using http::Task;
using http::Verb;

constexpr auto kConnectTimeout = 2500ms;
constexpr auto kStep = 3ms;  // the fake engine's forward pass

class NodeAgentTest : public ::testing::Test {
 protected:
  void SetUp() override { startAgent(config::NodeRole::kBoth); }
  void startAgent(config::NodeRole role) {
    config::NodeAgentConfig config;
    config.role = role;
    config.orchestrator_address = "127.0.0.1:1";  // nothing there
    config.register_timeout_ms = 600000;
    config.drain_timeout_ms = 5000;
    config.transport.connect_timeout_ms = static_cast<uint32_t>(kConnectTimeout.count());
    config.transport.connect_retries = 0;
    auto transport = rdma::makeTransport(config.transport);
    ASSERT_TRUE(transport.isOk());
    auto engine = makeFakeEngine(fakeEngineConfig(4, 1024), FakeShape{.context = 4096}, kStep);
    ASSERT_NE(engine, nullptr);
    auto agent = NodeAgent::create(config, io_, std::move(engine), std::move(transport).value(),
                                   ModelIdentity{"model", "tokenizer", "seed"});
    ASSERT_TRUE(agent.isOk()) << agent.status().toString();
    agent_ = std::move(agent).value();
    endpoint_ = http::tcp::endpoint(asio::ip::make_address("127.0.0.1"), agent_->controlPort());
    agent_->start();
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    if (agent_) {
      std::promise<void> stopped;
      asio::post(io_, [&] { agent_->shutdown([&] { stopped.set_value(); }); });
      stopped.get_future().wait();
    }
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
    agent_.reset();
  }

  // Runs `task` on the io thread.
  template <typename T>
  std::future<T> spawn(Task<T> task) {
    auto promise = std::make_shared<std::promise<T>>();
    std::future<T> future = promise->get_future();
    asio::co_spawn(
        io_,
        [promise, task = std::move(task)]() mutable -> Task<void> {
          promise->set_value(co_await std::move(task));
        },
        asio::detached);
    return future;
  }

  // A blob naming a TCP endpoint that accepts connections (the kernel does) but never answers
  // the transport's hello: a host that went silent.
  std::string blackHoleBlob() {
    black_hole_.open(asio::ip::tcp::v4());
    black_hole_.bind({asio::ip::make_address("127.0.0.1"), 0});
    black_hole_.listen();
    rdma::EndpointInfo info;
    info.backend = "tcp";
    info.endpoint_id = rdma::newEndpointId();
    const std::string address = "127.0.0.1:" + std::to_string(black_hole_.local_endpoint().port());
    info.address.assign(address.begin(), address.end());
    auto blob = rdma::encodeEndpoint(info);
    EXPECT_TRUE(blob.isOk());
    return wire::base64Encode(*blob);
  }

  std::string prefillTo(const std::string& blob, uint64_t request_id) {
    wire::PrefillRequest request;
    request.request_id = request_id;
    request.tokens = {3, 4, 5, 6, 7, 8, 9, 10};
    request.target.node_id = 9;
    request.target.transport_blob = blob;
    request.target.block_ids = {0, 1};
    request.target.regions.assign(4, 0);  // two layers' K and V
    return wire::encode(request);
  }

  Task<Result<http::Response>> post(std::string target, std::string body) {
    return pool_.request(endpoint_, Verb::post, std::move(target), std::move(body), 30s);
  }
  Task<Result<http::Response>> get(std::string target) {
    return pool_.request(endpoint_, Verb::get, std::move(target), "", 30s);
  }

  // Generates `tokens` tokens and notes when each line arrived.
  Task<Result<http::Response>> generate(uint64_t request_id, uint32_t tokens) {
    wire::GenerateRequest request;
    request.request_id = request_id;
    request.tokens = {5, 6, 7};
    request.max_new_tokens = tokens;
    auto on_line = [this](std::string_view) -> Task<bool> {
      std::lock_guard lock(mu_);
      arrivals_.push_back(Clock::now());
      co_return true;
    };  // named: GCC 12 and lambda temporaries in co_await
    co_return co_await pool_.streamLines(endpoint_, Verb::post, "/agent/generate",
                                         wire::encode(request), 30s, 30s, on_line);
  }
  size_t arrived() {
    std::lock_guard lock(mu_);
    return arrivals_.size();
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  http::ClientPool pool_{io_};
  asio::ip::tcp::acceptor black_hole_{io_};
  std::unique_ptr<NodeAgent> agent_;
  http::tcp::endpoint endpoint_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Clock::time_point> arrivals_;
};

TEST_F(NodeAgentTest, DecodingKeepsItsPaceWhileAPrefillWaitsForASilentPeer) {
  auto stream = spawn(generate(1, 1200));
  while (arrived() < 20) std::this_thread::sleep_for(1ms);
  const Clock::time_point prefill_start = Clock::now();
  auto prefill = spawn(post("/agent/prefill", prefillTo(blackHoleBlob(), 2)));
  auto answer = prefill.get();
  const Clock::time_point prefill_end = Clock::now();
  auto streamed = stream.get();

  // The peer never answered: the prefill failed after the connect timeout, as a transfer error.
  ASSERT_TRUE(answer.isOk()) << answer.status().toString();
  EXPECT_EQ(answer->status, 502u) << answer->body;
  EXPECT_NE(answer->body.find("transfer to node 9 failed"), std::string::npos) << answer->body;
  EXPECT_GE(prefill_end - prefill_start, kConnectTimeout - 100ms);
  ASSERT_TRUE(streamed.isOk()) << streamed.status().toString();
  ASSERT_EQ(arrivals_.size(), 1201u);  // every token and the finish line

  // Meanwhile the stream went on at its pace: no gap near the connect timeout, and tokens came
  // all through the connect.
  Clock::duration longest_gap{};
  size_t during_connect = 0;
  for (size_t i = 1; i < arrivals_.size(); ++i) {
    longest_gap = std::max(longest_gap, arrivals_[i] - arrivals_[i - 1]);
    if (arrivals_[i] > prefill_start && arrivals_[i] < prefill_end) ++during_connect;
  }
  EXPECT_LT(longest_gap, kConnectTimeout / 3)
      << std::chrono::duration_cast<std::chrono::milliseconds>(longest_gap).count() << " ms";
  EXPECT_GT(during_connect, 100u);
}

TEST_F(NodeAgentTest, ACancelAnswersAPrefillWaitingForASilentPeerAtOnce) {
  auto prefill = spawn(post("/agent/prefill", prefillTo(blackHoleBlob(), 5)));
  std::this_thread::sleep_for(200ms);
  const Clock::time_point cancel_start = Clock::now();
  auto cancel = spawn(post("/agent/cancel", R"({"id":5})"));
  auto answer = prefill.get();
  EXPECT_LT(Clock::now() - cancel_start, kConnectTimeout / 2);
  ASSERT_TRUE(answer.isOk());
  EXPECT_EQ(answer->status, 409u) << answer->body;
  auto cancelled = cancel.get();
  ASSERT_TRUE(cancelled.isOk());
  EXPECT_EQ(cancelled->status, 200u);
}

TEST_F(NodeAgentTest, TheControlApiNamesWhatIsWrongWithABody) {
  auto reserve = spawn(post("/agent/reserve", R"({"request_id":1,"tokens":"x","lease_ms":10})"));
  auto answer = reserve.get();
  ASSERT_TRUE(answer.isOk());
  EXPECT_EQ(answer->status, 400u);
  EXPECT_NE(answer->body.find("tokens"), std::string::npos) << answer->body;
  auto health = spawn(get("/health")).get();
  ASSERT_TRUE(health.isOk());
  EXPECT_EQ(health->status, 200u);
  EXPECT_NE(health->body.find(R"("role":"both")"), std::string::npos) << health->body;
  auto metrics = spawn(get("/metrics")).get();
  ASSERT_TRUE(metrics.isOk());
  EXPECT_NE(metrics->body.find(R"(kvferry_agent_requests_total{kind="reserve",outcome="error"} 1)"),
            std::string::npos);
}

class PrefillAgentTest : public NodeAgentTest {
 protected:
  void SetUp() override { startAgent(config::NodeRole::kPrefill); }
};

TEST_F(PrefillAgentTest, RefusesTheCallsOfADecodeNodeSayingWhereToGo) {
  for (const char* path : {"/agent/reserve", "/agent/decode", "/agent/generate"}) {
    auto answer = spawn(post(path, "{}")).get();
    ASSERT_TRUE(answer.isOk());
    EXPECT_EQ(answer->status, 400u) << path;
    EXPECT_NE(answer->body.find("this agent only prefills"), std::string::npos) << answer->body;
  }
  // Release and cancel are for any agent.
  auto cancel = spawn(post("/agent/cancel", R"({"id":3})")).get();
  ASSERT_TRUE(cancel.isOk());
  EXPECT_EQ(cancel->status, 200u);
}

}  // namespace
}  // namespace kvferry::agent
