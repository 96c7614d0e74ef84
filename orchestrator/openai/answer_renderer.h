// One completion's answer, rendered from the token ids the agents generate: the incremental
// detokenizer and stop-string matcher, the token budget, usage, and the bytes the client gets —
// SSE events as tokens arrive (streamed), or one JSON body at the end (not streamed).
//
// Pure: no sockets, no clocks; the caller writes what it returns (orchestrator/answer_writer.h).
// One request's, used by the thread that handles that request. An answer may be fed by several
// attempts in turn (DESIGN.md §2: a broken answer resumes on another pair): it goes on from the
// tokens counted so far.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/token_id.h"
#include "model/tokenizer.h"
#include "orchestrator/openai/detokenizer.h"
#include "orchestrator/openai/request.h"
#include "orchestrator/openai/response.h"

namespace kvferry::openai {

// What rendering needs to know about the request and the model.
struct AnswerSpec {
  Endpoint endpoint = Endpoint::kChatCompletions;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool return_token_ids = false;  // choices[0].token_ids in a non-streamed body
  std::string id;                 // "chatcmpl-…" / "cmpl-…"
  int64_t created = 0;            // Unix seconds
  std::string model;
  std::string system_fingerprint = std::string(kSystemFingerprint);
  uint32_t prompt_tokens = 0;
  uint32_t max_tokens = 0;                  // the answer ends with "length" at this many tokens
  std::vector<std::string> stop;            // stop strings
  std::vector<model::TokenId> stop_tokens;  // end the answer with "stop" and add no text
  uint32_t min_tokens = 0;  // stop strings are not looked for before the answer has this many
  bool skip_special_tokens = true;   // false: control tokens render as their names
  std::optional<uint32_t> logprobs;  // report logprobs with this many alternatives
};

// A generated token's log-probability and its most likely alternatives' (most likely first), as
// the agents report them.
struct GeneratedLogprobs {
  float logprob = 0;
  std::span<const std::pair<model::TokenId, float>> top;
};

class AnswerRenderer {
 public:
  // `tokenizer` must outlive this object; `prompt` is only inspected here.
  AnswerRenderer(AnswerSpec spec, const model::Tokenizer& tokenizer,
                 std::span<const model::TokenId> prompt);

  // Feeds one generated token and returns what it adds for the client: for a streamed answer the
  // SSE events (the role chunk first, once, for chat; then the token's text, when it completes
  // any: part of a character or of a possible stop string is held back); "" for a non-streamed
  // one, which collects its text for finish(). The token is counted, and may end the answer (a
  // stop token or string, the budget: endReason()). Ignored (not counted, "") once the answer
  // ended or while badToken() is set; a token outside the vocabulary sets badToken() and is not
  // counted, so another attempt can go on from the tokens before it.
  // `logprobs`: the token's, when spec().logprobs asked for them (null otherwise, or from an agent
  // that sent none: the token then has no logprobs entry).
  std::string token(model::TokenId id, const GeneratedLogprobs* logprobs = nullptr) {
    std::string out;
    appendToken(id, logprobs, out);
    return out;
  }
  // The same, appended to `out` (a streamed answer's tokens go into one buffer).
  void appendToken(model::TokenId id, const GeneratedLogprobs* logprobs, std::string& out);
  // Whether the answer wants more tokens: it has not ended and no bad token came.
  bool wantsMore() const { return end_reason_.empty() && bad_token_.empty(); }

  // Completes the answer: the text still held back, the finish reason (this answer's own when it
  // ended here, else `agent_reason`), usage. Streamed: the last SSE events through [DONE];
  // non-streamed: the whole JSON body.
  std::string finish(std::string_view agent_reason);
  // The SSE events that end a streamed answer with an error: the error event and [DONE].
  std::string failure(const ApiError& error) const;

  // A new attempt goes on from the tokens counted so far (clears badToken()).
  void beginAttempt() { bad_token_.clear(); }
  // The prompt's cached tokens, for usage.
  void setCachedTokens(uint32_t tokens) { cached_tokens_ = tokens; }
  uint32_t cachedTokens() const { return cached_tokens_; }

  const AnswerSpec& spec() const { return spec_; }
  // Why the last token was refused ("" when none was).
  const std::string& badToken() const { return bad_token_; }
  // "stop" | "length" once the answer ended here; "" while it goes on.
  const std::string& endReason() const { return end_reason_; }
  // The answer ended where the agent generating it ends too: at the token budget (the agent is
  // given the same) or on a stop token (the agent stops on it). Not on a stop string, which only
  // the renderer looks for: the agent would go on.
  bool endedWithTheAgent() const { return end_reason_ == "length" || stopped_on_token_; }
  // The finish reason finish() reported.
  const std::string& finishReason() const { return finish_reason_; }
  uint32_t completionTokens() const { return static_cast<uint32_t>(token_ids_.size()); }
  // Every token counted so far, in order (the last may be a stop token that ended the answer).
  const std::vector<model::TokenId>& tokenIds() const { return token_ids_; }

 private:
  Usage usage() const { return {spec_.prompt_tokens, completionTokens(), cached_tokens_}; }
  // Streamed: the role chunk before the first text (chat), then `text` as a chunk if any, with
  // the logprobs not sent yet.
  void appendEvents(std::string_view text, std::string& out);
  // A token's logprobs entry; `text_offset` counts the answer's characters before it.
  TokenLogprob logprobEntry(model::TokenId id, const GeneratedLogprobs& logprobs) const;
  // A token's text as logprobs show it, and its bytes.
  std::pair<std::string, std::string> tokenText(model::TokenId id) const;
  // choices[0].token_ids added to a completion body (the return_token_ids extension).
  std::string withTokenIds(std::string body) const;

  const AnswerSpec spec_;
  const model::Tokenizer& tokenizer_;
  StreamContext context_;
  IncrementalDetokenizer detokenizer_;
  StopMatcher stops_;
  std::vector<model::TokenId> token_ids_;
  std::string text_;         // non-streamed answers
  Logprobs logprobs_;        // streamed: not sent yet; non-streamed: every token's
  uint32_t text_chars_ = 0;  // characters the detokenizer has produced (text_offset)
  uint32_t cached_tokens_ = 0;
  std::string end_reason_;
  std::string finish_reason_;
  std::string bad_token_;
  bool opened_ = false;            // the role chunk was rendered
  bool stopped_on_token_ = false;  // a stop token ended the answer
};

}  // namespace kvferry::openai
