// DESIGN.md §5's correctness criterion for disaggregation: a prompt prefilled on one engine, its
// KV blocks moved by the transfer engine into other block ids of a second engine, and decoded
// there, yields exactly the tokens (and logits, bit for bit) of a single engine.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "node_agent/engine/engine.h"
#include "rdma/factory.h"
#include "rdma/kv_layout.h"
#include "rdma/loopback/loopback_transport.h"
#include "tests/node_agent/engine/engine_test_util.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::engine {
namespace {

using model::TokenId;
using testing::continueGreedy;
using testing::expectSameRun;
using testing::GreedyRun;
using testing::greedyRun;
using testing::makeEngine;
using testing::randomModel;
using testing::randomTokens;
using testing::smallConfig;
using testing::tinyParams;

// One engine's KV pools registered with a transport: a K and a V pool per layer.
struct RegisteredPools {
  std::vector<rdma::KvPool> keys;
  std::vector<rdma::KvPool> values;
};

RegisteredPools registerPools(rdma::Transport& transport, Engine& engine) {
  RegisteredPools pools;
  const KvGeometry& geometry = engine.kvGeometry();
  const auto add = [&](const KvPoolRegion& region) {
    EXPECT_EQ(region.bytes, geometry.poolBytes());
    Result<rdma::RegionId> id =
        transport.registerRegion(region.base, region.bytes, rdma::MemoryKind::host());
    EXPECT_TRUE(id.isOk()) << id.status().toString();
    return rdma::KvPool{id.isOk() ? *id : 0, geometry.blockBytes(), geometry.num_blocks};
  };
  for (uint32_t layer = 0; layer < geometry.layers; ++layer) {
    pools.keys.push_back(add(engine.keyPool(layer)));
    pools.values.push_back(add(engine.valuePool(layer)));
  }
  return pools;
}

// Two engines over the same weights, each with its pools on a loopback endpoint; `prefill_`
// (A) writes to `decode_` (B).
class Disaggregation {
 public:
  Disaggregation(std::shared_ptr<const LlamaWeights> weights, const EngineConfig& config)
      : prefill_(makeEngine(weights, config)), decode_(makeEngine(weights, config)) {
    config::TransportConfig transport_config;
    transport_config.kind = config::TransportKind::kLoopback;
    const auto fabric = std::make_shared<rdma::LoopbackFabric>();
    Result<std::unique_ptr<rdma::Transport>> a = rdma::makeTransport(transport_config, fabric);
    Result<std::unique_ptr<rdma::Transport>> b = rdma::makeTransport(transport_config, fabric);
    EXPECT_TRUE(a.isOk() && b.isOk());
    sender_ = std::move(a).value();
    receiver_ = std::move(b).value();
    local_ = registerPools(*sender_, *prefill_);
    remote_ = registerPools(*receiver_, *decode_);
    Result<rdma::EndpointBlob> blob = receiver_->localBlob();
    EXPECT_TRUE(blob.isOk());
    Result<rdma::PeerId> peer = sender_->connect(*blob);
    EXPECT_TRUE(peer.isOk()) << peer.status().toString();
    peer_ = *peer;
  }

  Engine& prefill() { return *prefill_; }
  Engine& decode() { return *decode_; }

  // Moves sequence `id` of A to B as the agents do: B reserves blocks, A writes every block B
  // does not already cache, one batch per layer whose immediate names the layer, B commits once
  // every layer's immediate has arrived. Returns the id on B and the blocks B took from its cache.
  std::pair<SequenceId, uint32_t> transfer(SequenceId id) {
    const SequenceView source = *prefill_->sequence(id);
    Result<ImportReservation> reservation = decode_->reserveImport(source.tokens);
    EXPECT_TRUE(reservation.isOk()) << reservation.status().toString();
    const SequenceView target = *decode_->sequence(reservation->id);
    EXPECT_FALSE(target.ready);
    EXPECT_EQ(target.block_ids.size(), source.block_ids.size());
    const size_t skip = reservation->cached_blocks;
    const std::span<const uint32_t> from = source.block_ids.subspan(skip);
    const std::span<const uint32_t> to = target.block_ids.subspan(skip);
    const uint32_t layers = prefill_->kvGeometry().layers;
    for (uint32_t layer = 0; layer < layers && !from.empty(); ++layer) {
      std::vector<rdma::TransferOp> ops;
      EXPECT_TRUE(
          rdma::appendBlockOps(local_.keys[layer], remote_.keys[layer], from, to, ops).isOk());
      EXPECT_TRUE(
          rdma::appendBlockOps(local_.values[layer], remote_.values[layer], from, to, ops).isOk());
      EXPECT_TRUE(sender_->postWrite(peer_, ops, layer, layer).isOk());
      EXPECT_TRUE(rdma::waitOne(*sender_, layer).isOk());
    }
    if (!from.empty()) {
      std::vector<bool> landed(layers, false);
      rdma::ImmediateEvent events[8];
      for (uint32_t got = 0; got < layers;) {
        const size_t n = receiver_->pollImmediates(events, std::chrono::seconds(5));
        EXPECT_GT(n, 0u);
        if (n == 0) break;
        for (size_t i = 0; i < n; ++i) landed[events[i].imm] = true;
        got += static_cast<uint32_t>(n);
      }
      EXPECT_EQ(std::count(landed.begin(), landed.end(), true), static_cast<long>(layers));
    }
    EXPECT_TRUE(decode_->commitImport(reservation->id).isOk());
    return {reservation->id, reservation->cached_blocks};
  }

 private:
  std::unique_ptr<Engine> prefill_;
  std::unique_ptr<Engine> decode_;
  std::unique_ptr<rdma::Transport> sender_;
  std::unique_ptr<rdma::Transport> receiver_;
  RegisteredPools local_;
  RegisteredPools remote_;
  rdma::PeerId peer_ = 0;
};

struct Case {
  std::string name;
  model::LlamaParams params;
  uint32_t block_tokens;
};

// gtest prints a failing case by its name rather than its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// Each test's model (a seed of its own), one engine running it alone, and a prefill/decode pair.
class DisaggregationTest : public ::testing::TestWithParam<Case> {
 protected:
  void build(uint64_t seed) {
    model_ = randomModel(GetParam().params, seed);
    ASSERT_NE(model_, nullptr);
    const EngineConfig config = smallConfig(GetParam().block_tokens, 96);
    single_ = makeEngine(model_->weights, config);
    ASSERT_NE(single_, nullptr);
    pair_ = std::make_unique<Disaggregation>(model_->weights, config);
  }

  std::unique_ptr<testing::RandomModel> model_;
  std::unique_ptr<Engine> single_;
  std::unique_ptr<Disaggregation> pair_;
};

constexpr uint32_t kSteps = 8;

// Prefill on A, then decode on B from the transferred KV (B's own blocks start elsewhere, so the
// ids differ), against the same prompt run on one engine; prompts are not block-aligned.
TEST_P(DisaggregationTest, DecodeAfterTransferEqualsASingleEngine) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(build(31));
  Disaggregation& pair = *pair_;
  Engine& single = *single_;
  const uint32_t vocab = c.params.vocab_size;

  // B is busy with another sequence, so the imported blocks land at other ids than A's.
  std::vector<float> logits(vocab);
  ASSERT_TRUE(
      pair.decode().prefill(randomTokens(2 * c.block_tokens + 1, vocab, 99), logits).isOk());

  for (size_t length : {size_t{2} * c.block_tokens + 3, size_t{11}}) {
    SCOPED_TRACE("prompt of " + std::to_string(length) + " tokens");
    const std::vector<TokenId> prompt = randomTokens(length, vocab, length);
    const GreedyRun expected = greedyRun(single, prompt, kSteps);

    Result<PrefillResult> prefill = pair.prefill().prefill(prompt, logits);
    ASSERT_TRUE(prefill.isOk()) << prefill.status().toString();
    const auto [id, cached] = pair.transfer(prefill->id);
    EXPECT_NE(std::vector<uint32_t>(pair.prefill().sequence(prefill->id)->block_ids.begin(),
                                    pair.prefill().sequence(prefill->id)->block_ids.end()),
              std::vector<uint32_t>(pair.decode().sequence(id)->block_ids.begin(),
                                    pair.decode().sequence(id)->block_ids.end()));
    ASSERT_TRUE(pair.prefill().release(prefill->id).isOk());  // A is done with it
    expectSameRun(expected, continueGreedy(pair.decode(), id, logits, kSteps));
    ASSERT_TRUE(pair.decode().release(id).isOk());
  }
}

// The same with a prefix-cache hit on A (the prompt's head comes from an earlier request), and a
// second import sharing that head, which B then takes from its own cache instead of the wire.
TEST_P(DisaggregationTest, PrefixCacheHitsOnEitherSideKeepResultsExact) {
  const Case& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(build(37));
  Disaggregation& pair = *pair_;
  Engine& single = *single_;
  const uint32_t vocab = c.params.vocab_size;
  std::vector<float> logits(vocab);

  const std::vector<TokenId> head = randomTokens(2 * c.block_tokens + 1, vocab, 5);
  const auto head_blocks = static_cast<uint32_t>(head.size() / c.block_tokens);
  const auto withTail = [&](uint64_t seed) {
    std::vector<TokenId> prompt = head;
    for (TokenId t : randomTokens(c.block_tokens + 2, vocab, seed)) prompt.push_back(t);
    return prompt;
  };
  Result<PrefillResult> earlier = pair.prefill().prefill(withTail(6), logits);
  ASSERT_TRUE(earlier.isOk());
  ASSERT_TRUE(pair.prefill().release(earlier->id).isOk());  // its blocks stay cached on A

  for (uint64_t seed : {7u, 8u}) {
    const std::vector<TokenId> prompt = withTail(seed);
    const GreedyRun expected = greedyRun(single, prompt, kSteps);
    Result<PrefillResult> prefill = pair.prefill().prefill(prompt, logits);
    ASSERT_TRUE(prefill.isOk());
    EXPECT_EQ(prefill->cached_tokens, head_blocks * c.block_tokens);  // the head's full blocks
    const auto [id, cached_on_b] = pair.transfer(prefill->id);
    // The first import fills B's cache with the head; the second one finds it there.
    EXPECT_EQ(cached_on_b, seed == 7 ? 0u : head_blocks);
    ASSERT_TRUE(pair.prefill().release(prefill->id).isOk());
    expectSameRun(expected, continueGreedy(pair.decode(), id, logits, kSteps));
    ASSERT_TRUE(pair.decode().release(id).isOk());
  }
  EXPECT_EQ(pair.prefill().blocks().usedBlocks(), 0u);
  EXPECT_EQ(pair.decode().blocks().usedBlocks(), 0u);
}

std::vector<Case> cases() {
  std::vector<Case> out;
  const std::vector<std::pair<std::string, model::LlamaParams>> models = {
      {"Mha1Layer", tinyParams(1, 4, 4)},
      {"Gqa2x2Layers", tinyParams(2, 4, 2)},
      {"Gqa4x3Layers", tinyParams(3, 8, 2)},
      {"Mqa2Layers", tinyParams(2, 4, 1, 16, 8)},
  };
  for (const auto& [name, params] : models) {
    for (uint32_t block_tokens : {1u, 4u, 5u, 16u}) {
      out.push_back({name + "Block" + std::to_string(block_tokens), params, block_tokens});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, DisaggregationTest, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& param_info) {
                           return param_info.param.name;
                         });

}  // namespace
}  // namespace kvferry::engine
