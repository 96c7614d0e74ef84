// Byte-level BPE from Hugging Face tokenizer.json files, exact against the JavaScript reference
// implementation (goldens written by scripts/tokenizer_goldens/generate.mjs), against llama.cpp's
// cases, and against the GGUF of the same vocabulary.
#include "model/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/pre_tokenizer.h"
#include "model/tokenizer_files.h"
#include "model/unicode.h"
#include "test_data.h"

namespace kvferry::model {
namespace {

namespace json = boost::json;
using ::kvferry::model::testing::readFileText;
using ::kvferry::model::testing::readLlamaCppCases;
using ::kvferry::model::testing::tokenizerDataPath;

json::value readGolden(const std::string& name) {
  boost::system::error_code ec;
  json::value v = json::parse(readFileText(tokenizerDataPath("golden/" + name)), ec);
  EXPECT_FALSE(ec) << name << ": " << ec.message();
  return v;
}

std::vector<TokenId> idsOf(const json::value& array) {
  std::vector<TokenId> ids;
  for (const json::value& id : array.as_array()) ids.push_back(static_cast<TokenId>(id.as_int64()));
  return ids;
}

std::string fromHex(std::string_view hex) {
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  }
  return bytes;
}

std::unique_ptr<Tokenizer> load(const std::string& path) {
  Result<std::unique_ptr<Tokenizer>> tokenizer = loadTokenizer(path);
  EXPECT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
  return tokenizer.isOk() ? std::move(tokenizer).value() : nullptr;
}

// ---- the JavaScript reference -------------------------------------------------------------------

class JsGoldenTest : public ::testing::TestWithParam<const char*> {};

TEST_P(JsGoldenTest, EveryCaseIsExact) {
  const std::string name = GetParam();
  const std::unique_ptr<Tokenizer> tokenizer = load(tokenizerDataPath(name));
  ASSERT_NE(tokenizer, nullptr);
  const json::value golden = readGolden(name + ".json");
  const json::array& cases = golden.at("cases").as_array();
  ASSERT_GE(cases.size(), 450u);
  // Hugging Face semantics: every added token's text is that token; nothing added around.
  const EncodeOptions options{
      .add_bos = false, .parse_special = true, .replace_invalid_utf8 = true};
  size_t exact = 0;
  size_t invalid_inputs = 0;
  for (const json::value& c : cases) {
    const json::object& o = c.as_object();
    const bool from_bytes = o.contains("hex");
    const std::string text =
        from_bytes ? fromHex(o.at("hex").as_string()) : std::string(o.at("text").as_string());
    if (from_bytes) {
      ++invalid_inputs;
      EXPECT_FALSE(checkUtf8(text).isOk()) << o.at("hex");
      EXPECT_EQ(tokenizer->encode(text, {.add_bos = false}).status().code(),
                StatusCode::kInvalidArgument)
          << "without replace_invalid_utf8, invalid UTF-8 is refused";
    }
    Result<std::vector<TokenId>> ids = tokenizer->encode(text, options);
    ASSERT_TRUE(ids.isOk()) << ids.status().toString();
    const std::vector<TokenId> expected = idsOf(o.at("ids"));
    EXPECT_EQ(*ids, expected) << name << ": " << json::serialize(c);
    if (*ids == expected) ++exact;
    if (!from_bytes && text.find("<|") == std::string::npos &&
        text.find("<think>") == std::string::npos &&
        text.find("<tool_call>") == std::string::npos) {
      // Byte-level BPE is lossless, NFC aside (Qwen): decode gives the (normalized) text back.
      Result<std::string> decoded = tokenizer->decode(*ids);
      ASSERT_TRUE(decoded.isOk());
      EXPECT_EQ(*decoded, tokenizer->vocabulary().normalizer == "nfc" ? toNfc(text) : text);
    }
  }
  EXPECT_GE(invalid_inputs, 20u);
  for (const json::value& c : golden.at("with_special").as_array()) {
    const Vocabulary& v = tokenizer->vocabulary();
    Result<std::vector<TokenId>> ids =
        tokenizer->encode(c.at("text").as_string(),
                          {.add_bos = v.add_bos, .add_eos = v.add_eos, .parse_special = true});
    ASSERT_TRUE(ids.isOk()) << ids.status().toString();
    EXPECT_EQ(*ids, idsOf(c.at("ids"))) << name << " with special tokens: " << json::serialize(c);
  }
  std::printf("%s: %zu of %zu cases exact (%zu of them invalid UTF-8)\n", name.c_str(), exact,
              cases.size(), invalid_inputs);
}

INSTANTIATE_TEST_SUITE_P(TokenizerJson, JsGoldenTest, ::testing::Values("llama3", "qwen3"));

TEST(PreTokenizerTest, SplitsExactlyAsTheRegexEngine) {
  const json::value golden = readGolden("splits.json");
  const json::object& patterns = golden.at("patterns").as_object();
  ASSERT_EQ(patterns.size(), 5u);
  size_t checked = 0;
  for (const auto& [name, pattern] : patterns) {
    const std::optional<PreTokenizer> kind = preTokenizerFromName(name);
    ASSERT_TRUE(kind) << name;
    EXPECT_EQ(preTokenizerFromRegex(pattern.as_string()), kind) << name;
  }
  for (const json::value& c : golden.at("cases").as_array()) {
    const std::string text(c.at("text").as_string());
    for (const auto& [name, expected] : c.at("splits").as_object()) {
      std::vector<std::string> words;
      for (std::string_view word : splitWords(*preTokenizerFromName(name), text)) {
        words.emplace_back(word);
      }
      std::vector<std::string> golden_words;
      for (const json::value& w : expected.as_array()) golden_words.emplace_back(w.as_string());
      EXPECT_EQ(words, golden_words) << name << ": " << json::serialize(c.at("text"));
      ++checked;
    }
  }
  EXPECT_GE(checked, 5000u);
}

// ---- other references ---------------------------------------------------------------------------

// llama.cpp's .out files come from Hugging Face tokenizers; the tokenizer.json of the same
// vocabulary must reproduce them too.
TEST(HfTokenizerTest, ReproducesLlamaCppCasesOfTheSameVocabulary) {
  for (auto [dir, gguf] : {std::pair{"llama3", "llama-bpe"}, std::pair{"qwen3", "qwen2"}}) {
    const std::unique_ptr<Tokenizer> tokenizer = load(tokenizerDataPath(dir));
    ASSERT_NE(tokenizer, nullptr);
    const std::string gguf_path =
        tokenizerDataPath(std::string("llama.cpp/ggml-vocab-") + gguf + ".gguf");
    size_t cases = 0;
    for (const auto& c : readLlamaCppCases(gguf_path)) {
      Result<std::vector<TokenId>> ids = tokenizer->encode(c.text, {.add_bos = false});
      ASSERT_TRUE(ids.isOk());
      EXPECT_EQ(*ids, c.ids) << dir << ": '" << c.text << "'";
      ++cases;
    }
    EXPECT_EQ(cases, 46u);
  }
}

TEST(HfTokenizerTest, GgufAndTokenizerJsonOfOneModelReadAlike) {
  Result<Vocabulary> hf = loadVocabulary(tokenizerDataPath("llama3"));
  Result<Vocabulary> gguf =
      loadVocabulary(tokenizerDataPath("llama.cpp/ggml-vocab-llama-bpe.gguf"));
  ASSERT_TRUE(hf.isOk()) << hf.status().toString();
  ASSERT_TRUE(gguf.isOk()) << gguf.status().toString();
  EXPECT_EQ(hf->model, gguf->model);
  EXPECT_EQ(hf->pre, gguf->pre);
  EXPECT_EQ(hf->ignore_merges, gguf->ignore_merges);
  EXPECT_EQ(hf->normalizer, gguf->normalizer);
  EXPECT_EQ(hf->merges, gguf->merges);
  ASSERT_EQ(hf->tokens.size(), gguf->tokens.size());
  EXPECT_EQ(hf->tokens, gguf->tokens);
  EXPECT_EQ(hf->types, gguf->types);
  EXPECT_EQ(hf->bos_id, gguf->bos_id);
  // The first Llama 3 upload's tokenizer.json adds no BOS (its post-processor is ByteLevel);
  // llama.cpp's converter wrote add_bos_token = true. That difference is the whole difference,
  // so the two hash apart, and alike once it is aligned.
  EXPECT_FALSE(hf->add_bos);
  EXPECT_TRUE(gguf->add_bos);
  Vocabulary aligned = *hf;
  aligned.add_bos = gguf->add_bos;
  aligned.eos_id = gguf->eos_id;
  aligned.pad_id = gguf->pad_id;
  EXPECT_EQ(vocabularyHash(aligned), vocabularyHash(*gguf));
  EXPECT_NE(vocabularyHash(*hf), vocabularyHash(*gguf));

  Result<Vocabulary> qwen = loadVocabulary(tokenizerDataPath("qwen3"));
  ASSERT_TRUE(qwen.isOk()) << qwen.status().toString();
  EXPECT_EQ(qwen->pre, "qwen2");
  EXPECT_EQ(qwen->normalizer, "nfc");
  EXPECT_FALSE(qwen->add_bos);
  EXPECT_EQ(qwen->tokens[qwen->eos_id], "<|im_end|>");
  EXPECT_EQ(qwen->tokens[qwen->pad_id], "<|endoftext|>");
  EXPECT_EQ(qwen->bos_id, kNoToken);
}

}  // namespace
}  // namespace kvferry::model
