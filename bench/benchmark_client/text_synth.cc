#include "bench/benchmark_client/text_synth.h"

#include <algorithm>
#include <set>
#include <utility>

namespace kvferry::bench {
namespace {

constexpr std::string_view kSpaceMarker = "\xe2\x96\x81";  // U+2581 "▁"
constexpr model::EncodeOptions kNoBos{.add_bos = false};

bool isAsciiLetters(std::string_view text) {
  return !text.empty() && std::ranges::all_of(text, [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  });
}

}  // namespace

Result<TextSynthesizer> TextSynthesizer::create(const model::Tokenizer& tokenizer) {
  const model::Vocabulary& vocab = tokenizer.vocabulary();
  auto encode = [&](std::string_view text) { return tokenizer.encode(text, kNoBos); };

  // Words of one token: "▁letters" pieces that encode back to themselves.
  std::vector<std::pair<std::string, model::TokenId>> singles;
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    const std::string_view piece = vocab.tokens[i];
    if (vocab.types[i] != model::TokenType::kNormal || !piece.starts_with(kSpaceMarker)) continue;
    const std::string_view letters = piece.substr(kSpaceMarker.size());
    if (!isAsciiLetters(letters)) continue;
    ASSIGN_OR_RETURN(std::vector<model::TokenId> ids, encode(letters));
    if (ids.size() == 1 && ids[0] == static_cast<model::TokenId>(i)) {
      singles.emplace_back(std::string(letters), ids[0]);
    }
  }
  if (singles.empty()) {
    return failedPrecondition(
        "the tokenizer has no single-token \"\xe2\x96\x81word\" pieces: prompts of exact token "
        "lengths cannot be synthesized for this model");
  }
  // Two anchors to put each candidate between (plain names: lambdas cannot capture bindings
  // in clang before 16).
  const std::string& left = singles.front().first;
  const model::TokenId left_id = singles.front().second;
  const std::string& right = singles[singles.size() > 1 ? 1 : 0].first;
  const model::TokenId right_id = singles[singles.size() > 1 ? 1 : 0].second;

  // Each word between two others must keep its own tokens, unchanged.
  std::vector<Word> words;
  std::set<std::string, std::less<>> seen;
  auto inContext = [&](const std::string& word,
                       const std::vector<model::TokenId>& alone) -> Result<bool> {
    ASSIGN_OR_RETURN(std::vector<model::TokenId> ids, encode(left + " " + word + " " + right));
    std::vector<model::TokenId> expected{left_id};
    expected.insert(expected.end(), alone.begin(), alone.end());
    expected.push_back(right_id);
    return ids == expected;
  };
  for (const auto& [text, id] : singles) {
    ASSIGN_OR_RETURN(bool ok, inContext(text, {id}));
    if (ok && seen.insert(text).second) words.push_back({text, 1});
  }
  const size_t single = words.size();
  if (single == 0) {
    return failedPrecondition("no single-token word keeps its token between two others");
  }

  // Tiny vocabularies: add words of a few tokens, each with its count measured in context.
  if (single < kMinSingleTokenWords) {
    std::vector<Word> multi;
    for (size_t i = 0; i < vocab.tokens.size(); ++i) {
      if (vocab.types[i] != model::TokenType::kNormal) continue;
      std::string_view letters = vocab.tokens[i];
      if (letters.starts_with(kSpaceMarker)) letters.remove_prefix(kSpaceMarker.size());
      if (!isAsciiLetters(letters) || seen.contains(letters)) continue;
      ASSIGN_OR_RETURN(std::vector<model::TokenId> ids, encode(letters));
      if (ids.size() < 2 || ids.size() > kMaxWordTokens) continue;
      std::string text(letters);
      ASSIGN_OR_RETURN(bool ok, inContext(text, ids));
      if (ok && seen.insert(text).second) {
        multi.push_back({std::move(text), static_cast<uint32_t>(ids.size())});
      }
    }
    std::ranges::stable_sort(multi, {}, &Word::tokens);
    words.insert(words.end(), multi.begin(), multi.end());
  }

  // The whole list, in shuffled orders, must encode to the sum of its counts.
  Rng rng(0x5eed);
  std::vector<size_t> order(words.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (int round = 0; round < 2; ++round) {
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    std::string joined;
    uint64_t expected = 0;
    for (size_t i : order) {
      if (!joined.empty()) joined += ' ';
      joined += words[i].text;
      expected += words[i].tokens;
    }
    ASSIGN_OR_RETURN(std::vector<model::TokenId> ids, encode(joined));
    if (ids.size() != expected) {
      return failedPrecondition("the word list (" + std::to_string(words.size()) +
                                " words) encodes to " + std::to_string(ids.size()) +
                                " tokens joined, not " + std::to_string(expected) +
                                ": exact-length prompts are not possible with this tokenizer");
    }
  }
  return TextSynthesizer(tokenizer, std::move(words), single);
}

TextSynthesizer::TextSynthesizer(const model::Tokenizer& tokenizer, std::vector<Word> words,
                                 size_t single)
    : tokenizer_(&tokenizer), words_(std::move(words)), single_(single) {
  for (uint32_t k = 1; k <= kMaxWordTokens; ++k) {
    fit_[k] = static_cast<size_t>(
        std::ranges::count_if(words_, [k](const Word& w) { return w.tokens <= k; }));
  }
}

void TextSynthesizer::append(Rng& rng, uint32_t tokens, std::string& out) const {
  uint32_t remaining = tokens;
  while (remaining > 0) {
    // Words are sorted by count: those that fit are a prefix of the list.
    const Word& word = words_[rng.below(fit_[std::min(remaining, kMaxWordTokens)])];
    if (!out.empty()) out += ' ';
    out += word.text;
    remaining -= word.tokens;
  }
}

Result<uint32_t> TextSynthesizer::countTokens(std::string_view text) const {
  ASSIGN_OR_RETURN(std::vector<model::TokenId> ids, tokenizer_->encode(text, kNoBos));
  return static_cast<uint32_t>(ids.size());
}

Status TextSynthesizer::verify(std::string_view text, uint32_t expected) const {
  ASSIGN_OR_RETURN(uint32_t count, countTokens(text));
  if (count != expected) {
    return internalError("a synthesized prompt of " + std::to_string(expected) +
                         " tokens encodes to " + std::to_string(count) +
                         ": the word-list scheme does not hold for this tokenizer");
  }
  return Status::ok();
}

}  // namespace kvferry::bench
