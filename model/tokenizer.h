// Tokenizers built from a vocabulary: a GGUF file's `tokenizer.ggml.*` metadata (here) or a
// Hugging Face tokenizer.json (model/hf_tokenizer.h; model/tokenizer_files.h loads either from a
// path). The orchestrator and every agent tokenize with this code, so prefix hashes agree
// (DESIGN.md §2).
//
// Supported models:
//  - `llama`: SentencePiece-style (SPM) as llama.cpp runs it: spaces become U+2581 "▁", a dummy
//    space is prefixed to text at the start and after every special token (when
//    add_space_prefix), adjacent symbols merge greedily by vocabulary score, and a character with
//    no token falls back to byte tokens <0xNN>.
//  - `gpt2`: byte-level BPE (Llama 3, Qwen2/2.5/3/3.5, Mistral Tekken, GPT-2) as Hugging Face
//    tokenizers runs it: special tokens are cut out first, the rest is normalized (NFC for Qwen)
//    and split into words by the family's pre-tokenizer regex (model/pre_tokenizer.h), each
//    word's bytes are mapped to GPT-2's printable byte characters and merged by merge rank
//    (lowest first, leftmost on ties); with ignore_merges a word that is a token is that token.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/gguf.h"
#include "model/token_id.h"

namespace kvferry::model {

// Token types, numbered as `tokenizer.ggml.token_type` (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // <s>, </s>, chat markers: no text of their own
  kUserDefined = 4,  // always matched verbatim in input text
  kUnused = 5,
  kByte = 6,  // <0xNN>: one raw byte
};

inline constexpr TokenId kNoToken = -1;

// The vocabulary as stored in the file, with llama.cpp's defaults filled in.
struct Vocabulary {
  std::string model;  // tokenizer.ggml.model: "llama" (SPM), "gpt2" (BPE), …
  std::vector<std::string> tokens;
  std::vector<float> scores;     // one per token; 0 when the file has none
  std::vector<TokenType> types;  // one per token; kNormal when the file has none
  TokenId bos_id = kNoToken;
  TokenId eos_id = kNoToken;
  TokenId unk_id = kNoToken;
  TokenId pad_id = kNoToken;
  bool add_bos = false;           // tokenizer.ggml.add_bos_token: what callers should pass
  bool add_eos = false;           // tokenizer.ggml.add_eos_token
  bool add_space_prefix = false;  // tokenizer.ggml.add_space_prefix
  // Byte-level BPE (model "gpt2") only:
  std::vector<std::string> merges;  // by rank, each "left right" (tokenizer.ggml.merges' form)
  std::string pre;                  // the pre-tokenizer, preTokenizerName(): "llama3", "qwen2", …
  bool ignore_merges = false;       // a word that is a token as a whole is that token (Llama 3)
  std::string normalizer;           // "" (none) or "nfc"
};

// Reads tokenizer.ggml.*. For model "llama" the defaults are llama.cpp's: bos 1, eos 2, unk 0,
// add_bos true, add_eos false, add_space_prefix true. A special id outside the vocabulary
// (files write 0xFFFFFFFF for "none") leaves the default, as llama.cpp does. For model "gpt2":
// tokenizer.ggml.merges (required) and tokenizer.ggml.pre, read as llama.cpp does
// (preTokenizerFromGgufName: the regex, ignore_merges, the add_bos default); an unknown `pre`
// is INVALID_ARGUMENT naming it. The "qwen2" pre-tokenizer (Qwen2, 2.5, 3) gets the NFC
// normalizer of those models' tokenizer.json, which llama.cpp leaves out: text that is not in
// NFC then tokenizes as Hugging Face tokenizes it, and a GGUF and a tokenizer.json of one Qwen
// model agree. (Qwen3.5's tokenizer.json has no normalizer, nor does "qwen35".)
Result<Vocabulary> readVocabulary(const GgufFile& file);

// Tokenizer hash: SipHash-2-4 with key (0, 0) over "kvferry.tokenizer.v1", the model name, u64
// token count, then every token (u64 length + bytes), every score (f32 bits), every type (u32),
// then u32 bos, eos, unk, pad ids (0xFFFFFFFF when absent) and u32 add_bos, add_eos,
// add_space_prefix (0/1); all little-endian. For every model but "llama" (so SPM hashes are
// unchanged) it goes on with u64 merge count, every merge (u64 length + bytes), the pre-tokenizer
// and normalizer names (u64 length + bytes) and u32 ignore_merges. It covers only the
// Vocabulary, whichever file it came from: a GGUF and a tokenizer.json that read into the same
// vocabulary hash alike. Equal hashes mean identical tokenization.
uint64_t vocabularyHash(const Vocabulary& vocab);

// Text that is not valid UTF-8 (stray or missing continuation bytes, overlong forms, surrogates,
// code points past U+10FFFF) is INVALID_ARGUMENT naming the byte offset.
Status checkUtf8(std::string_view text);

struct EncodeOptions {
  bool add_bos = true;  // prepend the BOS token (pass vocabulary().add_bos for the model's default)
  bool add_eos = false;  // append the EOS token
  // Text equal to a control token's text (e.g. "<s>" in a chat template) becomes that token.
  // User-defined tokens always do, as in llama.cpp. (Hugging Face matches every added token in
  // text: parse_special = true is its behaviour.)
  bool parse_special = false;
  // Invalid UTF-8 in the text becomes U+FFFD, one per maximal subpart (what Hugging Face and
  // transformers.js tokenize after decoding bytes with replacement) instead of INVALID_ARGUMENT.
  bool replace_invalid_utf8 = false;
};

// Stateless after construction: any thread may call any method concurrently.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`, which must be valid UTF-8 (see EncodeOptions::replace_invalid_utf8).
  virtual Result<std::vector<TokenId>> encode(std::string_view text,
                                              const EncodeOptions& options) const = 0;

  // The text of a sequence that starts a document: control and unknown tokens contribute
  // nothing, byte tokens are reassembled into the bytes they stand for (byte-level BPE: every
  // token's characters map back to bytes), and with add_space_prefix (SPM) the dummy-prefix
  // space is dropped from the first text-bearing token (SentencePiece's rule, also what
  // llama2.c does after BOS). So decode(encode(s)) == s for any s without U+2581 and special
  // tokens' text. llama.cpp's llama_detokenize differs in one case: when the first id is BOS it
  // keeps that space. INVALID_ARGUMENT for an id outside the vocabulary. The result holds raw
  // bytes: ids cut mid-character decode to invalid UTF-8, as in llama.cpp.
  virtual Result<std::string> decode(std::span<const TokenId> ids) const = 0;

  // The bytes one token adds in the middle of a sequence (no space dropped): for streaming.
  virtual Result<std::string> piece(TokenId id) const = 0;

  virtual const Vocabulary& vocabulary() const = 0;
};

// A tokenizer for the vocabulary's model; INVALID_ARGUMENT for an unsupported model or an
// inconsistent vocabulary (lengths differ, special id out of range, malformed byte token, …).
Result<std::unique_ptr<Tokenizer>> makeTokenizer(Vocabulary vocab);
Result<std::unique_ptr<Tokenizer>> makeTokenizer(const GgufFile& file);

}  // namespace kvferry::model
