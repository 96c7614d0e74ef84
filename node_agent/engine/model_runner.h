// The compute backend of the model runtime (DESIGN.md §5): runs a batch of sequence chunks through
// the model over the paged KV cache it owns. The CPU backend (cpu/cpu_model_runner.h) is always
// built; a CUDA backend implements the same interface with device pools and kernels. Everything
// above it (block bookkeeping, prefix caching, sequences, batching, sampling) is shared.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "common/status.h"
#include "model/llama_params.h"
#include "model/token_id.h"

namespace kvferry::engine {

// The element type of the KV pools: float32 on the CPU, bfloat16 on CUDA. Agents of one cluster
// must agree (it is part of the KV layout they register).
enum class KvDtype : uint8_t { kF32, kBF16 };
inline const char* kvDtypeName(KvDtype dtype) { return dtype == KvDtype::kF32 ? "f32" : "bf16"; }
inline uint32_t kvDtypeBytes(KvDtype dtype) { return dtype == KvDtype::kF32 ? 4 : 2; }

// Shape of the paged KV cache: per layer one K pool and one V pool, each num_blocks blocks of
// block_tokens × kv_heads × head_dim elements of `dtype`, token-major inside a block. Block b of a
// pool lives at b × blockBytes() from the pool's base (rdma::KvPool addressing), so the transfer
// engine can move blocks between agents with no per-block metadata.
struct KvGeometry {
  uint32_t layers = 0;
  uint32_t block_tokens = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t num_blocks = 0;
  KvDtype dtype = KvDtype::kF32;

  uint64_t tokenElements() const { return uint64_t{kv_heads} * head_dim; }  // one token, K or V
  uint64_t tokenBytes() const { return tokenElements() * kvDtypeBytes(dtype); }
  uint64_t blockBytes() const { return block_tokens * tokenBytes(); }
  uint64_t poolBytes() const { return blockBytes() * num_blocks; }
  // K and V of one token across every layer: what a token costs in cache and on the wire.
  uint64_t bytesPerToken() const { return 2 * uint64_t{layers} * tokenBytes(); }
};

// One KV pool's memory as the transfer engine registers it. The runner owns the memory; it lives
// as long as the runner.
struct KvPoolRegion {
  void* base = nullptr;
  uint64_t bytes = 0;
  int cuda_device = -1;  // -1: host memory
};

// One sequence's share of a forward batch: `tokens` at positions start_position,
// start_position + 1, …, attending to every earlier position of the same sequence, whose K/V are
// read from (and this chunk's written to) the blocks of `block_table` (position p lives in block
// block_table[p / block_tokens], slot p % block_tokens). The spans are borrowed for the call.
struct SequenceChunk {
  std::span<const model::TokenId> tokens;
  uint32_t start_position = 0;
  std::span<const uint32_t> block_table;
  bool want_logits = false;  // produce the logits of the chunk's last token
};

// Told that layer `layer`'s K and V of the forward pass in progress are final (see forward()).
using LayerDoneCallback = std::function<void(uint32_t layer)>;

// How to pick one sequence's next token from its logits (see ModelRunner::forwardSampled). The
// random number is drawn by the caller, from the sequence's own stream, so a sequence's tokens
// depend on its seed alone, whichever backend or batch computes them.
struct TokenDraw {
  float temperature = 0.0f;  // 0: greedy (argmax, the lowest id on ties)
  uint32_t top_k = 0;        // 0: all (CPU only; the CUDA runner refuses other values)
  float top_p = 1.0f;        // keep the most likely tokens up to this probability mass
  float uniform = 0.0f;      // in [0, 1): the draw; unused when greedy
  bool greedy() const { return temperature == 0.0f || top_k == 1; }
};

struct RunnerConfig {
  uint32_t block_tokens = 16;
  uint32_t num_blocks = 256;
  uint32_t max_batch_tokens = 256;  // tokens of all chunks of one forward() together
  uint32_t threads = 0;             // CPU: threads the kernels use, the caller's included; 0: all
};

// Thread ownership: one thread (the engine's) calls forward(); the pools may be read and written
// concurrently by the transfer engine, but only in blocks that no forward() in flight touches —
// the block manager above guarantees that.
class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  virtual const model::LlamaParams& params() const = 0;
  virtual const KvGeometry& kvGeometry() const = 0;
  virtual uint32_t maxBatchTokens() const = 0;
  // Chunks with want_logits one forward() takes at most (the logits rows it holds).
  virtual uint32_t maxBatchSequences() const { return maxBatchTokens(); }
  // Longest sequence (positions) the runner can attend over: the context length, capped by the
  // cache's capacity.
  virtual uint32_t maxSequenceTokens() const = 0;

  virtual KvPoolRegion keyPool(uint32_t layer) = 0;
  virtual KvPoolRegion valuePool(uint32_t layer) = 0;

  // Runs every chunk's tokens through the model: writes their K/V into their slots and, for each
  // chunk with want_logits, in chunk order, params().vocab_size logits into `logits` (which holds
  // exactly that many rows). On the CPU runner a chunk's result does not depend on the other
  // chunks of the batch, on how a sequence was split into chunks, or on the thread count: the same
  // positions and tokens give bit-identical logits and K/V. The CUDA runner's GEMMs pick
  // algorithms by batch shape, so there the last bits may differ with the batch and the chunking
  // (the tokens only at near-ties); one batch shape always gives the same bits. INVALID_ARGUMENT /
  // OUT_OF_RANGE for an empty chunk, a token outside the vocabulary, more than maxBatchTokens()
  // tokens, a position past maxSequenceTokens(), a block table that does not cover the chunk, or a
  // block id past the pools; nothing is written then (and on_layer_done is not called).
  //
  // on_layer_done, when set, is called on the calling thread once per layer in ascending order,
  // after that layer's K and V of every chunk are written to the pools and before any later layer
  // runs; this forward() never writes that layer's pools again, so the caller may start reading
  // (transferring) them while later layers compute. A CUDA runner calls it once the layer's
  // writes are complete on the device.
  virtual Status forward(std::span<const SequenceChunk> chunks, std::span<float> logits,
                         const LayerDoneCallback& on_layer_done = nullptr) = 0;

  // forward(), then one token per chunk with want_logits, in chunk order, drawn from that chunk's
  // logits as draws[i] says (draws and tokens hold one entry per such chunk). The CPU runner
  // picks as engine::Sampler does (the candidates sorted by probability); the CUDA runner keeps
  // the logits on the device and picks there, walking the kept tokens in id order — another
  // mapping from the same uniform draw to a token, with the same distribution. Errors as
  // forward(), and INVALID_ARGUMENT for sizes that do not match or a draw the runner cannot do.
  virtual Status forwardSampled(std::span<const SequenceChunk> chunks,
                                std::span<const TokenDraw> draws, std::span<model::TokenId> tokens,
                                const LayerDoneCallback& on_layer_done = nullptr) = 0;
};

}  // namespace kvferry::engine
