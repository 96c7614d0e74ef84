#include "node_agent/engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "model/tokenizer.h"
#include "node_agent/engine/cpu/cpu_model_runner.h"
#include "node_agent/engine/generate.h"
#include "tests/node_agent/engine/engine_test_util.h"

namespace kvferry::engine {
namespace {

using model::TokenId;
using testing::continueGreedy;
using testing::expectSameRun;
using testing::GreedyRun;
using testing::greedyRun;
using testing::kOnceGolden;
using testing::kZooGolden;
using testing::makeEngine;
using testing::randomModel;
using testing::randomTokens;
using testing::sameBits;
using testing::smallConfig;
using testing::tinyParams;

class StoriesEngineTest : public ::testing::TestWithParam<EngineConfig> {
 protected:
  static void SetUpTestSuite() {
    Result<model::GgufFile> file = model::GgufFile::open(testing::storiesPath());
    ASSERT_TRUE(file.isOk()) << file.status().toString();
    Result<std::unique_ptr<model::Tokenizer>> tokenizer = model::makeTokenizer(*file);
    ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
    tokenizer_ = std::move(tokenizer).value().release();
    Result<std::shared_ptr<const LlamaWeights>> weights = LlamaWeights::load(*file);
    ASSERT_TRUE(weights.isOk()) << weights.status().toString();
    weights_ = new std::shared_ptr<const LlamaWeights>(std::move(weights).value());
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete weights_;
    tokenizer_ = nullptr;
    weights_ = nullptr;
  }

  static model::Tokenizer* tokenizer_;
  static std::shared_ptr<const LlamaWeights>* weights_;
};
model::Tokenizer* StoriesEngineTest::tokenizer_ = nullptr;
std::shared_ptr<const LlamaWeights>* StoriesEngineTest::weights_ = nullptr;

// The whole runtime against an independent implementation: a real trained model must continue
// both prompts exactly as llama2.c does, token for token, whatever the block size, chunking and
// thread count.
TEST_P(StoriesEngineTest, GreedyDecodeReproducesTheProvenanceGoldens) {
  std::unique_ptr<Engine> engine = makeEngine(*weights_, GetParam());
  ASSERT_NE(engine, nullptr);
  for (const auto& [prompt, golden] :
       {std::pair{"Once upon a time", &kOnceGolden}, std::pair{"Zoo", &kZooGolden}}) {
    Result<std::vector<TokenId>> ids = tokenizer_->encode(prompt, {.add_bos = true});
    ASSERT_TRUE(ids.isOk()) << ids.status().toString();
    ASSERT_TRUE(std::equal(ids->begin(), ids->end(), golden->begin())) << prompt;
    GenerateOptions options;  // greedy, no stop token: run.c's -n 64 ran to the end
    options.max_new_tokens = static_cast<uint32_t>(golden->size() - ids->size());
    Result<GenerateResult> result = generate(*engine, *ids, options);
    ASSERT_TRUE(result.isOk()) << result.status().toString();
    std::vector<TokenId> all = *ids;
    all.insert(all.end(), result->tokens.begin(), result->tokens.end());
    EXPECT_EQ(all, *golden) << prompt;
    EXPECT_EQ(result->finish_reason, FinishReason::kLength);
  }
  EXPECT_EQ(engine->sequenceCount(), 0u);
  EXPECT_EQ(engine->blocks().usedBlocks(), 0u);
}

EngineConfig storiesConfig(uint32_t block_tokens, uint32_t max_batch_tokens, uint32_t threads) {
  EngineConfig config;
  config.block_tokens = block_tokens;
  config.num_blocks = 128;
  config.max_batch_tokens = max_batch_tokens;
  config.threads = threads;
  return config;
}

INSTANTIATE_TEST_SUITE_P(Configs, StoriesEngineTest,
                         ::testing::Values(storiesConfig(16, 256, 2), storiesConfig(5, 3, 1),
                                           storiesConfig(1, 64, 3)),
                         [](const ::testing::TestParamInfo<EngineConfig>& param_info) {
                           const EngineConfig& c = param_info.param;
                           return "Block" + std::to_string(c.block_tokens) + "Chunk" +
                                  std::to_string(c.max_batch_tokens) + "Threads" +
                                  std::to_string(c.threads);
                         });

// A plain transcription of the llama forward pass (llama2.c's run.c) in double precision,
// reading the GGUF tensors directly: no fused matrices, no paging, no batching, no threads.
class ReferenceLlama {
 public:
  explicit ReferenceLlama(const model::GgufFile& file) {
    p_ = *model::readLlamaParams(file);
    const model::LlamaTensors t = *model::findLlamaTensors(file, p_);
    embd_ = load(t.token_embd);
    out_norm_ = load(t.output_norm);
    out_ = load(t.output);
    for (const model::LlamaLayerTensors& l : t.layers) {
      layers_.push_back({load(l.attn_norm), load(l.attn_q), load(l.attn_k), load(l.attn_v),
                         load(l.attn_output), load(l.ffn_norm), load(l.ffn_gate), load(l.ffn_up),
                         load(l.ffn_down)});
    }
    keys_.resize(p_.block_count);
    values_.resize(p_.block_count);
  }

  // Feeds `token` at the next position and returns the logits.
  std::vector<double> next(TokenId token) {
    const size_t dim = p_.embedding_length, hd = p_.headDim(), kv_dim = p_.kvDim();
    const size_t ff = p_.feed_forward_length, pos = position_++;
    std::vector<double> x(embd_.begin() + token * dim, embd_.begin() + (token + 1) * dim);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& w = layers_[l];
      std::vector<double> xb = norm(x, w.attn_norm);
      std::vector<double> q = matvec(w.wq, xb, dim), k = matvec(w.wk, xb, kv_dim);
      rope(q, pos);
      rope(k, pos);
      keys_[l].push_back(k);
      values_[l].push_back(matvec(w.wv, xb, kv_dim));
      std::vector<double> attn(dim, 0.0);
      for (size_t h = 0; h < p_.head_count; ++h) {
        const size_t kvh = h / p_.queryGroupSize();
        std::vector<double> scores(pos + 1);
        double max = -1e300;
        for (size_t t = 0; t <= pos; ++t) {
          double s = 0;
          for (size_t i = 0; i < hd; ++i) s += q[h * hd + i] * keys_[l][t][kvh * hd + i];
          scores[t] = s / std::sqrt(static_cast<double>(hd));
          max = std::max(max, scores[t]);
        }
        double sum = 0;
        for (double& s : scores) sum += (s = std::exp(s - max));
        for (size_t t = 0; t <= pos; ++t) {
          for (size_t i = 0; i < hd; ++i) {
            attn[h * hd + i] += scores[t] / sum * values_[l][t][kvh * hd + i];
          }
        }
      }
      const std::vector<double> o = matvec(w.wo, attn, dim);
      for (size_t i = 0; i < dim; ++i) x[i] += o[i];
      xb = norm(x, w.ffn_norm);
      const std::vector<double> g = matvec(w.gate, xb, ff), u = matvec(w.up, xb, ff);
      std::vector<double> hidden(ff);
      for (size_t i = 0; i < ff; ++i) hidden[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const std::vector<double> d = matvec(w.down, hidden, dim);
      for (size_t i = 0; i < dim; ++i) x[i] += d[i];
    }
    return matvec(out_, norm(x, out_norm_), p_.vocab_size);
  }

 private:
  struct Layer {
    std::vector<double> attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down;
  };

  static std::vector<double> load(const model::GgufTensor* tensor) {
    const std::vector<float> values = *model::tensorToFloat(*tensor);
    return {values.begin(), values.end()};
  }
  // W has `rows` rows of x.size() elements (GGUF {in, out}: one row per output).
  static std::vector<double> matvec(const std::vector<double>& w, const std::vector<double>& x,
                                    size_t rows) {
    std::vector<double> y(rows, 0.0);
    for (size_t r = 0; r < rows; ++r) {
      for (size_t i = 0; i < x.size(); ++i) y[r] += w[r * x.size() + i] * x[i];
    }
    return y;
  }
  std::vector<double> norm(const std::vector<double>& x, const std::vector<double>& w) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + p_.rms_epsilon);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = w[i] * x[i] * scale;
    return out;
  }
  // llama.cpp's "normal" mode: adjacent pairs of the first rope_dims elements of each head.
  void rope(std::vector<double>& v, size_t pos) const {
    const size_t hd = p_.headDim();
    for (size_t head = 0; head < v.size() / hd; ++head) {
      for (size_t k = 0; k < p_.rope_dimension_count / 2; ++k) {
        const double theta = static_cast<double>(pos) *
                             std::pow(static_cast<double>(p_.rope_freq_base),
                                      -2.0 * static_cast<double>(k) / p_.rope_dimension_count);
        double& a = v[head * hd + 2 * k];
        double& b = v[head * hd + 2 * k + 1];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(theta) - b0 * std::sin(theta);
        b = a0 * std::sin(theta) + b0 * std::cos(theta);
      }
    }
  }

  model::LlamaParams p_;
  std::vector<double> embd_, out_norm_, out_;
  std::vector<Layer> layers_;
  std::vector<std::vector<std::vector<double>>> keys_, values_;  // [layer][position][kv_dim]
  size_t position_ = 0;
};

// Largest |a - b| relative to the largest |b|.
double relativeError(std::span<const float> a, const std::vector<double>& b) {
  double diff = 0, scale = 1e-12;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

struct ReferenceCase {
  std::string name;
  model::LlamaParams params;
  model::GgmlType type = model::GgmlType::kF32;
  bool tied = false;
};

// gtest prints a failing case by its name rather than its bytes.
void PrintTo(const ReferenceCase& c, std::ostream* os) { *os << c.name; }

class ReferenceTest : public ::testing::TestWithParam<ReferenceCase> {};

// Logits after a prefill and after each decode step agree with the double-precision reference:
// GQA head mapping, partial RoPE, tied output and dequantized weights included.
TEST_P(ReferenceTest, LogitsMatchAPlainDoublePrecisionImplementation) {
  const ReferenceCase& c = GetParam();
  std::unique_ptr<testing::RandomModel> model = randomModel(c.params, 7, c.type, c.tied);
  ASSERT_NE(model, nullptr);
  ReferenceLlama reference(model->file);
  std::unique_ptr<Engine> engine = makeEngine(model->weights, smallConfig(4));
  ASSERT_NE(engine, nullptr);
  const std::vector<TokenId> prompt = randomTokens(11, c.params.vocab_size, 3);
  std::vector<double> expected;
  for (TokenId token : prompt) expected = reference.next(token);
  std::vector<float> logits(engine->vocabSize());
  Result<PrefillResult> prefill = engine->prefill(prompt, logits);
  ASSERT_TRUE(prefill.isOk()) << prefill.status().toString();
  EXPECT_LT(relativeError(logits, expected), 1e-4);
  for (int step = 0; step < 6; ++step) {
    const TokenId token = argmax(logits);
    expected = reference.next(token);
    ASSERT_TRUE(engine->decode({&prefill->id, 1}, {&token, 1}, logits).isOk());
    EXPECT_LT(relativeError(logits, expected), 1e-4) << "step " << step;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ReferenceTest,
                         ::testing::Values(ReferenceCase{"Mha", tinyParams(1, 4, 4)},
                                           ReferenceCase{"Gqa4", tinyParams(2, 8, 2)},
                                           ReferenceCase{"PartialRope", tinyParams(2, 4, 2, 16, 6)},
                                           ReferenceCase{"TiedQ8", testing::q8Params(3, 4, 2),
                                                         model::GgmlType::kQ8_0, true},
                                           ReferenceCase{"F16", tinyParams(1, 2, 1, 32),
                                                         model::GgmlType::kF16}),
                         [](const ::testing::TestParamInfo<ReferenceCase>& param_info) {
                           return param_info.param.name;
                         });

// Splitting a prompt into chunks, or the kernels over threads, changes no bit of any result.
TEST(EngineTest, ChunkingAndThreadsDoNotChangeResults) {
  std::unique_ptr<testing::RandomModel> model = randomModel(tinyParams(2, 4, 2), 11);
  ASSERT_NE(model, nullptr);
  const std::vector<TokenId> prompt = randomTokens(37, 300, 5);
  EngineConfig whole = smallConfig(8);
  EngineConfig chunked = smallConfig(8, 64, 1);
  chunked.max_batch_tokens = 5;
  std::unique_ptr<Engine> a = makeEngine(model->weights, whole);
  std::unique_ptr<Engine> b = makeEngine(model->weights, chunked);
  ASSERT_TRUE(a && b);
  expectSameRun(greedyRun(*a, prompt, 10), greedyRun(*b, prompt, 10));
}

// Continuous batching: sequences of different lengths join and leave between steps; each one's
// tokens and logits are exactly those of the sequence decoded alone.
TEST(EngineTest, BatchedDecodeEqualsSingleSequenceDecodes) {
  std::unique_ptr<testing::RandomModel> model = randomModel(tinyParams(2, 4, 2), 13);
  ASSERT_NE(model, nullptr);
  struct Plan {
    size_t prompt_length;
    uint32_t steps;
    uint32_t join_step;
  };
  const std::vector<Plan> plans = {{1, 12, 0}, {3, 5, 0},   {4, 9, 2},
                                   {9, 7, 3},  {14, 10, 3}, {17, 3, 6}};
  std::vector<std::vector<TokenId>> prompts;
  std::vector<GreedyRun> expected;
  std::unique_ptr<Engine> single = makeEngine(model->weights, smallConfig(4, 128));
  ASSERT_NE(single, nullptr);
  for (size_t i = 0; i < plans.size(); ++i) {
    prompts.push_back(randomTokens(plans[i].prompt_length, 300, 100 + i));
    expected.push_back(greedyRun(*single, prompts.back(), plans[i].steps));
  }

  // Smaller batch cap than the batch: the step is split into several forward passes.
  EngineConfig config = smallConfig(4, 128);
  config.max_batch_tokens = 4;
  std::unique_ptr<Engine> engine = makeEngine(model->weights, config);
  ASSERT_NE(engine, nullptr);
  struct Active {
    size_t plan;
    SequenceId id;
    std::vector<float> logits;
    GreedyRun run;
  };
  std::vector<Active> active;
  std::vector<GreedyRun> actual(plans.size());
  const uint32_t vocab = engine->vocabSize();
  for (uint32_t step = 0; step < 20; ++step) {
    for (size_t i = 0; i < plans.size(); ++i) {
      if (plans[i].join_step != step) continue;
      std::vector<float> logits(vocab);
      Result<PrefillResult> prefill = engine->prefill(prompts[i], logits);
      ASSERT_TRUE(prefill.isOk()) << prefill.status().toString();
      active.push_back({i, prefill->id, logits, {{}, {logits}}});
    }
    // Sequences that have taken all their steps leave.
    for (auto it = active.begin(); it != active.end();) {
      if (it->run.tokens.size() == plans[it->plan].steps) {
        ASSERT_TRUE(engine->release(it->id).isOk());
        actual[it->plan] = std::move(it->run);
        it = active.erase(it);
      } else {
        ++it;
      }
    }
    if (active.empty()) continue;
    std::vector<SequenceId> ids;
    std::vector<TokenId> tokens;
    for (Active& a : active) {
      ids.push_back(a.id);
      tokens.push_back(argmax(a.logits));
      a.run.tokens.push_back(tokens.back());
    }
    std::vector<float> logits(ids.size() * vocab);
    ASSERT_TRUE(engine->decode(ids, tokens, logits).isOk());
    for (size_t i = 0; i < active.size(); ++i) {
      active[i].logits.assign(logits.begin() + i * vocab, logits.begin() + (i + 1) * vocab);
      active[i].run.logits.push_back(active[i].logits);
    }
  }
  ASSERT_TRUE(active.empty());
  for (size_t i = 0; i < plans.size(); ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    expectSameRun(expected[i], actual[i]);
  }
  EXPECT_EQ(engine->blocks().usedBlocks(), 0u);
}

class PrefixCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = randomModel(tinyParams(2, 4, 2), 17);
    ASSERT_NE(model_, nullptr);
  }
  std::unique_ptr<testing::RandomModel> model_;
};

// A prompt sharing a prefix with a live sequence takes its full blocks (counted, shared, with
// two references) and computes only the rest, with results identical to a cold engine's.
TEST_F(PrefixCacheTest, SharedPrefixReusesBlocksAndMatchesAColdRun) {
  std::unique_ptr<Engine> warm = makeEngine(model_->weights, smallConfig(4));
  EngineConfig cold_config = smallConfig(4);
  cold_config.prefix_caching = false;
  std::unique_ptr<Engine> cold = makeEngine(model_->weights, cold_config);
  ASSERT_TRUE(warm && cold);

  const std::vector<TokenId> first = randomTokens(18, 300, 1);
  std::vector<TokenId> second(first.begin(), first.begin() + 10);
  for (TokenId t : randomTokens(7, 300, 2)) second.push_back(t);

  std::vector<float> logits(warm->vocabSize());
  Result<PrefillResult> a = warm->prefill(first, logits);
  ASSERT_TRUE(a.isOk());
  EXPECT_EQ(a->cached_tokens, 0u);
  EXPECT_EQ(warm->blocks().usedBlocks(), 5u);  // ceil(18 / 4)
  EXPECT_EQ(warm->blocks().cachedBlocks(), 4u);

  Result<PrefillResult> b = warm->prefill(second, logits);
  ASSERT_TRUE(b.isOk());
  EXPECT_EQ(b->cached_tokens, 8u);             // the two full blocks of the 10 shared tokens
  EXPECT_EQ(warm->blocks().usedBlocks(), 8u);  // 5 + ceil(17 / 4) - 2
  const SequenceView va = *warm->sequence(a->id);
  const SequenceView vb = *warm->sequence(b->id);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(va.block_ids[i], vb.block_ids[i]);
    EXPECT_EQ(warm->blocks().refCount(vb.block_ids[i]), 2u);
  }
  EXPECT_NE(va.block_ids[2], vb.block_ids[2]);

  const GreedyRun warm_run = continueGreedy(*warm, b->id, logits, 9);
  expectSameRun(greedyRun(*cold, second, 9), warm_run);
  EXPECT_EQ(cold->blocks().cachedBlocks(), 0u);

  ASSERT_TRUE(warm->release(a->id).isOk());
  ASSERT_TRUE(warm->release(b->id).isOk());
  EXPECT_EQ(warm->blocks().usedBlocks(), 0u);
  EXPECT_EQ(warm->blocks().evictableBlocks(), warm->blocks().cachedBlocks());
}

// The same prompt again, released meanwhile: all but its last block come from the cache (the
// last token must be computed for its logits), and the results are bit-identical.
TEST_F(PrefixCacheTest, RepeatedPromptRecomputesOnlyTheLastBlock) {
  std::unique_ptr<Engine> engine = makeEngine(model_->weights, smallConfig(4));
  ASSERT_NE(engine, nullptr);
  for (size_t length : {16u, 15u}) {
    const std::vector<TokenId> prompt = randomTokens(length, 300, 40 + length);
    std::vector<float> first_logits(engine->vocabSize());
    Result<PrefillResult> first = engine->prefill(prompt, first_logits);
    ASSERT_TRUE(first.isOk());
    const GreedyRun first_run = continueGreedy(*engine, first->id, first_logits, 6);
    ASSERT_TRUE(engine->release(first->id).isOk());

    std::vector<float> logits(engine->vocabSize());
    Result<PrefillResult> again = engine->prefill(prompt, logits);
    ASSERT_TRUE(again.isOk());
    EXPECT_EQ(again->cached_tokens, 12u) << length;
    expectSameRun(first_run, continueGreedy(*engine, again->id, logits, 6));
    ASSERT_TRUE(engine->release(again->id).isOk());
  }
  EXPECT_EQ(engine->blocks().usedBlocks(), 0u);
}

// Released prompts stay cached until blocks run out; then the least recently released go first.
TEST_F(PrefixCacheTest, EvictionTakesTheLeastRecentlyReleasedBlocks) {
  std::unique_ptr<Engine> engine = makeEngine(model_->weights, smallConfig(4, 6));
  ASSERT_NE(engine, nullptr);
  const model::BlockHashSeed seed{};
  std::vector<std::vector<TokenId>> prompts;
  std::vector<std::vector<uint64_t>> hashes;
  std::vector<float> logits(engine->vocabSize());
  for (uint64_t i = 0; i < 3; ++i) {
    prompts.push_back(randomTokens(8, 300, 60 + i));  // two full blocks each
    hashes.push_back(*model::blockHashes(seed, prompts.back(), 4));
    Result<PrefillResult> r = engine->prefill(prompts.back(), logits);
    ASSERT_TRUE(r.isOk());
    ASSERT_TRUE(engine->release(r->id).isOk());
  }
  EXPECT_EQ(engine->blocks().evictableBlocks(), 6u);
  EXPECT_EQ(engine->blocks().freeBlocks(), 0u);

  // A new 5-token prompt needs two blocks: prompt 0's, its tail block first.
  Result<PrefillResult> d = engine->prefill(randomTokens(5, 300, 70), logits);
  ASSERT_TRUE(d.isOk());
  EXPECT_FALSE(engine->blocks().isCached(hashes[0][0]));
  EXPECT_FALSE(engine->blocks().isCached(hashes[0][1]));
  for (size_t i = 1; i < 3; ++i) {
    EXPECT_TRUE(engine->blocks().isCached(hashes[i][0]));
    EXPECT_TRUE(engine->blocks().isCached(hashes[i][1]));
  }
  // One more block: prompt 1's tail, which leaves its head reusable.
  Result<PrefillResult> e = engine->prefill(randomTokens(3, 300, 71), logits);
  ASSERT_TRUE(e.isOk());
  EXPECT_FALSE(engine->blocks().isCached(hashes[1][1]));
  EXPECT_TRUE(engine->blocks().isCached(hashes[1][0]));
  ASSERT_TRUE(engine->release(d->id).isOk());
  ASSERT_TRUE(engine->release(e->id).isOk());
  Result<PrefillResult> again = engine->prefill(prompts[1], logits);
  ASSERT_TRUE(again.isOk());
  EXPECT_EQ(again->cached_tokens, 4u);
  ASSERT_TRUE(engine->release(again->id).isOk());
  EXPECT_EQ(engine->blocks().usedBlocks(), 0u);
}

// A random mix of prefills with shared prefixes, decode steps, imports and releases: every block
// is free or evictable once the last sequence is gone, and none is referenced.
TEST_F(PrefixCacheTest, ReferenceCountsNeverLeak) {
  std::unique_ptr<Engine> engine = makeEngine(model_->weights, smallConfig(3, 40));
  ASSERT_NE(engine, nullptr);
  const std::vector<TokenId> base = randomTokens(12, 300, 80);
  std::vector<SequenceId> live;
  std::vector<float> logits(engine->vocabSize());
  uint64_t state = 1;
  const auto next = [&](uint64_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % n;
  };
  for (int op = 0; op < 200; ++op) {
    const uint64_t what = next(4);
    if (what == 0 || live.empty()) {
      std::vector<TokenId> prompt(base.begin(), base.begin() + static_cast<long>(next(12)));
      for (TokenId t : randomTokens(1 + next(6), 300, op)) prompt.push_back(t);
      Result<PrefillResult> r = engine->prefill(prompt, logits);
      if (r.isOk()) {
        live.push_back(r->id);
      } else {
        EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
      }
    } else if (what == 1) {
      const std::vector<TokenId> tokens = randomTokens(2 + next(8), 300, 1000 + op);
      Result<ImportReservation> r = engine->reserveImport(tokens);
      if (r.isOk()) {
        if (next(2) == 0) {
          EXPECT_TRUE(engine->commitImport(r->id).isOk());
          live.push_back(r->id);
        } else {
          EXPECT_TRUE(engine->release(r->id).isOk());  // an abandoned transfer
        }
      }
    } else if (what == 2) {
      const size_t i = next(live.size());
      const TokenId token = static_cast<TokenId>(3 + next(290));
      std::vector<float> row(engine->vocabSize());
      const Status s = engine->decode({&live[i], 1}, {&token, 1}, row);
      EXPECT_TRUE(s.isOk() || s.code() == StatusCode::kResourceExhausted) << s.toString();
    } else {
      const size_t i = next(live.size());
      EXPECT_TRUE(engine->release(live[i]).isOk());
      live.erase(live.begin() + static_cast<long>(i));
    }
  }
  for (SequenceId id : live) EXPECT_TRUE(engine->release(id).isOk());
  const KvBlockManager& blocks = engine->blocks();
  EXPECT_EQ(blocks.usedBlocks(), 0u);
  EXPECT_EQ(blocks.availableBlocks(), blocks.numBlocks());
  for (uint32_t b = 0; b < blocks.numBlocks(); ++b) EXPECT_EQ(blocks.refCount(b), 0u) << b;
}

TEST(EngineTest, RejectsBadRequestsWithoutChangingState) {
  std::unique_ptr<testing::RandomModel> model = randomModel(tinyParams(1, 2, 1), 19);
  ASSERT_NE(model, nullptr);
  std::unique_ptr<Engine> engine = makeEngine(model->weights, smallConfig(4, 4));
  ASSERT_NE(engine, nullptr);
  std::vector<float> logits(engine->vocabSize());
  const auto code = [](const auto& result) { return result.status().code(); };

  EXPECT_EQ(code(engine->prefill({}, logits)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(engine->prefill(std::vector<TokenId>{1, 300}, logits)),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code(engine->prefill(std::vector<TokenId>{1, -1}, logits)),
            StatusCode::kInvalidArgument);
  std::vector<float> short_logits(10);
  EXPECT_EQ(code(engine->prefill(std::vector<TokenId>{1}, short_logits)),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->maxSequenceTokens(), 16u);  // 4 blocks of 4 tokens
  EXPECT_EQ(code(engine->prefill(randomTokens(17, 300, 1), logits)), StatusCode::kOutOfRange);

  Result<PrefillResult> a = engine->prefill(randomTokens(10, 300, 2), logits);
  ASSERT_TRUE(a.isOk());
  EXPECT_EQ(code(engine->prefill(randomTokens(9, 300, 3), logits)),
            StatusCode::kResourceExhausted);  // needs 3 blocks, 1 left
  EXPECT_EQ(engine->blocks().availableBlocks(), 1u);
  EXPECT_EQ(engine->sequenceCount(), 1u);

  const SequenceId unknown = a->id + 100;
  const TokenId token = 5;
  EXPECT_EQ(engine->decode({&unknown, 1}, {&token, 1}, logits).code(), StatusCode::kNotFound);
  const std::vector<SequenceId> twice = {a->id, a->id};
  const std::vector<TokenId> tokens = {5, 6};
  std::vector<float> two(2 * engine->vocabSize());
  EXPECT_EQ(engine->decode(twice, tokens, two).code(), StatusCode::kInvalidArgument);
  const TokenId bad = 400;
  EXPECT_EQ(engine->decode({&a->id, 1}, {&bad, 1}, logits).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->decode({&a->id, 1}, {&token, 1}, two).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->sequence(a->id)->tokens.size(), 10u);
  EXPECT_EQ(engine->release(unknown).code(), StatusCode::kNotFound);
  EXPECT_EQ(engine->commitImport(a->id).code(), StatusCode::kFailedPrecondition);

  // Decode until the cache is full: the step that needs a fifth block is refused.
  Result<ImportReservation> r = engine->reserveImport(std::vector<TokenId>{7, 8});
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(engine->decode({&r->id, 1}, {&token, 1}, logits).code(),
            StatusCode::kFailedPrecondition);  // reserved, not committed
  ASSERT_TRUE(engine->commitImport(r->id).isOk());
  ASSERT_TRUE(engine->decode({&a->id, 1}, {&token, 1}, logits).isOk());
  ASSERT_TRUE(engine->decode({&a->id, 1}, {&token, 1}, logits).isOk());
  EXPECT_EQ(engine->decode({&a->id, 1}, {&token, 1}, logits).code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(engine->sequence(a->id)->tokens.size(), 12u);
  ASSERT_TRUE(engine->release(r->id).isOk());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(engine->decode({&a->id, 1}, {&token, 1}, logits).isOk());
  EXPECT_EQ(code(engine->sequence(a->id)), StatusCode::kOk);
  EXPECT_EQ(engine->decode({&a->id, 1}, {&token, 1}, logits).code(), StatusCode::kOutOfRange);
  ASSERT_TRUE(engine->release(a->id).isOk());
  EXPECT_EQ(engine->blocks().usedBlocks(), 0u);
}

std::set<uint64_t> applyEvents(std::set<uint64_t> cached, std::span<const KvBlockEvent> events) {
  for (const KvBlockEvent& event : events) {
    if (event.kind == KvBlockEvent::Kind::kStored) {
      EXPECT_TRUE(cached.insert(event.hash).second) << event.hash;
    } else {
      EXPECT_EQ(cached.erase(event.hash), 1u) << event.hash;
    }
  }
  return cached;
}

std::set<uint64_t> cachedSet(const Engine& engine) {
  std::vector<uint64_t> hashes;
  engine.cachedBlockHashes(hashes);
  return {hashes.begin(), hashes.end()};
}

// The engine reports its prefix index's changes by block hash: full prompt blocks after a
// prefill, blocks filled by decode, committed imports, and evictions; the events replay to the
// snapshot.
TEST_F(PrefixCacheTest, KvEventsTrackThePrefixIndex) {
  std::unique_ptr<Engine> engine = makeEngine(model_->weights, smallConfig(4, 6));
  ASSERT_NE(engine, nullptr);
  const model::BlockHashSeed seed{};
  std::vector<KvBlockEvent> events;
  std::vector<float> logits(engine->vocabSize());
  using Kind = KvBlockEvent::Kind;

  const std::vector<TokenId> prompt = randomTokens(11, 300, 90);
  std::vector<uint64_t> hashes = *model::blockHashes(seed, prompt, 4);
  Result<PrefillResult> a = engine->prefill(prompt, logits);
  ASSERT_TRUE(a.isOk());
  EXPECT_FALSE(engine->drainKvEvents(events));
  EXPECT_EQ(events,
            (std::vector<KvBlockEvent>{{Kind::kStored, hashes[0]}, {Kind::kStored, hashes[1]}}));
  std::set<uint64_t> copy = applyEvents({}, events);
  // The decode step that fills block 2 publishes it.
  const TokenId token = 5;
  ASSERT_TRUE(engine->decode({&a->id, 1}, {&token, 1}, logits).isOk());
  std::vector<TokenId> grown = prompt;
  grown.push_back(token);
  hashes = *model::blockHashes(seed, grown, 4);
  events.clear();
  EXPECT_FALSE(engine->drainKvEvents(events));
  EXPECT_EQ(events, (std::vector<KvBlockEvent>{{Kind::kStored, hashes[2]}}));
  copy = applyEvents(copy, events);
  EXPECT_EQ(copy, cachedSet(*engine));
  ASSERT_TRUE(engine->release(a->id).isOk());

  // An import joins the index on commit, not on reserve.
  const std::vector<TokenId> imported = randomTokens(8, 300, 91);
  const std::vector<uint64_t> imported_hashes = *model::blockHashes(seed, imported, 4);
  Result<ImportReservation> r = engine->reserveImport(imported);
  ASSERT_TRUE(r.isOk());
  events.clear();
  EXPECT_FALSE(engine->drainKvEvents(events));
  EXPECT_TRUE(events.empty());
  ASSERT_TRUE(engine->commitImport(r->id).isOk());
  EXPECT_FALSE(engine->drainKvEvents(events));
  EXPECT_EQ(events, (std::vector<KvBlockEvent>{{Kind::kStored, imported_hashes[0]},
                                               {Kind::kStored, imported_hashes[1]}}));
  ASSERT_TRUE(engine->release(r->id).isOk());
  copy = applyEvents(copy, events);

  // Five evictable blocks, one free: a 12-token prompt takes the free one and evicts the two
  // least recently released (the first sequence's, last block first), then stores its three.
  events.clear();
  const std::vector<TokenId> third = randomTokens(12, 300, 92);
  const std::vector<uint64_t> third_hashes = *model::blockHashes(seed, third, 4);
  Result<PrefillResult> b = engine->prefill(third, logits);
  ASSERT_TRUE(b.isOk());
  EXPECT_FALSE(engine->drainKvEvents(events));
  EXPECT_EQ(events, (std::vector<KvBlockEvent>{{Kind::kEvicted, hashes[2]},
                                               {Kind::kEvicted, hashes[1]},
                                               {Kind::kStored, third_hashes[0]},
                                               {Kind::kStored, third_hashes[1]},
                                               {Kind::kStored, third_hashes[2]}}));
  copy = applyEvents(copy, events);
  EXPECT_EQ(copy, cachedSet(*engine));
  EXPECT_TRUE(copy.contains(hashes[0]));
  ASSERT_TRUE(engine->release(b->id).isOk());
}

TEST_F(PrefixCacheTest, KvEventOverflowAsksForASnapshot) {
  EngineConfig config = smallConfig(4, 16);
  config.max_pending_kv_events = 2;
  std::unique_ptr<Engine> engine = makeEngine(model_->weights, config);
  EngineConfig uncached_config = smallConfig(4, 16);
  uncached_config.prefix_caching = false;
  std::unique_ptr<Engine> uncached = makeEngine(model_->weights, uncached_config);
  ASSERT_TRUE(engine && uncached);
  const std::vector<TokenId> prompt = randomTokens(13, 300, 93);
  std::vector<float> logits(engine->vocabSize());
  ASSERT_TRUE(engine->prefill(prompt, logits).isOk());  // three full blocks: one too many
  std::vector<KvBlockEvent> events;
  EXPECT_TRUE(engine->drainKvEvents(events));
  const std::vector<uint64_t> hashes = *model::blockHashes(model::BlockHashSeed{}, prompt, 4);
  EXPECT_EQ(cachedSet(*engine), std::set<uint64_t>(hashes.begin(), hashes.end()));
  EXPECT_FALSE(engine->drainKvEvents(events));

  ASSERT_TRUE(uncached->prefill(prompt, logits).isOk());
  events.clear();
  EXPECT_FALSE(uncached->drainKvEvents(events));
  EXPECT_TRUE(events.empty());
  EXPECT_TRUE(cachedSet(*uncached).empty());
}

// What on_layer_done saw: the layer, the block ids, and every layer's K and V pools.
struct LayerCapture {
  uint32_t layer = 0;
  std::vector<uint32_t> block_ids;
  std::vector<std::vector<uint8_t>> keys;    // per layer, the whole pool
  std::vector<std::vector<uint8_t>> values;  // per layer, the whole pool
};

std::vector<uint8_t> poolBytes(const KvPoolRegion& region) {
  const auto* base = static_cast<const uint8_t*>(region.base);
  return {base, base + region.bytes};
}

LayerDoneCallback captureInto(Engine& engine, std::vector<LayerCapture>& captures) {
  return [&engine, &captures](uint32_t layer) {
    LayerCapture capture;
    capture.layer = layer;
    const std::span<const uint32_t> ids = engine.prefillingBlockIds();
    capture.block_ids.assign(ids.begin(), ids.end());
    for (uint32_t l = 0; l < engine.kvGeometry().layers; ++l) {
      capture.keys.push_back(poolBytes(engine.keyPool(l)));
      capture.values.push_back(poolBytes(engine.valuePool(l)));
    }
    captures.push_back(std::move(capture));
  };
}

bool sameBlock(const std::vector<uint8_t>& captured, const KvPoolRegion& pool, uint32_t block,
               uint64_t block_bytes) {
  return std::memcmp(captured.data() + block * block_bytes,
                     static_cast<const uint8_t*>(pool.base) + block * block_bytes,
                     block_bytes) == 0;
}

// At callback L, layer L's K and V of every block of the sequence already hold their final
// bytes. With `later_pending`, the next layer's last block must not yet (a cold prompt on fresh
// pools), which shows the callback fired before that layer ran.
void expectLayersFinalAtCallbacks(Engine& engine, SequenceId id,
                                  const std::vector<LayerCapture>& captures, bool later_pending) {
  const uint32_t layers = engine.kvGeometry().layers;
  const uint64_t block_bytes = engine.kvGeometry().blockBytes();
  const SequenceView view = *engine.sequence(id);
  ASSERT_EQ(captures.size(), layers);
  for (uint32_t l = 0; l < layers; ++l) {
    const LayerCapture& capture = captures[l];
    EXPECT_EQ(capture.layer, l);
    EXPECT_TRUE(std::ranges::equal(capture.block_ids, view.block_ids));
    for (uint32_t block : view.block_ids) {
      EXPECT_TRUE(sameBlock(capture.keys[l], engine.keyPool(l), block, block_bytes))
          << "layer " << l << " block " << block;
      EXPECT_TRUE(sameBlock(capture.values[l], engine.valuePool(l), block, block_bytes))
          << "layer " << l << " block " << block;
    }
    if (later_pending && l + 1 < layers) {
      const uint32_t last = view.block_ids.back();
      EXPECT_FALSE(sameBlock(capture.keys[l + 1], engine.keyPool(l + 1), last, block_bytes));
      EXPECT_FALSE(sameBlock(capture.values[l + 1], engine.valuePool(l + 1), last, block_bytes));
    }
  }
}

// on_layer_done fires once per layer, in order, during the last chunk, each time with that
// layer's KV of the whole prompt final: for one chunk, several, and prefix-cache hits. It
// changes no result.
TEST(EngineTest, LayerDoneFiresWhenEachLayersKvIsFinal) {
  std::unique_ptr<testing::RandomModel> model = randomModel(tinyParams(3, 4, 2), 19);
  ASSERT_NE(model, nullptr);
  EngineConfig config = smallConfig(4, 32);
  config.max_batch_tokens = 8;  // a 21-token prompt takes three forward passes
  std::unique_ptr<Engine> engine = makeEngine(model->weights, config);
  EngineConfig cold_config = config;
  cold_config.prefix_caching = false;
  std::unique_ptr<Engine> cold = makeEngine(model->weights, cold_config);
  ASSERT_TRUE(engine && cold);
  std::vector<float> logits(engine->vocabSize());
  std::vector<float> expected(engine->vocabSize());

  const std::vector<TokenId> long_prompt = randomTokens(21, 300, 100);
  std::vector<TokenId> shared(long_prompt.begin(), long_prompt.begin() + 12);
  for (TokenId t : randomTokens(7, 300, 101)) shared.push_back(t);
  struct Case {
    std::vector<TokenId> prompt;
    uint32_t cached_tokens;
    bool later_pending;
  };
  const std::vector<Case> cases = {
      {long_prompt, 0, true},                 // cold, three chunks, on fresh pools
      {long_prompt, 20, false},               // again: every block cached but the last token's
      {shared, 12, false},                    // a shared prefix, one chunk of 7
      {randomTokens(3, 300, 102), 0, false},  // one partial block
  };
  std::vector<SequenceId> live;
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    const Case& c = cases[i];
    std::vector<LayerCapture> captures;
    Result<PrefillResult> r = engine->prefill(c.prompt, logits, captureInto(*engine, captures));
    ASSERT_TRUE(r.isOk()) << r.status().toString();
    EXPECT_EQ(r->cached_tokens, c.cached_tokens);
    EXPECT_TRUE(engine->prefillingBlockIds().empty());
    expectLayersFinalAtCallbacks(*engine, r->id, captures, c.later_pending);
    Result<PrefillResult> reference = cold->prefill(c.prompt, expected);
    ASSERT_TRUE(reference.isOk());
    EXPECT_TRUE(sameBits(expected, logits));
    ASSERT_TRUE(cold->release(reference->id).isOk());
    live.push_back(r->id);
  }
  for (SequenceId id : live) ASSERT_TRUE(engine->release(id).isOk());
}

// A runner that fails the forward passes it is told to, and otherwise runs the CPU runner: the
// engine's promise that nothing changes on error covers backend failures too. It also records
// the tokens of each pass.
class FailingRunner final : public ModelRunner {
 public:
  explicit FailingRunner(std::unique_ptr<ModelRunner> inner) : inner_(std::move(inner)) {}
  const model::LlamaParams& params() const override { return inner_->params(); }
  const KvGeometry& kvGeometry() const override { return inner_->kvGeometry(); }
  uint32_t maxBatchTokens() const override { return inner_->maxBatchTokens(); }
  uint32_t maxSequenceTokens() const override { return inner_->maxSequenceTokens(); }
  KvPoolRegion keyPool(uint32_t layer) override { return inner_->keyPool(layer); }
  KvPoolRegion valuePool(uint32_t layer) override { return inner_->valuePool(layer); }
  Status forward(std::span<const SequenceChunk> chunks, std::span<float> logits,
                 const LayerDoneCallback& on_layer_done = nullptr) override {
    RETURN_IF_ERROR(pass(chunks));
    return inner_->forward(chunks, logits, on_layer_done);
  }
  Status forwardSampled(std::span<const SequenceChunk> chunks, std::span<const TokenDraw> draws,
                        std::span<model::TokenId> tokens,
                        const LayerDoneCallback& on_layer_done = nullptr) override {
    RETURN_IF_ERROR(pass(chunks));
    return inner_->forwardSampled(chunks, draws, tokens, on_layer_done);
  }
  // The forward pass after `passes` more successful ones fails; -1: none does.
  void failAfter(int passes) { fail_at_ = passes; }
  // The token count of every pass so far.
  const std::vector<size_t>& passTokens() const { return pass_tokens_; }

 private:
  Status pass(std::span<const SequenceChunk> chunks) {
    if (fail_at_ == 0) return internalError("injected failure");
    if (fail_at_ > 0) --fail_at_;
    size_t tokens = 0;
    for (const SequenceChunk& chunk : chunks) tokens += chunk.tokens.size();
    pass_tokens_.push_back(tokens);
    return Status::ok();
  }

  std::unique_ptr<ModelRunner> inner_;
  int fail_at_ = -1;
  std::vector<size_t> pass_tokens_;
};

// An engine over a FailingRunner around the CPU runner (one thread), and that runner.
struct EngineOverFailingRunner {
  std::unique_ptr<Engine> engine;
  FailingRunner* runner = nullptr;
};
EngineOverFailingRunner engineOverFailingRunner(std::shared_ptr<const LlamaWeights> weights,
                                                const EngineConfig& config) {
  Result<std::unique_ptr<cpu::CpuModelRunner>> cpu_runner = cpu::CpuModelRunner::create(
      std::move(weights), {config.block_tokens, config.num_blocks, config.max_batch_tokens, 1});
  if (!cpu_runner.isOk()) {
    ADD_FAILURE() << cpu_runner.status().toString();
    return {};
  }
  auto failing = std::make_unique<FailingRunner>(std::move(cpu_runner).value());
  FailingRunner* runner = failing.get();
  Result<std::unique_ptr<Engine>> created = Engine::create(std::move(failing), config);
  if (!created.isOk()) {
    ADD_FAILURE() << created.status().toString();
    return {};
  }
  return {std::move(created).value(), runner};
}

// A prompt longer than the batch cap is computed in as few passes as the cap allows, of even
// sizes: never a last pass of a few tokens (which costs a whole pass over the weights).
TEST(EngineTest, APromptPastTheBatchCapIsSplitIntoEvenChunks) {
  std::unique_ptr<testing::RandomModel> model = randomModel(tinyParams(1, 2, 1), 37);
  ASSERT_NE(model, nullptr);
  EngineConfig config = smallConfig(4, 32);
  config.max_batch_tokens = 8;
  auto [owned, runner] = engineOverFailingRunner(model->weights, config);
  ASSERT_NE(owned, nullptr);
  Engine& engine = *owned;
  std::unique_ptr<Engine> reference = makeEngine(model->weights, smallConfig(4, 32));
  ASSERT_NE(reference, nullptr);
  std::vector<float> logits(engine.vocabSize());
  std::vector<float> expected(engine.vocabSize());
  std::vector<SequenceId> live;
  struct Case {
    size_t length;
    std::vector<size_t> passes;
  };
  const std::vector<Case> cases = {{17, {6, 6, 5}},  // not 8 + 8 + 1
                                   {16, {8, 8}},
                                   {8, {8}}};
  for (const auto& [length, even] : cases) {
    SCOPED_TRACE("a prompt of " + std::to_string(length));
    const std::vector<TokenId> prompt = randomTokens(length, 300, 200 + length);
    const size_t before = runner->passTokens().size();
    Result<PrefillResult> r = engine.prefill(prompt, logits);
    ASSERT_TRUE(r.isOk()) << r.status().toString();
    const std::vector<size_t> passes(runner->passTokens().begin() + before,
                                     runner->passTokens().end());
    EXPECT_EQ(passes, even);
    Result<PrefillResult> whole = reference->prefill(prompt, expected);
    ASSERT_TRUE(whole.isOk());
    EXPECT_TRUE(sameBits(expected, logits));  // the split changes no result
    live.push_back(r->id);
    ASSERT_TRUE(reference->release(whole->id).isOk());
  }
  for (SequenceId id : live) ASSERT_TRUE(engine.release(id).isOk());
}

TEST(EngineTest, BackendFailuresLeaveNoTrace) {
  std::unique_ptr<testing::RandomModel> model = randomModel(tinyParams(1, 2, 1), 31);
  ASSERT_NE(model, nullptr);
  EngineConfig config = smallConfig(4, 16);
  config.max_batch_tokens = 4;  // a 10-token prompt takes three forward passes
  auto [owned, runner] = engineOverFailingRunner(model->weights, config);
  ASSERT_NE(owned, nullptr);
  Engine& engine = *owned;
  std::unique_ptr<Engine> reference = makeEngine(model->weights, config);
  ASSERT_NE(reference, nullptr);

  const std::vector<TokenId> prompt = randomTokens(10, 300, 4);
  std::vector<float> logits(engine.vocabSize());
  runner->failAfter(2);  // the last chunk of the prefill
  EXPECT_EQ(engine.prefill(prompt, logits).status().code(), StatusCode::kInternal);
  EXPECT_EQ(engine.sequenceCount(), 0u);
  EXPECT_EQ(engine.blocks().usedBlocks(), 0u);
  EXPECT_EQ(engine.blocks().cachedBlocks(), 0u);  // nothing half-computed was published

  runner->failAfter(-1);
  Result<PrefillResult> a = engine.prefill(prompt, logits);
  Result<PrefillResult> b = engine.prefill(randomTokens(8, 300, 5), logits);
  ASSERT_TRUE(a.isOk() && b.isOk());
  const uint32_t used = engine.blocks().usedBlocks();
  // b is at a block boundary, so the step allocates a block for it; the failure must return it.
  const std::vector<SequenceId> ids = {a->id, b->id};
  const std::vector<TokenId> tokens = {7, 8};
  std::vector<float> two(2 * engine.vocabSize());
  runner->failAfter(0);
  EXPECT_EQ(engine.decode(ids, tokens, two).code(), StatusCode::kInternal);
  EXPECT_EQ(engine.blocks().usedBlocks(), used);
  EXPECT_EQ(engine.sequence(a->id)->tokens.size(), 10u);
  EXPECT_EQ(engine.sequence(b->id)->tokens.size(), 8u);

  // The sequence goes on exactly as on an engine that never failed.
  runner->failAfter(-1);
  std::vector<float> expected(engine.vocabSize());
  Result<PrefillResult> r = reference->prefill(prompt, expected);
  ASSERT_TRUE(r.isOk());
  const GreedyRun expected_run = continueGreedy(*reference, r->id, expected, 5);
  ASSERT_TRUE(engine.release(b->id).isOk());
  expectSameRun(expected_run, continueGreedy(engine, a->id, expected_run.logits[0], 5));
  ASSERT_TRUE(engine.release(a->id).isOk());
  EXPECT_EQ(engine.blocks().usedBlocks(), 0u);
}

// A cancel reaches a prefill that is computing between its chunks: it ends CANCELLED with its
// blocks returned and nothing published, and on_layer_done never fired for a stopped prefill
// (it stops at the latest before the last chunk, whose layers report).
TEST(EngineTest, StopRequestedEndsAPrefillBetweenChunks) {
  std::unique_ptr<testing::RandomModel> model = randomModel(tinyParams(2, 2, 1), 41);
  ASSERT_NE(model, nullptr);
  EngineConfig config = smallConfig(4, 16);
  config.max_batch_tokens = 4;  // a 10-token prompt takes three forward passes: 4, 3 and 3
  std::unique_ptr<Engine> engine = makeEngine(model->weights, config);
  ASSERT_NE(engine, nullptr);
  const std::vector<TokenId> prompt = randomTokens(10, 300, 6);
  const int done_before[] = {0, 0, 4, 7};  // tokens computed before chunk 1, 2, 3
  std::vector<float> logits(engine->vocabSize());
  std::vector<KvBlockEvent> events;
  engine->drainKvEvents(events);
  for (int stop_at : {1, 2, 3}) {  // before the first, second, last chunk
    SCOPED_TRACE("stop before chunk " + std::to_string(stop_at));
    int asked = 0;
    int layers_done = 0;
    Result<PrefillResult> r = engine->prefill(
        prompt, logits, [&](uint32_t) { ++layers_done; }, [&] { return ++asked == stop_at; });
    ASSERT_EQ(r.status().code(), StatusCode::kCancelled) << r.status().toString();
    EXPECT_NE(r.status().message().find("stopped after " + std::to_string(done_before[stop_at]) +
                                        " of 10 tokens"),
              std::string::npos)
        << r.status().message();
    EXPECT_EQ(asked, stop_at);
    EXPECT_EQ(layers_done, 0);
    EXPECT_EQ(engine->sequenceCount(), 0u);
    EXPECT_EQ(engine->blocks().usedBlocks(), 0u);
    EXPECT_EQ(engine->blocks().cachedBlocks(), 0u);
    events.clear();
    engine->drainKvEvents(events);
    EXPECT_TRUE(events.empty());
  }
  // Never asked to stop: the whole prompt, asked once per chunk, as without the predicate.
  int asked = 0;
  Result<PrefillResult> r = engine->prefill(prompt, logits, nullptr, [&] {
    ++asked;
    return false;
  });
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(asked, 3);
  EXPECT_EQ(r->cached_tokens, 0u);
  ASSERT_TRUE(engine->release(r->id).isOk());
}

TEST(CpuModelRunnerTest, RejectsMalformedBatchesBeforeWritingAnything) {
  std::unique_ptr<testing::RandomModel> model = randomModel(tinyParams(1, 2, 1), 37);
  ASSERT_NE(model, nullptr);
  Result<std::unique_ptr<cpu::CpuModelRunner>> created = cpu::CpuModelRunner::create(
      model->weights, {.block_tokens = 4, .num_blocks = 4, .max_batch_tokens = 6});
  ASSERT_TRUE(created.isOk());
  cpu::CpuModelRunner& runner = **created;
  EXPECT_EQ(runner.maxSequenceTokens(), 16u);
  const std::vector<TokenId> five = {5, 6, 7, 8, 9};
  const std::vector<uint32_t> table = {0, 1, 4};
  std::vector<float> logits(runner.params().vocab_size);
  const auto code = [&](std::vector<SequenceChunk> chunks, std::span<float> out) {
    return runner.forward(chunks, out).code();
  };
  const std::span<const TokenId> none;
  EXPECT_EQ(code({{none, 0, table, false}}, {}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{five, 0, table, true}, {five, 0, table, true}}, logits),
            StatusCode::kInvalidArgument);  // 10 tokens > 6
  EXPECT_EQ(code({{five, 0, std::span(table).first(1), true}}, logits),
            StatusCode::kInvalidArgument);  // 5 positions need 2 blocks
  EXPECT_EQ(code({{five, 4, table, true}}, logits),
            StatusCode::kOutOfRange);  // positions 4..8 reach block id 4 of 4
  EXPECT_EQ(code({{five, 12, table, true}}, logits), StatusCode::kOutOfRange);  // past 16
  const std::vector<TokenId> bad = {5, 300};
  EXPECT_EQ(code({{bad, 0, table, true}}, logits), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{five, 0, table, false}}, logits), StatusCode::kInvalidArgument);  // no rows
  EXPECT_EQ(code({{five, 0, table, true}}, logits), StatusCode::kOk);
}

TEST(EngineTest, CreateChecksTheConfigAgainstTheRunner) {
  std::unique_ptr<testing::RandomModel> model = randomModel(tinyParams(1, 2, 1), 29);
  ASSERT_NE(model, nullptr);
  Result<std::unique_ptr<cpu::CpuModelRunner>> runner =
      cpu::CpuModelRunner::create(model->weights, {.block_tokens = 4, .num_blocks = 8});
  ASSERT_TRUE(runner.isOk());
  EngineConfig config = smallConfig(8, 8);
  EXPECT_EQ(Engine::create(std::move(runner).value(), config).status().code(),
            StatusCode::kInvalidArgument);
  config.num_blocks = 0;
  EXPECT_EQ(Engine::create(model->weights, config).status().code(), StatusCode::kInvalidArgument);
  config.num_blocks = 8;
  config.block_tokens = 0;
  EXPECT_EQ(Engine::create(model->weights, config).status().code(), StatusCode::kInvalidArgument);
}

TEST(EngineTest, GenerateStopsAtStopTokensAndTheTokenLimit) {
  std::unique_ptr<testing::RandomModel> model = randomModel(tinyParams(1, 2, 1), 23);
  ASSERT_NE(model, nullptr);
  std::unique_ptr<Engine> engine = makeEngine(model->weights, smallConfig(4));
  ASSERT_NE(engine, nullptr);
  const std::vector<TokenId> prompt = randomTokens(6, 300, 9);
  GenerateOptions options;
  options.max_new_tokens = 12;
  Result<GenerateResult> full = generate(*engine, prompt, options);
  ASSERT_TRUE(full.isOk());
  ASSERT_EQ(full->tokens.size(), 12u);
  EXPECT_EQ(full->finish_reason, FinishReason::kLength);

  // Stop at the fourth token of the same greedy continuation; it is not returned.
  options.stop_tokens = {full->tokens[3]};
  const size_t first = static_cast<size_t>(
      std::find(full->tokens.begin(), full->tokens.end(), full->tokens[3]) - full->tokens.begin());
  Result<GenerateResult> stopped = generate(*engine, prompt, options);
  ASSERT_TRUE(stopped.isOk());
  EXPECT_EQ(stopped->finish_reason, FinishReason::kStop);
  EXPECT_EQ(stopped->tokens,
            std::vector<TokenId>(full->tokens.begin(), full->tokens.begin() + first));
  EXPECT_GT(stopped->cached_prompt_tokens, 0u);  // the first run left the prompt cached

  // A callback that declines ends generation after that token.
  options.stop_tokens.clear();
  int seen = 0;
  Result<GenerateResult> cancelled =
      generate(*engine, prompt, options, [&](TokenId) { return ++seen < 2; });
  ASSERT_TRUE(cancelled.isOk());
  EXPECT_EQ(cancelled->finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(cancelled->tokens.size(), 2u);
  EXPECT_EQ(engine->sequenceCount(), 0u);
}

}  // namespace
}  // namespace kvferry::engine
