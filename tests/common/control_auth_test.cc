// The control plane's MAC: what a signed call proves, what a forged, altered, stale or replayed
// one gets (401), over real sockets on 127.0.0.1 and on the parsed request alone.
#include "common/control_auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

namespace kvferry::control_auth {
namespace {

using namespace std::chrono_literals;
using http::Verb;

const std::string kSecret = "0123456789abcdef0123456789abcdef-cluster-secret";
const std::string kOtherSecret = "fedcba9876543210fedcba9876543210-another-cluster";

std::shared_ptr<Authenticator> make(const std::string& secret,
                                    Authenticator::Options options = {}) {
  auto created = Authenticator::create(secret, options);
  EXPECT_TRUE(created.isOk()) << created.status().toString();
  return created.isOk() ? *created : nullptr;
}

http::Request request(Verb verb, std::string target, std::string body) {
  http::Request r(verb, target, 11);
  r.body() = std::move(body);
  r.prepare_payload();
  return r;
}

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TEST(ControlAuth, ASignedCallVerifiesOnceAndOnlyUnchanged) {
  auto auth = make(kSecret);
  http::Request signed_call = request(Verb::post, "/agent/reserve", R"({"blocks":4})");
  auth->sign(signed_call);
  EXPECT_TRUE(auth->verify(signed_call).isOk());
  // The same bytes again: a replay.
  Status replay = auth->verify(signed_call);
  EXPECT_EQ(replay.code(), StatusCode::kUnauthenticated);
  EXPECT_NE(replay.message().find("replayed"), std::string::npos) << replay.message();

  // Each part the MAC covers, changed after signing.
  http::Request altered_body = request(Verb::post, "/agent/reserve", R"({"blocks":4})");
  auth->sign(altered_body);
  altered_body.body() = R"({"blocks":4000})";
  EXPECT_EQ(auth->verify(altered_body).code(), StatusCode::kUnauthenticated);
  http::Request altered_target = request(Verb::post, "/agent/reserve", "{}");
  auth->sign(altered_target);
  altered_target.target("/agent/cancel");
  EXPECT_EQ(auth->verify(altered_target).code(), StatusCode::kUnauthenticated);
  http::Request altered_method = request(Verb::post, "/v1/nodes", "");
  auth->sign(altered_method);
  altered_method.method(Verb::get);
  EXPECT_EQ(auth->verify(altered_method).code(), StatusCode::kUnauthenticated);
}

TEST(ControlAuth, AnotherSecretNoHeaderAndGarbageAreRefused) {
  auto auth = make(kSecret);
  auto other = make(kOtherSecret);
  http::Request forged = request(Verb::post, "/v1/agents/register", R"({"role":"both"})");
  other->sign(forged);
  Status refused = auth->verify(forged);
  EXPECT_EQ(refused.code(), StatusCode::kUnauthenticated);
  EXPECT_NE(refused.message().find("wrong MAC"), std::string::npos) << refused.message();

  http::Request bare = request(Verb::post, "/v1/agents/register", "{}");
  EXPECT_EQ(auth->verify(bare).code(), StatusCode::kUnauthenticated);
  for (const char* garbage :
       {"", "v1", "v2 ts=1 nonce=00000000000000000000000000000000 mac=00",
        "v1 ts=x nonce=00000000000000000000000000000000 "
        "mac=0000000000000000000000000000000000000000000000000000000000000000",
        "v1 ts=1 nonce=short mac=0000000000000000000000000000000000000000000000000000000000000000",
        "v1 ts=1 nonce=00000000000000000000000000000000 mac=00 extra=1"}) {
    http::Request r = request(Verb::post, "/v1/agents/register", "{}");
    r.set(kHeader, garbage);
    Status s = auth->verify(r);
    EXPECT_EQ(s.code(), StatusCode::kUnauthenticated) << garbage;
  }
}

TEST(ControlAuth, AStaleOrFutureTimestampIsRefusedEvenWithTheRightMac) {
  auto auth = make(kSecret, Authenticator::Options{.window = 5000ms});
  for (int64_t offset_ms : {-60000, 60000}) {
    http::Request r = request(Verb::post, "/agent/prefill", "{}");
    r.set(kHeader, auth->headerValue(Verb::post, "/agent/prefill", "{}", nowMs() + offset_ms,
                                     "0123456789abcdef0123456789abcdef"));
    Status s = auth->verify(r);
    EXPECT_EQ(s.code(), StatusCode::kUnauthenticated);
    EXPECT_NE(s.message().find("clocks"), std::string::npos) << s.message();
  }
  http::Request fresh = request(Verb::post, "/agent/prefill", "{}");
  fresh.set(kHeader, auth->headerValue(Verb::post, "/agent/prefill", "{}", nowMs() - 1000,
                                       "0123456789abcdef0123456789abcdef"));
  EXPECT_TRUE(auth->verify(fresh).isOk());
}

// A full replay cache forgets its oldest nonce and from then on refuses anything that old, so
// a bounded cache never lets a replay through.
TEST(ControlAuth, TheBoundedReplayCacheRefusesWhatItForgot) {
  auto auth = make(kSecret, Authenticator::Options{.window = 60000ms, .max_remembered_nonces = 2});
  const int64_t now = nowMs();
  auto call = [&](int64_t ts, const char* nonce) {
    http::Request r = request(Verb::post, "/agent/release", "{}");
    r.set(kHeader, auth->headerValue(Verb::post, "/agent/release", "{}", ts, nonce));
    return r;
  };
  const http::Request first = call(now - 3000, "00000000000000000000000000000001");
  EXPECT_TRUE(auth->verify(first).isOk());
  EXPECT_TRUE(auth->verify(call(now - 2000, "00000000000000000000000000000002")).isOk());
  EXPECT_TRUE(auth->verify(call(now - 1000, "00000000000000000000000000000003")).isOk());
  // The first nonce is forgotten; its replay is refused by the floor.
  EXPECT_EQ(auth->verify(first).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(auth->verify(call(now - 3000, "00000000000000000000000000000004")).code(),
            StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth->verify(call(now, "00000000000000000000000000000005")).isOk());
}

TEST(ControlAuth, SecretsAreLongEnoughAndNeverInErrors) {
  auto too_short = Authenticator::create("short-secret");
  ASSERT_FALSE(too_short.isOk());
  EXPECT_EQ(too_short.status().message().find("short-secret"), std::string::npos);

  const std::filesystem::path dir = ::testing::TempDir();
  const std::string missing = (dir / "no-such-secret").string();
  auto absent = Authenticator::fromFile(missing);
  ASSERT_FALSE(absent.isOk());
  EXPECT_NE(absent.status().message().find(missing), std::string::npos);

  const std::string short_file = (dir / "short.secret").string();
  std::ofstream(short_file) << "tiny-secret-value\n";
  auto tiny = Authenticator::fromFile(short_file);
  ASSERT_FALSE(tiny.isOk());
  EXPECT_NE(tiny.status().message().find(short_file), std::string::npos);
  EXPECT_EQ(tiny.status().message().find("tiny-secret-value"), std::string::npos);

  // Trailing newline trimmed: the file written by `echo` and the one written by scripts agree.
  const std::string good_file = (dir / "good.secret").string();
  std::ofstream(good_file) << "\n" << kSecret << "\n";
  ::chmod(good_file.c_str(), 0600);
  auto from_file = Authenticator::fromFile(good_file);
  ASSERT_TRUE(from_file.isOk()) << from_file.status().toString();
  http::Request r = request(Verb::post, "/agent/cancel", "{}");
  make(kSecret)->sign(r);
  EXPECT_TRUE((*from_file)->verify(r).isOk());
}

TEST(ControlAuth, TheSecretAsBearerIsTheOperatorsCredential) {
  auto auth = make(kSecret);
  EXPECT_TRUE(auth->isSecretBearer("Bearer " + kSecret));
  EXPECT_FALSE(auth->isSecretBearer("Bearer " + kSecret + "x"));
  EXPECT_FALSE(auth->isSecretBearer("Bearer " + kOtherSecret));
  EXPECT_FALSE(auth->isSecretBearer(kSecret));
  EXPECT_FALSE(auth->isSecretBearer(""));
}

TEST(ControlAuth, TheSecretFileComesFromTheFlagThenTheConfigThenTheEnvironment) {
  ::setenv(kSecretFileEnv, "/from/env", 1);
  EXPECT_EQ(secretFilePath("/from/flag", "/from/config"), "/from/flag");
  EXPECT_EQ(secretFilePath("", "/from/config"), "/from/config");
  EXPECT_EQ(secretFilePath("", ""), "/from/env");
  ::unsetenv(kSecretFileEnv);
  EXPECT_EQ(secretFilePath("", ""), "");
}

// A guarded route over real sockets: a pool that signs gets through, one that does not (or signs
// with another cluster's secret) gets 401 in the control plane's error shape, without the secret.
class GuardedServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auth_ = make(kSecret);
    server_.route(
        Verb::post, "/ctl",
        guard(auth_, [this](const http::Request& r, http::ResponseWriter& w) -> http::Task<void> {
          ++calls_;
          co_await w.sendJson(http::HttpStatus::ok, r.body());
        }));
    server_.route(Verb::get, "/ops",
                  guard(
                      auth_,
                      [](const http::Request&, http::ResponseWriter& w) -> http::Task<void> {
                        co_await w.sendJson(http::HttpStatus::ok, "{}");
                      },
                      Callers::kClusterAndOperator));
    ASSERT_TRUE(server_.listen("127.0.0.1:0").isOk());
    server_.start();
    endpoint_ = http::tcp::endpoint(http::asio::ip::make_address("127.0.0.1"), server_.port());
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    http::asio::post(io_, [this] { server_.stop(); });
    work_.reset();
    io_.stop();
    thread_.join();
  }

  Result<http::Response> call(http::ClientPool& pool, Verb verb, std::string target,
                              std::string body) {
    std::promise<Result<http::Response>> promise;
    http::asio::co_spawn(
        io_,
        [&]() -> http::Task<void> {
          promise.set_value(co_await pool.request(endpoint_, verb, target, body, 2s));
        },
        http::asio::detached);
    return promise.get_future().get();
  }

  http::asio::io_context io_;
  http::asio::executor_work_guard<http::asio::io_context::executor_type> work_{io_.get_executor()};
  http::Server server_{io_, http::ServerOptions{}};
  std::shared_ptr<Authenticator> auth_;
  http::tcp::endpoint endpoint_;
  std::thread thread_;
  int calls_ = 0;
};

TEST_F(GuardedServerTest, OnlySignedCallsReachTheHandler) {
  http::ClientPool signing(io_);
  signing.signRequests([auth = auth_](http::Request& r) { auth->sign(r); });
  http::ClientPool plain(io_);
  http::ClientPool foreign(io_);
  auto other = make(kOtherSecret);
  foreign.signRequests([other](http::Request& r) { other->sign(r); });

  for (int i = 0; i < 3; ++i) {  // keep-alive reuse signs each request anew
    auto ok = call(signing, Verb::post, "/ctl", R"({"n":1})");
    ASSERT_TRUE(ok.isOk()) << ok.status().toString();
    EXPECT_EQ(ok->status, 200u);
    EXPECT_EQ(ok->body, R"({"n":1})");
  }
  for (http::ClientPool* pool : {&plain, &foreign}) {
    auto refused = call(*pool, Verb::post, "/ctl", "{}");
    ASSERT_TRUE(refused.isOk()) << refused.status().toString();
    EXPECT_EQ(refused->status, 401u);
    EXPECT_NE(refused->body.find(R"({"error":{"message":"unauthenticated control call)"),
              std::string::npos)
        << refused->body;
    EXPECT_EQ(refused->body.find(kSecret), std::string::npos);
  }
  EXPECT_EQ(calls_, 3);

  // The operator's page: the secret as Bearer works, a signed call works, nothing else does.
  auto anonymous = call(plain, Verb::get, "/ops", "");
  ASSERT_TRUE(anonymous.isOk());
  EXPECT_EQ(anonymous->status, 401u);
  auto cluster = call(signing, Verb::get, "/ops", "");
  ASSERT_TRUE(cluster.isOk());
  EXPECT_EQ(cluster->status, 200u);
  http::ClientPool operator_pool(io_);
  operator_pool.signRequests([](http::Request& r) {
    r.set(http::beast::http::field::authorization, "Bearer " + kSecret);
  });
  auto by_operator = call(operator_pool, Verb::get, "/ops", "");
  ASSERT_TRUE(by_operator.isOk());
  EXPECT_EQ(by_operator->status, 200u);
}

}  // namespace
}  // namespace kvferry::control_auth
