// The pre-tokenizers of byte-level BPE: they cut text into words before merges run, and merges
// never cross a word boundary. Each is the Split regex of a model family's tokenizer.json,
// written out as a hand-made matcher over Unicode categories (model/unicode.h) that returns what
// the regex engine of Hugging Face tokenizers (Oniguruma) returns: leftmost alternative first,
// greedy quantifiers with backtracking. A regex library with \p{L} would do the same job, but
// hand-written matchers keep the character tables ours (every host of a cluster must classify
// characters identically) and are what llama.cpp does too.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvferry::model {

enum class PreTokenizer {
  // GPT-2's: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  // (also what ByteLevel with use_regex applies).
  kGpt2,
  // Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
  //          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kLlama3,
  // Qwen2, Qwen2.5, Qwen3: Llama 3's with \p{N} (one digit per word) instead of \p{N}{1,3}.
  kQwen2,
  // Qwen3.5: Qwen2's with marks joining letters, [\p{L}\p{M}]+, and [^\s\p{L}\p{M}\p{N}]+.
  kQwen35,
  // Mistral Tekken (Mistral-Nemo, Pixtral, …): words split at case changes:
  // [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|
  // [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|
  //  ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kTekken,
};

// The name kvferry uses for it in the vocabulary and its hash: "gpt2", "llama3", "qwen2",
// "qwen35", "tekken".
std::string_view preTokenizerName(PreTokenizer kind);
std::optional<PreTokenizer> preTokenizerFromName(std::string_view name);
// The Split regex of its tokenizer.json, exactly as preTokenizerFromRegex() accepts it.
std::string_view preTokenizerRegex(PreTokenizer kind);

// What a GGUF's `tokenizer.ggml.pre` implies, as llama.cpp reads it: the regex, whether a word
// that is a token as a whole skips the merges (Hugging Face's `ignore_merges`), and the add_bos
// default when the file has no tokenizer.ggml.add_bos_token.
struct GgufPreTokenizer {
  PreTokenizer kind;
  bool ignore_merges;
  bool add_bos;
};
// llama.cpp's names and aliases ("llama-bpe", "qwen2", "qwen35", "tekken", "gpt-2", "default",
// "" for a file without the key, …); nullopt for one whose rules are not implemented here.
std::optional<GgufPreTokenizer> preTokenizerFromGgufName(std::string_view pre);

// The pre-tokenizer whose Split regex is exactly `pattern` (as tokenizer.json writes it);
// nullopt for any other regex.
std::optional<PreTokenizer> preTokenizerFromRegex(std::string_view pattern);

// The words of `text` (valid UTF-8), in order; they concatenate to `text`. Views into `text`.
std::vector<std::string_view> splitWords(PreTokenizer kind, std::string_view text);

}  // namespace kvferry::model
