#include "orchestrator/openai/detokenizer.h"

#include <algorithm>
#include <utility>

#include "model/utf8.h"

namespace kvferry::openai {
namespace {

constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD

enum class Utf8Step { kValid, kIncomplete, kInvalid };

struct Utf8Scan {
  Utf8Step step;
  // kValid: the character's length; kIncomplete: the bytes present (all a valid prefix);
  // kInvalid: the length of the maximal subpart to replace by one U+FFFD (≥ 1).
  size_t length;
};

// Classifies the sequence starting at text[at] by model/utf8.h's table (model::checkUtf8's).
Utf8Scan scanCharacter(std::string_view text, size_t at) {
  const std::optional<model::Utf8Lead> shape = model::utf8Lead(static_cast<uint8_t>(text[at]));
  if (!shape) return {Utf8Step::kInvalid, 1};
  const size_t length = shape->length;
  for (size_t k = 1; k < length; ++k) {
    if (at + k >= text.size()) return {Utf8Step::kIncomplete, k};
    if (!model::utf8Continues(*shape, k, static_cast<uint8_t>(text[at + k]))) {
      return {Utf8Step::kInvalid, k};
    }
  }
  return {Utf8Step::kValid, length};
}

// Appends the valid characters of `text` to `out`, replacing ill-formed subparts; returns the
// offset of a trailing incomplete character (text.size() when there is none).
size_t appendValid(std::string_view text, std::string& out) {
  size_t at = 0;
  while (at < text.size()) {
    const Utf8Scan scan = scanCharacter(text, at);
    switch (scan.step) {
      case Utf8Step::kValid:
        out.append(text.substr(at, scan.length));
        break;
      case Utf8Step::kInvalid:
        out.append(kReplacement);
        break;
      case Utf8Step::kIncomplete:
        return at;
    }
    at += scan.length;
  }
  return at;
}

bool isTextBearing(model::TokenType type) {
  return type == model::TokenType::kNormal || type == model::TokenType::kUserDefined ||
         type == model::TokenType::kByte;
}

}  // namespace

std::string sanitizeUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  if (appendValid(text, out) < text.size()) out.append(kReplacement);
  return out;
}

IncrementalDetokenizer::IncrementalDetokenizer(const model::Tokenizer& tokenizer,
                                               std::span<const model::TokenId> prompt,
                                               bool skip_special_tokens)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      drop_space_(tokenizer.vocabulary().add_space_prefix) {
  const model::Vocabulary& vocab = tokenizer.vocabulary();
  for (model::TokenId id : prompt) {
    if (id >= 0 && static_cast<size_t>(id) < vocab.types.size() && isTextBearing(vocab.types[id])) {
      drop_space_ = false;
      break;
    }
  }
}

Result<std::string> IncrementalDetokenizer::feed(model::TokenId id) {
  ASSIGN_OR_RETURN(std::string piece, tokenizer_.piece(id));
  const model::TokenType type = tokenizer_.vocabulary().types[id];
  if (type == model::TokenType::kControl && !skip_special_tokens_) {
    // Its name, as the vocabulary writes it; it is not text, so the dummy-prefix rule ignores it.
    piece = tokenizer_.vocabulary().tokens[id];
  } else if (!isTextBearing(type)) {
    return std::string();
  } else {
    if (drop_space_ && !piece.empty() && piece.front() == ' ') piece.erase(0, 1);
    drop_space_ = false;
  }
  if (piece.empty()) return std::string();
  pending_ += piece;
  std::string out;
  const size_t tail = appendValid(pending_, out);
  pending_.erase(0, tail);
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out = sanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& stop : stops) {
    if (!stop.empty()) stops_.push_back(std::move(stop));
  }
}

StopMatcher::Output StopMatcher::feed(std::string_view text) {
  if (stopped_) return {{}, true};
  if (stops_.empty()) return {std::string(text), false};
  held_.append(text);

  // The match that ends first, then starts first: where streaming one byte at a time would stop.
  size_t best_start = std::string::npos;
  size_t best_end = std::string::npos;
  for (const std::string& stop : stops_) {
    const size_t start = held_.find(stop);
    if (start == std::string::npos) continue;
    const size_t end = start + stop.size();
    if (end < best_end || (end == best_end && start < best_start)) {
      best_start = start;
      best_end = end;
    }
  }
  if (best_start != std::string::npos) {
    Output out{held_.substr(0, best_start), true};
    held_.clear();
    stopped_ = true;
    return out;
  }

  // Keep the longest suffix that some stop string may still complete.
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    for (size_t length = std::min(stop.size() - 1, held_.size()); length > keep; --length) {
      if (std::string_view(held_).ends_with(std::string_view(stop).substr(0, length))) {
        keep = length;
        break;
      }
    }
  }
  Output out{held_.substr(0, held_.size() - keep), false};
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::flush() {
  if (stopped_) return {};
  return std::exchange(held_, {});
}

}  // namespace kvferry::openai
