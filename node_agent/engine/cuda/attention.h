// Paged attention on the CUDA runtime (attention.cu). The KV cache is the engine's paged layout
// (model_runner.h): per layer one K and one V pool of blocks of block_tokens rows, each row
// kv_heads × head_dim bfloat16; position p of a sequence lives in row
// block_table[p / block_tokens] × block_tokens + p % block_tokens.
//
//   prefill: FlashAttention-2 style on tensor cores (mma.sync bf16, fp32 accumulation, online
//     softmax): a block owns a tile of queries (kPrefillTilings) of one chunk and one head and
//     walks the chunk's keys (its cached prefix and itself, causal) 64 at a time,
//     double-buffered, so no score matrix is materialised.
//   decode: one query per sequence; the keys are split into partitions processed by separate
//     blocks (all query heads of a KV group at once, so each K/V row is read once), then combined.
//   generic: one warp per (query, head), any head_dim ≤ 256: tiny models and the reference the
//     tests hold the fast kernels to.
// Only CUDA code includes this header.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvferry::engine::cuda {

struct AttentionShape {
  uint32_t heads = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t block_tokens = 0;
  float scale = 0.0f;  // 1 / sqrt(head_dim)
};

// The fast kernels' head dimensions; others take the generic kernel.
bool fastAttentionSupports(uint32_t head_dim);

// One chunk of a prefill batch: queries q rows [q_start, q_start + length) at positions
// start_position…, attending to positions [0, start_position + length) of its sequence, whose
// block table is block_tables + table_offset.
struct PrefillChunk {
  uint32_t q_start = 0;
  uint32_t length = 0;
  uint32_t start_position = 0;
  uint32_t table_offset = 0;
};
// A tile of queries of a chunk: the unit of the prefill grid.
struct PrefillTile {
  uint32_t chunk = 0;
  uint32_t tile = 0;
};
// How a block covers its tile: `queries` rows over `warps` warps (16 or 32 rows a warp; a warp
// with 32 reuses each K/V fragment it loads for both halves), walking the keys `keys` at a time.
struct PrefillTiling {
  uint32_t queries = 0;
  uint32_t warps = 0;
  uint32_t keys = 0;
};
inline constexpr PrefillTiling kPrefillTilings[] = {
    {64, 4, 64}, {128, 8, 64}, {128, 4, 64}, {128, 4, 32}, {256, 8, 64}};
// The one the engine uses (the 8K rate test in cuda_kernels_test.cc prints them all).
inline constexpr PrefillTiling kPrefillTiling = {256, 8, 64};

// q, out: [tokens × heads·head_dim]. chunks and tiles in device memory, the tiles cut at
// tiling.queries and ordered as the caller likes (longest first balances the grid).
cudaError_t launchPrefillAttention(const __nv_bfloat16* q, const __nv_bfloat16* key_pool,
                                   const __nv_bfloat16* value_pool, const int32_t* block_tables,
                                   const PrefillChunk* chunks, const PrefillTile* tiles,
                                   uint32_t tile_count, PrefillTiling tiling,
                                   const AttentionShape& shape, __nv_bfloat16* out,
                                   cudaStream_t stream);

// Decode: sequence b's query is q row b, its keys positions [0, lengths[b]), its block table
// block_tables + b × table_stride. `splits` partitions of `partition` keys each (a multiple of
// 16; splits × partition ≥ every length); workspace from decodeWorkspaceFloats().
uint64_t decodeWorkspaceFloats(uint32_t sequences, uint32_t heads, uint32_t head_dim,
                               uint32_t splits);
cudaError_t launchDecodeAttention(const __nv_bfloat16* q, const __nv_bfloat16* key_pool,
                                  const __nv_bfloat16* value_pool, const int32_t* block_tables,
                                  uint32_t table_stride, const int32_t* lengths, uint32_t sequences,
                                  uint32_t splits, uint32_t partition, const AttentionShape& shape,
                                  float* workspace, __nv_bfloat16* out, cudaStream_t stream);

// Generic: query row t at position positions[t] attends to positions [0, positions[t]] of the
// sequence whose block table is block_tables + table_offsets[t].
cudaError_t launchGenericAttention(const __nv_bfloat16* q, const __nv_bfloat16* key_pool,
                                   const __nv_bfloat16* value_pool, const int32_t* block_tables,
                                   const int32_t* table_offsets, const int32_t* positions,
                                   uint32_t tokens, const AttentionShape& shape, __nv_bfloat16* out,
                                   cudaStream_t stream);

}  // namespace kvferry::engine::cuda
