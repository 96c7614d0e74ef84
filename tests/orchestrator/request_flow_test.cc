// request_flow's attempts, retries and resumption against a mocked AgentClient: no agent
// processes and no HTTP on the agent side. The client's side is a real ResponseWriter on a
// loopback socket pair, so the test reads exactly the bytes a client gets.
#include "orchestrator/request_flow.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "common/coroutine_rules.h"
#include "mocks/agent_client_mock.h"
#include "model/test_data.h"
#include "orchestrator/openai/detokenizer.h"
#include "orchestrator/openai/request.h"
#include "orchestrator/registration.h"

namespace kvferry::orchestrator {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace json = boost::json;
using namespace std::chrono_literals;
using http::Task;
using http::tcp;
using ::testing::_;
using testing::answerWith;
using ::testing::ElementsAreArray;
using testing::failWith;
using ::testing::Field;
using ::testing::InSequence;
using testing::playStream;
using ::testing::StrictMock;
using testing::tokenLines;

constexpr uint64_t kRequestId = 42;

// What the client got, and what the flow reports.
struct Answered {
  RequestOutcome outcome;
  unsigned status = 0;
  std::string body;
  std::string retry_after;
};

class RequestFlowTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    config::ModelConfig model;
    model.path = model::testing::storiesPath();
    Result<ServedModel> served = ServedModel::load(model);
    ASSERT_TRUE(served.isOk()) << served.status().toString();
    model_ = new ServedModel(std::move(served).value());
  }
  static void TearDownTestSuite() { delete model_; }

  void SetUp() override {
    config_.max_attempts = 3;
    config_.lease_ms = 1000;
  }

  // Round robin: the pairs an attempt gets are known in advance.
  static std::unique_ptr<scheduler::Policy> roundRobin() {
    Result<std::unique_ptr<scheduler::Policy>> policy =
        scheduler::makePolicy("round_robin", config::SchedulerConfig{}, 1);
    EXPECT_TRUE(policy.isOk());
    return std::move(policy).value();
  }

  // Registers an agent of `role` ("prefill", "decode", "both"); ids are 0, 1, 2, … in order.
  NodeId add(const std::string& role) {
    const std::string name = role + std::to_string(registry_.nodes().size());
    const wire::RegisterRequest r = testing::registrationFor(
        model_->identity, name, role,
        "127.0.0.1:" + std::to_string(9000 + registry_.nodes().size()), "blob-of-" + name, 0);
    Result<NodeRegistry::Registered> registered = registry_.registerNode(r, Clock::now());
    EXPECT_TRUE(registered.isOk()) << registered.status().toString();
    return registered.isOk() ? registered->id : 0;
  }

  // A completions request for the prompt below, prepared; `extra` adds JSON fields.
  std::variant<PreparedRequest, openai::ApiError> prepare(const std::string& body_fields,
                                                          bool clamp = false) {
    const std::string body =
        R"({"model":"stories260K","prompt":"Once upon a time",)" + body_fields + "}";
    openai::ParseResult parsed = openai::parseRequest(openai::Endpoint::kCompletions, body);
    EXPECT_TRUE(std::holds_alternative<openai::ApiRequest>(parsed)) << body;
    return prepareRequest(*model_, registry_, std::get<openai::ApiRequest>(std::move(parsed)),
                          kRequestId, 1, 1700000000, Clock::now(), clamp);
  }
  PreparedRequest request(bool stream, const std::string& extra = "") {
    auto prepared = prepare(R"("max_tokens":6,"temperature":0.8,"seed":5,"stream":)" +
                            std::string(stream ? "true" : "false") + extra);
    EXPECT_TRUE(std::holds_alternative<PreparedRequest>(prepared));
    return std::get<PreparedRequest>(std::move(prepared));
  }
  openai::ApiError refusal(const std::string& body_fields) {
    auto prepared = prepare(body_fields);
    EXPECT_TRUE(std::holds_alternative<openai::ApiError>(prepared)) << body_fields;
    return std::holds_alternative<openai::ApiError>(prepared)
               ? std::get<openai::ApiError>(std::move(prepared))
               : openai::ApiError{};
  }

  // Runs the request through the flow, its answer going to a client on a loopback socket.
  Answered answer(const PreparedRequest& prepared) {
    asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    tcp::socket client(io);
    client.connect(acceptor.local_endpoint());
    beast::tcp_stream server(acceptor.accept());
    http::ResponseWriter writer(server, 11, false, 5s);
    Answered answered;
    bool done = false;
    asio::co_spawn(io, runAndClose(prepared, writer, server, answered.outcome),
                   [&done](std::exception_ptr error) {
                     EXPECT_FALSE(error) << "the flow threw";
                     done = true;
                   });
    io.run();
    EXPECT_TRUE(done);
    beast::flat_buffer buffer;
    beast::http::response<beast::http::string_body> response;
    beast::error_code ec;
    beast::http::read(client, buffer, response, ec);
    EXPECT_FALSE(ec) << ec.message();
    answered.status = response.result_int();
    answered.body = response.body();
    if (auto it = response.find(beast::http::field::retry_after); it != response.end()) {
      answered.retry_after = std::string(it->value());
    }
    return answered;
  }

  Task<void> runAndClose(const PreparedRequest& prepared, http::ResponseWriter& writer,
                         beast::tcp_stream& server, RequestOutcome& outcome) {
    outcome = co_await runRequest(ctx_, prepared, writer);
    writer.stopWatch();
    boost::system::error_code ignored;
    server.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  static std::vector<int32_t> encode(std::string_view text, bool add_bos) {
    model::EncodeOptions options;
    options.add_bos = add_bos;
    auto ids = model_->tokenizer->encode(text, options);
    EXPECT_TRUE(ids.isOk());
    return ids.isOk() ? *ids : std::vector<int32_t>{};
  }
  // The prompt followed by the first `n` tokens of the answer: what a resumed attempt sends.
  std::vector<int32_t> resumedPrompt(size_t n) const {
    std::vector<int32_t> tokens = prompt_;
    tokens.insert(tokens.end(), answer_.begin(), answer_.begin() + static_cast<std::ptrdiff_t>(n));
    return tokens;
  }
  std::vector<int32_t> answerTokens(size_t from, size_t to) const {
    return {answer_.begin() + static_cast<std::ptrdiff_t>(from),
            answer_.begin() + static_cast<std::ptrdiff_t>(to)};
  }
  static wire::ReserveResponse lease(uint64_t id) {
    wire::ReserveResponse lease;
    lease.lease_id = id;
    lease.slot = 5;
    lease.block_ids = {3, 4};
    lease.regions = {0, 1};
    return lease;
  }
  wire::PrefillResponse firstToken(size_t index, uint64_t rng_draws) const {
    wire::PrefillResponse first;
    first.first_token = answer_[index];
    first.rng_draws = rng_draws;
    return first;
  }

  // The text of a streamed completion's events, and whether it saw an error event.
  static std::string streamedText(const std::string& body, bool* saw_error = nullptr) {
    std::string text;
    size_t at = 0;
    while ((at = body.find("data: {", at)) != std::string::npos) {
      const size_t end = body.find("\n\n", at);
      json::value event = json::parse(body.substr(at + 6, end - at - 6));
      if (event.as_object().contains("error") && saw_error != nullptr) *saw_error = true;
      if (const json::value* choices = event.as_object().if_contains("choices");
          choices != nullptr && !choices->as_array().empty()) {
        text += std::string(choices->as_array()[0].at("text").as_string());
      }
      at = end;
    }
    return text;
  }
  // The text the whole answer has.
  std::string textOf(size_t tokens) const {
    openai::IncrementalDetokenizer detokenizer(*model_->tokenizer, prompt_);
    std::string text;
    for (size_t i = 0; i < tokens; ++i) text += *detokenizer.feed(answer_[i]);
    return text + detokenizer.flush();
  }

  static ServedModel* model_;
  config::OrchestratorConfig config_;
  prometheus::Registry prometheus_;
  OrchestratorMetrics metrics_{prometheus_};
  NodeRegistry registry_{model_->identity, 60s, 1e9};
  std::unique_ptr<scheduler::Policy> policy_ = roundRobin();
  StrictMock<testing::MockAgentClient> agents_;
  // Waiting for KV room: counted; a heartbeat from every node (their room is back) unless
  // room_times_out_, then what the admission queue answers.
  Task<Admission::Refusal> waitForRoom() {
    ++room_waits_;
    if (!room_times_out_) {
      for (const NodeRecord& node : registry_.nodes()) {
        wire::HeartbeatRequest heartbeat;
        heartbeat.node_id = node.id;
        heartbeat.node_token = registry_.node(node.id)->token;
        heartbeat.load = node.load;
        EXPECT_TRUE(registry_.heartbeat(heartbeat, Clock::now()).isOk());
      }
    }
    co_return room_times_out_ ? Admission::Refusal::kQueueTimeout : Admission::Refusal::kNone;
  }
  int room_waits_ = 0;
  bool room_times_out_ = false;
  FlowContext ctx_{config_,
                   *model_,
                   registry_,
                   *policy_,
                   agents_,
                   metrics_,
                   [this](uint64_t, Clock::time_point) { return waitForRoom(); }};
  const std::vector<int32_t> prompt_ = encode("Once upon a time", true);
  const std::vector<int32_t> answer_ = encode("there was a little girl named Lily", false);
};

ServedModel* RequestFlowTest::model_ = nullptr;

TEST_F(RequestFlowTest, ARefusedReservationRetriesOnAnotherDecodeNode) {
  const NodeId prefill = add("prefill"), first = add("decode"), second = add("decode");
  InSequence order;
  EXPECT_CALL(agents_, reserve(first, _))
      .WillOnce(failWith<wire::ReserveResponse>(AgentFailure::kRefused,
                                                unavailable("reserve: KV pool full")));
  EXPECT_CALL(agents_, reserve(second, Field(&wire::ReserveRequest::tokens, prompt_)))
      .WillOnce(answerWith(lease(22)));
  EXPECT_CALL(agents_, prefill(prefill, _)).WillOnce(answerWith(firstToken(0, 1)));
  EXPECT_CALL(agents_, decode(second, Field(&wire::DecodeRequest::lease_id, 22u), _))
      .WillOnce(playStream(tokenLines(answerTokens(1, 4), "stop")));

  Answered answered = answer(request(true));
  EXPECT_EQ(answered.status, 200u);
  EXPECT_EQ(streamedText(answered.body), textOf(4));
  EXPECT_EQ(answered.outcome.attempts, 2u);
  EXPECT_EQ(answered.outcome.resumes, 0u);
  EXPECT_EQ(answered.outcome.decode, second);
  EXPECT_EQ(answered.outcome.finish_reason, "stop");
}

TEST_F(RequestFlowTest, APrefillWhoseTransferFailedBlamesTheDecodeNodeAndReleasesItsLease) {
  // One prefill node: were it blamed, no pair would be left.
  const NodeId prefill = add("prefill"), first = add("decode"), second = add("decode");
  InSequence order;
  EXPECT_CALL(agents_, reserve(first, _)).WillOnce(answerWith(lease(11)));
  EXPECT_CALL(agents_, prefill(prefill, _))
      .WillOnce(failWith<wire::PrefillResponse>(
          AgentFailure::kPeerFailed, unavailable("prefill answered HTTP 502: transfer failed")));
  // No cancel: the prefill answered; a failed write may still land, so not fenced.
  EXPECT_CALL(agents_, release(first, 11u, false));
  EXPECT_CALL(agents_, reserve(second, _)).WillOnce(answerWith(lease(22)));
  EXPECT_CALL(agents_, prefill(prefill, Field(&wire::PrefillRequest::target,
                                              Field(&wire::TransferTarget::node_id, second))))
      .WillOnce(answerWith(firstToken(0, 1)));
  EXPECT_CALL(agents_, decode(second, _, _))
      .WillOnce(playStream(tokenLines(answerTokens(1, 3), "stop")));

  Answered answered = answer(request(false));
  EXPECT_EQ(answered.status, 200u);
  EXPECT_EQ(answered.outcome.attempts, 2u);
  EXPECT_EQ(answered.outcome.prefill, prefill);
  EXPECT_EQ(answered.outcome.decode, second);
  EXPECT_EQ(json::parse(answered.body).at("choices").as_array()[0].at("text").as_string(),
            textOf(3));
}

TEST_F(RequestFlowTest, APrefillThatNeverAnsweredIsCancelledAndItsNodeExcluded) {
  const NodeId first = add("prefill"), second = add("prefill"), decode = add("decode");
  InSequence order;
  EXPECT_CALL(agents_, reserve(decode, _)).WillOnce(answerWith(lease(11)));
  EXPECT_CALL(agents_, prefill(first, _))
      .WillOnce(failWith<wire::PrefillResponse>(AgentFailure::kNoAnswer,
                                                deadlineExceeded("prefill timed out")));
  EXPECT_CALL(agents_, cancel(first, kRequestId));  // it may still be computing
  EXPECT_CALL(agents_, release(decode, 11u, false));
  EXPECT_CALL(agents_, reserve(decode, _)).WillOnce(answerWith(lease(22)));
  EXPECT_CALL(agents_, prefill(second, _)).WillOnce(answerWith(firstToken(0, 1)));
  EXPECT_CALL(agents_, decode(decode, Field(&wire::DecodeRequest::lease_id, 22u), _))
      .WillOnce(playStream(tokenLines(answerTokens(1, 2), "stop")));

  Answered answered = answer(request(true));
  EXPECT_EQ(answered.status, 200u);
  EXPECT_EQ(answered.outcome.attempts, 2u);
  EXPECT_EQ(answered.outcome.prefill, second);
  EXPECT_EQ(streamedText(answered.body), textOf(2));
}

TEST_F(RequestFlowTest, ADecodeThatBreaksMidStreamResumesOnAnotherPairFromTheAnswerSoFar) {
  const NodeId prefill = add("prefill"), first = add("decode"), second = add("decode");
  InSequence order;
  EXPECT_CALL(agents_, reserve(first, _)).WillOnce(answerWith(lease(11)));
  EXPECT_CALL(agents_, prefill(prefill, Field(&wire::PrefillRequest::rng_draws, 0u)))
      .WillOnce(answerWith(firstToken(0, 1)));
  EXPECT_CALL(agents_, decode(first, _, _))
      .WillOnce(playStream(tokenLines(answerTokens(1, 3), ""), unavailable("connection reset")));
  EXPECT_CALL(agents_, release(first, 11u, true));
  // The next pair gets the prompt and the three tokens so far, skips the three random draws
  // they used, and has the budget that is left.
  EXPECT_CALL(agents_, reserve(second, Field(&wire::ReserveRequest::tokens,
                                             ElementsAreArray(resumedPrompt(3)))))
      .WillOnce(answerWith(lease(22)));
  EXPECT_CALL(agents_, prefill(prefill, AllOf(Field(&wire::PrefillRequest::tokens,
                                                    ElementsAreArray(resumedPrompt(3))),
                                              Field(&wire::PrefillRequest::rng_draws, 3u))))
      .WillOnce(answerWith(firstToken(3, 4)));
  EXPECT_CALL(agents_, decode(second,
                              AllOf(Field(&wire::DecodeRequest::max_new_tokens, 2u),
                                    Field(&wire::DecodeRequest::rng_draws, 4u)),
                              _))
      .WillOnce(playStream(tokenLines(answerTokens(4, 6), "length")));

  Answered answered = answer(request(true));
  EXPECT_EQ(answered.status, 200u);
  bool saw_error = false;
  EXPECT_EQ(streamedText(answered.body, &saw_error), textOf(6));  // every token once
  EXPECT_FALSE(saw_error);
  EXPECT_NE(answered.body.find(": resuming the answer on another node\n\n"), std::string::npos);
  EXPECT_NE(answered.body.find(R"("finish_reason":"length")"), std::string::npos);
  EXPECT_EQ(answered.outcome.attempts, 2u);
  EXPECT_EQ(answered.outcome.resumes, 1u);
  EXPECT_EQ(answered.outcome.output_tokens, 6u);
  EXPECT_TRUE(answered.outcome.error.empty()) << answered.outcome.error;
}

TEST_F(RequestFlowTest, AColocatedAnswerThatBreaksResumesWithGenerateOnTheOtherNode) {
  const NodeId first = add("both"), second = add("both");
  InSequence order;
  EXPECT_CALL(agents_, generate(first, Field(&wire::GenerateRequest::max_new_tokens, 6u), _))
      .WillOnce(playStream(tokenLines(answerTokens(0, 2), "error")));
  EXPECT_CALL(
      agents_,
      generate(second,
               AllOf(Field(&wire::GenerateRequest::tokens, ElementsAreArray(resumedPrompt(2))),
                     Field(&wire::GenerateRequest::max_new_tokens, 4u),
                     Field(&wire::GenerateRequest::rng_draws, 2u)),
               _))
      .WillOnce(playStream(tokenLines(answerTokens(2, 6), "length")));

  Answered answered = answer(request(false, R"(,"return_token_ids":true)"));
  EXPECT_EQ(answered.status, 200u);
  const json::value body = json::parse(answered.body);
  const json::value& choice = body.at("choices").as_array()[0];
  EXPECT_EQ(choice.at("text").as_string(), textOf(6));
  EXPECT_EQ(choice.at("token_ids").as_array().size(), 6u);
  EXPECT_EQ(body.at("usage").at("completion_tokens"), 6);
  EXPECT_EQ(answered.outcome.resumes, 1u);
  EXPECT_EQ(answered.outcome.decode, second);
}

TEST_F(RequestFlowTest, AColocatedStreamThatBrokeOffIsCancelledOnItsNode) {
  const NodeId first = add("both"), second = add("both");
  InSequence order;
  // No answer to the end: the agent may still be computing, so it is told to stop.
  EXPECT_CALL(agents_, generate(first, _, _))
      .WillOnce(playStream(tokenLines(answerTokens(0, 2), ""), unavailable("connection reset")));
  EXPECT_CALL(agents_, cancel(first, kRequestId));
  EXPECT_CALL(agents_, generate(second, _, _))
      .WillOnce(playStream(tokenLines(answerTokens(2, 4), "stop")));

  EXPECT_EQ(answer(request(false)).status, 200u);
}

TEST_F(RequestFlowTest, ATokenOutsideTheVocabularyFailsTheAttemptAndTheAnswerGoesOnWithoutIt) {
  const NodeId prefill = add("prefill"), first = add("decode"), second = add("decode");
  InSequence order;
  EXPECT_CALL(agents_, reserve(first, _)).WillOnce(answerWith(lease(11)));
  EXPECT_CALL(agents_, prefill(prefill, _)).WillOnce(answerWith(firstToken(0, 1)));
  std::vector<wire::StreamLine> bad = tokenLines({answer_[1], 1 << 30, answer_[2]}, "stop");
  EXPECT_CALL(agents_, decode(first, _, _)).WillOnce(playStream(bad));
  EXPECT_CALL(agents_, release(first, 11u, true));
  EXPECT_CALL(agents_, reserve(second, Field(&wire::ReserveRequest::tokens,
                                             ElementsAreArray(resumedPrompt(2)))))
      .WillOnce(answerWith(lease(22)));
  EXPECT_CALL(agents_, prefill(prefill, _)).WillOnce(answerWith(firstToken(2, 3)));
  EXPECT_CALL(agents_, decode(second, _, _))
      .WillOnce(playStream(tokenLines(answerTokens(3, 4), "stop")));

  Answered answered = answer(request(true));
  EXPECT_EQ(streamedText(answered.body), textOf(4));
  EXPECT_EQ(answered.outcome.resumes, 1u);
  EXPECT_EQ(answered.outcome.output_tokens, 4u);
}

TEST_F(RequestFlowTest, WithNoAttemptLeftAnAnswerWithoutTokensIs503) {
  config_.max_attempts = 2;
  add("prefill");
  const NodeId first = add("decode"), second = add("decode");
  EXPECT_CALL(agents_, reserve(first, _))
      .WillOnce(failWith<wire::ReserveResponse>(AgentFailure::kNoAnswer,
                                                unavailable("reserve on node 1: refused")));
  EXPECT_CALL(agents_, reserve(second, _))
      .WillOnce(failWith<wire::ReserveResponse>(AgentFailure::kRefused,
                                                unavailable("reserve on node 2 (10.1.2.3:7001, "
                                                            "[fe80::1]:7002): KV pool full")));

  Answered answered = answer(request(true));
  EXPECT_EQ(answered.status, 503u);
  EXPECT_EQ(answered.outcome.http_status, 503);
  const std::string message(json::parse(answered.body).at("error").at("message").as_string());
  EXPECT_NE(message.find("no attempt finished the answer (2 tried, 0 tokens sent)"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("KV pool full"), std::string::npos) << message;
  // What the agent said, less the cluster's internal addresses (the log keeps them).
  EXPECT_NE(message.find("reserve on node 2 (…, …): KV pool full"), std::string::npos) << message;
  EXPECT_EQ(message.find("10.1.2.3"), std::string::npos) << message;
  EXPECT_EQ(message.find("fe80"), std::string::npos) << message;
  EXPECT_NE(answered.outcome.error.find("10.1.2.3:7001"), std::string::npos);
}

TEST_F(RequestFlowTest, WithNoAttemptLeftABegunStreamEndsWithAnErrorEvent) {
  config_.max_attempts = 2;
  const NodeId prefill = add("prefill"), first = add("decode"), second = add("decode");
  InSequence order;
  EXPECT_CALL(agents_, reserve(first, _)).WillOnce(answerWith(lease(11)));
  EXPECT_CALL(agents_, prefill(prefill, _)).WillOnce(answerWith(firstToken(0, 1)));
  EXPECT_CALL(agents_, decode(first, _, _))
      .WillOnce(playStream(tokenLines(answerTokens(1, 2), "error")));
  EXPECT_CALL(agents_, release(first, 11u, true));
  EXPECT_CALL(agents_, reserve(second, _)).WillOnce(answerWith(lease(22)));
  EXPECT_CALL(agents_, prefill(prefill, _)).WillOnce(answerWith(firstToken(2, 3)));
  EXPECT_CALL(agents_, decode(second, _, _))
      .WillOnce(playStream(tokenLines({}, ""), unavailable("connection reset")));
  EXPECT_CALL(agents_, release(second, 22u, true));

  Answered answered = answer(request(true));
  EXPECT_EQ(answered.status, 200u);  // the stream had begun
  bool saw_error = false;
  EXPECT_EQ(streamedText(answered.body, &saw_error), textOf(3));
  EXPECT_TRUE(saw_error);
  EXPECT_TRUE(answered.body.ends_with("data: [DONE]\n\n")) << answered.body;
  EXPECT_EQ(answered.outcome.http_status, 502);  // tokens had been produced
  EXPECT_NE(answered.outcome.error.find("connection reset"), std::string::npos)
      << answered.outcome.error;
}

TEST_F(RequestFlowTest, AMaxTokensPastTheContextIs400NamingTheLimitUnlessClamped) {
  const uint32_t context = model_->params.context_length;
  const uint32_t room = context - static_cast<uint32_t>(prompt_.size());
  const openai::ApiError error = refusal(R"("max_tokens":1000000000)");
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.param, "max_tokens");
  EXPECT_EQ(error.code, "context_length_exceeded");
  EXPECT_NE(error.message.find("maximum context length is " + std::to_string(context)),
            std::string::npos)
      << error.message;
  EXPECT_NE(error.message.find("Ask for at most " + std::to_string(room)), std::string::npos)
      << error.message;
  // Exactly what is left is fine; requests.clamp_max_tokens cuts a larger one to it.
  auto fits = prepare(R"("max_tokens":)" + std::to_string(room));
  ASSERT_TRUE(std::holds_alternative<PreparedRequest>(fits));
  auto clamped = prepare(R"("max_tokens":1000000000)", true);
  ASSERT_TRUE(std::holds_alternative<PreparedRequest>(clamped));
  EXPECT_EQ(std::get<PreparedRequest>(clamped).max_tokens, room);
}

TEST_F(RequestFlowTest, TokenIdsOutsideTheVocabularyAndAnImpossibleMinTokensAre400) {
  const size_t vocabulary = model_->tokenizer->vocabulary().tokens.size();
  EXPECT_EQ(refusal(R"("stop_token_ids":[3,)" + std::to_string(vocabulary) + "]").param,
            "stop_token_ids[1]");
  EXPECT_EQ(refusal(R"("logit_bias":{")" + std::to_string(vocabulary) + R"(":1})").param,
            "logit_bias");
  const openai::ApiError error = refusal(R"("max_tokens":4,"min_tokens":5)");
  EXPECT_EQ(error.param, "min_tokens");
  EXPECT_NE(error.message.find("at most max_tokens (4)"), std::string::npos) << error.message;
}

TEST_F(RequestFlowTest, TheSamplingExtensionsTravelToTheAgentsAndAResumedAnswerCountsItsTokens) {
  const NodeId prefill = add("prefill"), first = add("decode"), second = add("decode");
  const PreparedRequest prepared =
      request(true, R"(,"ignore_eos":true,"stop_token_ids":[13],"min_tokens":2,)"
                    R"("repetition_penalty":1.2,"frequency_penalty":0.5,"logit_bias":{"7":-3},)"
                    R"("logprobs":2)");
  // ignore_eos drops the model's end-of-sequence tokens; stop_token_ids add theirs.
  EXPECT_EQ(prepared.stop_tokens, std::vector<model::TokenId>{13});
  const auto carries = [](uint32_t answer_tokens) {
    return AllOf(Field(&wire::Sampling::repetition_penalty, 1.2f),
                 Field(&wire::Sampling::frequency_penalty, 0.5f),
                 Field(&wire::Sampling::logit_bias, ElementsAreArray({wire::LogitBias{7, -3.0f}})),
                 Field(&wire::Sampling::min_tokens, 2u), Field(&wire::Sampling::logprobs, 2u),
                 Field(&wire::Sampling::answer_tokens, answer_tokens));
  };
  InSequence order;
  EXPECT_CALL(agents_, reserve(first, _)).WillOnce(answerWith(lease(11)));
  EXPECT_CALL(
      agents_,
      prefill(prefill, AllOf(Field(&wire::PrefillRequest::sampling, carries(0)),
                             Field(&wire::PrefillRequest::stop_tokens, ElementsAreArray({13})))))
      .WillOnce(answerWith(firstToken(0, 1)));
  EXPECT_CALL(agents_,
              decode(first,
                     AllOf(Field(&wire::DecodeRequest::sampling, carries(0)),
                           Field(&wire::DecodeRequest::stop_tokens, ElementsAreArray({13}))),
                     _))
      .WillOnce(playStream(tokenLines(answerTokens(1, 3), ""), unavailable("connection reset")));
  EXPECT_CALL(agents_, release(first, 11u, true));
  EXPECT_CALL(agents_, reserve(second, _)).WillOnce(answerWith(lease(22)));
  EXPECT_CALL(agents_, prefill(prefill, Field(&wire::PrefillRequest::sampling, carries(3))))
      .WillOnce(answerWith(firstToken(3, 4)));
  EXPECT_CALL(agents_, decode(second, Field(&wire::DecodeRequest::sampling, carries(3)), _))
      .WillOnce(playStream(tokenLines(answerTokens(4, 6), "length")));

  Answered answered = answer(prepared);
  EXPECT_EQ(answered.status, 200u);
  EXPECT_EQ(answered.outcome.resumes, 1u);
}

TEST_F(RequestFlowTest, AStreamWithNowhereToResumeGetsItsErrorWithUsageAndNoPromise) {
  const NodeId prefill = add("prefill"), decode = add("decode");
  InSequence order;
  EXPECT_CALL(agents_, reserve(decode, _)).WillOnce(answerWith(lease(11)));
  EXPECT_CALL(agents_, prefill(prefill, _)).WillOnce(answerWith(firstToken(0, 1)));
  EXPECT_CALL(agents_, decode(decode, _, _))
      .WillOnce(playStream(tokenLines(answerTokens(1, 3), ""), unavailable("connection reset")));
  EXPECT_CALL(agents_, release(decode, 11u, true));
  // The only decode node is excluded now: no pair is left to resume on.

  Answered answered = answer(request(true));
  EXPECT_EQ(answered.status, 200u);
  EXPECT_EQ(answered.body.find("resuming"), std::string::npos) << answered.body;
  const size_t at = answered.body.find("data: {\"error\"");
  ASSERT_NE(at, std::string::npos) << answered.body;
  const json::value event =
      json::parse(answered.body.substr(at + 6, answered.body.find("\n\n", at) - at - 6));
  EXPECT_EQ(event.at("usage").at("completion_tokens"), 3);
  EXPECT_TRUE(answered.body.ends_with("data: [DONE]\n\n"));
  EXPECT_EQ(answered.outcome.http_status, 502);
}

TEST_F(RequestFlowTest, ANodeWithoutKvRoomIsNotBlamedTheRequestWaitsForRoomAndGoesOn) {
  const NodeId prefill = add("prefill"), decode = add("decode");
  InSequence order;
  EXPECT_CALL(agents_, reserve(decode, _))
      .WillOnce(failWith<wire::ReserveResponse>(AgentFailure::kNoCapacity,
                                                unavailable("reserve: need 108 new KV blocks")));
  // Room came back (a heartbeat): the same node again, not excluded.
  EXPECT_CALL(agents_, reserve(decode, _)).WillOnce(answerWith(lease(11)));
  EXPECT_CALL(agents_, prefill(prefill, _)).WillOnce(answerWith(firstToken(0, 1)));
  EXPECT_CALL(agents_, decode(decode, _, _))
      .WillOnce(playStream(tokenLines(answerTokens(1, 3), "stop")));

  Answered answered = answer(request(true));
  EXPECT_EQ(answered.status, 200u);
  EXPECT_EQ(streamedText(answered.body), textOf(3));
  EXPECT_EQ(room_waits_, 1);
  EXPECT_EQ(answered.outcome.attempts, 2u);
}

TEST_F(RequestFlowTest, AnotherNodeWithRoomIsTriedAtOnce) {
  const NodeId first = add("both"), second = add("both");
  InSequence order;
  EXPECT_CALL(agents_, generate(first, _, _))
      .WillOnce(playStream(tokenLines({}, "error", wire::error_code::kKvCapacity)));
  EXPECT_CALL(agents_, generate(second, _, _))
      .WillOnce(playStream(tokenLines(answerTokens(0, 2), "stop")));

  Answered answered = answer(request(false));
  EXPECT_EQ(answered.status, 200u);
  EXPECT_EQ(room_waits_, 0);
  EXPECT_EQ(answered.outcome.decode, second);
}

TEST_F(RequestFlowTest, ANodeThatCouldNeverHoldThePromptHasFailedNotRunOutOfRoom) {
  config_.max_attempts = 2;
  const NodeId node = add("both");
  wire::HeartbeatRequest heartbeat;  // a pool smaller than the prompt
  heartbeat.node_id = node;
  heartbeat.node_token = registry_.node(node)->token;
  heartbeat.load.total_kv_blocks = heartbeat.load.free_kv_blocks = 0;
  ASSERT_TRUE(registry_.heartbeat(heartbeat, Clock::now()).isOk());
  EXPECT_CALL(agents_, generate(node, _, _))
      .WillOnce(playStream(tokenLines({}, "error", wire::error_code::kKvCapacity)));

  Answered answered = answer(request(false));
  EXPECT_EQ(answered.status, 503u);  // tried once, not retried in a loop
  EXPECT_EQ(room_waits_, 0);
}

TEST_F(RequestFlowTest, NoRoomWithinTheDeadlineIs429WithRetryAfter) {
  config_.retry_after_s = 4;
  room_times_out_ = true;
  const NodeId node = add("both");
  EXPECT_CALL(agents_, generate(node, _, _))
      .WillOnce(playStream(tokenLines({}, "error", wire::error_code::kKvCapacity)));

  Answered answered = answer(request(true));
  EXPECT_EQ(answered.status, 429u);
  EXPECT_EQ(answered.retry_after, "4");
  const json::value error = json::parse(answered.body).at("error");
  EXPECT_EQ(error.at("type"), "rate_limit_error");
  EXPECT_NE(std::string(error.at("message").as_string()).find("KV room"), std::string::npos);
  EXPECT_EQ(answered.outcome.http_status, 429);
}

TEST_F(RequestFlowTest, WithoutAPrefillNodeADecodeNodeServesTheWholeRequest) {
  const NodeId decode = add("decode");
  EXPECT_CALL(agents_, generate(decode, Field(&wire::GenerateRequest::tokens, prompt_), _))
      .WillOnce(playStream(tokenLines(answerTokens(0, 3), "stop")));

  Answered answered = answer(request(true));
  EXPECT_EQ(answered.status, 200u);
  EXPECT_EQ(streamedText(answered.body), textOf(3));
  EXPECT_EQ(answered.outcome.prefill, decode);
  EXPECT_EQ(metrics_.colocated_fallbacks.Value(), 1);
}

TEST_F(RequestFlowTest, APrefillThatFailedBeforeWritingReleasesItsReservationFenced) {
  const NodeId first = add("prefill"), second = add("prefill"), decode = add("decode");
  InSequence order;
  EXPECT_CALL(agents_, reserve(decode, _)).WillOnce(answerWith(lease(11)));
  // A refusal that says no write of it can still land: the blocks are free at once.
  EXPECT_CALL(agents_, prefill(first, _))
      .WillOnce(failWith<wire::PrefillResponse>(
          AgentFailure::kRefused, unavailable("prefill answered HTTP 400: bad"), true));
  EXPECT_CALL(agents_, release(decode, 11u, true));
  EXPECT_CALL(agents_, reserve(decode, _)).WillOnce(answerWith(lease(22)));
  EXPECT_CALL(agents_, prefill(second, _)).WillOnce(answerWith(firstToken(0, 1)));
  EXPECT_CALL(agents_, decode(decode, _, _))
      .WillOnce(playStream(tokenLines(answerTokens(1, 2), "stop")));

  EXPECT_EQ(answer(request(true)).status, 200u);
}

}  // namespace
}  // namespace kvferry::orchestrator
