// Streaming text from generated tokens: the incremental detokenizer, and the stop-string
// matcher that sits after it. Neither is thread-safe; each belongs to one request and is used
// by the thread that handles that request's token stream.
//
// Typical use per request:
//   IncrementalDetokenizer detok(tokenizer, prompt_ids);
//   StopMatcher stops(request.stop);
//   for each generated id (stop tokens such as EOS need not be fed; they have no text):
//     ASSIGN_OR_RETURN(std::string text, detok.feed(id));
//     StopMatcher::Output out = stops.feed(text);
//     send(out.text);  if (out.stopped) → finish_reason "stop", cancel generation
//   at the end: out = stops.feed(detok.flush()); send(out.text); if (!out.stopped)
//   send(stops.flush());
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/token_id.h"
#include "model/tokenizer.h"

namespace kvferry::openai {

// `text` with every ill-formed UTF-8 sequence replaced by U+FFFD, one per maximal subpart (the
// Unicode / WHATWG "substitution of maximal subparts" practice). Valid text is returned as is.
std::string sanitizeUtf8(std::string_view text);

// Turns generated token ids into text, one id at a time.
//
// Contract: the concatenation of everything feed() and flush() return equals
// sanitizeUtf8(decode(prompt + generated) minus decode(prompt)), that is the text the generated
// tokens add after the prompt. In particular:
//  - Leading space: decode() drops the SentencePiece dummy-prefix space only from the first
//    text-bearing token of a sequence. Generated tokens follow the prompt, so when the prompt
//    holds any text-bearing token (normal, user-defined or byte) the first generated token keeps
//    its leading space ("Once upon a time" + "▁there" → " there"). Only when the prompt has no
//    text at all (e.g. BOS alone for an empty completions prompt) is that space dropped, as
//    decode() of the whole sequence would.
//  - Control and unknown tokens (BOS, EOS, chat markers) add no text, unless constructed with
//    skip_special_tokens false: then a control token adds its name ("</s>", "<|im_end|>").
//  - Bytes that do not yet form a complete UTF-8 character (byte-fallback tokens split a
//    character over several tokens) are held back until they do; bytes that can no longer
//    become valid are replaced by U+FFFD at once. So every returned string is valid UTF-8 and
//    safe to put in JSON.
class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object. `prompt` is only inspected here, not kept.
  IncrementalDetokenizer(const model::Tokenizer& tokenizer, std::span<const model::TokenId> prompt,
                         bool skip_special_tokens = true);

  // The newly completed text (possibly empty). INVALID_ARGUMENT for an id outside the
  // vocabulary (the state is unchanged then).
  Result<std::string> feed(model::TokenId id);

  // Whatever is held back, with an incomplete trailing character replaced by U+FFFD. The
  // detokenizer may be fed again afterwards (it starts a fresh character).
  std::string flush();

  // Bytes held back waiting for the rest of a character (0..3).
  size_t pendingBytes() const { return pending_.size(); }

 private:
  const model::Tokenizer& tokenizer_;
  const bool skip_special_tokens_;
  bool drop_space_;      // the next text-bearing token loses a leading space (see above)
  std::string pending_;  // an incomplete UTF-8 sequence (a valid prefix of one character)
};

// Finds OpenAI `stop` strings in streamed text. Text that cannot be the start of a stop string
// is released at once; a suffix that is a prefix of some stop string is held back until it
// either completes a stop string or is ruled out. On a match, the text before the stop string is
// released and the stop string itself is not (as OpenAI does); the matcher then stays stopped
// and swallows everything fed later. When several stop strings match, the one whose match ends
// first (then starts first) wins, i.e. generation stops as soon as any stop string appears.
// Matching is on bytes; with valid UTF-8 input and stop strings, held-back text always starts
// at a character boundary, so released text stays valid UTF-8.
class StopMatcher {
 public:
  struct Output {
    std::string text;      // to send to the client now
    bool stopped = false;  // a stop string was found; stop generating
  };

  // Empty strings are ignored. No strings: every feed() releases its text unchanged.
  explicit StopMatcher(std::vector<std::string> stops);

  Output feed(std::string_view text);
  // At the end of generation (not stopped): the held-back text, which matched no stop string.
  std::string flush();

  bool stopped() const { return stopped_; }
  size_t heldBytes() const { return held_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace kvferry::openai
