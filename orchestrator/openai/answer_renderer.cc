#include "orchestrator/openai/answer_renderer.h"

#include <algorithm>
#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <utility>

namespace kvferry::openai {

AnswerRenderer::AnswerRenderer(AnswerSpec spec, const model::Tokenizer& tokenizer,
                               std::span<const model::TokenId> prompt)
    : spec_(std::move(spec)), detokenizer_(tokenizer, prompt), stops_(spec_.stop) {
  context_.endpoint = spec_.endpoint;
  context_.id = spec_.id;
  context_.created = spec_.created;
  context_.model = spec_.model;
  context_.include_usage = spec_.include_usage;
  context_.system_fingerprint = spec_.system_fingerprint;
}

std::string AnswerRenderer::token(model::TokenId id) {
  if (!wantsMore()) return {};
  std::string text;
  if (std::find(spec_.stop_tokens.begin(), spec_.stop_tokens.end(), id) !=
      spec_.stop_tokens.end()) {
    end_reason_ = "stop";
  } else {
    Result<std::string> piece = detokenizer_.feed(id);
    if (!piece.isOk()) {
      bad_token_ = "the agent sent token " + std::to_string(id) + ", outside the vocabulary";
      return {};
    }
    StopMatcher::Output out = stops_.feed(*piece);
    text = std::move(out.text);
    if (out.stopped) end_reason_ = "stop";
  }
  token_ids_.push_back(id);
  if (end_reason_.empty() && completionTokens() >= spec_.max_tokens) end_reason_ = "length";
  if (!spec_.stream) {
    text_ += text;
    return {};
  }
  return events(text);
}

std::string AnswerRenderer::finish(std::string_view agent_reason) {
  std::string reason = end_reason_.empty() ? std::string(agent_reason) : end_reason_;
  std::string tail;
  if (!stops_.stopped()) {
    StopMatcher::Output out = stops_.feed(detokenizer_.flush());
    tail = std::move(out.text);
    if (out.stopped) {
      reason = "stop";
    } else {
      tail += stops_.flush();
    }
  }
  finish_reason_ = reason;
  if (!spec_.stream) {
    text_ += tail;
    std::string body = completionResponse(spec_.endpoint, spec_.id, spec_.created, spec_.model,
                                          text_, reason, usage(), spec_.system_fingerprint);
    return spec_.return_token_ids ? withTokenIds(std::move(body)) : body;
  }
  std::string out = events(tail);
  out += streamFinishChunk(context_, reason);
  if (spec_.include_usage) out += streamUsageChunk(context_, usage());
  out += sseDone();
  return out;
}

std::string AnswerRenderer::failure(const ApiError& error) const {
  return streamErrorEvent(error) + std::string(sseDone());
}

std::string AnswerRenderer::events(std::string_view text) {
  std::string out;
  if (!opened_) {
    opened_ = true;
    if (spec_.endpoint == Endpoint::kChatCompletions) out = streamRoleChunk(context_);
  }
  if (!text.empty()) out += streamTextChunk(context_, text);
  return out;
}

std::string AnswerRenderer::withTokenIds(std::string body) const {
  boost::system::error_code ec;
  boost::json::value root = boost::json::parse(body, ec);
  if (ec || !root.is_object()) return body;
  boost::json::array* choices = root.as_object()["choices"].if_array();
  if (choices == nullptr || choices->empty() || !(*choices)[0].is_object()) return body;
  boost::json::array ids;
  for (model::TokenId id : token_ids_) ids.push_back(id);
  (*choices)[0].as_object()["token_ids"] = std::move(ids);
  return boost::json::serialize(root);
}

}  // namespace kvferry::openai
