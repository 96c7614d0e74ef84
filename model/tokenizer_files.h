// A model's tokenizer from a path, whatever form the model comes in: the one entry point that
// tools, the benchmark client and (later) the orchestrator and agents use, so every process
// reads a given path into the same Vocabulary and so the same tokenizer hash.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "model/tokenizer.h"

namespace kvferry::model {

// `path` is
//  - a GGUF file (its tokenizer.ggml.* metadata: SPM or byte-level BPE),
//  - a Hugging Face model directory, or a directory holding only tokenizer.json and
//    tokenizer_config.json (model/hf_tokenizer.h; the config is optional), or
//  - a tokenizer.json file (with the tokenizer_config.json beside it, if any).
// Errors name the file and what is wrong with it.
Result<Vocabulary> loadVocabulary(const std::string& path);
Result<std::unique_ptr<Tokenizer>> loadTokenizer(const std::string& path);

}  // namespace kvferry::model
