#include <cuda_runtime.h>

#include <cmath>

#include "node_agent/engine/cuda/attention.h"
#include "node_agent/engine/cuda/launch.cuh"

namespace kvferry::engine::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float toFloat(bf16 x) { return __bfloat162float(x); }

// 2^x on the special-function unit, results below 2^-126 flushed to 0 (exp2f without
// --use_fast_math adds a range test and two multiplies around it to keep them: a softmax
// weight that small changes nothing, and the prefill kernel takes 64 of these a thread a tile).
__device__ __forceinline__ float fastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// ---- tensor-core and async-copy building blocks (sm_80+) ----

__device__ __forceinline__ uint32_t sharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void copyAsync16(void* shared, const void* global) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sharedAddress(shared)),
               "l"(global));
}
__device__ __forceinline__ void commitAsync() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void waitAsync() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Four 8×8 bfloat16 matrices from shared memory; lane i names row i % 8 of matrix i / 8.
__device__ __forceinline__ void loadMatrices(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(p)));
}
__device__ __forceinline__ void loadMatricesTransposed(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(p)));
}

// d += a (16×16, row) · b (16×8, col), bfloat16 in, float32 accumulate.
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t packBf16(float low, float high) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(low, high);
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return bits;
}

// ---- prefill: FlashAttention-2 on mma.sync ----
//
// kWarps warps; warp w owns kMTiles 16-query m-tiles of the block's tile (kWarps × 16 × kMTiles
// queries). Each K or V fragment a warp loads from shared memory feeds all its m-tiles, so two
// m-tiles per warp halve the shared-memory traffic per multiply (FlashAttention-2's 128-query,
// four-warp layout); one m-tile keeps Q's fragments in registers, two reload them per step (the
// registers go to the second tile's accumulators). K and V tiles of kKeys keys are
// double-buffered: the next tile's copies fly while this one is computed.
// Fragment layouts are PTX's for m16n8k16: lane = 4·g + t; C rows g and g + 8, columns 2t and
// 2t + 1. The scores' C fragments of two adjacent 8-key tiles are exactly the A fragment of P for
// the next product.
template <int kDim, int kWarps, int kMTiles, int kKeys>
__global__ void __launch_bounds__(kWarps * 32)
    prefillKernel(const bf16* q, const bf16* key_pool, const bf16* value_pool,
                  const int32_t* block_tables, const PrefillChunk* chunks, const PrefillTile* tiles,
                  AttentionShape shape, bf16* out) {
  constexpr uint32_t kWarpRows = 16 * kMTiles;
  constexpr uint32_t kRows = kWarps * kWarpRows;
  constexpr uint32_t kStride = kDim + 8;  // padded rows: ldmatrix reads hit distinct banks
  constexpr uint32_t kPieces = kDim / 8;  // 16-byte pieces of a row
  constexpr uint32_t kThreads = kWarps * 32;
  constexpr bool kQInRegisters = kMTiles == 1;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  bf16* q_tile = reinterpret_cast<bf16*>(shared_raw);
  bf16* kv_tiles = q_tile + kRows * kStride;  // [stage][K, V][kKeys][kStride]
  const auto k_tile = [&](uint32_t stage) { return kv_tiles + (2 * stage) * kKeys * kStride; };
  const auto v_tile = [&](uint32_t stage) { return kv_tiles + (2 * stage + 1) * kKeys * kStride; };

  waitForPrerequisites();
  const PrefillTile tile = tiles[blockIdx.x];
  const PrefillChunk chunk = chunks[tile.chunk];
  const uint32_t head = blockIdx.y;
  const uint32_t kv_head = head / (shape.heads / shape.kv_heads);
  const uint32_t q_dim = shape.heads * kDim;
  const uint32_t kv_dim = shape.kv_heads * kDim;
  const int32_t* table = block_tables + chunk.table_offset;
  const uint32_t first_row = tile.tile * kRows;
  const uint32_t rows = min(kRows, chunk.length - first_row);
  const uint32_t kv_end = chunk.start_position + first_row + rows;  // causal: keys before this
  const uint32_t key_tiles = (kv_end + kKeys - 1) / kKeys;
  const uint32_t tid = threadIdx.x;
  const uint32_t warp = tid / 32;
  const uint32_t lane = tid % 32;
  const uint32_t g = lane / 4;
  const uint32_t t4 = lane % 4;
  const uint32_t warp_row = warp * kWarpRows;  // the warp's first row in the tile

  for (uint32_t c = tid; c < kRows * kPieces; c += kThreads) {
    const uint32_t r = c / kPieces;
    const uint32_t piece = c % kPieces;
    bf16* dst = q_tile + r * kStride + piece * 8;
    if (r < rows) {
      copyAsync16(dst, q + static_cast<uint64_t>(chunk.q_start + first_row + r) * q_dim +
                           head * kDim + piece * 8);
    } else {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
  }

  // Starts the copies of key tile `index` (K and V) into `stage`.
  const auto load_tile = [&](uint32_t index, uint32_t stage) {
    const uint32_t first_key = index * kKeys;
    for (uint32_t c = tid; c < kKeys * kPieces; c += kThreads) {
      const uint32_t r = c / kPieces;
      const uint32_t piece = c % kPieces;
      const uint32_t position = first_key + r;
      bf16* k_dst = k_tile(stage) + r * kStride + piece * 8;
      bf16* v_dst = v_tile(stage) + r * kStride + piece * 8;
      if (position < kv_end) {
        const uint64_t block = static_cast<uint32_t>(table[position / shape.block_tokens]);
        const uint64_t offset =
            (block * shape.block_tokens + position % shape.block_tokens) * kv_dim + kv_head * kDim +
            piece * 8;
        copyAsync16(k_dst, key_pool + offset);
        copyAsync16(v_dst, value_pool + offset);
      } else {
        *reinterpret_cast<uint4*>(k_dst) = make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(v_dst) = make_uint4(0, 0, 0, 0);
      }
    }
  };
  load_tile(0, 0);
  commitAsync();  // with the Q tile

  const float scale_log2 = shape.scale * kLog2e;
  const uint32_t warp_first_position = chunk.start_position + first_row + warp_row;
  uint32_t q_frag[kQInRegisters ? kDim / 16 : 1][4];
  float acc[kMTiles][kDim / 8][4];
  float row_max[kMTiles][2];
  float row_sum[kMTiles][2];  // this thread's share; the quad's are added at the end
#pragma unroll
  for (uint32_t m = 0; m < kMTiles; ++m) {
#pragma unroll
    for (uint32_t n = 0; n < kDim / 8; ++n) {
      acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.0f;
    }
    row_max[m][0] = row_max[m][1] = -INFINITY;
    row_sum[m][0] = row_sum[m][1] = 0.0f;
  }

  for (uint32_t index = 0; index < key_tiles; ++index) {
    const uint32_t stage = index % 2;
    if (index + 1 < key_tiles) {
      load_tile(index + 1, stage ^ 1);  // its stage was last read before the previous barrier
      commitAsync();
      waitAsync<1>();
    } else {
      waitAsync<0>();
    }
    __syncthreads();  // this tile (and, the first time, Q) is in shared memory for every warp
    if (kQInRegisters && index == 0) {
#pragma unroll
      for (uint32_t k = 0; k < kDim / 16; ++k) {
        loadMatrices(q_frag[kQInRegisters ? k : 0],
                     q_tile + (warp_row + lane % 16) * kStride + k * 16 + (lane / 16) * 8);
      }
    }
    const uint32_t first_key = index * kKeys;
    // A warp whose queries all precede this tile skips it (the mask would zero it all).
    const bool active = first_key <= warp_first_position + kWarpRows - 1;
    if (active) {
      const bf16* keys = k_tile(stage);
      const bf16* values = v_tile(stage);
      float s[kMTiles][kKeys / 8][4];
      uint32_t p[kMTiles][kKeys / 16][4];  // the probabilities as bf16 A fragments
#pragma unroll
      for (uint32_t m = 0; m < kMTiles; ++m) {
#pragma unroll
        for (uint32_t n = 0; n < kKeys / 8; ++n)
          s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.0f;
      }
#pragma unroll
      for (uint32_t k = 0; k < kDim / 16; ++k) {
        uint32_t a[kMTiles][4];
#pragma unroll
        for (uint32_t m = 0; m < kMTiles; ++m) {
          if constexpr (kQInRegisters) {
#pragma unroll
            for (uint32_t i = 0; i < 4; ++i) a[m][i] = q_frag[kQInRegisters ? k : 0][i];
          } else {
            loadMatrices(a[m], q_tile + (warp_row + 16 * m + lane % 16) * kStride + k * 16 +
                                   (lane / 16) * 8);
          }
        }
#pragma unroll
        for (uint32_t pair = 0; pair < kKeys / 16; ++pair) {
          uint32_t b[4];
          const uint32_t key = pair * 16 + (lane / 16) * 8 + lane % 8;
          const uint32_t dim = k * 16 + ((lane / 8) % 2) * 8;
          loadMatrices(b, keys + key * kStride + dim);
#pragma unroll
          for (uint32_t m = 0; m < kMTiles; ++m) {
            mma(s[m][2 * pair], a[m], b[0], b[1]);
            mma(s[m][2 * pair + 1], a[m], b[2], b[3]);
          }
        }
      }

      // Mask only where the tile reaches past a query's position or the keys' end (the tile on
      // the diagonal); the scale to log2 units is folded into the exponent's FFMA below.
      const bool masked = first_key + kKeys - 1 > warp_first_position || first_key + kKeys > kv_end;
      if (masked) {
#pragma unroll
        for (uint32_t m = 0; m < kMTiles; ++m) {
#pragma unroll
          for (uint32_t n = 0; n < kKeys / 8; ++n) {
#pragma unroll
            for (uint32_t e = 0; e < 4; ++e) {
              const uint32_t key = first_key + n * 8 + 2 * t4 + (e & 1);
              const uint32_t q_position = warp_first_position + 16 * m + g + (e < 2 ? 0 : 8);
              if (key > q_position || key >= kv_end) s[m][n][e] = -INFINITY;
            }
          }
        }
      }
#pragma unroll
      for (uint32_t m = 0; m < kMTiles; ++m) {
        float tile_max[2] = {row_max[m][0], row_max[m][1]};
#pragma unroll
        for (uint32_t n = 0; n < kKeys / 8; ++n) {
          tile_max[0] = fmaxf(tile_max[0], fmaxf(s[m][n][0], s[m][n][1]));
          tile_max[1] = fmaxf(tile_max[1], fmaxf(s[m][n][2], s[m][n][3]));
        }
        // row_max stays in raw score units; exponents are (s - max) · scale · log2(e).
        float correction[2];
        float offset[2];
#pragma unroll
        for (uint32_t r = 0; r < 2; ++r) {
          tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], 1));
          tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], 2));
          correction[r] = tile_max[r] == -INFINITY
                              ? 1.0f
                              : fastExp2((row_max[m][r] - tile_max[r]) * scale_log2);
          row_max[m][r] = tile_max[r];
          row_sum[m][r] *= correction[r];
          offset[r] = tile_max[r] == -INFINITY ? 0.0f : tile_max[r] * scale_log2;
        }
#pragma unroll
        for (uint32_t n = 0; n < kKeys / 8; ++n) {
#pragma unroll
          for (uint32_t e = 0; e < 4; ++e) {
            const uint32_t r = e / 2;
            s[m][n][e] = fastExp2(fmaf(s[m][n][e], scale_log2, -offset[r]));  // -inf: 0
            row_sum[m][r] += s[m][n][e];
          }
        }
        // Packed at once, so the floats' registers are free before the products with V.
#pragma unroll
        for (uint32_t k = 0; k < kKeys / 16; ++k) {
          p[m][k][0] = packBf16(s[m][2 * k][0], s[m][2 * k][1]);
          p[m][k][1] = packBf16(s[m][2 * k][2], s[m][2 * k][3]);
          p[m][k][2] = packBf16(s[m][2 * k + 1][0], s[m][2 * k + 1][1]);
          p[m][k][3] = packBf16(s[m][2 * k + 1][2], s[m][2 * k + 1][3]);
        }
#pragma unroll
        for (uint32_t n = 0; n < kDim / 8; ++n) {
          acc[m][n][0] *= correction[0];
          acc[m][n][1] *= correction[0];
          acc[m][n][2] *= correction[1];
          acc[m][n][3] *= correction[1];
        }
      }
#pragma unroll
      for (uint32_t k = 0; k < kKeys / 16; ++k) {
#pragma unroll
        for (uint32_t pair = 0; pair < kDim / 16; ++pair) {
          uint32_t b[4];
          const uint32_t key = k * 16 + lane % 8 + ((lane / 8) % 2) * 8;
          const uint32_t dim = pair * 16 + (lane / 16) * 8;
          loadMatricesTransposed(b, values + key * kStride + dim);
#pragma unroll
          for (uint32_t m = 0; m < kMTiles; ++m) {
            mma(acc[m][2 * pair], p[m][k], b[0], b[1]);
            mma(acc[m][2 * pair + 1], p[m][k], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before the next copy into it
  }

#pragma unroll
  for (uint32_t m = 0; m < kMTiles; ++m) {
    float inverse[2];
#pragma unroll
    for (uint32_t r = 0; r < 2; ++r) {
      float sum = row_sum[m][r];
      sum += __shfl_xor_sync(kFullMask, sum, 1);
      sum += __shfl_xor_sync(kFullMask, sum, 2);
      inverse[r] = sum > 0.0f ? 1.0f / sum : 0.0f;
    }
    const uint32_t r0 = warp_row + 16 * m + g;
#pragma unroll
    for (uint32_t n = 0; n < kDim / 8; ++n) {
      const uint32_t dim = head * kDim + n * 8 + 2 * t4;
      if (r0 < rows) {
        *reinterpret_cast<__nv_bfloat162*>(
            out + static_cast<uint64_t>(chunk.q_start + first_row + r0) * q_dim + dim) =
            __floats2bfloat162_rn(acc[m][n][0] * inverse[0], acc[m][n][1] * inverse[0]);
      }
      if (r0 + 8 < rows) {
        *reinterpret_cast<__nv_bfloat162*>(
            out + static_cast<uint64_t>(chunk.q_start + first_row + r0 + 8) * q_dim + dim) =
            __floats2bfloat162_rn(acc[m][n][2] * inverse[1], acc[m][n][3] * inverse[1]);
      }
    }
  }
}

template <int kDim, int kWarps, int kMTiles, int kKeys>
cudaError_t prefill(const bf16* q, const bf16* key_pool, const bf16* value_pool,
                    const int32_t* block_tables, const PrefillChunk* chunks,
                    const PrefillTile* tiles, uint32_t tile_count, const AttentionShape& shape,
                    bf16* out, cudaStream_t stream) {
  const uint32_t bytes = (kWarps * 16 * kMTiles + 4 * kKeys) * (kDim + 8) * sizeof(bf16);
  static const cudaError_t configured =
      cudaFuncSetAttribute(prefillKernel<kDim, kWarps, kMTiles, kKeys>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (configured != cudaSuccess) return configured;
  const dim3 grid(tile_count, shape.heads);
  return launchDependent(prefillKernel<kDim, kWarps, kMTiles, kKeys>, grid, dim3(kWarps * 32),
                         bytes, stream, q, key_pool, value_pool, block_tables, chunks, tiles, shape,
                         out);
}

template <int kDim>
cudaError_t prefillForTiling(PrefillTiling tiling, const bf16* q, const bf16* key_pool,
                             const bf16* value_pool, const int32_t* block_tables,
                             const PrefillChunk* chunks, const PrefillTile* tiles,
                             uint32_t tile_count, const AttentionShape& shape, bf16* out,
                             cudaStream_t stream) {
  const auto run = [&](auto kernel) {
    return kernel(q, key_pool, value_pool, block_tables, chunks, tiles, tile_count, shape, out,
                  stream);
  };
  const auto is = [&](uint32_t queries, uint32_t warps, uint32_t keys) {
    return tiling.queries == queries && tiling.warps == warps && tiling.keys == keys;
  };
  if (is(64, 4, 64)) return run(prefill<kDim, 4, 1, 64>);
  if (is(128, 8, 64)) return run(prefill<kDim, 8, 1, 64>);
  if (is(128, 4, 64)) return run(prefill<kDim, 4, 2, 64>);
  if (is(128, 4, 32)) return run(prefill<kDim, 4, 2, 32>);
  if (is(256, 8, 64)) return run(prefill<kDim, 8, 2, 64>);
  return cudaErrorInvalidValue;
}

// ---- decode: split keys, all query heads of a KV group per block ----
//
// 4 warps; in a warp, 8 lanes share one key (each lane kDim / 8 of its dimensions), so a warp
// scores 4 keys at a time and the block 16. Each (warp, lane group) keeps its own online softmax
// over the keys it saw; the block merges them and writes one partial per (sequence, head,
// split): m and l in log2 units, and the unnormalized output.
template <int kDim, int kGroup>
__global__ void __launch_bounds__(128)
    decodeKernel(const bf16* q, const bf16* key_pool, const bf16* value_pool,
                 const int32_t* block_tables, uint32_t table_stride, const int32_t* lengths,
                 uint32_t partition, AttentionShape shape, float* workspace) {
  constexpr uint32_t kLaneDims = kDim / 8;
  static_assert(kLaneDims % 8 == 0, "a lane's dimensions are whole 16-byte loads");
  __shared__ float q_shared[kGroup][kDim];
  __shared__ float warp_max[4][kGroup];
  __shared__ float warp_sum[4][kGroup];
  __shared__ float warp_out[4][kGroup][kDim];

  waitForPrerequisites();
  const uint32_t sequence = blockIdx.z;
  const uint32_t kv_head = blockIdx.y;
  const uint32_t split = blockIdx.x;
  const uint32_t splits = gridDim.x;
  const uint32_t group = shape.heads / shape.kv_heads;
  const uint32_t q_dim = shape.heads * kDim;
  const uint32_t kv_dim = shape.kv_heads * kDim;
  const uint32_t length = static_cast<uint32_t>(lengths[sequence]);
  const uint32_t begin = split * partition;
  const uint32_t end = min(begin + partition, length);
  const uint64_t partials = static_cast<uint64_t>(gridDim.z) * shape.heads * splits;
  float* out_max = workspace;
  float* out_sum = workspace + partials;
  float* out_acc = workspace + 2 * partials;
  const auto partial = [&](uint32_t g) {
    return (static_cast<uint64_t>(sequence) * shape.heads + kv_head * group + g) * splits + split;
  };

  const uint32_t tid = threadIdx.x;
  if (begin >= end) {
    if (tid < group) {
      out_max[partial(tid)] = -INFINITY;
      out_sum[partial(tid)] = 0.0f;
    }
    return;
  }
  const float scale_log2 = shape.scale * kLog2e;
  for (uint32_t i = tid; i < kGroup * kDim; i += blockDim.x) {
    const uint32_t g = i / kDim;
    const uint32_t d = i % kDim;
    q_shared[g][d] =
        g < group
            ? toFloat(
                  q[static_cast<uint64_t>(sequence) * q_dim + (kv_head * group + g) * kDim + d]) *
                  scale_log2
            : 0.0f;
  }
  __syncthreads();

  const uint32_t warp = tid / 32;
  const uint32_t lane = tid % 32;
  const uint32_t lane_group = lane / 8;
  const uint32_t sub = lane % 8;
  const int32_t* table = block_tables + static_cast<uint64_t>(sequence) * table_stride;
  float m[kGroup];
  float l[kGroup];
  float acc[kGroup][kLaneDims];
#pragma unroll
  for (uint32_t g = 0; g < kGroup; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (uint32_t i = 0; i < kLaneDims; ++i) acc[g][i] = 0.0f;
  }

  for (uint32_t base = begin; base < end; base += 16) {
    const uint32_t key = base + warp * 4 + lane_group;
    const bool valid = key < end;
    float k_values[kLaneDims];
    float v_values[kLaneDims];
    if (valid) {
      const uint64_t block = static_cast<uint32_t>(table[key / shape.block_tokens]);
      const uint64_t offset = (block * shape.block_tokens + key % shape.block_tokens) * kv_dim +
                              kv_head * kDim + sub * kLaneDims;
      const uint4* k_raw = reinterpret_cast<const uint4*>(key_pool + offset);
      const uint4* v_raw = reinterpret_cast<const uint4*>(value_pool + offset);
#pragma unroll
      for (uint32_t piece = 0; piece < kLaneDims / 8; ++piece) {
        const uint4 kr = k_raw[piece];
        const uint4 vr = v_raw[piece];
        const bf16* kb = reinterpret_cast<const bf16*>(&kr);
        const bf16* vb = reinterpret_cast<const bf16*>(&vr);
#pragma unroll
        for (uint32_t j = 0; j < 8; ++j) {
          k_values[piece * 8 + j] = toFloat(kb[j]);
          v_values[piece * 8 + j] = toFloat(vb[j]);
        }
      }
    } else {
#pragma unroll
      for (uint32_t i = 0; i < kLaneDims; ++i) k_values[i] = v_values[i] = 0.0f;
    }
#pragma unroll
    for (uint32_t g = 0; g < kGroup; ++g) {
      float score = 0.0f;
#pragma unroll
      for (uint32_t i = 0; i < kLaneDims; ++i)
        score += q_shared[g][sub * kLaneDims + i] * k_values[i];
      score += __shfl_xor_sync(kFullMask, score, 1);
      score += __shfl_xor_sync(kFullMask, score, 2);
      score += __shfl_xor_sync(kFullMask, score, 4);
      if (!valid || g >= group) continue;
      const float new_max = fmaxf(m[g], score);
      const float correction = fastExp2(m[g] - new_max);  // 0 while m is -inf
      const float p = fastExp2(score - new_max);
      l[g] = l[g] * correction + p;
#pragma unroll
      for (uint32_t i = 0; i < kLaneDims; ++i) acc[g][i] = acc[g][i] * correction + p * v_values[i];
      m[g] = new_max;
    }
  }

  // Merge the warp's four lane groups (lanes sub, sub + 8, sub + 16, sub + 24 hold the same
  // dimensions), then the four warps through shared memory.
#pragma unroll
  for (uint32_t g = 0; g < kGroup; ++g) {
    float warp_m = m[g];
    warp_m = fmaxf(warp_m, __shfl_xor_sync(kFullMask, warp_m, 8));
    warp_m = fmaxf(warp_m, __shfl_xor_sync(kFullMask, warp_m, 16));
    const float weight = m[g] == -INFINITY ? 0.0f : fastExp2(m[g] - warp_m);
    float sum = l[g] * weight;
    sum += __shfl_xor_sync(kFullMask, sum, 8);
    sum += __shfl_xor_sync(kFullMask, sum, 16);
#pragma unroll
    for (uint32_t i = 0; i < kLaneDims; ++i) {
      float a = acc[g][i] * weight;
      a += __shfl_xor_sync(kFullMask, a, 8);
      a += __shfl_xor_sync(kFullMask, a, 16);
      if (lane_group == 0) warp_out[warp][g][sub * kLaneDims + i] = a;
    }
    if (lane == 0) {
      warp_max[warp][g] = warp_m;
      warp_sum[warp][g] = sum;
    }
  }
  __syncthreads();
  for (uint32_t i = tid; i < group * kDim; i += blockDim.x) {
    const uint32_t g = i / kDim;
    const uint32_t d = i % kDim;
    float block_max = -INFINITY;
    for (uint32_t w = 0; w < 4; ++w) block_max = fmaxf(block_max, warp_max[w][g]);
    float sum = 0.0f;
    float value = 0.0f;
    for (uint32_t w = 0; w < 4; ++w) {
      const float weight =
          warp_max[w][g] == -INFINITY ? 0.0f : fastExp2(warp_max[w][g] - block_max);
      sum += warp_sum[w][g] * weight;
      value += warp_out[w][g][d] * weight;
    }
    out_acc[partial(g) * kDim + d] = value;
    if (d == 0) {
      out_max[partial(g)] = block_max;
      out_sum[partial(g)] = sum;
    }
  }
}

__global__ void combineKernel(const float* workspace, uint32_t splits, uint32_t head_dim,
                              bf16* out) {
  waitForPrerequisites();
  const uint32_t head = blockIdx.x;
  const uint32_t heads = gridDim.x;
  const uint32_t sequence = blockIdx.y;
  const uint64_t partials = static_cast<uint64_t>(gridDim.y) * heads * splits;
  const float* in_max = workspace;
  const float* in_sum = workspace + partials;
  const float* in_acc = workspace + 2 * partials;
  const uint64_t first = (static_cast<uint64_t>(sequence) * heads + head) * splits;
  float total_max = -INFINITY;
  for (uint32_t s = 0; s < splits; ++s) {
    if (in_sum[first + s] > 0.0f) total_max = fmaxf(total_max, in_max[first + s]);
  }
  for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float sum = 0.0f;
    float value = 0.0f;
    for (uint32_t s = 0; s < splits; ++s) {
      if (!(in_sum[first + s] > 0.0f)) continue;
      const float weight = fastExp2(in_max[first + s] - total_max);
      sum += in_sum[first + s] * weight;
      value += in_acc[(first + s) * head_dim + d] * weight;
    }
    out[(static_cast<uint64_t>(sequence) * heads + head) * head_dim + d] =
        __float2bfloat16_rn(sum > 0.0f ? value / sum : 0.0f);
  }
}

template <int kDim, int kGroup>
cudaError_t decode(const bf16* q, const bf16* key_pool, const bf16* value_pool,
                   const int32_t* block_tables, uint32_t table_stride, const int32_t* lengths,
                   uint32_t sequences, uint32_t splits, uint32_t partition,
                   const AttentionShape& shape, float* workspace, bf16* out, cudaStream_t stream) {
  const dim3 grid(splits, shape.kv_heads, sequences);
  const cudaError_t launched =
      launchDependent(decodeKernel<kDim, kGroup>, grid, dim3(128), 0, stream, q, key_pool,
                      value_pool, block_tables, table_stride, lengths, partition, shape, workspace);
  if (launched != cudaSuccess) return launched;
  return launchDependent(combineKernel, dim3(shape.heads, sequences), dim3(kDim), 0, stream,
                         workspace, splits, static_cast<uint32_t>(kDim), out);
}

template <int kDim>
cudaError_t decodeForGroup(uint32_t group, const bf16* q, const bf16* key_pool,
                           const bf16* value_pool, const int32_t* block_tables,
                           uint32_t table_stride, const int32_t* lengths, uint32_t sequences,
                           uint32_t splits, uint32_t partition, const AttentionShape& shape,
                           float* workspace, bf16* out, cudaStream_t stream) {
  if (group <= 1) {
    return decode<kDim, 1>(q, key_pool, value_pool, block_tables, table_stride, lengths, sequences,
                           splits, partition, shape, workspace, out, stream);
  }
  if (group <= 2) {
    return decode<kDim, 2>(q, key_pool, value_pool, block_tables, table_stride, lengths, sequences,
                           splits, partition, shape, workspace, out, stream);
  }
  if (group <= 4) {
    return decode<kDim, 4>(q, key_pool, value_pool, block_tables, table_stride, lengths, sequences,
                           splits, partition, shape, workspace, out, stream);
  }
  return decode<kDim, 8>(q, key_pool, value_pool, block_tables, table_stride, lengths, sequences,
                         splits, partition, shape, workspace, out, stream);
}

// ---- generic: one warp per (query, head) ----
constexpr uint32_t kGenericMaxDim = 256;

__global__ void genericKernel(const bf16* q, const bf16* key_pool, const bf16* value_pool,
                              const int32_t* block_tables, const int32_t* table_offsets,
                              const int32_t* positions, uint32_t tokens, AttentionShape shape,
                              bf16* out) {
  constexpr uint32_t kPerLane = kGenericMaxDim / 32;
  waitForPrerequisites();
  const uint32_t warps = blockDim.x / 32;
  const uint64_t item = static_cast<uint64_t>(blockIdx.x) * warps + threadIdx.x / 32;
  const uint32_t lane = threadIdx.x % 32;
  if (item >= static_cast<uint64_t>(tokens) * shape.heads) return;
  const uint32_t t = static_cast<uint32_t>(item / shape.heads);
  const uint32_t head = static_cast<uint32_t>(item % shape.heads);
  const uint32_t dim = shape.head_dim;
  const uint32_t kv_head = head / (shape.heads / shape.kv_heads);
  const uint32_t kv_dim = shape.kv_heads * dim;
  const uint64_t q_row = (static_cast<uint64_t>(t) * shape.heads + head) * dim;
  const int32_t* table = block_tables + table_offsets[t];
  const uint32_t last = static_cast<uint32_t>(positions[t]);
  const float scale_log2 = shape.scale * kLog2e;

  float qv[kPerLane];
  float acc[kPerLane];
#pragma unroll
  for (uint32_t i = 0; i < kPerLane; ++i) {
    const uint32_t d = lane + 32 * i;
    qv[i] = d < dim ? toFloat(q[q_row + d]) * scale_log2 : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY;
  float l = 0.0f;
  for (uint32_t key = 0; key <= last; ++key) {
    const uint64_t block = static_cast<uint32_t>(table[key / shape.block_tokens]);
    const uint64_t row =
        (block * shape.block_tokens + key % shape.block_tokens) * kv_dim + kv_head * dim;
    float score = 0.0f;
#pragma unroll
    for (uint32_t i = 0; i < kPerLane; ++i) {
      const uint32_t d = lane + 32 * i;
      if (d < dim) score += qv[i] * toFloat(key_pool[row + d]);
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
      score += __shfl_xor_sync(kFullMask, score, offset);
    }
    const float new_max = fmaxf(m, score);
    const float correction = fastExp2(m - new_max);
    const float p = fastExp2(score - new_max);
    l = l * correction + p;
#pragma unroll
    for (uint32_t i = 0; i < kPerLane; ++i) {
      const uint32_t d = lane + 32 * i;
      if (d < dim) acc[i] = acc[i] * correction + p * toFloat(value_pool[row + d]);
    }
    m = new_max;
  }
#pragma unroll
  for (uint32_t i = 0; i < kPerLane; ++i) {
    const uint32_t d = lane + 32 * i;
    if (d < dim) out[q_row + d] = __float2bfloat16_rn(acc[i] / l);
  }
}

}  // namespace

bool fastAttentionSupports(uint32_t head_dim) { return head_dim == 64 || head_dim == 128; }

cudaError_t launchPrefillAttention(const bf16* q, const bf16* key_pool, const bf16* value_pool,
                                   const int32_t* block_tables, const PrefillChunk* chunks,
                                   const PrefillTile* tiles, uint32_t tile_count,
                                   PrefillTiling tiling, const AttentionShape& shape, bf16* out,
                                   cudaStream_t stream) {
  if (tile_count == 0) return cudaSuccess;
  switch (shape.head_dim) {
    case 64:
      return prefillForTiling<64>(tiling, q, key_pool, value_pool, block_tables, chunks, tiles,
                                  tile_count, shape, out, stream);
    case 128:
      return prefillForTiling<128>(tiling, q, key_pool, value_pool, block_tables, chunks, tiles,
                                   tile_count, shape, out, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

uint64_t decodeWorkspaceFloats(uint32_t sequences, uint32_t heads, uint32_t head_dim,
                               uint32_t splits) {
  return static_cast<uint64_t>(sequences) * heads * splits * (2 + head_dim);
}

cudaError_t launchDecodeAttention(const bf16* q, const bf16* key_pool, const bf16* value_pool,
                                  const int32_t* block_tables, uint32_t table_stride,
                                  const int32_t* lengths, uint32_t sequences, uint32_t splits,
                                  uint32_t partition, const AttentionShape& shape, float* workspace,
                                  bf16* out, cudaStream_t stream) {
  if (sequences == 0) return cudaSuccess;
  const uint32_t group = shape.heads / shape.kv_heads;
  if (splits == 0 || partition == 0 || partition % 16 != 0 || group > 8) {
    return cudaErrorInvalidValue;
  }
  switch (shape.head_dim) {
    case 64:
      return decodeForGroup<64>(group, q, key_pool, value_pool, block_tables, table_stride, lengths,
                                sequences, splits, partition, shape, workspace, out, stream);
    case 128:
      return decodeForGroup<128>(group, q, key_pool, value_pool, block_tables, table_stride,
                                 lengths, sequences, splits, partition, shape, workspace, out,
                                 stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launchGenericAttention(const bf16* q, const bf16* key_pool, const bf16* value_pool,
                                   const int32_t* block_tables, const int32_t* table_offsets,
                                   const int32_t* positions, uint32_t tokens,
                                   const AttentionShape& shape, bf16* out, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  if (shape.head_dim > kGenericMaxDim) return cudaErrorInvalidValue;
  const uint64_t items = static_cast<uint64_t>(tokens) * shape.heads;
  const uint64_t blocks = (items + 3) / 4;
  return launchDependent(genericKernel, dim3(static_cast<unsigned>(blocks)), dim3(128), 0, stream,
                         q, key_pool, value_pool, block_tables, table_offsets, positions, tokens,
                         shape, out);
}

}  // namespace kvferry::engine::cuda
