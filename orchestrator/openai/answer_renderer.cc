#include "orchestrator/openai/answer_renderer.h"

#include <algorithm>
#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <tuple>
#include <utility>

namespace kvferry::openai {
namespace {

// Characters (code points) in valid UTF-8 text: the bytes that do not continue one.
uint32_t utf8Characters(std::string_view text) {
  return static_cast<uint32_t>(
      std::count_if(text.begin(), text.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

}  // namespace

AnswerRenderer::AnswerRenderer(AnswerSpec spec, const model::Tokenizer& tokenizer,
                               std::span<const model::TokenId> prompt)
    : spec_(std::move(spec)),
      tokenizer_(tokenizer),
      detokenizer_(tokenizer, prompt, spec_.skip_special_tokens),
      stops_(spec_.stop) {
  context_.endpoint = spec_.endpoint;
  context_.id = spec_.id;
  context_.created = spec_.created;
  context_.model = spec_.model;
  context_.include_usage = spec_.include_usage;
  context_.system_fingerprint = spec_.system_fingerprint;
  if (spec_.stream) prepareTextChunks(context_);
}

void AnswerRenderer::appendToken(model::TokenId id, const GeneratedLogprobs* logprobs,
                                 std::string& out) {
  if (!wantsMore()) return;
  std::string text;
  const uint32_t text_offset = text_chars_;
  if (std::find(spec_.stop_tokens.begin(), spec_.stop_tokens.end(), id) !=
      spec_.stop_tokens.end()) {
    end_reason_ = "stop";
    stopped_on_token_ = true;
  } else {
    Result<std::string> piece = detokenizer_.feed(id);
    if (!piece.isOk()) {
      bad_token_ = "the agent sent token " + std::to_string(id) + ", outside the vocabulary";
      return;
    }
    text_chars_ += utf8Characters(*piece);
    if (completionTokens() + 1 < spec_.min_tokens) {
      // Too short to stop (min_tokens): the text goes past the stop strings (vLLM's rule).
      text = stops_.flush() + *piece;
    } else {
      StopMatcher::Output matched = stops_.feed(*piece);
      text = std::move(matched.text);
      if (matched.stopped) end_reason_ = "stop";
    }
  }
  if (spec_.logprobs && logprobs != nullptr) {
    logprobs_.push_back(logprobEntry(id, *logprobs));
    logprobs_.back().text_offset = text_offset;
  }
  token_ids_.push_back(id);
  if (end_reason_.empty() && completionTokens() >= spec_.max_tokens) end_reason_ = "length";
  if (!spec_.stream) {
    text_ += text;
    return;
  }
  appendEvents(text, out);
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
  const Logprobs* logprobs = spec_.logprobs ? &logprobs_ : nullptr;
  if (!spec_.stream) {
    text_ += tail;
    std::string body =
        completionResponse(spec_.endpoint, spec_.id, spec_.created, spec_.model, text_, reason,
                           usage(), spec_.system_fingerprint, logprobs);
    return spec_.return_token_ids ? withTokenIds(std::move(body)) : body;
  }
  std::string out;
  appendEvents(tail, out);
  // Logprobs of tokens whose text no chunk carried (a stop token, held-back text) go with it.
  out += streamFinishChunk(context_, reason, logprobs_.empty() ? nullptr : logprobs);
  logprobs_.clear();
  if (spec_.include_usage) out += streamUsageChunk(context_, usage());
  out += sseDone();
  return out;
}

std::string AnswerRenderer::failure(const ApiError& error) const {
  const Usage used = usage();
  return streamErrorEvent(error, &used) + std::string(sseDone());
}

void AnswerRenderer::appendEvents(std::string_view text, std::string& out) {
  if (!opened_) {
    opened_ = true;
    if (spec_.endpoint == Endpoint::kChatCompletions) out += streamRoleChunk(context_);
  }
  if (!text.empty()) {
    appendStreamTextChunk(context_, text, spec_.logprobs ? &logprobs_ : nullptr, out);
    logprobs_.clear();
  }
}

std::pair<std::string, std::string> AnswerRenderer::tokenText(model::TokenId id) const {
  const model::Vocabulary& vocabulary = tokenizer_.vocabulary();
  if (id < 0 || static_cast<size_t>(id) >= vocabulary.tokens.size()) return {};
  const model::TokenType type = vocabulary.types[static_cast<size_t>(id)];
  if (type == model::TokenType::kNormal || type == model::TokenType::kUserDefined ||
      type == model::TokenType::kByte) {
    Result<std::string> piece = tokenizer_.piece(id);
    if (piece.isOk()) return {sanitizeUtf8(*piece), *piece};
  }
  const std::string& name = vocabulary.tokens[static_cast<size_t>(id)];
  return {sanitizeUtf8(name), name};
}

TokenLogprob AnswerRenderer::logprobEntry(model::TokenId id,
                                          const GeneratedLogprobs& logprobs) const {
  TokenLogprob entry;
  std::tie(entry.token, entry.bytes) = tokenText(id);
  entry.logprob = logprobs.logprob;
  const size_t wanted = *spec_.logprobs;
  for (const auto& [alternative, logprob] : logprobs.top) {
    if (entry.top.size() == wanted) break;
    TokenLogprob& top = entry.top.emplace_back();
    std::tie(top.token, top.bytes) = tokenText(alternative);
    top.logprob = logprob;
  }
  return entry;
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
