// A test fixture with the stories260K tokenizer (tests/data/models/), loaded once per suite, for
// the OpenAI layer's tests that turn text into token ids and back.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string_view>
#include <vector>

#include "model/gguf.h"
#include "model/test_data.h"
#include "model/tokenizer.h"

namespace kvferry::openai::testing {

class StoriesTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Result<model::GgufFile> file = model::GgufFile::open(model::testing::storiesPath());
    ASSERT_TRUE(file.isOk()) << file.status().toString();
    Result<std::unique_ptr<model::Tokenizer>> tokenizer = model::makeTokenizer(*file);
    ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
    tokenizer_ = std::move(tokenizer).value().release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }

  static const model::Tokenizer& tok() { return *tokenizer_; }

  static std::vector<model::TokenId> encode(std::string_view text, bool add_bos) {
    model::EncodeOptions options;
    options.add_bos = add_bos;
    Result<std::vector<model::TokenId>> ids = tokenizer_->encode(text, options);
    EXPECT_TRUE(ids.isOk()) << ids.status().toString();
    return ids.isOk() ? *ids : std::vector<model::TokenId>{};
  }

 private:
  static inline model::Tokenizer* tokenizer_ = nullptr;
};

}  // namespace kvferry::openai::testing
