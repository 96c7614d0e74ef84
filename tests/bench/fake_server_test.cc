// benchmark_client as a real process against an in-process fake OpenAI server on 127.0.0.1:0
// (common/http.h's Server) that streams canned chunks with small delays. The base URL's path
// prefix picks the server's behaviour: "" streams normally, /err answers 503, /broken sends an
// SSE error event, /nodone omits data: [DONE], /trickle sends a chunk every 100 ms forever.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "bench/benchmark_client/report.h"
#include "common/http.h"

extern char** environ;  // NOLINT(readability-identifier-naming): POSIX's name

namespace kvferry::bench {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using http::HttpStatus;
using http::Task;
using namespace std::chrono_literals;

const std::string kStories =
    std::string(KVFERRY_SOURCE_DIR) + "/tests/data/models/stories260K/stories260K.gguf";
const std::string kTrace =
    std::string(KVFERRY_SOURCE_DIR) + "/tests/data/traces/conversation_head300.jsonl";

enum class Mode { kNormal, kError, kBroken, kNoDone, kTrickle };

class FakeOpenAi {
 public:
  FakeOpenAi() {
    for (auto [prefix, mode] :
         {std::pair{"", Mode::kNormal}, std::pair{"/err", Mode::kError},
          std::pair{"/broken", Mode::kBroken}, std::pair{"/nodone", Mode::kNoDone},
          std::pair{"/trickle", Mode::kTrickle}}) {
      const std::string p = prefix;
      server_.route(http::Verb::get, p + "/v1/models",
                    [](const http::Request&, http::ResponseWriter& w) -> Task<void> {
                      co_await w.sendJson(
                          HttpStatus::ok,
                          R"({"object":"list","data":[{"id":"fake-model","object":"model"}]})");
                    });
      for (bool chat : {false, true}) {
        server_.route(
            http::Verb::post, p + (chat ? "/v1/chat/completions" : "/v1/completions"),
            [this, chat, m = mode](const http::Request& r, http::ResponseWriter& w) -> Task<void> {
              co_await complete(r, w, chat, m);
            });
      }
    }
    EXPECT_TRUE(server_.listen("127.0.0.1:0").isOk());
    server_.start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeOpenAi() {
    asio::post(io_, [this] { server_.stop(); });
    work_.reset();
    io_.stop();
    thread_.join();
  }

  std::string baseUrl(std::string_view prefix = "") const {
    return "http://127.0.0.1:" + std::to_string(server_.port()) + std::string(prefix);
  }

  struct Seen {
    int requests = 0;
    int in_flight = 0;
    int max_in_flight = 0;
    std::vector<json::object> bodies;
    std::vector<std::string> authorizations;  // each request's Authorization header
  };
  Seen seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }

 private:
  static std::string chunk(bool chat, std::string_view text) {
    json::object choice{{"index", 0}, {"finish_reason", nullptr}};
    if (chat) {
      choice["delta"] = json::object{{"content", text}};
    } else {
      choice["text"] = text;
    }
    json::object o{{"id", "x"},
                   {"object", chat ? "chat.completion.chunk" : "text_completion"},
                   {"choices", json::array{choice}}};
    return "data: " + json::serialize(o) + "\n\n";
  }

  Task<void> sleep(std::chrono::milliseconds d) {
    asio::steady_timer timer(io_, d);
    co_await timer.async_wait(asio::use_awaitable);
  }

  Task<void> complete(const http::Request& r, http::ResponseWriter& w, bool chat, Mode mode) {
    boost::system::error_code ec;
    json::value body = json::parse(r.body(), ec);
    if (ec || !body.is_object()) {
      co_await w.sendJson(HttpStatus::bad_request, R"({"error":{"message":"bad json"}})");
      co_return;
    }
    const int64_t max_tokens = body.as_object().at("max_tokens").to_number<int64_t>();
    {
      std::lock_guard lock(mutex_);
      ++seen_.requests;
      seen_.max_in_flight = std::max(seen_.max_in_flight, ++seen_.in_flight);
      seen_.bodies.push_back(body.as_object());
      seen_.authorizations.emplace_back(r[boost::beast::http::field::authorization]);
    }
    co_await stream(w, chat, mode, max_tokens);
    std::lock_guard lock(mutex_);
    --seen_.in_flight;
  }

  Task<void> stream(http::ResponseWriter& w, bool chat, Mode mode, int64_t max_tokens) {
    if (mode == Mode::kError) {
      co_await w.sendJson(HttpStatus::service_unavailable,
                          R"({"error":{"message":"no decode node","type":"server_error"}})");
      co_return;
    }
    // Awaited into locals (common/coroutine_rules.h).
    const bool began = co_await w.beginStream(HttpStatus::ok, "text/event-stream");
    if (!began) co_return;
    if (chat) {
      co_await w.writeChunk(
          R"(data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})"
          "\n\n");
    }
    for (int64_t i = 0; mode == Mode::kTrickle || i < max_tokens; ++i) {
      co_await sleep(mode == Mode::kTrickle ? 100ms : 2ms);
      if (mode == Mode::kBroken && i == 2) {
        co_await w.writeChunk("data: {\"error\":{\"message\":\"decode node lost\"}}\n\n");
        co_await w.endStream();
        co_return;
      }
      const bool written = co_await w.writeChunk(chunk(chat, " w" + std::to_string(i)));
      if (!written) co_return;
    }
    co_await w.writeChunk(
        chat ? R"(data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]})"
               "\n\n"
             : R"(data: {"choices":[{"index":0,"text":"","finish_reason":"length"}]})"
               "\n\n");
    co_await w.writeChunk(R"(data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":)" +
                          std::to_string(max_tokens) + "}}\n\n");
    if (mode != Mode::kNoDone) co_await w.writeChunk("data: [DONE]\n\n");
    co_await w.endStream();
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  http::Server server_{io_, http::ServerOptions{}};
  std::thread thread_;
  std::mutex mutex_;
  Seen seen_;
};

struct ClientRun {
  int rc = -1;
  std::string out;
  std::string err;
  double seconds = 0;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs the benchmark_client binary with `args`; `path_env` replaces $PATH when given.
ClientRun runClient(const std::vector<std::string>& args, const char* path_env = nullptr) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string stem = ::testing::TempDir() + "bc_" + info->name();
  const std::string out_path = stem + ".out";
  const std::string err_path = stem + ".err";
  std::vector<std::string> argv_storage = {BENCHMARK_CLIENT};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    if (path_env != nullptr && std::string_view(*e).starts_with("PATH=")) continue;
    env_storage.emplace_back(*e);
  }
  if (path_env != nullptr) env_storage.push_back(std::string("PATH=") + path_env);
  std::vector<char*> envp;
  for (std::string& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  ClientRun run;
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    ADD_FAILURE() << "spawn " << argv[0] << ": " << spawned;
    return run;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.out = slurp(out_path);
  run.err = slurp(err_path);
  return run;
}

json::object readJson(const std::string& path) {
  boost::system::error_code ec;
  json::value v = json::parse(slurp(path), ec);
  EXPECT_FALSE(ec) << path;
  return ec || !v.is_object() ? json::object{} : v.as_object();
}

std::string tempFile(const std::string& suffix) {
  return ::testing::TempDir() + "bc_" +
         ::testing::UnitTest::GetInstance()->current_test_info()->name() + suffix;
}

class BenchmarkClientTest : public ::testing::Test {
 protected:
  FakeOpenAi server_;
};

TEST_F(BenchmarkClientTest, RandomCompletionsUnderAConcurrencyLimit) {
  const std::string result = tempFile(".json");
  ClientRun run = runClient({"--base-url",
                             server_.baseUrl(),
                             "--tokenizer",
                             kStories,
                             "--num-prompts",
                             "20",
                             "--input-len",
                             "50",
                             "--output-len",
                             "6",
                             "--request-rate",
                             "200",
                             "--burstiness",
                             "0.5",
                             "--max-concurrency",
                             "3",
                             "--ignore-eos",
                             "--seed",
                             "4",
                             "--goodput",
                             "ttft:60000",
                             "e2el:60000",
                             "--result-json",
                             result});
  ASSERT_EQ(run.rc, 0) << run.err;
  EXPECT_NE(run.out.find("Serving Benchmark Result"), std::string::npos);
  EXPECT_NE(run.out.find("P99 TTFT (ms):"), std::string::npos);
  EXPECT_NE(run.out.find("Request goodput (req/s):"), std::string::npos);
  // The fake reports 1 prompt token for 50-token prompts: the client notices the mismatch.
  EXPECT_NE(run.err.find("server counted other prompt lengths"), std::string::npos) << run.err;

  const json::object doc = readJson(result);
  EXPECT_EQ(doc.at("completed"), 20);
  EXPECT_EQ(doc.at("failed"), 0);
  EXPECT_EQ(doc.at("backend"), "openai");
  EXPECT_EQ(doc.at("model_id"), "fake-model");  // from GET /v1/models
  EXPECT_EQ(doc.at("max_concurrency"), 3);
  EXPECT_EQ(doc.at("total_input_tokens"), 20 * 50);
  EXPECT_EQ(doc.at("total_output_tokens"), 20 * 6);  // from the usage chunks
  EXPECT_EQ(doc.at("request_goodput").as_double(), doc.at("request_throughput").as_double());
  for (const json::value& len : doc.at("input_lens").as_array()) EXPECT_EQ(len, 50);
  for (const json::value& len : doc.at("output_lens").as_array()) EXPECT_EQ(len, 6);
  for (const json::value& ttft : doc.at("ttfts").as_array()) EXPECT_GT(ttft.as_double(), 0.0);
  for (const json::value& itl : doc.at("itls").as_array()) EXPECT_EQ(itl.as_array().size(), 5u);
  // Six chunks 2 ms apart: ITL around 2 ms, TPOT the same.
  EXPECT_GT(doc.at("median_itl_ms").as_double(), 1.5);
  EXPECT_GT(doc.at("mean_tpot_ms").as_double(), 1.5);
  EXPECT_TRUE(doc.contains("p99_e2el_ms"));

  const FakeOpenAi::Seen seen = server_.seen();
  EXPECT_EQ(seen.requests, 20);
  EXPECT_LE(seen.max_in_flight, 3);
  const json::object& body = seen.bodies.at(0);
  EXPECT_EQ(body.at("model"), "fake-model");
  EXPECT_EQ(body.at("stream"), true);
  EXPECT_EQ(body.at("stream_options").at("include_usage"), true);
  EXPECT_EQ(body.at("ignore_eos"), true);
  EXPECT_EQ(body.at("temperature").to_number<double>(), 0.0);
  EXPECT_EQ(body.at("max_tokens"), 6);
  EXPECT_TRUE(body.at("prompt").is_string());
}

// --api-key (else $OPENAI_API_KEY) goes out as a Bearer token on every request.
TEST_F(BenchmarkClientTest, TheApiKeyIsSentAsABearerToken) {
  ClientRun run =
      runClient({"--base-url", server_.baseUrl(), "--tokenizer", kStories, "--num-prompts", "3",
                 "--input-len", "8", "--output-len", "2", "--api-key", "sk-kvferry-test-key"});
  ASSERT_EQ(run.rc, 0) << run.err;
  const FakeOpenAi::Seen seen = server_.seen();
  ASSERT_EQ(seen.authorizations.size(), 3u);
  for (const std::string& a : seen.authorizations) EXPECT_EQ(a, "Bearer sk-kvferry-test-key");
}

TEST_F(BenchmarkClientTest, MultiTurnResendsTheConversation) {
  const std::string result = tempFile(".json");
  ClientRun run = runClient({"--base-url",     server_.baseUrl(),
                             "--endpoint",     "/v1/chat/completions",
                             "--tokenizer",    kStories,
                             "--model",        "chatty",
                             "--dataset",      "multi-turn",
                             "--num-sessions", "3",
                             "--turns",        "3",
                             "--input-len",    "12",
                             "--output-len",   "4",
                             "--request-rate", "50",
                             "--result-json",  result});
  ASSERT_EQ(run.rc, 0) << run.err;
  const json::object doc = readJson(result);
  EXPECT_EQ(doc.at("completed"), 9);
  EXPECT_EQ(doc.at("backend"), "openai-chat");
  // Turn t of a session carries its t earlier user messages, the answers and the new message.
  const json::array& inputs = doc.at("input_lens").as_array();
  ASSERT_EQ(inputs.size(), 9u);
  EXPECT_EQ(inputs[0], 12);
  EXPECT_GT(inputs[1].to_number<int64_t>(), 24);  // 12 + answer + 12
  EXPECT_GT(inputs[2].to_number<int64_t>(), inputs[1].to_number<int64_t>());
  std::map<size_t, int> by_length;
  for (const json::object& body : server_.seen().bodies) {
    const json::array& messages = body.at("messages").as_array();
    ++by_length[messages.size()];
    EXPECT_EQ(body.at("model"), "chatty");
    EXPECT_EQ(body.at("max_completion_tokens"), 4);
    if (messages.size() > 1) {
      EXPECT_EQ(messages[1].at("role"), "assistant");
      EXPECT_EQ(messages[1].at("content"), " w0 w1 w2 w3");  // the server's own answer
    }
  }
  EXPECT_EQ(by_length, (std::map<size_t, int>{{1, 3}, {3, 3}, {5, 3}}));
}

TEST_F(BenchmarkClientTest, TraceReplayKeepsTheTraceLengths) {
  const std::string result = tempFile(".json");
  ClientRun run =
      runClient({"--base-url", server_.baseUrl(), "--tokenizer", kStories, "--dataset", "trace",
                 "--trace", kTrace, "--num-prompts", "8", "--trace-time-scale", "0.001",
                 "--max-tokens", "3", "--warmup-requests", "2", "--result-json", result});
  ASSERT_EQ(run.rc, 0) << run.err;
  const json::object doc = readJson(result);
  EXPECT_EQ(doc.at("completed"), 8);
  EXPECT_TRUE(doc.at("request_rate").is_null());
  const json::array& inputs = doc.at("input_lens").as_array();
  const std::vector<int> expected = {6758, 7322, 7236, 2290, 6760};  // the slice's first lines
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(inputs.at(i), expected[i]);
  EXPECT_EQ(server_.seen().requests, 10);  // 2 warmup + 8 measured
}

TEST_F(BenchmarkClientTest, ErrorsAreClassified) {
  struct Case {
    std::string prefix;
    std::string kind;
  };
  for (const Case& c :
       {Case{"/err", "http_503"}, Case{"/broken", "stream_error"}, Case{"/nodone", "incomplete"}}) {
    const std::string result = tempFile(c.kind + ".json");
    ClientRun run = runClient({"--base-url", server_.baseUrl(c.prefix), "--tokenizer", kStories,
                               "--model", "m", "--num-prompts", "3", "--input-len", "10",
                               "--output-len", "4", "--result-json", result});
    EXPECT_EQ(run.rc, 1) << c.prefix << ": every request failed\n" << run.err;
    const json::object doc = readJson(result);
    EXPECT_EQ(doc.at("completed"), 0) << c.prefix;
    EXPECT_EQ(doc.at("errors_by_type").at(c.kind), 3) << c.prefix << " " << run.out;
    EXPECT_NE(run.out.find(c.kind + ":"), std::string::npos) << run.out;
  }
  // A port bound but not listening refuses connections, and stays ours during the test.
  asio::io_context io;
  asio::ip::tcp::acceptor bound(io);
  bound.open(asio::ip::tcp::v4());
  bound.bind({asio::ip::make_address("127.0.0.1"), 0});
  const std::string refused_url =
      "http://127.0.0.1:" + std::to_string(bound.local_endpoint().port());
  ClientRun refused = runClient({"--base-url", refused_url, "--tokenizer", kStories, "--model", "m",
                                 "--num-prompts", "2", "--input-len", "10"});
  EXPECT_EQ(refused.rc, 1);
  EXPECT_NE(refused.out.find("connect:"), std::string::npos) << refused.out;
}

TEST_F(BenchmarkClientTest, TimeoutBoundsARequestThatNeverEnds) {
  // The server sends a chunk every 100 ms forever, so only the total deadline can end it.
  const std::string result = tempFile(".json");
  ClientRun run = runClient({"--base-url", server_.baseUrl("/trickle"), "--tokenizer", kStories,
                             "--model", "m", "--num-prompts", "2", "--input-len", "10",
                             "--timeout-s", "0.5", "--result-json", result});
  EXPECT_EQ(run.rc, 1) << run.err;
  EXPECT_LT(run.seconds, 5.0);
  const json::object doc = readJson(result);
  EXPECT_EQ(doc.at("errors_by_type").at("timeout"), 2);
}

TEST_F(BenchmarkClientTest, DurationLimitStopsTheRun) {
  const std::string result = tempFile(".json");
  ClientRun run =
      runClient({"--base-url", server_.baseUrl("/trickle"), "--tokenizer", kStories, "--model", "m",
                 "--num-prompts", "100", "--input-len", "10", "--request-rate", "10",
                 "--duration-limit-s", "1", "--timeout-s", "60", "--result-json", result});
  EXPECT_EQ(run.rc, 1) << run.err;
  EXPECT_LT(run.seconds, 6.0);
  const json::object doc = readJson(result);
  EXPECT_GE(doc.at("errors_by_type").at("cancelled").to_number<int64_t>(), 1);
  EXPECT_GT(doc.at("not_sent").to_number<int64_t>(), 50);
  EXPECT_LT(doc.at("duration").as_double(), 2.0);
}

TEST_F(BenchmarkClientTest, PlotWithoutGnuplotStillSucceeds) {
  const std::string png = tempFile(".png");
  ClientRun run =
      runClient({"--base-url", server_.baseUrl(), "--tokenizer", kStories, "--num-prompts", "4",
                 "--input-len", "10", "--output-len", "3", "--plot", png, "--progress"},
                "/nonexistent");
  EXPECT_EQ(run.rc, 0) << run.err;
  EXPECT_NE(run.err.find("needs gnuplot"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("4/4 done"), std::string::npos) << run.err;  // --progress, not a TTY
  if (findGnuplot()) {
    run = runClient({"--base-url", server_.baseUrl(), "--tokenizer", kStories, "--num-prompts", "4",
                     "--input-len", "10", "--output-len", "3", "--plot", png});
    EXPECT_EQ(run.rc, 0) << run.err;
    EXPECT_GT(slurp(png).size(), 1000u) << run.err;
    EXPECT_NE(slurp(png.substr(0, png.size() - 4) + ".gp").find("plot"), std::string::npos);
  }
}

TEST_F(BenchmarkClientTest, BadCommandLinesFailWithOneLine) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--num-prompts", "3"},  // no --tokenizer
        std::vector<std::string>{"--tokenizer", kStories, "--dataset", "multi-turn"},
        std::vector<std::string>{"--tokenizer", kStories, "--request-rate", "0"},
        std::vector<std::string>{"--tokenizer", kStories, "--base-url", "https://1.2.3.4:1"},
        std::vector<std::string>{"--tokenizer", kStories, "--goodput", "itl:3"},
        std::vector<std::string>{"--tokenizer", kStories, "--bogus", "1"}}) {
    ClientRun run = runClient(args);
    EXPECT_EQ(run.rc, 2) << args[0];
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  }
  ClientRun help = runClient({"--help"});
  EXPECT_EQ(help.rc, 0);
  EXPECT_NE(help.out.find("--duration-limit-s"), std::string::npos);
}

}  // namespace
}  // namespace kvferry::bench
