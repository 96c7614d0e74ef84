// What the SentencePiece (tokenizer.cc) and byte-level BPE (bpe_tokenizer.cc) tokenizers share:
// vocabulary checks, the token-text index, and cutting special tokens out of text. Not a public
// header: include model/tokenizer.h.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/tokenizer.h"

namespace kvferry::model::internal {

// "0x0A": how error messages name a byte.
std::string hexByte(uint8_t byte);

// A token or text for an error message: valid UTF-8 without control characters as it is (token
// texts of byte-level vocabularies are mostly non-ASCII, "Ġthe"), anything else as printable()
// writes it; at most 64 bytes either way.
std::string quoted(std::string_view text);

// The byte a byte token ("<0x0A>") stands for; INVALID_ARGUMENT naming token `id` otherwise.
Result<uint8_t> byteTokenValue(TokenId id, std::string_view text);

// Token text → id, for the tokenizers' inner loops (a lookup for every candidate merge, most of
// them misses): open addressing over one array of slots that keep each key's hash, the keys'
// bytes back to back in one string, so a lookup touches a slot or two and compares bytes only on
// a hash match (a node-based map chased a pointer per probe: the orchestrator spent 5% of its
// time in lookups). Built once, then read from any thread.
class TokenIndex {
 public:
  // A later text equal to an earlier one takes its place (as llama.cpp: later duplicates win).
  void insert_or_assign(std::string_view text, TokenId id);
  // kNoToken when no token has this text.
  TokenId find(std::string_view text) const;

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0;  // of the key in bytes_
    uint32_t length = 0;
    TokenId id = kNoToken;  // kNoToken: an empty slot
  };
  static uint64_t hashOf(std::string_view text);
  // The slot holding `text`, or the empty slot where it would go.
  size_t slotOf(std::string_view text, uint64_t hash) const;
  void grow();

  std::string bytes_;
  std::vector<Slot> slots_;  // a power of two long, at most half full
  size_t count_ = 0;
};

// SentencePiece vocabularies: true when no token holds the space marker "▁" after any other
// character (markers only as a leading run: "▁the", "▁▁"). Then no merge can join a character to
// a marker after it, and a text is merged word by word (spmWordStarts) with the same result.
bool spmVocabularyKeepsWordsApart(const Vocabulary& vocab);
// Where the words of an escaped text start: at 0 and at each "▁" that does not follow another
// "▁" (a run of markers starts the word it precedes).
std::vector<size_t> spmWordStarts(std::string_view text);

// Sizes agree, special ids lie inside the vocabulary, no score is NaN.
Status checkVocabulary(const Vocabulary& vocab);

// INVALID_ARGUMENT naming the id and its position when it is outside the vocabulary.
Status checkId(const Vocabulary& vocab, TokenId id, size_t position);

// Text longer than this is refused (symbol indices are ints).
inline constexpr size_t kMaxTextBytes = size_t{1} << 30;

// The text encode() works on: checked (INVALID_ARGUMENT for a bad length or invalid UTF-8), or
// with invalid sequences replaced when the options ask (then `storage` holds it).
Result<std::string_view> prepareText(std::string_view text, const EncodeOptions& options,
                                     std::string& storage);

// A piece of the text between special tokens, or one special token matched verbatim.
struct Fragment {
  std::string_view text;     // raw text when token == kNoToken
  TokenId token = kNoToken;  // a special token matched verbatim
};

// Cuts special tokens out of text as llama.cpp does (tokenizer_st_partition): every control,
// user-defined and unknown token with text, longest first; control and unknown ones only when
// parse_special.
class SpecialTokenSplitter {
 public:
  explicit SpecialTokenSplitter(const Vocabulary& vocab);
  std::vector<Fragment> split(std::string_view text, bool parse_special) const;

 private:
  const Vocabulary& vocab_;
  std::vector<TokenId> special_tokens_;  // longest first
};

// The text of a byte-level token standing for `bytes`: each byte as its GPT-2 character ("Ġ" for
// the space), in UTF-8.
std::string byteLevelText(std::string_view bytes);

// The byte-level BPE implementation of Tokenizer (bpe_tokenizer.cc); vocab.model is "gpt2".
Result<std::unique_ptr<Tokenizer>> makeBpeTokenizer(Vocabulary vocab);

}  // namespace kvferry::model::internal
