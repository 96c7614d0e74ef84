// Paths and small helpers shared by the model tests.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "model/gguf_writer.h"
#include "model/token_id.h"

namespace kvferry::model::testing {

// The real model fixture: Karpathy's stories260K (see its PROVENANCE.md).
inline std::string storiesPath() {
  return std::string(KVFERRY_SOURCE_DIR) + "/tests/data/models/stories260K/stories260K.gguf";
}

// A file under tests/data/tokenizers/ (see the README there).
inline std::string tokenizerDataPath(const std::string& name) {
  return std::string(KVFERRY_SOURCE_DIR) + "/tests/data/tokenizers/" + name;
}

// The whole file as bytes (empty, with a test failure, when it cannot be read).
inline std::string readFileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// llama.cpp's tokenizer cases for a vocab GGUF (tests/data/tokenizers/README.md), in the format
// its tests/test-tokenizer-0.cpp reads: the texts of GGUF.inp separated by
// "\n__ggml_vocab_test__\n", one line of space-separated ids per text in GGUF.out.
struct LlamaCppCase {
  std::string text;
  std::vector<TokenId> ids;
};
inline std::vector<LlamaCppCase> readLlamaCppCases(const std::string& gguf) {
  const std::string inp = readFileText(gguf + ".inp");
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<LlamaCppCase> cases;
  for (size_t pos = 0; pos < inp.size();) {
    size_t next = inp.find(separator, pos);
    if (next == std::string::npos) next = inp.size();
    cases.push_back({inp.substr(pos, next - pos), {}});
    pos = next == inp.size() ? next : next + separator.size();
  }
  std::istringstream lines(readFileText(gguf + ".out"));
  size_t i = 0;
  for (std::string line; i < cases.size() && std::getline(lines, line); ++i) {
    std::istringstream ids(line);
    for (TokenId id; ids >> id;) cases[i].ids.push_back(id);
  }
  EXPECT_EQ(i, cases.size()) << gguf << ": .inp and .out hold different numbers of cases";
  return cases;
}

// PROVENANCE.md §5: greedy generations of llama2.c's run.c for "Once upon a time" and "Zoo", ids
// at positions 0..63 (BOS, the prompt, then the continuation). Shared by the tokenizer and
// engine tests.
inline const std::vector<TokenId> kOnceGolden = {
    1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426,
    338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426,
    385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426, 338, 391, 266,
    267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415, 426, 13,  438};
inline const std::vector<TokenId> kZooGolden = {
    1,   410, 469, 347, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396,
    267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432,
    358, 394, 261, 370, 432, 352, 266, 268, 388, 426, 338, 391, 266, 267, 337, 335,
    312, 432, 398, 358, 279, 292, 416, 439, 413, 391, 267, 337, 335, 312, 426, 13};

// A file name unique to the running test, in gtest's temporary directory.
inline std::string tempPath(const std::string& suffix) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return ::testing::TempDir() + "kvferry_" + info->test_suite_name() + "_" + info->name() + "_" +
         suffix;
}

// A small valid shape; tests vary one field at a time.
inline LlamaParams smallLlama() {
  LlamaParams p;
  p.vocab_size = 300;
  p.embedding_length = 64;
  p.feed_forward_length = 128;
  p.block_count = 2;
  p.head_count = 8;
  p.head_count_kv = 2;
  p.rope_dimension_count = 8;
  p.rope_freq_base = 10000.0f;
  p.rms_epsilon = 1e-5f;
  p.context_length = 256;
  return p;
}

}  // namespace kvferry::model::testing
