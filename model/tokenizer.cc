#include "model/tokenizer.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <functional>
#include <memory_resource>
#include <unordered_map>
#include <utility>

#include "model/hash.h"
#include "model/pre_tokenizer.h"
#include "model/tokenizer_internal.h"
#include "model/unicode.h"
#include "model/utf8.h"

namespace kvferry::model {
namespace {

using internal::Fragment;
using internal::hexByte;

constexpr std::string_view kSpaceMarker = "\xe2\x96\x81";  // U+2581 "▁", SentencePiece's space

// Byte length of the UTF-8 sequence a byte starts, as llama.cpp's unicode_len_utf8: a stray
// continuation byte counts as one (only reachable through user-defined tokens cutting text).
size_t utf8SequenceLength(uint8_t lead) {
  static constexpr std::array<uint8_t, 16> kLengths = {1, 1, 1, 1, 1, 1, 1, 1,
                                                       1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

// SentencePiece-style tokenizer with llama.cpp's algorithm (llm_tokenizer_spm_session).
class SpmTokenizer final : public Tokenizer {
 public:
  static Result<std::unique_ptr<Tokenizer>> create(Vocabulary vocab);

  Result<std::vector<TokenId>> encode(std::string_view text,
                                      const EncodeOptions& options) const override;
  Result<std::string> decode(std::span<const TokenId> ids) const override;
  Result<std::string> piece(TokenId id) const override;
  const Vocabulary& vocabulary() const override { return vocab_; }

 private:
  explicit SpmTokenizer(Vocabulary vocab) : vocab_(std::move(vocab)), specials_(vocab_) {}
  TokenId lookup(std::string_view text) const;
  Status tokenizeEscaped(std::string_view text, std::vector<TokenId>& out) const;
  // Appends the token's bytes; returns whether it is a text-bearing token.
  bool appendPiece(TokenId id, std::string& out) const;

  struct Symbol {
    int prev;
    int next;
    size_t start;
    size_t length;  // 0 once merged into its left neighbour
  };
  struct Bigram {
    int left;
    int right;
    float score;
    size_t length;
  };
  // mergeRun's buffers, kept across the words of one text.
  struct MergeScratch {
    std::vector<Symbol> symbols;
    std::vector<Bigram> queue;  // a heap
  };
  // The merges of one run of text with no boundary inside (see spmWordStarts): SentencePiece's
  // BPE over its characters.
  Status mergeRun(std::string_view text, MergeScratch& scratch, std::vector<TokenId>& out) const;

  Vocabulary vocab_;
  internal::SpecialTokenSplitter specials_;  // refers to vocab_
  internal::TokenIndex ids_;
  // Whether no token holds a space marker after another character (spmVocabularyKeepsWordsApart):
  // then the text is merged word by word, each distinct word once per call.
  bool words_apart_ = false;
  // Byte fallback: the <0xNN> token, else the one-byte token, else <unk> (else kNoToken).
  std::array<TokenId, 256> byte_tokens_{};
  std::vector<uint8_t> byte_values_;  // the byte a kByte token stands for
};

Result<std::unique_ptr<Tokenizer>> SpmTokenizer::create(Vocabulary vocab) {
  RETURN_IF_ERROR(internal::checkVocabulary(vocab));
  const size_t n = vocab.tokens.size();
  std::unique_ptr<SpmTokenizer> tokenizer(new SpmTokenizer(std::move(vocab)));
  const Vocabulary& v = tokenizer->vocab_;
  tokenizer->byte_values_.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const auto id = static_cast<TokenId>(i);
    const std::string& text = v.tokens[i];
    if (v.types[i] == TokenType::kByte) {
      ASSIGN_OR_RETURN(tokenizer->byte_values_[i], internal::byteTokenValue(id, text));
    }
    // As llama.cpp: a later duplicate of a text wins.
    if (!text.empty()) tokenizer->ids_.insert_or_assign(text, id);
  }
  tokenizer->words_apart_ = internal::spmVocabularyKeepsWordsApart(v);
  for (int byte = 0; byte < 256; ++byte) {
    TokenId id = tokenizer->lookup("<" + hexByte(static_cast<uint8_t>(byte)) + ">");
    if (id == kNoToken) id = tokenizer->lookup(std::string(1, static_cast<char>(byte)));
    tokenizer->byte_tokens_[byte] = id != kNoToken ? id : v.unk_id;
  }
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

TokenId SpmTokenizer::lookup(std::string_view text) const { return ids_.find(text); }

Status SpmTokenizer::tokenizeEscaped(std::string_view text, std::vector<TokenId>& out) const {
  MergeScratch scratch;
  scratch.symbols.reserve(64);  // the longest word's characters, usually
  scratch.queue.reserve(64);
  if (!words_apart_) return mergeRun(text, scratch, out);
  // No merge crosses a word start, so each word merges as it would inside the whole text (merges
  // of different words never meet, and each word's run in score order, leftmost first, is the
  // same alone), and a word met again gets the same tokens: an 8K-token prompt took 19-27 ms
  // merged whole (a priority queue over every character), in the orchestrator, before the
  // prefill could start.
  struct Seen {
    size_t first;  // in `out`
    size_t count;
  };
  const std::vector<size_t> starts = internal::spmWordStarts(text);
  // The words of a short text (a chat turn, a benchmark's prompt) fit the stack: no allocation
  // per word; a long one continues on the heap.
  std::array<std::byte, 8192> arena_bytes;
  std::pmr::monotonic_buffer_resource arena(arena_bytes.data(), arena_bytes.size());
  std::pmr::unordered_map<std::string_view, Seen> seen(&arena);
  seen.reserve(starts.size());
  for (size_t i = 0; i < starts.size(); ++i) {
    const size_t end = i + 1 < starts.size() ? starts[i + 1] : text.size();
    const std::string_view word = text.substr(starts[i], end - starts[i]);
    const auto [it, inserted] = seen.try_emplace(word, Seen{out.size(), 0});
    if (!inserted) {
      for (size_t k = 0; k < it->second.count; ++k) {
        const TokenId id = out[it->second.first + k];  // a copy: push_back may reallocate `out`
        out.push_back(id);
      }
      continue;
    }
    RETURN_IF_ERROR(mergeRun(word, scratch, out));
    it->second.count = out.size() - it->second.first;
  }
  return Status::ok();
}

Status SpmTokenizer::mergeRun(std::string_view text, MergeScratch& scratch,
                              std::vector<TokenId>& out) const {
  // Highest score first; on ties the leftmost pair.
  const auto lower = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };

  std::vector<Symbol>& symbols = scratch.symbols;
  std::vector<Bigram>& queue = scratch.queue;
  symbols.clear();
  queue.clear();
  for (size_t at = 0; at < text.size();) {
    const size_t length =
        std::min(utf8SequenceLength(static_cast<uint8_t>(text[at])), text.size() - at);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({index - 1, at + length == text.size() ? -1 : index + 1, at, length});
    at += length;
  }
  if (symbols.empty()) return Status::ok();

  const auto tryAdd = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const std::string_view merged =
        text.substr(symbols[left].start, symbols[left].length + symbols[right].length);
    const TokenId id = lookup(merged);
    if (id == kNoToken) return;
    queue.push_back({left, right, vocab_.scores[id], merged.size()});
    std::push_heap(queue.begin(), queue.end(), lower);
  };
  for (int i = 1; i < static_cast<int>(symbols.size()); ++i) tryAdd(i - 1, i);
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), lower);
    const Bigram bigram = queue.back();
    queue.pop_back();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    // Stale: one side was merged elsewhere since this pair was queued.
    if (left.length == 0 || right.length == 0 || left.length + right.length != bigram.length) {
      continue;
    }
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    tryAdd(left.prev, bigram.left);
    tryAdd(bigram.left, left.next);
  }

  // Every merged symbol is a token by construction; a single character that is not falls back
  // to one byte token per byte.
  for (int i = 0; i != -1; i = symbols[i].next) {
    const std::string_view symbol = text.substr(symbols[i].start, symbols[i].length);
    const TokenId id = lookup(symbol);
    if (id != kNoToken) {
      out.push_back(id);
      continue;
    }
    for (char c : symbol) {
      const TokenId byte_id = byte_tokens_[static_cast<uint8_t>(c)];
      if (byte_id == kNoToken) {
        return invalidArgument("the vocabulary has no token for byte " +
                               hexByte(static_cast<uint8_t>(c)) + " and no unknown token");
      }
      out.push_back(byte_id);
    }
  }
  return Status::ok();
}

Result<std::vector<TokenId>> SpmTokenizer::encode(std::string_view text,
                                                  const EncodeOptions& options) const {
  std::string storage;
  ASSIGN_OR_RETURN(text, internal::prepareText(text, options, storage));
  std::vector<TokenId> out;
  out.reserve(text.size() / 2 + 2);  // most tokens hold more than two bytes
  if (options.add_bos) {
    if (vocab_.bos_id == kNoToken) return invalidArgument("the vocabulary has no BOS token");
    out.push_back(vocab_.bos_id);
  }
  bool after_special = true;  // the start of the text counts as "after a special token"
  std::string escaped;
  for (const Fragment& fragment : specials_.split(text, options.parse_special)) {
    if (fragment.token != kNoToken) {
      out.push_back(fragment.token);
      after_special = true;
      continue;
    }
    escaped.clear();
    if (vocab_.add_space_prefix && after_special) escaped += kSpaceMarker;
    for (char c : fragment.text) {
      if (c == ' ') {
        escaped += kSpaceMarker;
      } else {
        escaped += c;
      }
    }
    RETURN_IF_ERROR(tokenizeEscaped(escaped, out));
    after_special = false;
  }
  if (options.add_eos) {
    if (vocab_.eos_id == kNoToken) return invalidArgument("the vocabulary has no EOS token");
    out.push_back(vocab_.eos_id);
  }
  return out;
}

bool SpmTokenizer::appendPiece(TokenId id, std::string& out) const {
  const std::string& text = vocab_.tokens[id];
  switch (vocab_.types[id]) {
    case TokenType::kNormal:
      for (size_t at = 0; at < text.size();) {
        if (text.compare(at, kSpaceMarker.size(), kSpaceMarker) == 0) {
          out += ' ';
          at += kSpaceMarker.size();
        } else {
          out += text[at++];
        }
      }
      return true;
    case TokenType::kUserDefined:
      out += text;
      return true;
    case TokenType::kByte:
      out += static_cast<char>(byte_values_[id]);
      return true;
    default:  // control, unknown, unused, undefined: no text (llama.cpp without `special`)
      return false;
  }
}

Result<std::string> SpmTokenizer::decode(std::span<const TokenId> ids) const {
  std::string out;
  bool drop_space = vocab_.add_space_prefix;
  for (size_t i = 0; i < ids.size(); ++i) {
    RETURN_IF_ERROR(internal::checkId(vocab_, ids[i], i));
    const size_t start = out.size();
    if (!appendPiece(ids[i], out)) continue;
    if (drop_space && out.size() > start && out[start] == ' ') out.erase(start, 1);
    drop_space = false;
  }
  return out;
}

Result<std::string> SpmTokenizer::piece(TokenId id) const {
  RETURN_IF_ERROR(internal::checkId(vocab_, id, 0));
  std::string out;
  appendPiece(id, out);
  return out;
}

}  // namespace

namespace internal {

bool spmVocabularyKeepsWordsApart(const Vocabulary& vocab) {
  for (const std::string& token : vocab.tokens) {
    // Past its leading run of markers, a token must hold none.
    size_t at = 0;
    while (token.compare(at, kSpaceMarker.size(), kSpaceMarker) == 0) at += kSpaceMarker.size();
    if (token.find(kSpaceMarker, at) != std::string::npos) return false;
  }
  return true;
}

std::vector<size_t> spmWordStarts(std::string_view text) {
  std::vector<size_t> starts;
  if (text.empty()) return starts;
  starts.push_back(0);
  const size_t m = kSpaceMarker.size();
  for (size_t at = text.find(kSpaceMarker, 1); at != std::string_view::npos;
       at = text.find(kSpaceMarker, at + m)) {
    // A marker that follows another one continues its run.
    const bool after_marker = at >= m && text.compare(at - m, m, kSpaceMarker) == 0;
    if (!after_marker) starts.push_back(at);
  }
  return starts;
}

uint64_t TokenIndex::hashOf(std::string_view text) {
  // FNV-1a: keys are short (a token, or two adjacent symbols of a candidate merge).
  uint64_t hash = 0xcbf29ce484222325ull;
  for (char c : text) hash = (hash ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return hash;
}

size_t TokenIndex::slotOf(std::string_view text, uint64_t hash) const {
  const size_t mask = slots_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& slot = slots_[i];
    if (slot.id == kNoToken) return i;
    if (slot.hash == hash && slot.length == text.size() &&
        std::string_view(bytes_).substr(slot.offset, slot.length) == text) {
      return i;
    }
  }
}

void TokenIndex::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
  for (const Slot& slot : old) {
    if (slot.id == kNoToken) continue;
    const size_t mask = slots_.size() - 1;
    size_t i = slot.hash & mask;
    while (slots_[i].id != kNoToken) i = (i + 1) & mask;
    slots_[i] = slot;
  }
}

void TokenIndex::insert_or_assign(std::string_view text, TokenId id) {
  if (2 * (count_ + 1) > slots_.size()) grow();
  const uint64_t hash = hashOf(text);
  Slot& slot = slots_[slotOf(text, hash)];
  if (slot.id == kNoToken) {
    slot.hash = hash;
    slot.offset = static_cast<uint32_t>(bytes_.size());
    slot.length = static_cast<uint32_t>(text.size());
    bytes_.append(text);
    ++count_;
  }
  slot.id = id;
}

TokenId TokenIndex::find(std::string_view text) const {
  if (slots_.empty()) return kNoToken;
  return slots_[slotOf(text, hashOf(text))].id;
}

std::string hexByte(uint8_t byte) {
  constexpr char kHex[] = "0123456789ABCDEF";
  return std::string("0x") + kHex[byte >> 4] + kHex[byte & 15];
}

std::string quoted(std::string_view text) {
  constexpr size_t kMaxBytes = 64;
  if (!checkUtf8(text).isOk() || std::ranges::any_of(text, [](char c) {
        return static_cast<uint8_t>(c) < 0x20 || c == 0x7f;
      })) {
    return printable(text);
  }
  if (text.size() <= kMaxBytes) return std::string(text);
  size_t cut = kMaxBytes;
  while (cut > 0 && (static_cast<uint8_t>(text[cut]) & 0xC0) == 0x80) --cut;  // a whole character
  return std::string(text.substr(0, cut)) + "...";
}

Result<uint8_t> byteTokenValue(TokenId id, std::string_view text) {
  const auto hexDigit = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int high = text.size() == 6 ? hexDigit(text[3]) : -1;
  const int low = text.size() == 6 ? hexDigit(text[4]) : -1;
  if (!text.starts_with("<0x") || high < 0 || low < 0 || text[5] != '>') {
    return invalidArgument("byte token " + std::to_string(id) + " is '" + printable(text) +
                           "', not <0xNN>");
  }
  return static_cast<uint8_t>(high * 16 + low);
}

Status checkVocabulary(const Vocabulary& vocab) {
  const size_t n = vocab.tokens.size();
  if (n == 0 || n > INT32_MAX) {
    return invalidArgument("vocabulary of " + std::to_string(n) + " tokens");
  }
  if (vocab.scores.size() != n || vocab.types.size() != n) {
    return invalidArgument("vocabulary of " + std::to_string(n) + " tokens has " +
                           std::to_string(vocab.scores.size()) + " scores and " +
                           std::to_string(vocab.types.size()) + " types");
  }
  for (auto [id, name] : {std::pair{vocab.bos_id, "BOS"}, std::pair{vocab.eos_id, "EOS"},
                          std::pair{vocab.unk_id, "unknown"}, std::pair{vocab.pad_id, "padding"}}) {
    if (id != kNoToken && (id < 0 || static_cast<size_t>(id) >= n)) {
      return invalidArgument(std::string(name) + " token id " + std::to_string(id) +
                             " is outside the vocabulary of " + std::to_string(n));
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(vocab.scores[i])) {
      return invalidArgument("token " + std::to_string(i) + " has a NaN score");
    }
  }
  return Status::ok();
}

Status checkId(const Vocabulary& vocab, TokenId id, size_t position) {
  if (id < 0 || static_cast<size_t>(id) >= vocab.tokens.size()) {
    return invalidArgument("token id " + std::to_string(id) + " at position " +
                           std::to_string(position) + " is outside the vocabulary of " +
                           std::to_string(vocab.tokens.size()) + " tokens");
  }
  return Status::ok();
}

Result<std::string_view> prepareText(std::string_view text, const EncodeOptions& options,
                                     std::string& storage) {
  if (text.size() > kMaxTextBytes) {
    return invalidArgument("text of " + std::to_string(text.size()) + " bytes is too long");
  }
  if (Status valid = checkUtf8(text); !valid.isOk()) {
    if (!options.replace_invalid_utf8) return valid;
    storage = replaceInvalidUtf8(text);
    if (storage.size() > kMaxTextBytes) {
      return invalidArgument("text of " + std::to_string(storage.size()) + " bytes is too long");
    }
    return std::string_view(storage);
  }
  return text;
}

SpecialTokenSplitter::SpecialTokenSplitter(const Vocabulary& vocab) : vocab_(vocab) {
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    const TokenType type = vocab.types[i];
    if (!vocab.tokens[i].empty() &&
        (type == TokenType::kControl || type == TokenType::kUserDefined ||
         type == TokenType::kUnknown)) {
      special_tokens_.push_back(static_cast<TokenId>(i));
    }
  }
  std::ranges::stable_sort(special_tokens_, std::greater<>(),
                           [&](TokenId id) { return vocab.tokens[id].size(); });
}

std::vector<Fragment> SpecialTokenSplitter::split(std::string_view text, bool parse_special) const {
  std::vector<Fragment> fragments;
  if (!text.empty()) fragments.push_back({text});
  std::vector<Fragment> next;
  for (TokenId id : special_tokens_) {
    if (!parse_special && vocab_.types[id] != TokenType::kUserDefined) continue;
    const std::string& needle = vocab_.tokens[id];
    if (text.find(needle) == std::string_view::npos) continue;  // fragments are substrings
    next.clear();
    for (const Fragment& fragment : fragments) {
      if (fragment.token != kNoToken) {
        next.push_back(fragment);
        continue;
      }
      std::string_view rest = fragment.text;
      for (size_t at = rest.find(needle); at != std::string_view::npos; at = rest.find(needle)) {
        if (at > 0) next.push_back({rest.substr(0, at)});
        next.push_back({{}, id});
        rest.remove_prefix(at + needle.size());
      }
      if (!rest.empty()) next.push_back({rest});
    }
    fragments.swap(next);
  }
  return fragments;
}

}  // namespace internal

Status checkUtf8(std::string_view text) {
  const auto fail = [](size_t at, const std::string& why) {
    return invalidArgument("invalid UTF-8 at byte offset " + std::to_string(at) + ": " + why);
  };
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<uint8_t>(text[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    const std::optional<Utf8Lead> shape = utf8Lead(lead);
    if (!shape) return fail(i, "byte " + hexByte(lead) + " cannot start a character");
    const size_t length = shape->length;
    if (length > text.size() - i) {
      return fail(i, "a " + std::to_string(length) + "-byte sequence is cut off by the end");
    }
    for (size_t k = 1; k < length; ++k) {
      const auto byte = static_cast<uint8_t>(text[i + k]);
      if (!utf8Continues(*shape, k, byte)) {
        return fail(i + k,
                    "byte " + hexByte(byte) + " is not a valid continuation of " + hexByte(lead));
      }
    }
    i += length;
  }
  return Status::ok();
}

namespace {

// tokenizer.ggml.merges and .pre, with llama.cpp's defaults for that pre-tokenizer.
Status readBpeVocabulary(const GgufFile& file, Vocabulary& v) {
  if (file.findKey("tokenizer.ggml.merges") == nullptr) {
    return invalidArgument("tokenizer.ggml.merges is missing: a 'gpt2' (BPE) tokenizer needs them");
  }
  ASSIGN_OR_RETURN(std::vector<std::string_view> merges,
                   file.getStringArray("tokenizer.ggml.merges"));
  v.merges.assign(merges.begin(), merges.end());
  std::string_view pre;
  if (file.findKey("tokenizer.ggml.pre") != nullptr) {
    ASSIGN_OR_RETURN(pre, file.getString("tokenizer.ggml.pre"));
  }
  const std::optional<GgufPreTokenizer> rules = preTokenizerFromGgufName(pre);
  if (!rules) {
    return invalidArgument("tokenizer.ggml.pre '" + printable(pre) +
                           "' is not supported (supported: llama-bpe, qwen2, qwen35, tekken, "
                           "gpt-2, default, and llama.cpp's aliases of these)");
  }
  v.pre = preTokenizerName(rules->kind);
  v.ignore_merges = rules->ignore_merges;
  v.add_bos = rules->add_bos;
  if (rules->kind == PreTokenizer::kQwen2) v.normalizer = "nfc";  // Qwen3.5's has none
  return Status::ok();
}

}  // namespace

Result<Vocabulary> readVocabulary(const GgufFile& file) {
  Vocabulary v;
  ASSIGN_OR_RETURN(std::string_view model, file.getString("tokenizer.ggml.model"));
  v.model = model;
  // The largest real vocabularies hold a few hundred thousand tokens; refuse absurd counts
  // before allocating for them.
  constexpr uint64_t kMaxTokens = uint64_t{1} << 24;
  const GgufKeyValue* tokens_key = file.findKey("tokenizer.ggml.tokens");
  if (tokens_key != nullptr && tokens_key->array_size > kMaxTokens) {
    return invalidArgument("tokenizer.ggml.tokens holds " + std::to_string(tokens_key->array_size) +
                           " tokens (at most " + std::to_string(kMaxTokens) + ")");
  }
  ASSIGN_OR_RETURN(std::vector<std::string_view> tokens,
                   file.getStringArray("tokenizer.ggml.tokens"));
  const size_t n = tokens.size();
  if (n == 0) return invalidArgument("tokenizer.ggml.tokens is empty");
  v.tokens.assign(tokens.begin(), tokens.end());
  v.scores.assign(n, 0.0f);
  if (file.findKey("tokenizer.ggml.scores") != nullptr) {
    ASSIGN_OR_RETURN(v.scores, file.getF32Array("tokenizer.ggml.scores"));
  }
  std::vector<int32_t> types(n, static_cast<int32_t>(TokenType::kNormal));
  if (file.findKey("tokenizer.ggml.token_type") != nullptr) {
    ASSIGN_OR_RETURN(types, file.getI32Array("tokenizer.ggml.token_type"));
  }
  if (v.scores.size() != n || types.size() != n) {
    return invalidArgument("tokenizer.ggml: " + std::to_string(n) + " tokens but " +
                           std::to_string(v.scores.size()) + " scores and " +
                           std::to_string(types.size()) + " token types");
  }
  v.types.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (types[i] < 0 || types[i] > static_cast<int32_t>(TokenType::kByte)) {
      return invalidArgument("tokenizer.ggml.token_type of token " + std::to_string(i) + " is " +
                             std::to_string(types[i]) + " (0..6)");
    }
    v.types.push_back(static_cast<TokenType>(types[i]));
  }
  if (v.model == "llama") {
    v.bos_id = n > 1 ? 1 : kNoToken;
    v.eos_id = n > 2 ? 2 : kNoToken;
    v.unk_id = 0;
    v.add_bos = true;
    v.add_space_prefix = true;
  }
  for (auto [key, id] : {std::pair{"tokenizer.ggml.bos_token_id", &v.bos_id},
                         std::pair{"tokenizer.ggml.eos_token_id", &v.eos_id},
                         std::pair{"tokenizer.ggml.unknown_token_id", &v.unk_id},
                         std::pair{"tokenizer.ggml.padding_token_id", &v.pad_id}}) {
    uint32_t value = UINT32_MAX;
    RETURN_IF_ERROR(file.getIfPresent(key, value));
    if (value < n) *id = static_cast<TokenId>(value);
  }
  if (v.model == "gpt2") RETURN_IF_ERROR(readBpeVocabulary(file, v));
  RETURN_IF_ERROR(file.getIfPresent("tokenizer.ggml.add_bos_token", v.add_bos));
  RETURN_IF_ERROR(file.getIfPresent("tokenizer.ggml.add_eos_token", v.add_eos));
  RETURN_IF_ERROR(file.getIfPresent("tokenizer.ggml.add_space_prefix", v.add_space_prefix));
  return v;
}

uint64_t vocabularyHash(const Vocabulary& v) {
  SipHasher hasher(0, 0);
  hasher.addString("kvferry.tokenizer.v1").addString(v.model).addU64(v.tokens.size());
  for (const std::string& token : v.tokens) hasher.addString(token);
  for (float score : v.scores) hasher.addF32(score);
  for (TokenType type : v.types) hasher.addU32(static_cast<uint32_t>(type));
  for (TokenId id : {v.bos_id, v.eos_id, v.unk_id, v.pad_id})
    hasher.addU32(static_cast<uint32_t>(id));
  for (bool flag : {v.add_bos, v.add_eos, v.add_space_prefix}) hasher.addU32(flag ? 1 : 0);
  if (v.model != "llama") {
    hasher.addU64(v.merges.size());
    for (const std::string& merge : v.merges) hasher.addString(merge);
    hasher.addString(v.pre).addString(v.normalizer).addU32(v.ignore_merges ? 1 : 0);
  }
  return hasher.finish();
}

Result<std::unique_ptr<Tokenizer>> makeTokenizer(Vocabulary vocab) {
  if (vocab.model == "llama") return SpmTokenizer::create(std::move(vocab));
  if (vocab.model == "gpt2") return internal::makeBpeTokenizer(std::move(vocab));
  return invalidArgument("tokenizer model '" + printable(vocab.model) + "' is not supported");
}

Result<std::unique_ptr<Tokenizer>> makeTokenizer(const GgufFile& file) {
  ASSIGN_OR_RETURN(Vocabulary vocab, readVocabulary(file));
  return makeTokenizer(std::move(vocab));
}

}  // namespace kvferry::model
