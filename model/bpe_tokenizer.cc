// Byte-level BPE (tokenizer model "gpt2"), the algorithm of Hugging Face tokenizers' BPE model
// behind a ByteLevel pre-tokenizer, which llama.cpp's llm_tokenizer_bpe also follows.
#include <algorithm>
#include <array>
#include <unordered_map>
#include <utility>

#include "model/pre_tokenizer.h"
#include "model/tokenizer_internal.h"
#include "model/unicode.h"

namespace kvferry::model::internal {
namespace {

// GPT-2's bytes_to_unicode(): printable bytes stand for themselves, the other 68 bytes map to
// U+0100 and up in byte order, so every byte is one visible character ("Ġ" is the space).
constexpr std::array<char32_t, 256> byteCharacters() {
  std::array<char32_t, 256> chars{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    chars[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return chars;
}
constexpr std::array<char32_t, 256> kByteCharacters = byteCharacters();
static_assert(kByteCharacters[' '] == 0x120 && kByteCharacters[0xFF] == 0xFF);

// The byte a character of a byte-level token stands for; -1 for a character outside the map.
int byteOfCharacter(char32_t c) {
  if (c < 256) return kByteCharacters[c] == c ? static_cast<int>(c) : -1;
  if (c >= 256 + 68) return -1;
  for (int b = 0; b < 256; ++b) {
    if (kByteCharacters[b] == c) return b;
  }
  return -1;
}

}  // namespace

std::string byteLevelText(std::string_view bytes) {
  std::string text;
  for (char c : bytes) appendUtf8(kByteCharacters[static_cast<uint8_t>(c)], text);
  return text;
}

namespace {

class BpeTokenizer final : public Tokenizer {
 public:
  static Result<std::unique_ptr<Tokenizer>> create(Vocabulary vocab);

  Result<std::vector<TokenId>> encode(std::string_view text,
                                      const EncodeOptions& options) const override;
  Result<std::string> decode(std::span<const TokenId> ids) const override;
  Result<std::string> piece(TokenId id) const override;
  const Vocabulary& vocabulary() const override { return vocab_; }

 private:
  struct Merge {
    int32_t rank;
    TokenId merged;
  };

  BpeTokenizer(Vocabulary vocab, PreTokenizer pre)
      : vocab_(std::move(vocab)), pre_(pre), specials_(vocab_) {}
  static uint64_t pairKey(TokenId left, TokenId right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  TokenId lookup(std::string_view text) const { return ids_.find(text); }
  Status readMerges();
  // A word's symbol while encodeWord merges it: a token, linked to its neighbours.
  struct Symbol {
    TokenId id;
    int prev;
    int next;  // -1 at the ends
  };
  // A queued merge. A queued pair is stale once either side has changed (merged into something
  // else); its recorded ids tell.
  struct Candidate {
    int32_t rank;
    int left;
    int right;
    TokenId left_id;
    TokenId right_id;
    TokenId merged;
  };
  // encodeWord's buffers, kept across the words of one text (no allocation per word).
  struct WordScratch {
    std::vector<Symbol> symbols;
    std::vector<Candidate> queue;  // a heap
    std::string mapped;
  };
  Status encodeWord(std::string_view word, WordScratch& scratch, std::vector<TokenId>& out) const;
  // Whether the token carries text (normal, user-defined and byte tokens do).
  bool textBearing(TokenId id) const {
    const TokenType type = vocab_.types[id];
    return type == TokenType::kNormal || type == TokenType::kUserDefined ||
           type == TokenType::kByte;
  }

  Vocabulary vocab_;
  PreTokenizer pre_;
  bool nfc_ = false;
  SpecialTokenSplitter specials_;           // refers to vocab_
  TokenIndex ids_;                          // the text of every token (later duplicates win)
  std::array<TokenId, 256> byte_tokens_{};  // the one-character token of each byte, or kNoToken
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<std::string> pieces_;  // the bytes each token stands for
};

Result<std::unique_ptr<Tokenizer>> BpeTokenizer::create(Vocabulary vocab) {
  RETURN_IF_ERROR(checkVocabulary(vocab));
  const std::optional<PreTokenizer> pre = preTokenizerFromName(vocab.pre);
  if (!pre) {
    return invalidArgument(vocab.pre.empty()
                               ? std::string("the BPE vocabulary names no pre-tokenizer")
                               : "pre-tokenizer '" + quoted(vocab.pre) + "' is unknown");
  }
  if (vocab.normalizer != "" && vocab.normalizer != "nfc") {
    return invalidArgument("normalizer '" + quoted(vocab.normalizer) + "' is not supported");
  }
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer(std::move(vocab), *pre));
  const Vocabulary& v = t->vocab_;
  t->nfc_ = v.normalizer == "nfc";
  const size_t n = v.tokens.size();
  t->pieces_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = v.tokens[i];
    if (!text.empty()) t->ids_.insert_or_assign(text, static_cast<TokenId>(i));
    std::string& piece = t->pieces_[i];
    switch (v.types[i]) {
      case TokenType::kNormal: {
        // Each character maps back to its byte; one outside the map (never in a real byte-level
        // vocabulary) stands for itself.
        const CodePoints cps = decodeUtf8(text);
        for (size_t k = 0; k < cps.values.size(); ++k) {
          const int byte = byteOfCharacter(cps.values[k]);
          if (byte >= 0) {
            piece += static_cast<char>(byte);
          } else {
            piece.append(text, cps.offsets[k], cps.offsets[k + 1] - cps.offsets[k]);
          }
        }
        break;
      }
      case TokenType::kUserDefined:
        piece = text;
        break;
      case TokenType::kByte: {
        ASSIGN_OR_RETURN(const uint8_t value, byteTokenValue(static_cast<TokenId>(i), text));
        piece = std::string(1, static_cast<char>(value));
        break;
      }
      default:  // control, unknown, unused: no text
        break;
    }
  }
  for (int b = 0; b < 256; ++b) {
    std::string character;
    appendUtf8(kByteCharacters[b], character);
    t->byte_tokens_[b] = t->lookup(character);
  }
  RETURN_IF_ERROR(t->readMerges());
  return std::unique_ptr<Tokenizer>(std::move(t));
}

Status BpeTokenizer::readMerges() {
  if (vocab_.merges.size() > INT32_MAX) return invalidArgument("too many merges");
  merges_.reserve(vocab_.merges.size());
  for (size_t rank = 0; rank < vocab_.merges.size(); ++rank) {
    const std::string& merge = vocab_.merges[rank];
    // As llama.cpp: the first space after the first character separates the two tokens.
    const size_t space = merge.find(' ', 1);
    if (space == std::string::npos || space + 1 == merge.size() ||
        merge.find(' ', space + 1) != std::string::npos) {
      return invalidArgument("merge " + std::to_string(rank) + " '" + quoted(merge) +
                             "' is not two tokens separated by one space");
    }
    const std::string_view left = std::string_view(merge).substr(0, space);
    const std::string_view right = std::string_view(merge).substr(space + 1);
    std::string joined(left);
    joined += right;
    const TokenId left_id = lookup(left);
    const TokenId right_id = lookup(right);
    const TokenId merged = lookup(joined);
    for (auto [id, part] : {std::pair{left_id, std::string_view(left)}, std::pair{right_id, right},
                            std::pair{merged, std::string_view(joined)}}) {
      if (id == kNoToken) {
        return invalidArgument("merge " + std::to_string(rank) + " '" + quoted(merge) +
                               "' names '" + quoted(part) + "', which is not in the vocabulary");
      }
    }
    // The first occurrence of a pair keeps its rank (llama.cpp's emplace).
    merges_.emplace(pairKey(left_id, right_id), Merge{static_cast<int32_t>(rank), merged});
  }
  return Status::ok();
}

Status BpeTokenizer::encodeWord(std::string_view word, WordScratch& scratch,
                                std::vector<TokenId>& out) const {
  if (vocab_.ignore_merges) {
    std::string& mapped = scratch.mapped;
    mapped.clear();
    for (char c : word) appendUtf8(kByteCharacters[static_cast<uint8_t>(c)], mapped);
    const TokenId id = lookup(mapped);
    if (id != kNoToken && vocab_.types[id] == TokenType::kNormal) {
      out.push_back(id);
      return Status::ok();
    }
  }
  std::vector<Symbol>& symbols = scratch.symbols;
  symbols.clear();
  for (size_t i = 0; i < word.size(); ++i) {
    const auto byte = static_cast<uint8_t>(word[i]);
    TokenId id = byte_tokens_[byte];
    if (id == kNoToken) id = vocab_.unk_id;
    if (id == kNoToken) {
      return invalidArgument("the vocabulary has no token for byte " + hexByte(byte) +
                             " and no unknown token");
    }
    const int index = static_cast<int>(i);
    symbols.push_back({id, index - 1, i + 1 == word.size() ? -1 : index + 1});
  }

  // Lowest rank first; on ties the leftmost pair.
  const auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  std::vector<Candidate>& queue = scratch.queue;
  queue.clear();
  const auto consider = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    auto it = merges_.find(pairKey(symbols[left].id, symbols[right].id));
    if (it == merges_.end()) return;
    queue.push_back(
        {it->second.rank, left, right, symbols[left].id, symbols[right].id, it->second.merged});
    std::push_heap(queue.begin(), queue.end(), later);
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) consider(i, i + 1);
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), later);
    const Candidate c = queue.back();
    queue.pop_back();
    Symbol& left = symbols[c.left];
    if (left.id != c.left_id || left.next != c.right || symbols[c.right].id != c.right_id) {
      continue;
    }
    Symbol& right = symbols[c.right];
    left.id = c.merged;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.id = kNoToken;  // gone
    right.prev = right.next = -1;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
  return Status::ok();
}

Result<std::vector<TokenId>> BpeTokenizer::encode(std::string_view text,
                                                  const EncodeOptions& options) const {
  std::string storage;
  ASSIGN_OR_RETURN(text, prepareText(text, options, storage));
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 2);  // most tokens hold more than three bytes
  if (options.add_bos) {
    if (vocab_.bos_id == kNoToken) return invalidArgument("the vocabulary has no BOS token");
    out.push_back(vocab_.bos_id);
  }
  std::string normalized;
  WordScratch scratch;
  for (const Fragment& fragment : specials_.split(text, options.parse_special)) {
    if (fragment.token != kNoToken) {
      out.push_back(fragment.token);
      continue;
    }
    std::string_view part = fragment.text;
    if (nfc_) {
      normalized = toNfc(part);
      part = normalized;
    }
    for (std::string_view word : splitWords(pre_, part)) {
      RETURN_IF_ERROR(encodeWord(word, scratch, out));
    }
  }
  if (options.add_eos) {
    if (vocab_.eos_id == kNoToken) return invalidArgument("the vocabulary has no EOS token");
    out.push_back(vocab_.eos_id);
  }
  return out;
}

Result<std::string> BpeTokenizer::decode(std::span<const TokenId> ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    RETURN_IF_ERROR(checkId(vocab_, ids[i], i));
    if (textBearing(ids[i])) out += pieces_[ids[i]];
  }
  return out;
}

Result<std::string> BpeTokenizer::piece(TokenId id) const {
  RETURN_IF_ERROR(checkId(vocab_, id, 0));
  return textBearing(id) ? pieces_[id] : std::string();
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> makeBpeTokenizer(Vocabulary vocab) {
  return BpeTokenizer::create(std::move(vocab));
}

}  // namespace kvferry::model::internal
