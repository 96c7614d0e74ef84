// The CUDA runner's host-side batch planning (node_agent/engine/cuda/batch_plan.h), on the CPU:
// checks, slots, block tables, prefill tiles and the padded decode shapes graphs are keyed by.
#include <gtest/gtest.h>

#include <vector>

#include "node_agent/engine/cuda/batch_plan.h"

namespace kvferry::engine::cuda {
namespace {

PlanLimits limits() {
  PlanLimits l;
  l.vocab_size = 100;
  l.block_tokens = 4;
  l.num_blocks = 50;
  l.max_sequence_tokens = 200;
  l.max_tokens = 256;
  l.max_rows = 16;
  l.kv_heads = 2;
  l.multiprocessors = 132;
  l.prefill_tile_queries = 64;
  return l;
}

template <typename T>
const T* section(const std::vector<uint8_t>& image, uint64_t at) {
  return reinterpret_cast<const T*>(image.data() + at);
}

TEST(CudaBatchPlanTest, DecodeStepsArePaddedToAShapeIntoTheScratchBlock) {
  const PlanLimits l = limits();
  std::vector<uint8_t> image(maxPlanBytes(l));
  const std::vector<uint32_t> table_a = {7, 3, 9};  // 9 positions: 3 blocks
  const std::vector<uint32_t> table_b = {1};        // position 2
  const std::vector<model::TokenId> ta = {11};
  const std::vector<model::TokenId> tb = {12};
  const std::vector<SequenceChunk> chunks = {
      {ta, 8, table_a, true}, {tb, 2, table_b, true}, {ta, 0, table_b, true}};
  Result<BatchPlan> plan = planBatch(chunks, {}, true, l, image);
  ASSERT_TRUE(plan.isOk()) << plan.status().toString();
  EXPECT_TRUE(plan->decode);
  EXPECT_EQ(plan->shape.rows, 4u);
  EXPECT_EQ(plan->shape.stride, 8u);  // at least 8, a power of two
  EXPECT_EQ(plan->real_rows, 3u);
  EXPECT_GE(uint64_t{plan->shape.splits} * plan->shape.partition, uint64_t{8} * l.block_tokens);
  EXPECT_EQ(plan->shape.partition % 16, 0u);
  const auto* slots = section<uint32_t>(image, plan->slots_at);
  EXPECT_EQ(slots[0], 9u * 4 + 0);  // position 8: block_table[2] = 9, slot 0
  EXPECT_EQ(slots[1], 1u * 4 + 2);
  EXPECT_EQ(slots[3], 50u * 4);  // the padding row writes the scratch block
  const auto* lengths = section<int32_t>(image, plan->lengths_at);
  EXPECT_EQ(lengths[0], 9);
  EXPECT_EQ(lengths[1], 3);
  EXPECT_EQ(lengths[3], 1);
  const auto* tables = section<int32_t>(image, plan->tables_at);
  EXPECT_EQ(tables[0], 7);
  EXPECT_EQ(tables[2], 9);
  EXPECT_EQ(tables[3], 50);  // unused entries name the scratch block
  EXPECT_EQ(tables[8], 1);   // row 1
  EXPECT_EQ(tables[3 * 8 + 5], 50);
  // The same shape again lays the image out identically (a captured graph replays it).
  Result<BatchPlan> again = planBatch(chunks, {}, true, l, image);
  ASSERT_TRUE(again.isOk());
  EXPECT_EQ(again->shape, plan->shape);
  EXPECT_EQ(again->tables_at, plan->tables_at);
  EXPECT_EQ(again->bytes, plan->bytes);
}

TEST(CudaBatchPlanTest, PrefillChunksBecomeTilesTheLongestFirst) {
  const PlanLimits l = limits();
  std::vector<uint8_t> image(maxPlanBytes(l));
  std::vector<model::TokenId> long_tokens(130, 5);
  std::vector<model::TokenId> short_tokens(3, 6);
  std::vector<uint32_t> table_long;
  for (uint32_t b = 0; b < 41; ++b) table_long.push_back(b);  // 160 positions
  const std::vector<uint32_t> table_short = {45};
  const std::vector<SequenceChunk> chunks = {{long_tokens, 30, table_long, true},
                                             {short_tokens, 0, table_short, false}};
  Result<BatchPlan> plan = planBatch(chunks, {}, true, l, image);
  ASSERT_TRUE(plan.isOk()) << plan.status().toString();
  EXPECT_FALSE(plan->decode);
  EXPECT_EQ(plan->tokens, 133u);
  EXPECT_EQ(plan->logit_rows, 1u);
  EXPECT_EQ(plan->tile_count, 4u);  // 130 tokens: 3 tiles; 3 tokens: 1
  const auto* tiles = section<PrefillTile>(image, plan->tiles_at);
  EXPECT_EQ(tiles[0].chunk, 0u);
  EXPECT_EQ(tiles[0].tile, 2u);
  EXPECT_EQ(tiles[3].chunk, 1u);
  const auto* prefill_chunks = section<PrefillChunk>(image, plan->chunks_at);
  EXPECT_EQ(prefill_chunks[1].q_start, 130u);
  EXPECT_EQ(prefill_chunks[1].table_offset, 40u);  // 160 / 4 blocks of the first chunk's table
  EXPECT_EQ(section<int32_t>(image, plan->logit_rows_at)[0], 129);
  EXPECT_EQ(section<int32_t>(image, plan->positions_at)[129], 159);
  EXPECT_EQ(section<uint32_t>(image, plan->slots_at)[131], 45u * 4 + 1);
  // A per-layer callback forbids the decode path even for one-token chunks.
  const std::vector<SequenceChunk> single = {{short_tokens, 0, table_short, true}};
  const std::vector<model::TokenId> one = {7};
  const std::vector<SequenceChunk> one_token = {{one, 0, table_short, true}};
  Result<BatchPlan> forced = planBatch(one_token, {}, false, l, image);
  ASSERT_TRUE(forced.isOk());
  EXPECT_FALSE(forced->decode);
}

TEST(CudaBatchPlanTest, RefusesBadBatchesAndDraws) {
  const PlanLimits l = limits();
  std::vector<uint8_t> image(maxPlanBytes(l));
  const std::vector<uint32_t> table = {1, 2};
  const std::vector<model::TokenId> bad_token = {100};
  const std::vector<model::TokenId> fine = {1};
  const std::vector<uint32_t> past_pool = {50};
  const std::vector<SequenceChunk> token_outside = {{bad_token, 0, table, true}};
  EXPECT_EQ(planBatch(token_outside, {}, true, l, image).status().code(),
            StatusCode::kInvalidArgument);
  const std::vector<SequenceChunk> block_outside = {{fine, 0, past_pool, true}};
  EXPECT_EQ(planBatch(block_outside, {}, true, l, image).status().code(), StatusCode::kOutOfRange);
  const std::vector<SequenceChunk> short_table = {{fine, 8, table, true}};
  EXPECT_EQ(planBatch(short_table, {}, true, l, image).status().code(),
            StatusCode::kInvalidArgument);
  const std::vector<SequenceChunk> ok = {{fine, 0, table, true}};
  const std::vector<TokenDraw> two(2);
  EXPECT_FALSE(planBatch(ok, two, true, l, image).isOk());
  TokenDraw top_k;
  top_k.temperature = 1.0f;
  top_k.top_k = 40;
  EXPECT_FALSE(planBatch(ok, {&top_k, 1}, true, l, image).isOk());
  std::vector<SequenceChunk> too_many(17, SequenceChunk{fine, 0, table, true});
  EXPECT_FALSE(planBatch(too_many, {}, true, l, image).isOk());
  std::vector<uint8_t> tiny(16);
  EXPECT_FALSE(planBatch(ok, {}, true, l, tiny).isOk());
}

TEST(CudaBatchPlanTest, DecodeSplitsShrinkAsBatchesGrow) {
  const PlanLimits l = limits();
  const DecodeShape one = decodeShapeFor(l, 1, 64, false);
  const DecodeShape many = decodeShapeFor(l, 16, 64, false);
  EXPECT_GT(one.splits, many.splits);
  for (const DecodeShape& s : {one, many}) {
    EXPECT_GE(uint64_t{s.splits} * s.partition, uint64_t{s.stride} * l.block_tokens);
    EXPECT_LT(uint64_t{s.splits - 1} * s.partition, uint64_t{s.stride} * l.block_tokens);
  }
}

}  // namespace
}  // namespace kvferry::engine::cuda
