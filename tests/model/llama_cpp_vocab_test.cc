// llama.cpp's own tokenizer test cases (tests/data/tokenizers/llama.cpp/README.md): each vocab-only
// GGUF with its .inp (texts) and .out (the ids Hugging Face tokenizers gave for them).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "test_data.h"

namespace kvferry::model {
namespace {

using ::kvferry::model::testing::tokenizerDataPath;

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

struct Case {
  std::string text;
  std::vector<TokenId> ids;
};

// The format llama.cpp's tests/test-tokenizer-0.cpp reads: texts separated by
// "\n__ggml_vocab_test__\n", one line of space-separated ids per text.
std::vector<Case> readCases(const std::string& gguf) {
  const std::string inp = readAll(gguf + ".inp");
  const std::string out = readAll(gguf + ".out");
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<Case> cases;
  for (size_t pos = 0; pos < inp.size();) {
    size_t next = inp.find(separator, pos);
    if (next == std::string::npos) next = inp.size();
    cases.push_back({inp.substr(pos, next - pos), {}});
    pos = next == inp.size() ? next : next + separator.size();
  }
  std::istringstream lines(out);
  size_t i = 0;
  for (std::string line; std::getline(lines, line); ++i) {
    if (i >= cases.size()) break;
    std::istringstream ids(line);
    for (TokenId id; ids >> id;) cases[i].ids.push_back(id);
  }
  EXPECT_EQ(i, cases.size()) << gguf << ": .inp and .out hold different numbers of cases";
  return cases;
}

class LlamaCppVocabTest : public ::testing::TestWithParam<const char*> {};

TEST_P(LlamaCppVocabTest, EncodesEveryCaseExactly) {
  const std::string path =
      tokenizerDataPath(std::string("llama.cpp/ggml-vocab-") + GetParam() + ".gguf");
  Result<GgufFile> file = GgufFile::open(path);
  ASSERT_TRUE(file.isOk()) << file.status().toString();
  Result<std::unique_ptr<Tokenizer>> tokenizer = makeTokenizer(*file);
  ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
  const std::vector<Case> cases = readCases(path);
  ASSERT_GE(cases.size(), 40u);
  size_t exact = 0;
  for (const Case& c : cases) {
    // As llama.cpp's test-tokenizer-0: no BOS/EOS, special tokens' text is plain text.
    Result<std::vector<TokenId>> ids = (*tokenizer)->encode(c.text, {.add_bos = false});
    ASSERT_TRUE(ids.isOk()) << ids.status().toString();
    EXPECT_EQ(*ids, c.ids) << GetParam() << ": '" << c.text << "'";
    if (*ids == c.ids) ++exact;
  }
  std::printf("%s: %zu of %zu cases exact\n", GetParam(), exact, cases.size());
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, LlamaCppVocabTest,
                         ::testing::Values("llama-bpe", "qwen2", "gpt-2", "llama-spm"),
                         [](const auto& param_info) {
                           std::string name = param_info.param;
                           std::erase(name, '-');
                           return name;
                         });

}  // namespace
}  // namespace kvferry::model
