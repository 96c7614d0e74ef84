// Prompt text with an exact token count under any model tokenizer (model/tokenizer.h: SPM or
// byte-level BPE).
//
// Text is a sequence of words from a fixed word list, separated by single spaces, with no
// leading or trailing space. Under SentencePiece each word then reads "▁word" (the tokenizer's
// dummy prefix gives the first word its "▁"); under byte-level BPE the first word is "word" and
// the others "Ġword". A word list is usable when every word's token count is the same wherever
// it stands. Counts are WITHOUT the BOS token that the server adds: a prompt of N tokens reaches
// the model as N + 1 with BOS (and more under a chat template).
//
// The list is built once from the vocabulary: every normal token whose bytes are a space and
// ASCII letters (SPM "▁word", BPE "Ġword"), whose letters alone are one token too, and that stays
// that one token between two other list words. When a vocabulary has fewer than
// kMinSingleTokenWords such words (tiny test models), words of 2..4 tokens are added, each with
// its count measured alone and in context. The whole list, joined in
// a shuffled order, must then encode to the sum of the counts, or create() fails: the scheme does
// not hold for that tokenizer. Callers still verify every prompt (verify()).
//
// Texts concatenate: join(a, b) = a + " " + b has count(a) + count(b) tokens. Immutable after
// create(); any thread may use it (the tokenizer is stateless).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bench/benchmark_client/random.h"
#include "common/status.h"
#include "model/tokenizer.h"

namespace kvferry::bench {

struct Word {
  std::string text;     // ASCII letters only
  uint32_t tokens = 1;  // its token count anywhere in a text
};

class TextSynthesizer {
 public:
  static constexpr size_t kMinSingleTokenWords = 32;
  static constexpr uint32_t kMaxWordTokens = 4;

  // The tokenizer must outlive the synthesizer.
  static Result<TextSynthesizer> create(const model::Tokenizer& tokenizer);

  // Appends words worth exactly `tokens` tokens, chosen by `rng`, to `out` (a separating space
  // first when `out` is not empty).
  void append(Rng& rng, uint32_t tokens, std::string& out) const;
  std::string text(Rng& rng, uint32_t tokens) const {
    std::string out;
    append(rng, tokens, out);
    return out;
  }

  // Token count of `text` as the server sees it, without BOS.
  Result<uint32_t> countTokens(std::string_view text) const;
  // INTERNAL when `text` does not encode to exactly `expected` tokens.
  Status verify(std::string_view text, uint32_t expected) const;

  const std::vector<Word>& words() const { return words_; }
  size_t singleTokenWords() const { return single_; }
  const model::Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  TextSynthesizer(const model::Tokenizer& tokenizer, std::vector<Word> words, size_t single);

  const model::Tokenizer* tokenizer_;
  std::vector<Word> words_;  // sorted by token count: the first single_ are one token each
  size_t single_ = 0;
  // fit_[k]: how many words have at most k tokens (a prefix of words_), k <= kMaxWordTokens.
  std::array<size_t, kMaxWordTokens + 1> fit_{};
};

}  // namespace kvferry::bench
