#include "node_agent/engine/cuda/batch_plan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace kvferry::engine::cuda {
namespace {

std::string str(uint64_t value) { return std::to_string(value); }

uint32_t nextPowerOfTwo(uint32_t value) {
  uint32_t power = 1;
  while (power < value) power *= 2;
  return power;
}

uint64_t align16(uint64_t offset) { return (offset + 15) / 16 * 16; }

// Hands out 16-byte aligned sections of the image in order.
class Sections {
 public:
  template <typename T>
  uint64_t take(uint64_t count) {
    const uint64_t at = end_;
    end_ = align16(end_ + count * sizeof(T));
    return at;
  }
  uint64_t end() const { return end_; }

 private:
  uint64_t end_ = 0;
};

uint64_t blocksFor(uint64_t positions, uint32_t block_tokens) {
  return (positions + block_tokens - 1) / block_tokens;
}

Status checkChunks(std::span<const SequenceChunk> chunks, const PlanLimits& limits,
                   uint32_t& tokens, uint32_t& wanted) {
  tokens = 0;
  wanted = 0;
  for (const SequenceChunk& chunk : chunks) {
    const uint64_t count = chunk.tokens.size();
    if (count == 0) return invalidArgument("a chunk without tokens");
    if (count > limits.max_tokens - tokens) {
      return invalidArgument("the batch holds more than " + str(limits.max_tokens) + " tokens");
    }
    const uint64_t end = uint64_t{chunk.start_position} + count;
    if (end > limits.max_sequence_tokens) {
      return outOfRange("positions up to " + str(end) + " exceed the " +
                        str(limits.max_sequence_tokens) + " a sequence may hold");
    }
    const uint64_t blocks = blocksFor(end, limits.block_tokens);
    if (chunk.block_table.size() < blocks) {
      return invalidArgument("a block table of " + str(chunk.block_table.size()) + " blocks for " +
                             str(end) + " positions");
    }
    for (uint64_t b = 0; b < blocks; ++b) {
      if (chunk.block_table[b] >= limits.num_blocks) {
        return outOfRange("block " + str(chunk.block_table[b]) + " past the pool's " +
                          str(limits.num_blocks));
      }
    }
    for (model::TokenId token : chunk.tokens) {
      if (token < 0 || static_cast<uint32_t>(token) >= limits.vocab_size) {
        return invalidArgument("token " + std::to_string(token) + " outside the vocabulary of " +
                               str(limits.vocab_size));
      }
    }
    tokens += static_cast<uint32_t>(count);
    wanted += chunk.want_logits ? 1 : 0;
  }
  if (wanted > limits.max_rows) {
    return invalidArgument(str(wanted) + " sequences want logits; a pass holds " +
                           str(limits.max_rows));
  }
  return Status::ok();
}

Status checkDraws(std::span<const TokenDraw> draws, uint32_t wanted) {
  if (draws.empty()) return Status::ok();
  if (draws.size() != wanted) {
    return invalidArgument(str(draws.size()) + " draws for " + str(wanted) +
                           " chunks that want logits");
  }
  for (const TokenDraw& draw : draws) {
    if (!std::isfinite(draw.temperature) || draw.temperature < 0.0f) {
      return invalidArgument("temperature must be finite and >= 0");
    }
    if (!(draw.top_p > 0.0f && draw.top_p <= 1.0f)) {
      return invalidArgument("top_p must be in (0, 1]");
    }
    if (draw.top_k > 1) return invalidArgument("the CUDA runner samples without top_k");
    if (!(draw.uniform >= 0.0f && draw.uniform < 1.0f)) {
      return invalidArgument("the draw's uniform must be in [0, 1)");
    }
  }
  return Status::ok();
}

DeviceDraw deviceDraw(const TokenDraw& draw) {
  DeviceDraw out;
  out.temperature = draw.greedy() ? 0.0f : draw.temperature;
  out.top_p = draw.top_p;
  out.uniform = draw.uniform;
  return out;
}

template <typename T>
T* at(std::span<uint8_t> image, uint64_t offset) {
  return reinterpret_cast<T*>(image.data() + offset);
}

}  // namespace

DecodeShape decodeShapeFor(const PlanLimits& limits, uint32_t sequences, uint32_t blocks,
                           bool sampled) {
  DecodeShape shape;
  shape.rows = std::min(nextPowerOfTwo(sequences), std::max(limits.max_rows, sequences));
  shape.stride = std::max<uint32_t>(8, nextPowerOfTwo(blocks));
  const uint64_t keys = uint64_t{shape.stride} * limits.block_tokens;
  // Enough blocks for two per multiprocessor, but no partition under 16 keys.
  const uint64_t wanted_blocks = 2 * uint64_t{std::max<uint32_t>(limits.multiprocessors, 1)};
  const uint64_t per_split = uint64_t{shape.rows} * std::max<uint32_t>(limits.kv_heads, 1);
  uint64_t splits = (wanted_blocks + per_split - 1) / per_split;
  splits = std::clamp<uint64_t>(splits, 1, std::max<uint64_t>(1, keys / 16));
  uint64_t partition = (keys + splits - 1) / splits;
  partition = (partition + 15) / 16 * 16;
  shape.partition = static_cast<uint32_t>(partition);
  shape.splits = static_cast<uint32_t>((keys + partition - 1) / partition);
  shape.sampled = sampled;
  return shape;
}

uint64_t maxPlanBytes(const PlanLimits& limits) {
  const uint64_t table_entries =
      std::max<uint64_t>(limits.max_rows, 1) *
      std::max<uint64_t>(8, nextPowerOfTwo(static_cast<uint32_t>(
                                blocksFor(limits.max_sequence_tokens, limits.block_tokens))));
  const uint64_t rows = std::max<uint64_t>(limits.max_rows, limits.max_tokens);
  return 4 * align16(uint64_t{limits.max_tokens} * 4) + 3 * align16(rows * 4) +
         align16(rows * sizeof(DeviceDraw)) +
         align16(uint64_t{limits.max_tokens} * sizeof(PrefillChunk)) +
         align16(uint64_t{limits.max_tokens} * sizeof(PrefillTile)) + align16(table_entries * 4) +
         align16(uint64_t{limits.max_tokens} * 4) + 256;
}

Result<BatchPlan> planBatch(std::span<const SequenceChunk> chunks, std::span<const TokenDraw> draws,
                            bool decode_allowed, const PlanLimits& limits,
                            std::span<uint8_t> image) {
  uint32_t tokens = 0;
  uint32_t wanted = 0;
  RETURN_IF_ERROR(checkChunks(chunks, limits, tokens, wanted));
  RETURN_IF_ERROR(checkDraws(draws, wanted));
  const bool sampled = !draws.empty();
  BatchPlan plan;
  plan.real_rows = wanted;
  plan.decode = decode_allowed && std::ranges::all_of(chunks, [](const SequenceChunk& c) {
                  return c.tokens.size() == 1 && c.want_logits;
                });
  Sections sections;
  uint32_t stride = 0;
  uint64_t table_entries = 0;
  if (plan.decode) {
    uint32_t longest = 0;
    for (const SequenceChunk& chunk : chunks) {
      longest = std::max<uint32_t>(
          longest, static_cast<uint32_t>(blocksFor(chunk.start_position + 1, limits.block_tokens)));
    }
    plan.shape = decodeShapeFor(limits, static_cast<uint32_t>(chunks.size()), longest, sampled);
    plan.tokens = plan.logit_rows = plan.shape.rows;
    stride = plan.shape.stride;
    table_entries = uint64_t{plan.shape.rows} * stride;
  } else {
    plan.tokens = tokens;
    plan.logit_rows = wanted;
    plan.chunk_count = static_cast<uint32_t>(chunks.size());
    for (const SequenceChunk& chunk : chunks) {
      plan.tile_count += static_cast<uint32_t>(
          (chunk.tokens.size() + limits.prefill_tile_queries - 1) / limits.prefill_tile_queries);
      table_entries += blocksFor(chunk.start_position + chunk.tokens.size(), limits.block_tokens);
    }
  }
  plan.tokens_at = sections.take<int32_t>(plan.tokens);
  plan.positions_at = sections.take<int32_t>(plan.tokens);
  plan.slots_at = sections.take<uint32_t>(plan.tokens);
  plan.table_offsets_at = sections.take<int32_t>(plan.tokens);
  plan.logit_rows_at = sections.take<int32_t>(plan.logit_rows);
  plan.lengths_at = sections.take<int32_t>(plan.logit_rows);
  plan.draws_at = sections.take<DeviceDraw>(plan.logit_rows);
  plan.chunks_at = sections.take<PrefillChunk>(plan.chunk_count);
  plan.tiles_at = sections.take<PrefillTile>(plan.tile_count);
  plan.tables_at = sections.take<int32_t>(table_entries);
  plan.bytes = sections.end();
  if (plan.bytes > image.size()) {
    return invalidArgument("the batch's metadata needs " + str(plan.bytes) +
                           " bytes of staging, the runner has " + str(image.size()));
  }

  auto* token_ids = at<int32_t>(image, plan.tokens_at);
  auto* positions = at<int32_t>(image, plan.positions_at);
  auto* slots = at<uint32_t>(image, plan.slots_at);
  auto* table_offsets = at<int32_t>(image, plan.table_offsets_at);
  auto* logit_rows = at<int32_t>(image, plan.logit_rows_at);
  auto* lengths = at<int32_t>(image, plan.lengths_at);
  auto* device_draws = at<DeviceDraw>(image, plan.draws_at);
  auto* tables = at<int32_t>(image, plan.tables_at);
  const uint32_t bt = limits.block_tokens;

  uint32_t t = 0;
  uint32_t row = 0;
  uint64_t table_at = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const SequenceChunk& chunk = chunks[c];
    const uint64_t end = chunk.start_position + chunk.tokens.size();
    const uint64_t blocks = blocksFor(end, bt);
    const uint64_t table_offset = plan.decode ? uint64_t{row} * stride : table_at;
    for (uint64_t b = 0; b < blocks; ++b) {
      tables[table_offset + b] = static_cast<int32_t>(chunk.block_table[b]);
    }
    if (plan.decode) {
      for (uint64_t b = blocks; b < stride; ++b) {
        tables[table_offset + b] = static_cast<int32_t>(limits.num_blocks);
      }
    } else {
      at<PrefillChunk>(image, plan.chunks_at)[c] = {t, static_cast<uint32_t>(chunk.tokens.size()),
                                                    chunk.start_position,
                                                    static_cast<uint32_t>(table_offset)};
      table_at += blocks;
    }
    for (size_t i = 0; i < chunk.tokens.size(); ++i, ++t) {
      const uint32_t position = chunk.start_position + static_cast<uint32_t>(i);
      token_ids[t] = chunk.tokens[i];
      positions[t] = static_cast<int32_t>(position);
      slots[t] = chunk.block_table[position / bt] * bt + position % bt;
      table_offsets[t] = static_cast<int32_t>(table_offset);
    }
    if (chunk.want_logits) {
      logit_rows[row] = static_cast<int32_t>(t - 1);
      lengths[row] = static_cast<int32_t>(end);
      device_draws[row] = sampled ? deviceDraw(draws[row]) : DeviceDraw{};
      ++row;
    }
  }
  if (plan.decode) {
    // Padding rows: token 0 at position 0 in the scratch block.
    for (; row < plan.shape.rows; ++row, ++t) {
      token_ids[t] = 0;
      positions[t] = 0;
      slots[t] = limits.num_blocks * bt;
      table_offsets[t] = static_cast<int32_t>(uint64_t{row} * stride);
      for (uint32_t b = 0; b < stride; ++b)
        tables[uint64_t{row} * stride + b] = static_cast<int32_t>(limits.num_blocks);
      logit_rows[row] = static_cast<int32_t>(t);
      lengths[row] = 1;
      device_draws[row] = DeviceDraw{};
    }
  } else {
    // Tiles, the ones with the most keys first: they take longest.
    std::vector<PrefillTile> tiles;
    tiles.reserve(plan.tile_count);
    const auto* planned = at<PrefillChunk>(image, plan.chunks_at);
    for (uint32_t c = 0; c < plan.chunk_count; ++c) {
      for (uint32_t tile = 0; tile * limits.prefill_tile_queries < planned[c].length; ++tile) {
        tiles.push_back({c, tile});
      }
    }
    std::stable_sort(tiles.begin(), tiles.end(), [&](const PrefillTile& a, const PrefillTile& b) {
      return planned[a.chunk].start_position + a.tile * limits.prefill_tile_queries >
             planned[b.chunk].start_position + b.tile * limits.prefill_tile_queries;
    });
    std::memcpy(image.data() + plan.tiles_at, tiles.data(), tiles.size() * sizeof(PrefillTile));
  }
  return plan;
}

}  // namespace kvferry::engine::cuda
