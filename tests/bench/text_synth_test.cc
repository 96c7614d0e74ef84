// Prompt synthesis under the real stories260K tokenizer (vocabulary of 512): exact token counts,
// shared-prefix groups that share exactly their prefix, trace requests that share exactly the
// blocks of their common leading hash ids; and the multi-token fallback on a tiny vocabulary.
#include "bench/benchmark_client/text_synth.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>

#include "bench/benchmark_client/dataset.h"
#include "bench/mooncake_trace.h"
#include "model/gguf.h"
#include "model/tokenizer_files.h"

namespace kvferry::bench {
namespace {

const std::string kStories =
    std::string(KVFERRY_SOURCE_DIR) + "/tests/data/models/stories260K/stories260K.gguf";
const std::string kTrace =
    std::string(KVFERRY_SOURCE_DIR) + "/tests/data/traces/conversation_head300.jsonl";

class TextSynthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto file = model::GgufFile::open(kStories);
    ASSERT_TRUE(file.isOk()) << file.status().toString();
    auto tokenizer = model::makeTokenizer(*file);
    ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
    tokenizer_ = std::move(tokenizer).value().release();
    auto synth = TextSynthesizer::create(*tokenizer_);
    ASSERT_TRUE(synth.isOk()) << synth.status().toString();
    synth_ = new TextSynthesizer(std::move(synth).value());
  }
  static void TearDownTestSuite() {
    delete synth_;
    delete tokenizer_;
  }

  static std::vector<model::TokenId> tokens(std::string_view text) {
    auto ids = tokenizer_->encode(text, {.add_bos = false});
    EXPECT_TRUE(ids.isOk());
    return ids.isOk() ? *ids : std::vector<model::TokenId>{};
  }
  static size_t commonPrefix(const std::vector<model::TokenId>& a,
                             const std::vector<model::TokenId>& b) {
    return static_cast<size_t>(std::ranges::mismatch(a, b).in1 - a.begin());
  }

  static inline model::Tokenizer* tokenizer_ = nullptr;
  static inline TextSynthesizer* synth_ = nullptr;
};

TEST_F(TextSynthTest, SingleTokenWordsSufficeForStories260K) {
  EXPECT_GE(synth_->singleTokenWords(), TextSynthesizer::kMinSingleTokenWords);
  EXPECT_EQ(synth_->words().size(), synth_->singleTokenWords());
  for (const Word& w : synth_->words()) EXPECT_EQ(tokens(w.text).size(), 1u) << w.text;
}

TEST_F(TextSynthTest, ExactTokenCounts) {
  Rng rng(11);
  for (uint32_t n : {1u, 2u, 3u, 7u, 64u, 511u, 512u, 513u, 3000u}) {
    const std::string text = synth_->text(rng, n);
    EXPECT_EQ(tokens(text).size(), n) << text.substr(0, 80);
    EXPECT_TRUE(synth_->verify(text, n).isOk());
    EXPECT_FALSE(synth_->verify(text, n + 1).isOk());
    // With BOS, as the server encodes it, one more.
    auto with_bos = tokenizer_->encode(text, {.add_bos = true});
    ASSERT_TRUE(with_bos.isOk());
    EXPECT_EQ(with_bos->size(), n + 1);
  }
  // Texts concatenate with one space, counts add.
  const std::string a = synth_->text(rng, 40);
  const std::string b = synth_->text(rng, 25);
  EXPECT_EQ(tokens(a + " " + b).size(), 65u);
}

TEST_F(TextSynthTest, RandomDatasetLengthsAndDeterminism) {
  DatasetOptions o;
  o.seed = 5;
  o.num_prompts = 40;
  o.input_len = 100;
  o.output_len = 20;
  o.range_ratio = 0.5;
  auto w = buildWorkload(o, *synth_);
  ASSERT_TRUE(w.isOk()) << w.status().toString();
  ASSERT_EQ(w->requests(), 40u);
  bool varied = false;
  for (const Conversation& c : w->conversations) {
    const Turn& t = c.turns.at(0);
    EXPECT_GE(t.prompt_tokens, 50u);
    EXPECT_LE(t.prompt_tokens, 150u);
    EXPECT_GE(t.max_tokens, 10u);
    EXPECT_LE(t.max_tokens, 30u);
    EXPECT_EQ(tokens(t.prompt).size(), t.prompt_tokens);
    varied |= t.prompt_tokens != 100;
  }
  EXPECT_TRUE(varied);
  auto again = buildWorkload(o, *synth_);
  ASSERT_TRUE(again.isOk());
  EXPECT_EQ(again->conversations[7].turns[0].prompt, w->conversations[7].turns[0].prompt);
  o.seed = 6;
  auto other = buildWorkload(o, *synth_);
  ASSERT_TRUE(other.isOk());
  EXPECT_NE(other->conversations[7].turns[0].prompt, w->conversations[7].turns[0].prompt);
}

TEST_F(TextSynthTest, SharedPrefixGroupsShareExactlyThePrefix) {
  DatasetOptions o;
  o.kind = DatasetKind::kSharedPrefix;
  o.num_groups = 3;
  o.prompts_per_group = 5;
  o.prefix_len = 200;
  o.suffix_len = 30;
  auto w = buildWorkload(o, *synth_);
  ASSERT_TRUE(w.isOk()) << w.status().toString();
  ASSERT_EQ(w->requests(), 15u);
  std::map<std::vector<model::TokenId>, std::vector<std::vector<model::TokenId>>> groups;
  std::vector<std::vector<model::TokenId>> order;  // each prompt's prefix, in sending order
  for (const Conversation& c : w->conversations) {
    std::vector<model::TokenId> ids = tokens(c.turns[0].prompt);
    ASSERT_EQ(ids.size(), 230u);
    order.emplace_back(ids.begin(), ids.begin() + 200);
    groups[order.back()].push_back(ids);
  }
  ASSERT_EQ(groups.size(), 3u);  // three distinct 200-token prefixes, five prompts each
  std::vector<std::vector<model::TokenId>> firsts;
  for (const auto& [prefix, members] : groups) {
    EXPECT_EQ(members.size(), 5u);
    for (size_t i = 1; i < members.size(); ++i) {
      // Equal through the prefix; the 30-token questions are different text.
      EXPECT_GE(commonPrefix(members[0], members[i]), 200u);
      EXPECT_NE(members[0], members[i]);
    }
    firsts.push_back(members[0]);
  }
  EXPECT_LT(commonPrefix(firsts[0], firsts[1]), 200u);
  EXPECT_LT(commonPrefix(firsts[1], firsts[2]), 200u);
  // The order is shuffled, not group after group.
  int switches = 0;
  for (size_t i = 1; i < order.size(); ++i) switches += order[i] != order[i - 1];
  EXPECT_GT(switches, 2);
  o.num_prompts = 4;
  auto truncated = buildWorkload(o, *synth_);
  ASSERT_TRUE(truncated.isOk());
  EXPECT_EQ(truncated->requests(), 4u);
}

TEST_F(TextSynthTest, TraceRequestsShareExactlyTheirCommonLeadingBlocks) {
  auto records = readMooncakeTrace(kTrace, 30);
  ASSERT_TRUE(records.isOk()) << records.status().toString();
  ASSERT_EQ(records->size(), 30u);
  std::vector<std::vector<model::TokenId>> prompts;
  for (size_t i = 0; i < records->size(); ++i) {
    const Turn turn = traceTurn(*synth_, 1, (*records)[i], i, 512);
    EXPECT_EQ(turn.prompt_tokens, (*records)[i].input_length);
    EXPECT_EQ(turn.max_tokens, std::max<uint32_t>((*records)[i].output_length, 1));
    prompts.push_back(tokens(turn.prompt));
    ASSERT_EQ(prompts.back().size(), (*records)[i].input_length) << "request " << i;
  }
  int sharing_pairs = 0;
  for (size_t a = 0; a < prompts.size(); ++a) {
    for (size_t b = a + 1; b < prompts.size(); ++b) {
      const auto& ha = (*records)[a].hash_ids;
      const auto& hb = (*records)[b].hash_ids;
      const size_t k = static_cast<size_t>(std::ranges::mismatch(ha, hb).in1 - ha.begin());
      const size_t shared = std::min({k * 512, prompts[a].size(), prompts[b].size()});
      const size_t common = commonPrefix(prompts[a], prompts[b]);
      EXPECT_GE(common, shared) << a << " vs " << b;
      if (k < ha.size() && k < hb.size()) {
        // Block k has different ids: its text differs, within that block.
        const size_t block_end = std::min({(k + 1) * 512, prompts[a].size(), prompts[b].size()});
        EXPECT_LT(common, block_end) << a << " vs " << b;
      }
      sharing_pairs += k > 0;
    }
  }
  EXPECT_GT(sharing_pairs, 10);  // the slice does share prefixes (hash id 0 and more)

  // Equal ids give equal text whatever the request; a trimmed block is a prefix of the full one.
  const std::string full = traceBlockText(*synth_, 1, 77, 512);
  const std::string cut = traceBlockText(*synth_, 1, 77, 100);
  EXPECT_EQ(full.substr(0, cut.size()), cut);
  EXPECT_EQ(traceBlockText(*synth_, 1, 77, 512), full);
  EXPECT_NE(traceBlockText(*synth_, 2, 77, 512), full);  // the seed is part of the function
}

TEST_F(TextSynthTest, TracePaddingWhenBlocksAreSmallerThanThePrompt) {
  TraceRecord r{0, 100, 5, {1, 2}};
  const Turn turn = traceTurn(*synth_, 1, r, 0, 16);  // 2 blocks of 16 + 68 padding tokens
  EXPECT_EQ(tokens(turn.prompt).size(), 100u);
  const Turn other = traceTurn(*synth_, 1, r, 1, 16);  // same ids, another request
  EXPECT_GE(commonPrefix(tokens(turn.prompt), tokens(other.prompt)), 32u);
  EXPECT_NE(turn.prompt, other.prompt);  // padding is the request's own
}

TEST_F(TextSynthTest, MultiTurnAndWarmupWorkloads) {
  DatasetOptions o;
  o.kind = DatasetKind::kMultiTurn;
  o.num_sessions = 3;
  o.turns = 4;
  o.input_len = 20;
  o.output_len = 8;
  auto w = buildWorkload(o, *synth_);
  ASSERT_TRUE(w.isOk());
  ASSERT_EQ(w->conversations.size(), 3u);
  EXPECT_EQ(w->requests(), 12u);
  for (const Conversation& c : w->conversations) {
    for (const Turn& t : c.turns) EXPECT_EQ(tokens(t.prompt).size(), 20u);
  }
  auto warm = warmupWorkload(5, *w, o.seed, *synth_);
  ASSERT_TRUE(warm.isOk());
  ASSERT_EQ(warm->requests(), 5u);
  EXPECT_EQ(warm->conversations[0].turns[0].prompt_tokens, 20u);
  EXPECT_NE(warm->conversations[0].turns[0].prompt, w->conversations[0].turns[0].prompt);
}

TEST(TraceReaderTest, ReadsAndValidates) {
  auto records = readMooncakeTrace(kTrace, 3);
  ASSERT_TRUE(records.isOk());
  EXPECT_EQ((*records)[0].input_length, 6758u);
  EXPECT_EQ((*records)[0].output_length, 500u);
  EXPECT_EQ((*records)[0].hash_ids.size(), 14u);
  EXPECT_EQ((*records)[1].hash_ids[0], 0u);
  EXPECT_EQ((*records)[1].hash_ids[1], 14u);
  EXPECT_FALSE(readMooncakeTrace("/nonexistent.jsonl").isOk());
}

model::Vocabulary tinyVocabulary() {
  model::Vocabulary v;
  v.model = "llama";
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  v.add_bos = true;
  v.add_space_prefix = true;
  return v;
}

void addToken(model::Vocabulary& v, std::string text, float score, model::TokenType type) {
  v.tokens.push_back(std::move(text));
  v.scores.push_back(score);
  v.types.push_back(type);
}

void addSpecialAndBytes(model::Vocabulary& v) {
  addToken(v, "<unk>", 0, model::TokenType::kUnknown);
  addToken(v, "<s>", 0, model::TokenType::kControl);
  addToken(v, "</s>", 0, model::TokenType::kControl);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    addToken(v, name, 0, model::TokenType::kByte);
  }
}

// A piece that spans a space breaks "counts add up": here "w▁z" forms whenever w precedes z (▁z
// outranks ▁w), which no single word in context shows. Such a tokenizer is refused when the word
// list is built or at the latest when the prompts are verified; it is never silently used.
TEST(TextSynthFallbackTest, AMergeAcrossSpacesIsRefused) {
  model::Vocabulary v = tinyVocabulary();
  addSpecialAndBytes(v);
  addToken(v, "\xe2\x96\x81x", 1, model::TokenType::kNormal);
  addToken(v, "\xe2\x96\x81y", 1, model::TokenType::kNormal);
  addToken(v, "\xe2\x96\x81w", 1, model::TokenType::kNormal);
  addToken(v, "\xe2\x96\x81z", 2, model::TokenType::kNormal);
  addToken(v, "w\xe2\x96\x81z", 5, model::TokenType::kNormal);
  auto tokenizer = model::makeTokenizer(std::move(v));
  ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
  auto synth = TextSynthesizer::create(**tokenizer);
  if (!synth.isOk()) {
    EXPECT_NE(synth.status().message().find("not possible"), std::string::npos);
    return;
  }
  DatasetOptions o;
  o.num_prompts = 20;
  o.input_len = 50;
  auto w = buildWorkload(o, *synth);
  ASSERT_FALSE(w.isOk());
  EXPECT_NE(w.status().message().find("does not hold"), std::string::npos) << w.status().toString();
}

// A vocabulary with only three single-token words: words of several tokens fill in, and lengths
// stay exact.
TEST(TextSynthFallbackTest, MultiTokenWordsOnATinyVocabulary) {
  model::Vocabulary v = tinyVocabulary();
  addSpecialAndBytes(v);
  addToken(v, "\xe2\x96\x81", -1, model::TokenType::kNormal);
  for (char c = 'a'; c <= 'z'; ++c) addToken(v, std::string(1, c), -2, model::TokenType::kNormal);
  for (const char* word : {"\xe2\x96\x81x", "\xe2\x96\x81y", "\xe2\x96\x81z"}) {
    addToken(v, word, 1, model::TokenType::kNormal);
  }
  addToken(v, "do", 2, model::TokenType::kNormal);
  addToken(v, "dog", 3, model::TokenType::kNormal);
  addToken(v, "ca", 2, model::TokenType::kNormal);
  addToken(v, "cat", 3, model::TokenType::kNormal);
  auto tokenizer = model::makeTokenizer(std::move(v));
  ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
  auto synth = TextSynthesizer::create(**tokenizer);
  ASSERT_TRUE(synth.isOk()) << synth.status().toString();
  EXPECT_EQ(synth->singleTokenWords(), 3u);
  EXPECT_GT(synth->words().size(), 3u);
  bool multi = false;
  for (const Word& w : synth->words()) multi |= w.tokens > 1;
  EXPECT_TRUE(multi);
  Rng rng(3);
  for (uint32_t n = 1; n <= 60; ++n) {
    const std::string text = synth->text(rng, n);
    EXPECT_TRUE(synth->verify(text, n).isOk()) << n << ": " << text;
  }
}

// Byte-level BPE (Llama 3 and Qwen3 tokenizer.json, Llama 3 GGUF): the first word of a text is
// "word", the others "Ġword", and lengths stay exact.
TEST(TextSynthBpeTest, ExactLengthsUnderByteLevelBpe) {
  const std::string data = std::string(KVFERRY_SOURCE_DIR) + "/tests/data/tokenizers/";
  for (const std::string& path : {data + "llama3", data + "qwen3/tokenizer.json",
                                  data + "llama.cpp/ggml-vocab-llama-bpe.gguf"}) {
    auto tokenizer = model::loadTokenizer(path);
    ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
    auto synth = TextSynthesizer::create(**tokenizer);
    ASSERT_TRUE(synth.isOk()) << path << ": " << synth.status().toString();
    EXPECT_GE(synth->singleTokenWords(), 10000u) << path;
    EXPECT_EQ(synth->words().size(), synth->singleTokenWords()) << path;
    Rng rng(11);
    for (uint32_t n : {1u, 2u, 3u, 17u, 128u, 1000u}) {
      const std::string text = synth->text(rng, n);
      EXPECT_TRUE(synth->verify(text, n).isOk()) << path << ": " << n << ": " << text;
    }
    DatasetOptions o;
    o.num_prompts = 20;
    o.input_len = 300;
    o.range_ratio = 0.5;
    auto w = buildWorkload(o, *synth);
    ASSERT_TRUE(w.isOk()) << path << ": " << w.status().toString();
  }
}

}  // namespace
}  // namespace kvferry::bench
