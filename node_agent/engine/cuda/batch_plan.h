// The host half of a CUDA forward pass: checks a batch of sequence chunks and lays out, in one
// staging image copied to the device with a single transfer, everything the kernels read — token
// ids, positions, KV slots, block tables, prefill tiles, logit rows, draws. Pure host code, so the
// CPU tests cover it (tests/node_agent/engine/cuda_batch_plan_test.cc).
//
// Decode steps (every chunk one token, no per-layer callback) are padded to a shape from a small
// set — rows a power of two, block-table stride a power of two — so that a CUDA graph captured for
// a shape replays any batch that fits it: the image's layout depends on the shape alone. Padding
// rows decode token 0 at position 0 into a scratch block past the pools (block id num_blocks).
#pragma once

#include <cstdint>
#include <span>
#include <tuple>

#include "common/status.h"
#include "node_agent/engine/cuda/attention.h"
#include "node_agent/engine/cuda/sampling.h"
#include "node_agent/engine/model_runner.h"

namespace kvferry::engine::cuda {

struct PlanLimits {
  uint32_t vocab_size = 0;
  uint32_t block_tokens = 0;
  uint32_t num_blocks = 0;           // usable blocks; id num_blocks is the scratch block
  uint32_t max_sequence_tokens = 0;  // positions a sequence may reach
  uint32_t max_tokens = 0;           // tokens of one forward pass
  uint32_t max_rows = 0;             // chunks with logits in one pass (decode rows)
  uint32_t kv_heads = 0;
  uint32_t multiprocessors = 0;         // decode splits aim at two blocks per multiprocessor
  uint32_t prefill_tile_queries = 128;  // the queries of one of kPrefillTilings
};

// What a graph is captured for.
struct DecodeShape {
  uint32_t rows = 0;       // padded sequences
  uint32_t stride = 0;     // block-table entries per sequence
  uint32_t splits = 0;     // key partitions per sequence
  uint32_t partition = 0;  // keys per partition, a multiple of 16
  bool sampled = false;    // the graph ends with the sampling kernel
  auto key() const { return std::tie(rows, stride, splits, partition, sampled); }
  bool operator<(const DecodeShape& other) const { return key() < other.key(); }
  bool operator==(const DecodeShape& other) const { return key() == other.key(); }
};

// Byte offsets of the sections in the staging image (each 16-byte aligned).
struct BatchPlan {
  bool decode = false;
  uint32_t tokens = 0;            // activation rows (decode: padded to shape.rows)
  uint32_t logit_rows = 0;        // rows of logits (decode: padded)
  uint32_t real_rows = 0;         // logit rows the caller asked for
  uint32_t chunk_count = 0;       // prefill
  uint32_t tile_count = 0;        // prefill
  DecodeShape shape;              // decode
  uint64_t tokens_at = 0;         // int32 [tokens]
  uint64_t positions_at = 0;      // int32 [tokens]
  uint64_t slots_at = 0;          // uint32 [tokens]
  uint64_t table_offsets_at = 0;  // int32 [tokens]: each token's block table in `tables`
  uint64_t logit_rows_at = 0;     // int32 [logit_rows]: the token rows whose logits are wanted
  uint64_t lengths_at = 0;        // int32 [logit_rows]: decode: keys each sequence attends to
  uint64_t draws_at = 0;          // DeviceDraw [logit_rows]
  uint64_t chunks_at = 0;         // PrefillChunk [chunk_count]
  uint64_t tiles_at = 0;          // PrefillTile [tile_count], the longest first
  uint64_t tables_at = 0;         // int32 block tables
  uint64_t bytes = 0;             // of the whole image
};

// The decode shape a batch of `sequences` whose longest needs `blocks` block-table entries uses.
DecodeShape decodeShapeFor(const PlanLimits& limits, uint32_t sequences, uint32_t blocks,
                           bool sampled);

// Checks `chunks` (as ModelRunner::forward documents: INVALID_ARGUMENT / OUT_OF_RANGE) and
// `draws` (one per chunk with want_logits, or none: logits wanted; top_k other than 0 and 1 is
// refused), decides decode or prefill (`decode_allowed` false forces prefill, e.g. for a
// per-layer callback), and writes the image into `image` (INVALID_ARGUMENT when it would not fit
// in image.size()).
Result<BatchPlan> planBatch(std::span<const SequenceChunk> chunks, std::span<const TokenDraw> draws,
                            bool decode_allowed, const PlanLimits& limits,
                            std::span<uint8_t> image);

// The staging bytes a batch of the limits' maximum size can need.
uint64_t maxPlanBytes(const PlanLimits& limits);

}  // namespace kvferry::engine::cuda
