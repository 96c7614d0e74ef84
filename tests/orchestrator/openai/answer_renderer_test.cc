#include "orchestrator/openai/answer_renderer.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <memory>
#include <string>
#include <vector>

#include "orchestrator/openai/stories_tokenizer_test.h"

namespace kvferry::openai {
namespace {

namespace json = boost::json;
using model::TokenId;

// The JSON objects of the SSE events in `stream`, checking the framing; [DONE] as null.
std::vector<json::value> events(std::string_view stream) {
  std::vector<json::value> out;
  while (!stream.empty()) {
    const size_t end = stream.find("\n\n");
    EXPECT_NE(end, std::string_view::npos) << stream;
    if (end == std::string_view::npos) break;
    const std::string_view event = stream.substr(0, end);
    EXPECT_TRUE(event.starts_with("data: ")) << event;
    const std::string_view body = event.substr(6);
    if (body == "[DONE]") {
      out.emplace_back(nullptr);
    } else {
      json::error_code ec;
      out.push_back(json::parse(body, ec));
      EXPECT_FALSE(ec) << body;
    }
    stream.remove_prefix(end + 2);
  }
  return out;
}

// The text a chat stream's events carry.
std::string content(const std::vector<json::value>& stream) {
  std::string text;
  for (const json::value& event : stream) {
    if (!event.is_object() || !event.as_object().contains("choices")) continue;
    const json::array& choices = event.at("choices").as_array();
    if (choices.empty()) continue;
    const json::object& delta = choices[0].at("delta").as_object();
    if (const json::value* piece = delta.if_contains("content")) {
      text += std::string(piece->as_string());
    }
  }
  return text;
}

class AnswerRendererTest : public testing::StoriesTokenizerTest {
 protected:
  AnswerSpec spec(bool stream) const {
    AnswerSpec s;
    s.stream = stream;
    s.id = "chatcmpl-1";
    s.created = 1700000000;
    s.model = "stories260K";
    s.prompt_tokens = static_cast<uint32_t>(prompt_.size());
    s.max_tokens = 100;
    return s;
  }
  AnswerRenderer renderer(AnswerSpec s) const { return AnswerRenderer(s, tok(), prompt_); }

  const std::vector<TokenId> prompt_ = encode("Once upon a time", true);
  // Follows the prompt, so its first piece keeps its space: " there was a little girl".
  const std::vector<TokenId> answer_ = encode("there was a little girl", false);
};

TEST_F(AnswerRendererTest, AStreamedChatOpensWithTheRoleAndCarriesTheAnswersText) {
  AnswerRenderer out = renderer(spec(true));
  std::string stream;
  for (TokenId id : answer_) stream += out.token(id);
  stream += out.finish("stop");
  const std::vector<json::value> all = events(stream);
  ASSERT_GE(all.size(), 3u);
  EXPECT_EQ(all[0].at("choices").as_array()[0].at("delta").at("role"), "assistant");
  EXPECT_EQ(content(all), " there was a little girl");
  EXPECT_EQ(all[all.size() - 2].at("choices").as_array()[0].at("finish_reason"), "stop");
  EXPECT_TRUE(all.back().is_null());  // [DONE]
  EXPECT_EQ(out.completionTokens(), answer_.size());
  EXPECT_EQ(out.finishReason(), "stop");
}

TEST_F(AnswerRendererTest, TheBudgetEndsTheAnswerWithLengthWhateverTheAgentSays) {
  AnswerSpec s = spec(true);
  s.max_tokens = 2;
  AnswerRenderer out = renderer(s);
  out.token(answer_[0]);
  EXPECT_TRUE(out.wantsMore());
  out.token(answer_[1]);
  EXPECT_FALSE(out.wantsMore());
  EXPECT_EQ(out.endReason(), "length");
  EXPECT_EQ(out.token(answer_[2]), "");  // after the end: ignored
  EXPECT_EQ(out.completionTokens(), 2u);
  const std::vector<json::value> end = events(out.finish("stop"));
  EXPECT_EQ(out.finishReason(), "length");
  ASSERT_EQ(end.size(), 2u);
  EXPECT_EQ(end[0].at("choices").as_array()[0].at("finish_reason"), "length");
}

TEST_F(AnswerRendererTest, AStopTokenEndsTheAnswerIsCountedAndAddsNoText) {
  AnswerSpec s = spec(true);
  s.stop_tokens = {2};
  AnswerRenderer out = renderer(s);
  const std::string opening = out.token(answer_[0]);
  EXPECT_EQ(out.token(2), "");
  EXPECT_FALSE(out.wantsMore());
  EXPECT_EQ(out.endReason(), "stop");
  EXPECT_EQ(out.tokenIds(), (std::vector<TokenId>{answer_[0], 2}));
  EXPECT_EQ(content(events(opening + out.finish(""))), " there");
  EXPECT_EQ(out.finishReason(), "stop");
}

TEST_F(AnswerRendererTest, AStopStringEndsTheAnswerBeforeIt) {
  AnswerSpec s = spec(true);
  s.stop = {"little"};
  AnswerRenderer out = renderer(s);
  std::string stream;
  for (TokenId id : answer_) {
    if (!out.wantsMore()) break;
    stream += out.token(id);
  }
  EXPECT_EQ(out.endReason(), "stop");
  stream += out.finish("length");
  EXPECT_EQ(content(events(stream)), " there was a ");
  EXPECT_EQ(out.finishReason(), "stop");
}

TEST_F(AnswerRendererTest, ATokenOutsideTheVocabularyIsNotCountedAndTheNextAttemptGoesOn) {
  AnswerRenderer out = renderer(spec(true));
  out.token(answer_[0]);
  EXPECT_EQ(out.token(1 << 30), "");
  EXPECT_NE(out.badToken().find("outside the vocabulary"), std::string::npos) << out.badToken();
  EXPECT_FALSE(out.wantsMore());
  EXPECT_EQ(out.token(answer_[1]), "");  // refused until a new attempt
  EXPECT_EQ(out.completionTokens(), 1u);
  out.beginAttempt();
  EXPECT_TRUE(out.wantsMore());
  out.token(answer_[1]);
  EXPECT_EQ(out.tokenIds(), (std::vector<TokenId>{answer_[0], answer_[1]}));
}

TEST_F(AnswerRendererTest, ANonStreamedAnswerIsOneBodyWithUsageAndTokenIds) {
  AnswerSpec s = spec(false);
  s.return_token_ids = true;
  AnswerRenderer out = renderer(s);
  out.setCachedTokens(3);
  for (TokenId id : answer_) EXPECT_EQ(out.token(id), "");  // collected, not streamed
  json::error_code ec;
  const json::value body = json::parse(out.finish("length"), ec);
  ASSERT_FALSE(ec);
  const json::value& choice = body.at("choices").as_array()[0];
  EXPECT_EQ(choice.at("message").at("content"), " there was a little girl");
  EXPECT_EQ(choice.at("finish_reason"), "length");
  ASSERT_EQ(choice.at("token_ids").as_array().size(), answer_.size());
  EXPECT_EQ(choice.at("token_ids").as_array()[0], answer_[0]);
  EXPECT_EQ(body.at("usage").at("prompt_tokens"), prompt_.size());
  EXPECT_EQ(body.at("usage").at("completion_tokens"), answer_.size());
  EXPECT_EQ(body.at("usage").at("prompt_tokens_details").at("cached_tokens"), 3);
}

TEST_F(AnswerRendererTest, AStreamThatEndsWithoutTokensStillOpensAndCarriesUsage) {
  AnswerSpec s = spec(true);
  s.include_usage = true;
  AnswerRenderer out = renderer(s);
  const std::vector<json::value> all = events(out.finish("stop"));
  ASSERT_EQ(all.size(), 4u);  // role, finish, usage, [DONE]
  EXPECT_EQ(all[0].at("choices").as_array()[0].at("delta").at("role"), "assistant");
  EXPECT_EQ(all[1].at("choices").as_array()[0].at("finish_reason"), "stop");
  EXPECT_EQ(all[2].at("usage").at("completion_tokens"), 0);
  EXPECT_TRUE(all[3].is_null());
}

TEST_F(AnswerRendererTest, AFailureIsAnErrorEventWithTheUsageSoFarThenDone) {
  AnswerRenderer out = renderer(spec(true));
  out.token(answer_[0]);
  out.token(answer_[1]);
  const std::vector<json::value> all =
      events(out.failure(ApiError{502, "server_error", "no attempt finished", {}, {}}));
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].at("error").at("message"), "no attempt finished");
  EXPECT_EQ(all[0].at("usage").at("completion_tokens"), 2);
  EXPECT_EQ(all[0].at("usage").at("prompt_tokens"), prompt_.size());
  EXPECT_TRUE(all[1].is_null());
}

// Logprobs as the agents report them: the token's (-0.5) and `top`.
GeneratedLogprobs logprobsOf(const std::vector<std::pair<TokenId, float>>& top) {
  return GeneratedLogprobs{-0.5f, top};
}

TEST_F(AnswerRendererTest, ChatLogprobsListEveryTokenWithItsTextBytesAndAlternatives) {
  AnswerSpec s = spec(false);
  s.logprobs = 1;  // one alternative each, though the agent sent two
  AnswerRenderer out = renderer(s);
  const std::vector<std::pair<TokenId, float>> top = {{answer_[0], -0.5f}, {1, -3.0f}};
  for (TokenId id : answer_) {
    const GeneratedLogprobs lp = logprobsOf(top);
    out.token(id, &lp);
  }
  json::error_code ec;
  const json::value body = json::parse(out.finish("length"), ec);
  ASSERT_FALSE(ec);
  const json::array& content = body.at("choices").at(0).at("logprobs").at("content").as_array();
  ASSERT_EQ(content.size(), answer_.size());
  EXPECT_EQ(content[0].at("token"), " there");
  EXPECT_EQ(content[0].at("logprob").to_number<double>(), -0.5);
  EXPECT_EQ(content[0].at("bytes").as_array().size(), 6u);
  EXPECT_EQ(content[0].at("bytes").at(0), 32);  // the space
  ASSERT_EQ(content[0].at("top_logprobs").as_array().size(), 1u);
  EXPECT_EQ(content[0].at("top_logprobs").at(0).at("token"), " there");
}

TEST_F(AnswerRendererTest, CompletionLogprobsHaveTokensOffsetsAndTopMaps) {
  AnswerSpec s = spec(true);
  s.endpoint = Endpoint::kCompletions;
  s.logprobs = 2;
  s.stop_tokens = {2};
  AnswerRenderer out = renderer(s);
  std::string stream;
  const std::vector<std::pair<TokenId, float>> top = {{answer_[0], -0.5f}, {2, -1.0f}};
  for (TokenId id : {answer_[0], answer_[1], TokenId{2}}) {
    const GeneratedLogprobs lp = logprobsOf(top);
    stream += out.token(id, &lp);
  }
  stream += out.finish("");
  std::vector<std::string> tokens;
  std::vector<int64_t> offsets;
  for (const json::value& event : events(stream)) {
    if (event.is_null()) continue;
    const json::value& logprobs = event.at("choices").at(0).at("logprobs");
    if (logprobs.is_null()) continue;
    for (const json::value& t : logprobs.at("tokens").as_array()) {
      tokens.emplace_back(t.as_string());
    }
    for (const json::value& o : logprobs.at("text_offset").as_array()) {
      offsets.push_back(o.as_int64());
    }
    EXPECT_EQ(logprobs.at("top_logprobs").at(0).as_object().size(), 2u);
  }
  // The stop token is listed by its name, in the finish chunk (it has no text of its own).
  EXPECT_EQ(tokens, (std::vector<std::string>{" there", " was", "</s>"}));
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 6, 10}));
}

TEST_F(AnswerRendererTest, WithoutLogprobsAskedForChoicesSayNull) {
  AnswerRenderer out = renderer(spec(false));
  const GeneratedLogprobs lp = logprobsOf({});
  out.token(answer_[0], &lp);
  const json::value body = json::parse(out.finish("length"));
  EXPECT_TRUE(body.at("choices").at(0).at("logprobs").is_null());
}

TEST_F(AnswerRendererTest, MinTokensKeepsStopStringsFromEndingTheAnswerEarly) {
  AnswerSpec s = spec(true);
  s.stop = {" was"};
  s.min_tokens = 3;
  AnswerRenderer out = renderer(s);
  std::string stream;
  for (TokenId id : answer_) {
    if (!out.wantsMore()) break;
    stream += out.token(id);
  }
  stream += out.finish("length");
  // " was" came as the second token, before min_tokens: the answer went on.
  EXPECT_EQ(content(events(stream)), " there was a little girl");
}

TEST_F(AnswerRendererTest, SpecialTokensRenderAsTheirNamesWhenNotSkipped) {
  AnswerSpec s = spec(false);
  s.skip_special_tokens = false;
  AnswerRenderer out = renderer(s);
  out.token(answer_[0]);
  out.token(1);  // <s>, a control token
  out.token(answer_[1]);
  const json::value body = json::parse(out.finish("length"));
  EXPECT_EQ(body.at("choices").at(0).at("message").at("content"), " there<s> was");

  AnswerRenderer skipped = renderer(spec(false));
  skipped.token(answer_[0]);
  skipped.token(1);
  skipped.token(answer_[1]);
  EXPECT_EQ(json::parse(skipped.finish("length")).at("choices").at(0).at("message").at("content"),
            " there was");
}

}  // namespace
}  // namespace kvferry::openai
