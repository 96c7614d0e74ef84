// The logit processors do what clients of OpenAI, vLLM and SGLang expect of each field, and
// logprobs are the raw logits' log-softmax.
#include "node_agent/engine/logit_processor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace kvferry::engine {
namespace {

using model::TokenId;

constexpr float kInf = std::numeric_limits<float>::infinity();

LogitParams none() { return {}; }

TEST(LogitProcessorTest, DefaultsChangeNothingAndNeedNoHost) {
  LogitProcessor processor(none(), std::vector<TokenId>{1, 2, 3}, 0);
  EXPECT_FALSE(processor.active());
  std::vector<float> logits = {0.5f, -1.0f, 2.0f, 3.0f};
  const std::vector<float> before = logits;
  processor.apply(logits);
  EXPECT_EQ(logits, before);
  EXPECT_FALSE(LogitProcessor().active());
}

TEST(LogitProcessorTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeSeenLogits) {
  LogitParams params;
  params.repetition_penalty = 2.0f;
  // Token 0 is in the prompt, token 1 in the answer, token 3 nowhere.
  LogitProcessor processor(params, std::vector<TokenId>{0, 2, 1}, 1);
  EXPECT_TRUE(processor.active());
  std::vector<float> logits = {4.0f, -3.0f, 1.0f, 5.0f};
  processor.apply(logits);
  EXPECT_EQ(logits, (std::vector<float>{2.0f, -6.0f, 0.5f, 5.0f}));
}

TEST(LogitProcessorTest, PresenceAndFrequencyPenaltiesCountOnlyAnswerTokens) {
  LogitParams params;
  params.presence_penalty = 0.5f;
  params.frequency_penalty = 1.0f;
  // The prompt holds token 1 three times; the resumed answer holds token 2 once.
  LogitProcessor processor(params, std::vector<TokenId>{1, 1, 1, 2}, 1);
  processor.accept(2);
  processor.accept(3);
  EXPECT_EQ(processor.answerTokens(), 3u);
  std::vector<float> logits(4, 0.0f);
  processor.apply(logits);
  EXPECT_EQ(logits, (std::vector<float>{0.0f, 0.0f, -2.5f, -1.5f}));
}

TEST(LogitProcessorTest, LogitBiasIsAddedAndCanBanAToken) {
  LogitParams params;
  params.logit_bias = {{0, -100.0f}, {2, 3.0f}};
  LogitProcessor processor(params, std::vector<TokenId>{5}, 0);
  std::vector<float> logits = {9.0f, 1.0f, 1.0f};
  Sampler sampler(3);
  // Greedy would say 0; the bias bans it and lifts 2.
  EXPECT_EQ(processor.pick(logits, sampler, TokenDraw{}).token, 2);
}

TEST(LogitProcessorTest, MinTokensMasksTheStopTokensUntilTheAnswerIsLongEnough) {
  LogitParams params;
  params.min_tokens = 2;
  params.stop_tokens = {0};
  LogitProcessor processor(params, std::vector<TokenId>{1}, 0);
  Sampler sampler(3);
  std::vector<float> logits;
  const auto greedy = [&] {  // from a row where the stop token is the most likely
    logits = {5.0f, 1.0f, 2.0f};
    return processor.pick(logits, sampler, TokenDraw{}).token;
  };
  EXPECT_EQ(greedy(), 2);
  EXPECT_EQ(logits[0], -kInf);
  EXPECT_EQ(greedy(), 2);
  EXPECT_FALSE(processor.changesLogits());  // two answer tokens: the mask is off
  EXPECT_EQ(greedy(), 0);
  // A resumed answer's tokens count.
  LogitProcessor resumed(params, std::vector<TokenId>{1, 2, 2}, 2);
  EXPECT_FALSE(resumed.changesLogits());
}

TEST(LogitProcessorTest, SampledPicksNeverDrawAMaskedToken) {
  LogitParams params;
  params.min_tokens = 1000;
  params.stop_tokens = {1};
  LogitProcessor processor(params, std::vector<TokenId>{0}, 0);
  Sampler sampler(4);
  SamplingRng rng(3);
  SamplingParams sampling;
  sampling.temperature = 1.5f;
  for (int i = 0; i < 500; ++i) {
    std::vector<float> logits = {1.0f, 3.0f, 1.0f, 0.5f};
    EXPECT_NE(processor.pick(logits, sampler, drawFor(sampling, rng)).token, 1);
  }
  EXPECT_EQ(rng.draws(), 500u);  // one draw per token, as randomDrawsPerToken says
}

TEST(LogitProcessorTest, LogprobsAreTheRawLogSoftmaxMostLikelyFirst) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, -2.0f};
  double total = 0;
  for (float l : logits) total += std::exp(l);
  const auto expected = [&](TokenId t) {
    return static_cast<float>(logits[static_cast<size_t>(t)] - std::log(total));
  };
  TokenLogprobs out;
  computeLogprobs(logits, 0, 3, out);
  EXPECT_NEAR(out.logprob, expected(0), 1e-6);
  ASSERT_EQ(out.top.size(), 3u);
  EXPECT_EQ(out.top[0].first, 1);  // a tie: the lower id first
  EXPECT_EQ(out.top[1].first, 2);
  EXPECT_EQ(out.top[2].first, 0);
  EXPECT_NEAR(out.top[0].second, expected(1), 1e-6);
  computeLogprobs(logits, 3, 0, out);
  EXPECT_TRUE(out.top.empty());
  EXPECT_NEAR(out.logprob, expected(3), 1e-6);

  // Through pick(): the raw row's values even when a processor changed the row, the chosen
  // token's included.
  LogitParams params;
  params.logprobs = 2;
  params.logit_bias = {{3, 50.0f}};
  LogitProcessor processor(params, std::vector<TokenId>{0}, 0);
  Sampler sampler(4);
  std::vector<float> row = logits;
  const LogitProcessor::PickedToken picked = processor.pick(row, sampler, TokenDraw{});
  EXPECT_EQ(picked.token, 3);
  ASSERT_TRUE(picked.logprobs.has_value());
  EXPECT_NEAR(picked.logprobs->logprob, expected(3), 1e-6);
  ASSERT_EQ(picked.logprobs->top.size(), 2u);
  EXPECT_EQ(picked.logprobs->top[0].first, 1);
}

TEST(LogitProcessorTest, AnImpossibleTokenHasAFiniteLogprob) {
  TokenLogprobs out;
  computeLogprobs(std::vector<float>{0.0f, -kInf}, 1, 2, out);
  EXPECT_EQ(out.logprob, kMinLogprob);
  EXPECT_EQ(out.top[1].second, kMinLogprob);
}

TEST(LogitProcessorTest, ValidationNamesTheProblem) {
  EXPECT_TRUE(validateLogitParams(none(), 10).isOk());
  LogitParams bad;
  bad.repetition_penalty = 0.0f;
  EXPECT_FALSE(validateLogitParams(bad, 10).isOk());
  bad = none();
  bad.frequency_penalty = 2.5f;
  EXPECT_FALSE(validateLogitParams(bad, 10).isOk());
  bad = none();
  bad.logit_bias = {{10, 1.0f}};
  const Status status = validateLogitParams(bad, 10);
  EXPECT_NE(status.message().find("logit_bias token 10 is outside the vocabulary of 10"),
            std::string::npos)
      << status.toString();
  bad = none();
  bad.stop_tokens = {-1};
  EXPECT_FALSE(validateLogitParams(bad, 10).isOk());
  bad = none();
  bad.logprobs = 21;
  EXPECT_FALSE(validateLogitParams(bad, 100).isOk());
}

}  // namespace
}  // namespace kvferry::engine
