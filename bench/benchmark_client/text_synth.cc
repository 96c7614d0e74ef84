#include "bench/benchmark_client/text_synth.h"

#include <algorithm>
#include <set>
#include <utility>

namespace kvferry::bench {
namespace {

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
  // The bytes a normal token stands for: " word" for SPM "▁word" and byte-level BPE "Ġword".
  auto pieceOf = [&](size_t i) -> std::string {
    if (vocab.types[i] != model::TokenType::kNormal) return {};
    Result<std::string> piece = tokenizer.piece(static_cast<model::TokenId>(i));
    return piece.isOk() ? std::move(piece).value() : std::string();
  };

  // Words of one token: " letters" pieces whose letters alone (a text's first word, which has no
  // space before it) are one token too.
  std::vector<std::pair<std::string, model::TokenId>> singles;
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    const std::string piece = pieceOf(i);
    if (!piece.starts_with(' ')) continue;
    const std::string_view letters = std::string_view(piece).substr(1);
    if (!isAsciiLetters(letters)) continue;
    ASSIGN_OR_RETURN(std::vector<model::TokenId> ids, encode(letters));
    if (ids.size() == 1) singles.emplace_back(std::string(letters), static_cast<model::TokenId>(i));
  }
  if (singles.empty()) {
    return failedPrecondition(
        "the tokenizer has no single-token \" word\" pieces: prompts of exact token lengths cannot "
        "be synthesized for this model");
  }
  // Two anchors to put each candidate between: the first word of a text and one after a space
  // (plain names: lambdas cannot capture bindings in clang before 16).
  const std::string& left = singles.front().first;
  ASSIGN_OR_RETURN(const std::vector<model::TokenId> left_ids, encode(left));
  const std::string& right = singles[singles.size() > 1 ? 1 : 0].first;
  const model::TokenId right_id = singles[singles.size() > 1 ? 1 : 0].second;

  // Each word between two others must keep its count (and a single word its token), with the
  // anchors unchanged around it.
  std::vector<Word> words;
  std::set<std::string, std::less<>> seen;
  auto inContext = [&](const std::string& word, size_t count,
                       model::TokenId single) -> Result<bool> {
    ASSIGN_OR_RETURN(std::vector<model::TokenId> ids, encode(left + " " + word + " " + right));
    return ids.size() == count + 2 && ids.front() == left_ids.front() && ids.back() == right_id &&
           (single == model::kNoToken || ids[1] == single);
  };
  for (const auto& [text, id] : singles) {
    ASSIGN_OR_RETURN(bool ok, inContext(text, 1, id));
    if (ok && seen.insert(text).second) words.push_back({text, 1});
  }
  const size_t single = words.size();
  if (single == 0) {
    return failedPrecondition("no single-token word keeps its token between two others");
  }

  // Tiny vocabularies: add words of a few tokens, each with its count measured alone and in
  // context (they must agree).
  if (single < kMinSingleTokenWords) {
    std::vector<Word> multi;
    for (size_t i = 0; i < vocab.tokens.size(); ++i) {
      std::string letters = pieceOf(i);
      if (letters.starts_with(' ')) letters.erase(0, 1);
      if (!isAsciiLetters(letters) || seen.contains(letters)) continue;
      ASSIGN_OR_RETURN(std::vector<model::TokenId> ids, encode(letters));
      if (ids.size() < 2 || ids.size() > kMaxWordTokens) continue;
      ASSIGN_OR_RETURN(bool ok, inContext(letters, ids.size(), model::kNoToken));
      if (ok && seen.insert(letters).second) {
        multi.push_back({std::move(letters), static_cast<uint32_t>(ids.size())});
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
