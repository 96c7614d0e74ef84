#include "model/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "model/gguf_writer.h"
#include "model/tokenizer_internal.h"
#include "model/unicode.h"
#include "test_data.h"

namespace kvferry::model {
namespace {

using ::kvferry::model::testing::kOnceGolden;
using ::kvferry::model::testing::kZooGolden;
using ::kvferry::model::testing::smallLlama;
using ::kvferry::model::testing::storiesPath;

class StoriesTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Result<GgufFile> file = GgufFile::open(storiesPath());
    ASSERT_TRUE(file.isOk()) << file.status().toString();
    Result<std::unique_ptr<Tokenizer>> tokenizer = makeTokenizer(*file);
    ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
    tokenizer_ = std::move(tokenizer).value().release();
  }
  static void TearDownTestSuite() { delete tokenizer_; }

  static std::vector<TokenId> encode(std::string_view text, EncodeOptions options = {}) {
    Result<std::vector<TokenId>> ids = tokenizer_->encode(text, options);
    EXPECT_TRUE(ids.isOk()) << ids.status().toString();
    return ids.isOk() ? *ids : std::vector<TokenId>{};
  }
  static std::string decode(const std::vector<TokenId>& ids) {
    Result<std::string> text = tokenizer_->decode(ids);
    EXPECT_TRUE(text.isOk()) << text.status().toString();
    return text.isOk() ? *text : "";
  }

  static Tokenizer* tokenizer_;
};
Tokenizer* StoriesTokenizerTest::tokenizer_ = nullptr;

TEST_F(StoriesTokenizerTest, VocabularyMatchesProvenance) {
  const Vocabulary& v = tokenizer_->vocabulary();
  EXPECT_EQ(v.model, "llama");
  ASSERT_EQ(v.tokens.size(), 512u);
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.unk_id, 0);
  EXPECT_EQ(v.pad_id, kNoToken);  // the file says 0xFFFFFFFF
  EXPECT_TRUE(v.add_bos);
  EXPECT_FALSE(v.add_eos);
  EXPECT_TRUE(v.add_space_prefix);
  int counts[7] = {};
  for (TokenType type : v.types) ++counts[static_cast<int>(type)];
  EXPECT_EQ(counts[static_cast<int>(TokenType::kUnknown)], 1);
  EXPECT_EQ(counts[static_cast<int>(TokenType::kControl)], 2);
  EXPECT_EQ(counts[static_cast<int>(TokenType::kByte)], 256);
  EXPECT_EQ(counts[static_cast<int>(TokenType::kNormal)], 253);
  EXPECT_EQ(v.tokens[259], "\xe2\x96\x81t");  // " t", spaces written as U+2581
  // Pinned: the registration check compares it across processes.
  EXPECT_EQ(vocabularyHash(v), 0xe25e3aa373867c05ULL);
}

TEST_F(StoriesTokenizerTest, EncodesTheProvenanceGoldens) {
  EXPECT_EQ(encode("Once upon a time"), (std::vector<TokenId>{1, 403, 407, 261, 378}));
  EXPECT_EQ(encode("Zoo"), (std::vector<TokenId>{1, 410, 469, 347}));
  EXPECT_EQ(encode("Once upon a time", {.add_bos = false}),
            (std::vector<TokenId>{403, 407, 261, 378}));
  EXPECT_EQ(encode("Zoo", {.add_bos = true, .add_eos = true}),
            (std::vector<TokenId>{1, 410, 469, 347, 2}));
  EXPECT_EQ(encode(""), (std::vector<TokenId>{1}));  // as llama.cpp: no dummy-prefix token
  EXPECT_TRUE(encode("", {.add_bos = false}).empty());
}

// PROVENANCE.md §5 quotes what run.c printed, which includes the token it sampled at position
// 63 (the 65th); the ids end one token earlier, so they decode to a prefix of the quoted text
// ("...\nL" of "...\nLily").
TEST_F(StoriesTokenizerTest, DecodesTheGoldenGenerations) {
  const std::string quoted_once =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park. One day, she saw a big, red ball. She wanted to play with it, but it was too "
      "high.\nLily";
  const std::string once = decode(kOnceGolden);
  EXPECT_TRUE(once.starts_with("Once upon a time")) << once;
  EXPECT_NE(once.find("Lily"), std::string::npos);
  EXPECT_EQ(once, quoted_once.substr(0, quoted_once.size() - 3));
  const std::string zoo = decode(kZooGolden);
  EXPECT_TRUE(zoo.starts_with("Zoo")) << zoo;
  EXPECT_EQ(zoo,
            "Zoo was a little girl named Lily. She loved to play outside in the park. One day, she "
            "saw a big, red ball. She wanted to play with it, but she didn't want to play with "
            "it.\n");
  // Each golden starts with its prompt's encoding.
  for (const auto& [prompt, golden] :
       {std::pair{"Once upon a time", &kOnceGolden}, std::pair{"Zoo", &kZooGolden}}) {
    const std::vector<TokenId> ids = encode(prompt);
    EXPECT_TRUE(std::equal(ids.begin(), ids.end(), golden->begin())) << prompt;
  }
}

TEST_F(StoriesTokenizerTest, PiecesAndSpecialTokens) {
  EXPECT_EQ(*tokenizer_->piece(1), "");      // control tokens have no text
  EXPECT_EQ(*tokenizer_->piece(0), "");      // nor does <unk>
  EXPECT_EQ(*tokenizer_->piece(13), "\n");   // <0x0A>
  EXPECT_EQ(*tokenizer_->piece(259), " t");  // mid-sequence: the space stays
  EXPECT_EQ(decode({259}), "t");             // at the start it is the dummy prefix
  EXPECT_EQ(decode({1, 2, 1}), "");
  EXPECT_EQ(tokenizer_->piece(512).status().code(), StatusCode::kInvalidArgument);
  Result<std::string> bad = tokenizer_->decode(std::vector<TokenId>{1, 403, -5});
  EXPECT_EQ(bad.status().message(),
            "token id -5 at position 2 is outside the vocabulary of 512 tokens");

  // parse_special: "<s>" in the text is the BOS token, and the text after a special token gets
  // its own dummy-prefix space (llama.cpp); without it "<s>" is ordinary text.
  const std::vector<TokenId> special = encode("<s>Zoo", {.add_bos = false, .parse_special = true});
  EXPECT_EQ(special, (std::vector<TokenId>{1, 410, 469, 347}));
  const std::vector<TokenId> literal = encode("<s>Zoo", {.add_bos = false});
  EXPECT_EQ(std::count(literal.begin(), literal.end(), 1), 0);
  EXPECT_EQ(decode(literal), "<s>Zoo");
}

TEST_F(StoriesTokenizerTest, CharactersOutsideTheVocabularyFallBackToBytes) {
  // "ж" (D0 B6) and "😀" (F0 9F 98 80) are not tokens: one byte token <0xNN> (id 3 + NN) each.
  const std::vector<TokenId> ids = encode("Zoo\xd0\xb6\xf0\x9f\x98\x80", {.add_bos = false});
  EXPECT_EQ(ids, (std::vector<TokenId>{410, 469, 347, 3 + 0xd0, 3 + 0xb6, 3 + 0xf0, 3 + 0x9f,
                                       3 + 0x98, 3 + 0x80}));
  EXPECT_EQ(decode(ids), "Zoo\xd0\xb6\xf0\x9f\x98\x80");
  EXPECT_EQ(*tokenizer_->piece(3 + 0xd0), "\xd0");  // one raw byte: not valid UTF-8 alone
  // "€" is a token of this vocabulary (id 503), so it does not fall back.
  EXPECT_EQ(encode("\xe2\x82\xac", {.add_bos = false}), (std::vector<TokenId>{410, 503}));
}

TEST_F(StoriesTokenizerTest, InvalidUtf8IsRejectedAtItsOffset) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\x80", "byte offset 0: byte 0x80 cannot start a character"},
      {"ab\xc3", "byte offset 2: a 2-byte sequence is cut off by the end"},
      {"a\xc3\x28", "byte offset 2: byte 0x28 is not a valid continuation of 0xC3"},
      {"\xc0\xaf", "byte offset 0: byte 0xC0 cannot start a character"},  // overlong '/'
      {"xy\xe0\x80\xaf", "byte offset 3: byte 0x80"},                     // overlong
      {"\xed\xa0\x80", "byte offset 1: byte 0xA0"},                       // surrogate U+D800
      {"\xf4\x90\x80\x80", "byte offset 1: byte 0x90"},                   // past U+10FFFF
      {"\xf5\x80\x80\x80", "byte offset 0: byte 0xF5 cannot start"},
      {"ok \xe2\x96", "byte offset 3: a 3-byte sequence is cut off"},
      {"\xff", "byte offset 0"},
  };
  for (const auto& [text, fragment] : cases) {
    Result<std::vector<TokenId>> ids = tokenizer_->encode(text, {});
    ASSERT_FALSE(ids.isOk()) << fragment;
    EXPECT_EQ(ids.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(ids.status().message().find("invalid UTF-8 at " + fragment), std::string::npos)
        << ids.status().message();
  }
  EXPECT_TRUE(checkUtf8("\xf4\x8f\xbf\xbf \xed\x9f\xbf \xf0\x90\x80\x80 \x7f").isOk());
}

// Random UTF-8 text: ASCII (with spaces, newlines, tabs, runs of spaces), 2-, 3- and 4-byte
// characters (emoji included) and any scalar value. U+2581 is excluded: SentencePiece writes
// spaces as that character, so a literal U+2581 decodes back as a space in every SPM tokenizer.
std::string randomText(std::mt19937& random) {
  const auto append = [](std::string& out, uint32_t cp) { appendUtf8(cp, out); };
  const std::vector<std::pair<uint32_t, uint32_t>> ranges = {
      {0x20, 0x7e},     {' ', ' '},         {'\n', '\n'},       {'\t', '\t'},
      {'a', 'z'},       {0xa0, 0x24f},      {0x391, 0x3c9},     {0x400, 0x44f},
      {0x4e00, 0x4fff}, {0x1f600, 0x1f64f}, {0x1f300, 0x1f5ff}, {0, 0x10ffff}};
  std::string out;
  const int length = static_cast<int>(random() % 40);
  for (int i = 0; i < length; ++i) {
    const auto& [low, high] = ranges[random() % ranges.size()];
    uint32_t cp = low + static_cast<uint32_t>(random() % (high - low + 1));
    if ((cp >= 0xd800 && cp <= 0xdfff) || cp == 0x2581) cp = 'x';
    append(out, cp);
  }
  return out;
}

// The round-trip contract (tokenizer.h): decode(encode(s)) == s, with or without BOS, because
// encode adds a dummy-prefix space and decode drops it again from the first text-bearing token.
void expectRoundTrips(const Tokenizer& tokenizer, int count) {
  std::mt19937 random(12345);
  std::vector<std::string> texts = {
      " leading", "  two leading", "trailing  ", " ", "a\nb\n\n c\t d", "\n", "x  y   z"};
  for (int i = 0; i < count; ++i) texts.push_back(randomText(random));
  for (const std::string& text : texts) {
    ASSERT_TRUE(checkUtf8(text).isOk());
    for (bool bos : {true, false}) {
      Result<std::vector<TokenId>> ids = tokenizer.encode(text, {.add_bos = bos});
      ASSERT_TRUE(ids.isOk()) << ids.status().toString();
      Result<std::string> back = tokenizer.decode(*ids);
      ASSERT_TRUE(back.isOk()) << back.status().toString();
      ASSERT_EQ(*back, text) << "bos " << bos;
    }
  }
}

TEST_F(StoriesTokenizerTest, RandomTextRoundTrips) { expectRoundTrips(*tokenizer_, 2000); }

// The stories vocabulary keeps words apart, so its texts are merged word by word; the same
// vocabulary with one more token that joins a character to a marker after it ("\x01▁", which no
// text below holds) is merged whole. Both give the same ids, for random text and for text of
// repeated words (each distinct word merged once per call) with runs of spaces.
TEST_F(StoriesTokenizerTest, MergingWordByWordEqualsMergingTheWholeText) {
  const Vocabulary& apart = tokenizer_->vocabulary();
  ASSERT_TRUE(internal::spmVocabularyKeepsWordsApart(apart));
  Vocabulary joined = apart;
  joined.tokens.push_back("\x01\xe2\x96\x81");
  joined.types.push_back(TokenType::kNormal);
  joined.scores.push_back(-1e9f);
  ASSERT_FALSE(internal::spmVocabularyKeepsWordsApart(joined));
  Result<std::unique_ptr<Tokenizer>> whole = makeTokenizer(joined);
  ASSERT_TRUE(whole.isOk()) << whole.status().toString();

  std::mt19937 random(777);
  const std::vector<std::string> words = {"Once", "upon", "a",     "time", "there", "was", "the",
                                          "girl", "Lily", "loved", "to",   "play",  ",",   "."};
  std::vector<std::string> texts = {" leading", "  two leading", "trailing  ", "x  y   z", ""};
  for (int i = 0; i < 300; ++i) {
    std::string text = randomText(random);
    std::replace(text.begin(), text.end(), '\x01', 'x');
    texts.push_back(std::move(text));
    std::string prose;
    for (int w = 0, n = static_cast<int>(random() % 200); w < n; ++w) {
      prose += std::string(random() % 5 == 0 ? 2 : 1, ' ') + words[random() % words.size()];
    }
    texts.push_back(std::move(prose));
  }
  for (const std::string& text : texts) {
    for (bool bos : {true, false}) {
      Result<std::vector<TokenId>> by_word = tokenizer_->encode(text, {.add_bos = bos});
      Result<std::vector<TokenId>> at_once = (*whole)->encode(text, {.add_bos = bos});
      ASSERT_TRUE(by_word.isOk() && at_once.isOk()) << text;
      ASSERT_EQ(*by_word, *at_once) << "text '" << text << "', bos " << bos;
    }
  }
}

TEST(SpmWordsTest, WordsStartAtAMarkerAfterAnyOtherCharacter) {
  const std::string m = "\xe2\x96\x81";
  using Starts = std::vector<size_t>;
  EXPECT_EQ(internal::spmWordStarts(""), Starts{});
  EXPECT_EQ(internal::spmWordStarts("abc"), Starts{0});
  EXPECT_EQ(internal::spmWordStarts(m + "the" + m + "cat"), (Starts{0, 6}));
  // A run of markers starts the word after it; a marker at the end is a word of its own.
  EXPECT_EQ(internal::spmWordStarts(m + m + "a" + m + m + m + "b" + m), (Starts{0, 7, 17}));
  EXPECT_EQ(internal::spmWordStarts("a" + m + m), (Starts{0, 1}));

  Vocabulary v;
  v.tokens = {"a", m, m + m, m + "the", m + m + "x"};
  EXPECT_TRUE(internal::spmVocabularyKeepsWordsApart(v));
  v.tokens.push_back("of" + m);
  EXPECT_FALSE(internal::spmVocabularyKeepsWordsApart(v));
  v.tokens.back() = m + "a" + m + "b";
  EXPECT_FALSE(internal::spmVocabularyKeepsWordsApart(v));
}

TEST(SyntheticTokenizerTest, RandomModelVocabularyRoundTripsAndMerges) {
  LlamaParams params = smallLlama();
  params.vocab_size = 1000;  // room for the merges
  Result<std::vector<uint8_t>> bytes = randomLlamaModel({params}, 3);
  ASSERT_TRUE(bytes.isOk()) << bytes.status().toString();
  GgufFile file = std::move(GgufFile::parse(*bytes)).value();
  Result<std::unique_ptr<Tokenizer>> tokenizer = makeTokenizer(file);
  ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
  expectRoundTrips(**tokenizer, 500);
  // "▁the" is a merged token of the synthetic vocabulary: one id for " the".
  const std::vector<TokenId> ids = *(*tokenizer)->encode("the", {.add_bos = false});
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ((*tokenizer)->vocabulary().tokens[ids[0]], "\xe2\x96\x81the");
}

TEST(TokenizerFactoryTest, UnsupportedModelsAndInconsistentVocabularies) {
  Vocabulary bpe;
  bpe.model = "gpt2";
  bpe.tokens = {"a"};
  bpe.scores = {0};
  bpe.types = {TokenType::kNormal};
  EXPECT_EQ(makeTokenizer(bpe).status().message(), "the BPE vocabulary names no pre-tokenizer");
  Vocabulary other = bpe;
  other.model = "t5";
  EXPECT_EQ(makeTokenizer(other).status().code(), StatusCode::kInvalidArgument);

  Vocabulary spm = bpe;
  spm.model = "llama";
  ASSERT_TRUE(makeTokenizer(spm).isOk());
  Vocabulary short_scores = spm;
  short_scores.scores.clear();
  EXPECT_EQ(makeTokenizer(short_scores).status().code(), StatusCode::kInvalidArgument);
  Vocabulary bad_bos = spm;
  bad_bos.bos_id = 1;
  EXPECT_EQ(makeTokenizer(bad_bos).status().message(),
            "BOS token id 1 is outside the vocabulary of 1");
  Vocabulary bad_byte = spm;
  bad_byte.types = {TokenType::kByte};
  EXPECT_EQ(makeTokenizer(bad_byte).status().message(), "byte token 0 is 'a', not <0xNN>");

  // No byte tokens and no <unk>: a character outside the vocabulary is an error, not a crash.
  Result<std::unique_ptr<Tokenizer>> tiny = makeTokenizer(spm);
  Result<std::vector<TokenId>> ids = (*tiny)->encode("b", {.add_bos = false});
  EXPECT_EQ(ids.status().message(),
            "the vocabulary has no token for byte 0x62 and no unknown token");
  EXPECT_EQ((*tiny)->encode("a", {.add_bos = true}).status().message(),
            "the vocabulary has no BOS token");
}

TEST(TokenizerFactoryTest, HashFollowsEveryTokenizingInput) {
  GgufFile file = std::move(GgufFile::open(storiesPath())).value();
  const Vocabulary base = *readVocabulary(file);
  const uint64_t hash = vocabularyHash(base);
  EXPECT_EQ(hash, vocabularyHash(*readVocabulary(file)));
  // Pinned: agents of earlier versions must keep agreeing with this one on SPM vocabularies.
  EXPECT_EQ(hash, 16311539374074788869ull);
  std::vector<Vocabulary> changed(6, base);
  changed[0].scores[300] += 1.0f;
  changed[1].tokens[300] += "x";
  changed[2].types[300] = TokenType::kUserDefined;
  changed[3].bos_id = 2;
  changed[4].add_space_prefix = false;
  changed[5].model = "gpt2";
  for (const Vocabulary& v : changed) EXPECT_NE(vocabularyHash(v), hash);
}

}  // namespace
}  // namespace kvferry::model
