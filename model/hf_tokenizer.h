// Hugging Face tokenizer files → a Vocabulary (model/tokenizer.h) for the byte-level BPE
// tokenizer: `tokenizer.json` (the `tokenizers` library's serialization) and, when present,
// `tokenizer_config.json` (transformers' settings: special-token names, add_bos_token, …).
//
// What is read, and how it maps:
//  - model: type "BPE" (or no type with vocab + merges, as older files write), its vocab
//    (token → id) and merges ("a b" strings or ["a", "b"] pairs) in rank order, ignore_merges,
//    unk_token. byte_fallback, a subword prefix/suffix or dropout (SentencePiece-style BPE) are
//    refused.
//  - added_tokens: each at its id; special ones are control tokens (text only with
//    parse_special), the others user-defined (always matched), as llama.cpp's converter types
//    them. lstrip, rstrip and single_word are refused.
//  - normalizer: none or NFC. pre_tokenizer: ByteLevel with use_regex (GPT-2's regex), or a
//    Sequence of a Split (behavior Isolated, not inverted) whose regex is one of
//    model/pre_tokenizer.h's and a ByteLevel without regex; add_prefix_space is refused.
//    decoder: ByteLevel (or none).
//  - add_bos / add_eos: tokenizer_config.json's add_bos_token / add_eos_token when it has them,
//    else what the post_processor adds (TemplateProcessing, also inside a Sequence: a single
//    special token before / after the text). BOS/EOS/pad ids: the post_processor's token, else
//    the config's bos_token, eos_token, pad_token (a string or {"content": …}).
// Anything else is INVALID_ARGUMENT naming the JSON path and what is wrong; invalid JSON names
// the byte offset and line. Never throws.
#pragma once

#include <string_view>

#include "common/status.h"
#include "model/tokenizer.h"

namespace kvferry::model {

// `config_json` may be empty (no tokenizer_config.json). Error messages name the file by its
// base name ("tokenizer.json: model.type is 'WordPiece'…"); callers add the directory.
Result<Vocabulary> parseHfTokenizer(std::string_view tokenizer_json, std::string_view config_json);

}  // namespace kvferry::model
