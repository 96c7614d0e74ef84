// Bad tokenizer.json / tokenizer_config.json input: every failure is INVALID_ARGUMENT (or
// NOT_FOUND for a missing file) naming the file and what is wrong, never a crash. Fuzz-style
// like the GGUF robustness tests: every truncation and random byte corruptions of a small file.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "model/gguf_writer.h"
#include "model/hf_tokenizer.h"
#include "model/tokenizer_files.h"
#include "model/unicode.h"
#include "test_data.h"

namespace kvferry::model {
namespace {

namespace json = boost::json;
using ::kvferry::model::testing::tempPath;

// GPT-2's printable stand-in for each byte (bytes_to_unicode).
std::string byteCharacter(int b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  char32_t c = static_cast<char32_t>(b);
  if (!printable) {
    int n = 0;
    for (int k = 0; k < b; ++k) {
      if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || k >= 0xAE)) ++n;
    }
    c = static_cast<char32_t>(256 + n);
  }
  std::string out;
  appendUtf8(c, out);
  return out;
}

// A small, valid byte-level tokenizer.json: the 256 byte characters, "Ġt", "he", "Ġthe", one
// special and one plain added token, Llama 3's regex, a BOS template.
json::object smallTokenizer() {
  json::object vocab;
  for (int b = 0; b < 256; ++b) vocab[byteCharacter(b)] = b;
  vocab["\xc4\xa0t"] = 256;  // "Ġt"
  vocab["he"] = 257;
  vocab["\xc4\xa0the"] = 258;
  json::object model{{"type", "BPE"},
                     {"vocab", vocab},
                     {"merges", json::array{"\xc4\xa0 t", "h e", "\xc4\xa0t he"}},
                     {"ignore_merges", false}};
  json::array added{
      json::object{{"id", 259}, {"content", "<|bos|>"}, {"special", true}},
      json::object{{"id", 260}, {"content", "<tool>"}, {"special", false}},
  };
  json::object split{
      {"type", "Split"},
      {"pattern",
       json::object{
           {"Regex",
            R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
      {"behavior", "Isolated"},
      {"invert", false}};
  json::object byte_level{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  json::object post{
      {"type", "TemplateProcessing"},
      {"single", json::array{json::object{{"SpecialToken", json::object{{"id", "<|bos|>"}}}},
                             json::object{{"Sequence", json::object{{"id", "A"}}}}}},
      {"special_tokens",
       json::object{{"<|bos|>", json::object{{"id", "<|bos|>"}, {"ids", json::array{259}}}}}}};
  return json::object{
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       json::object{{"type", "Sequence"}, {"pretokenizers", json::array{split, byte_level}}}},
      {"post_processor", post},
      {"decoder", json::object{{"type", "ByteLevel"}}},
      {"model", model}};
}

// The first error of parsing the file or building its tokenizer (merges are checked there).
std::string errorOf(const json::value& tokenizer, std::string_view config = "") {
  Result<Vocabulary> v = parseHfTokenizer(json::serialize(tokenizer), config);
  Status status = v.status();
  if (v.isOk()) status = makeTokenizer(std::move(v).value()).status();
  if (status.isOk()) return "parsed";
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  return status.message();
}

void expectError(const json::value& tokenizer, const std::string& fragment,
                 std::string_view config = "") {
  const std::string error = errorOf(tokenizer, config);
  EXPECT_NE(error.find(fragment), std::string::npos)
      << "error: " << error << "\nwanted: " << fragment;
}

TEST(HfTokenizerParseTest, SmallFileTokenizes) {
  Result<Vocabulary> v = parseHfTokenizer(json::serialize(smallTokenizer()), "");
  ASSERT_TRUE(v.isOk()) << v.status().toString();
  EXPECT_EQ(v->tokens.size(), 261u);
  EXPECT_EQ(v->pre, "llama3");
  EXPECT_TRUE(v->add_bos);
  EXPECT_EQ(v->bos_id, 259);
  EXPECT_EQ(v->types[259], TokenType::kControl);
  EXPECT_EQ(v->types[260], TokenType::kUserDefined);
  Result<std::unique_ptr<Tokenizer>> t = makeTokenizer(*v);
  ASSERT_TRUE(t.isOk()) << t.status().toString();
  const auto encode = [&](std::string_view text, EncodeOptions options) {
    Result<std::vector<TokenId>> ids = (*t)->encode(text, options);
    EXPECT_TRUE(ids.isOk()) << ids.status().toString();
    return ids.isOk() ? *ids : std::vector<TokenId>{};
  };
  // "he" "Ġthe" merge; "<tool>" is always matched, "<|bos|>" only with parse_special.
  EXPECT_EQ(encode("he the<tool>", {.add_bos = true}), (std::vector<TokenId>{259, 257, 258, 260}));
  EXPECT_EQ(encode("<|bos|>", {.add_bos = false, .parse_special = true}),
            (std::vector<TokenId>{259}));
  // As text: the words "<|", "bos", "|>", which this vocabulary spells byte by byte.
  EXPECT_EQ(encode("<|bos|>", {.add_bos = false}).size(), 7u);
  Result<std::string> text = (*t)->decode(std::vector<TokenId>{259, 257, 258, 260, 0x20});
  ASSERT_TRUE(text.isOk());
  EXPECT_EQ(*text, "he the<tool>\x20");
}

TEST(HfTokenizerParseTest, UnsupportedOrInconsistentFilesHaveClearErrors) {
  json::object t = smallTokenizer();
  t["model"].as_object()["type"] = "WordPiece";
  expectError(t, "tokenizer.json: model.type is 'WordPiece'; only 'BPE'");
  t = smallTokenizer();
  t["model"].as_object()["type"] = "Unigram";
  expectError(t, "model.type is 'Unigram'");
  t = smallTokenizer();
  t["model"].as_object().erase("type");
  t["model"].as_object().erase("merges");
  expectError(t, "model has no 'type' and is not a BPE model");
  t = smallTokenizer();
  t["model"].as_object()["merges"].as_array().push_back("h x\xc3\xa9");
  expectError(t, "merge 3 'h x\xc3\xa9' names 'x\xc3\xa9', which is not in the vocabulary");
  t = smallTokenizer();
  t["model"].as_object()["merges"].as_array().push_back(json::array{"t", "h"});
  expectError(t, "merge 3 't h' names 'th', which is not in the vocabulary");
  t = smallTokenizer();
  t["model"].as_object()["merges"].as_array().push_back(json::array{"t"});
  expectError(t, "model.merges[3] is an array, not a string");
  t = smallTokenizer();
  t["model"].as_object()["merges"].as_array().push_back("nospace");
  expectError(t, "merge 3 'nospace' is not two tokens separated by one space");
  t = smallTokenizer();
  t["model"].as_object()["vocab"].as_object()["dup"] = 5;
  expectError(t, "model.vocab gives id 5 to both");
  t = smallTokenizer();
  t["model"].as_object()["vocab"].as_object()["neg"] = -1;
  expectError(t, "model.vocab['neg'] is -1, not a token id (0..65797)");
  t = smallTokenizer();
  t["added_tokens"].as_array()[1].as_object()["id"] = 10000000;
  expectError(t, "added_tokens[1].id is 10000000, not a token id (0..65796)");
  t = smallTokenizer();
  t["model"].as_object()["vocab"] = json::array{};
  expectError(t, "model.vocab is an array, not an object");
  t = smallTokenizer();
  t["model"].as_object()["byte_fallback"] = true;
  expectError(t, "model.byte_fallback is true");
  t = smallTokenizer();
  t["added_tokens"].as_array()[0].as_object()["id"] = 3;
  expectError(t, "added token '<|bos|>' has id 3, which model.vocab gives to");
  t = smallTokenizer();
  t["added_tokens"].as_array()[1].as_object()["lstrip"] = true;
  expectError(t, "added_tokens[1] ('<tool>') has lstrip: true, which is not supported");
  t = smallTokenizer();
  t["normalizer"] = json::object{{"type", "NFKC"}};
  expectError(t, "normalizer {\"type\":\"NFKC\"} is not supported");
  t = smallTokenizer();
  t["pre_tokenizer"].as_object()["pretokenizers"].as_array()[0].as_object()["pattern"] =
      json::object{{"Regex", "\\w+"}};
  expectError(t, "pre_tokenizer Split regex '\\w+' is not one kvferry implements");
  t = smallTokenizer();
  t["pre_tokenizer"] = json::object{{"type", "Metaspace"}};
  expectError(t, "pre_tokenizer {\"type\":\"Metaspace\"} is not supported");
  t = smallTokenizer();
  t["pre_tokenizer"] = json::object{{"type", "ByteLevel"}, {"add_prefix_space", true}};
  expectError(t, "pre_tokenizer.add_prefix_space is true");
  t = smallTokenizer();
  t["decoder"] = json::object{{"type", "Metaspace"}};
  expectError(t, "decoder {\"type\":\"Metaspace\"} is not supported");
  t = smallTokenizer();
  t["post_processor"].as_object()["special_tokens"].as_object()["<|bos|>"].as_object()["ids"] =
      json::array{9999};
  expectError(t, "post_processor adds token id 9999, which is outside the vocabulary of 261");
  t = smallTokenizer();
  t["post_processor"] = json::object{{"type", "BertProcessing"}};
  expectError(t, "post_processor.type 'BertProcessing' is not supported");
  expectError(smallTokenizer(), "tokenizer_config.json: bos_token '<s>' is not a token",
              R"({"bos_token": "<s>"})");
  expectError(smallTokenizer(), "tokenizer_config.json: add_bos_token is a string, not a boolean",
              R"({"add_bos_token": "yes"})");
  expectError(smallTokenizer(), "tokenizer_config.json: invalid JSON at byte 1 (line 1)", "{,");
  expectError(json::array{}, "tokenizer.json: the document is an array, not an object");
  EXPECT_EQ(errorOf(smallTokenizer(), R"({"bos_token": {"content": "<|bos|>"},
                                         "add_bos_token": false})"),
            "parsed");
}

TEST(HfTokenizerParseTest, InvalidJsonNamesByteAndLine) {
  const std::string whole = json::serialize(smallTokenizer());
  Result<Vocabulary> v = parseHfTokenizer("{\n  \"model\": {\n    \"type\": BPE\n", "");
  ASSERT_FALSE(v.isOk());
  EXPECT_EQ(v.status().message(), "tokenizer.json: invalid JSON at byte 27 (line 3): syntax error");
  // Every truncation of a valid file fails cleanly (AddressSanitizer watches the reads).
  for (size_t length = 0; length < whole.size(); length += length < 600 ? 1 : 97) {
    const std::string prefix = whole.substr(0, length);
    Result<Vocabulary> truncated = parseHfTokenizer(prefix, "");
    ASSERT_FALSE(truncated.isOk()) << length;
    ASSERT_EQ(truncated.status().code(), StatusCode::kInvalidArgument) << length;
    ASSERT_NE(truncated.status().message().find("invalid JSON at byte"), std::string::npos)
        << truncated.status().toString();
  }
}

TEST(HfTokenizerParseTest, RandomByteCorruptionsNeverCrash) {
  const std::string whole = json::serialize(smallTokenizer());
  std::mt19937_64 random(20261204);
  int rejected = 0;
  int tokenized = 0;
  for (int trial = 0; trial < 1500; ++trial) {
    std::string corrupt = whole;
    for (int flips = 1 + static_cast<int>(random() % 3); flips > 0; --flips) {
      const size_t at = random() % corrupt.size();
      corrupt[at] = static_cast<char>(corrupt[at] ^ (1 + random() % 255));
    }
    Result<Vocabulary> v = parseHfTokenizer(corrupt, "");
    if (!v.isOk()) {
      ++rejected;
      EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument) << v.status().toString();
      continue;
    }
    Result<std::unique_ptr<Tokenizer>> t = makeTokenizer(std::move(v).value());
    if (!t.isOk()) {
      EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
      continue;
    }
    ++tokenized;
    Result<std::vector<TokenId>> ids =
        (*t)->encode("he the <tool> 123 \xf0\x9f\xa6\x99", {.add_bos = false});
    if (ids.isOk()) (*t)->decode(*ids).status().ignoreError();
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(tokenized, 0);
}

void writeText(const std::string& path, std::string_view text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(TokenizerFilesTest, ErrorsNameTheFileAndAllPathKindsLoad) {
  namespace fs = std::filesystem;
  const fs::path dir = tempPath("hf");
  fs::remove_all(dir);
  fs::create_directories(dir);
  Result<std::unique_ptr<Tokenizer>> none = loadTokenizer(dir.string());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find(dir.string() + ": directory has no tokenizer.json"),
            std::string::npos);

  json::object bad = smallTokenizer();
  bad["model"].as_object()["type"] = "WordLevel";
  writeText((dir / "tokenizer.json").string(), json::serialize(bad));
  EXPECT_EQ(loadTokenizer(dir.string()).status().message(),
            dir.string() +
                ": tokenizer.json: model.type is 'WordLevel'; only 'BPE' (byte-level, "
                "as Llama 3, Qwen and Mistral-Nemo use) is supported");
  writeText((dir / "tokenizer.json").string(), json::serialize(smallTokenizer()).substr(0, 100));
  EXPECT_NE(loadTokenizer(dir.string())
                .status()
                .message()
                .find(dir.string() + ": tokenizer.json: invalid JSON at byte 100"),
            std::string::npos);

  writeText((dir / "tokenizer.json").string(), json::serialize(smallTokenizer()));
  writeText((dir / "tokenizer_config.json").string(), R"({"add_bos_token": false})");
  for (const fs::path& path : {dir, dir / "tokenizer.json"}) {
    Result<std::unique_ptr<Tokenizer>> t = loadTokenizer(path.string());
    ASSERT_TRUE(t.isOk()) << t.status().toString();
    EXPECT_FALSE((*t)->vocabulary().add_bos);  // the config wins over the template
  }
  EXPECT_EQ(loadTokenizer((dir / "nope.gguf").string()).status().code(), StatusCode::kNotFound);
  writeText((dir / "model.gguf").string(), "GGUF but not really");
  EXPECT_NE(loadTokenizer((dir / "model.gguf").string()).status().message().find("model.gguf"),
            std::string::npos);
  fs::remove_all(dir);
}

// GGUF: a gpt2 vocabulary with an unknown pre-tokenizer or merges of unknown tokens.
TEST(TokenizerFilesTest, GgufBpeErrorsAreClear) {
  const auto write = [](const std::string& path, const std::string& pre,
                        const std::vector<std::string>& merges) {
    GgufWriter w;
    w.add("general.architecture", "llama");
    w.add("tokenizer.ggml.model", "gpt2");
    w.add("tokenizer.ggml.pre", std::string_view(pre));
    std::vector<std::string> tokens;
    for (int b = 0; b < 256; ++b) tokens.push_back(byteCharacter(b));
    tokens.push_back("ab");
    w.addArray("tokenizer.ggml.tokens", tokens);
    w.addArray("tokenizer.ggml.merges", merges);
    ASSERT_TRUE(w.writeFile(path).isOk());
  };
  const std::string path = tempPath("bpe.gguf");
  write(path, "llama-bpe", {"a b"});
  Result<std::unique_ptr<Tokenizer>> good = loadTokenizer(path);
  ASSERT_TRUE(good.isOk()) << good.status().toString();
  EXPECT_EQ(*(*good)->encode("ab", {.add_bos = false}), (std::vector<TokenId>{256}));
  // Qwen2/2.5/3 normalize to NFC in their tokenizer.json, Qwen3.5 does not (llama.cpp's qwen35
  // cases keep "e" + U+0301 apart); the GGUF readings follow.
  for (auto [pre, normalizer] : {std::pair{"qwen2", "nfc"}, std::pair{"qwen35", ""},
                                 std::pair{"llama-bpe", ""}, std::pair{"tekken", ""}}) {
    write(path, pre, {"a b"});
    Result<Vocabulary> v = loadVocabulary(path);
    ASSERT_TRUE(v.isOk()) << v.status().toString();
    EXPECT_EQ(v->normalizer, normalizer) << pre;
  }
  write(path, "jais", {"a b"});
  EXPECT_EQ(loadTokenizer(path).status().message(),
            path +
                ": tokenizer.ggml.pre 'jais' is not supported (supported: llama-bpe, qwen2, "
                "qwen35, tekken, gpt-2, default, and llama.cpp's aliases of these)");
  write(path, "qwen2", {"a c"});
  EXPECT_EQ(loadTokenizer(path).status().message(),
            path + ": merge 0 'a c' names 'ac', which is not in the vocabulary");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvferry::model
