// llama.cpp's own tokenizer test cases (tests/data/tokenizers/llama.cpp/README.md): each vocab-only
// GGUF with its .inp (texts) and .out (the ids Hugging Face tokenizers gave for them).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/tokenizer_internal.h"
#include "test_data.h"

namespace kvferry::model {
namespace {

using ::kvferry::model::testing::LlamaCppCase;
using ::kvferry::model::testing::readLlamaCppCases;
using ::kvferry::model::testing::tokenizerDataPath;

class LlamaCppVocabTest : public ::testing::TestWithParam<const char*> {};

TEST_P(LlamaCppVocabTest, EncodesEveryCaseExactly) {
  const std::string path =
      tokenizerDataPath(std::string("llama.cpp/ggml-vocab-") + GetParam() + ".gguf");
  Result<GgufFile> file = GgufFile::open(path);
  ASSERT_TRUE(file.isOk()) << file.status().toString();
  Result<std::unique_ptr<Tokenizer>> tokenizer = makeTokenizer(*file);
  ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
  if (std::string(GetParam()) == "llama-spm") {
    // Llama 2's vocabulary keeps words apart: these cases check the word-by-word merge.
    EXPECT_TRUE(internal::spmVocabularyKeepsWordsApart((*tokenizer)->vocabulary()));
  }
  const std::vector<LlamaCppCase> cases = readLlamaCppCases(path);
  ASSERT_GE(cases.size(), 40u);
  size_t exact = 0;
  for (const LlamaCppCase& c : cases) {
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
