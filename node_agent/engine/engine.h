// The model runtime an agent drives (DESIGN.md §5): sequences over a paged KV cache with prefix
// caching, prefill of whole prompts (in chunks), batched decode steps (continuous batching: the
// caller picks the sequences of each step, so they join and leave between steps), and the two
// halves of disaggregation — export a prefilled sequence's block ids so the transfer engine can
// copy its KV, and import a sequence whose KV was copied into blocks reserved here.
//
// Sequence lifecycle:
//   prefill(prompt) ─────────────────────────────┐
//   reserveImport(tokens) → copy KV → commitImport ┴→ ready → decode(...)* → release
// A sequence holds the KV of every token it has seen: after prefill, the prompt; after a decode
// step, also the token fed in that step. release() (also valid on a reserved sequence whose
// transfer was abandoned) returns its blocks; full blocks stay cached for later prompts until
// evicted.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "model/block_hash.h"
#include "model/token_id.h"
#include "node_agent/engine/kv_block_manager.h"
#include "node_agent/engine/llama_weights.h"
#include "node_agent/engine/model_runner.h"

namespace kvferry::engine {

struct EngineConfig {
  uint32_t block_tokens = 16;  // tokens per KV block; every agent of a cluster must agree
  uint32_t num_blocks = 256;   // KV capacity in blocks (per layer, per K and V pool)
  bool prefix_caching = true;  // share full prompt blocks between sequences with equal prefixes
  model::BlockHashSeed hash_seed{};  // the block-hash chain's key; every agent must agree
  uint32_t max_batch_tokens = 256;   // tokens per forward pass: the prefill chunk, the decode cap
  uint32_t threads = 0;              // CPU threads the kernels use (the caller's included); 0: all
  // Prefix-index events kept between two drainKvEvents() calls before they overflow.
  uint32_t max_pending_kv_events = KvBlockManager::kDefaultMaxPendingEvents;
};

using SequenceId = uint64_t;

struct PrefillResult {
  SequenceId id = 0;
  uint32_t cached_tokens = 0;  // prompt tokens whose KV came from the prefix cache
};

struct ImportReservation {
  SequenceId id = 0;
  // Leading blocks this engine already held in its prefix cache: the sender skips them and
  // copies blocks [cached_blocks, block count) of sequence(id).block_ids.
  uint32_t cached_blocks = 0;
};

// What a sequence holds, for export: valid until the next call that changes the engine.
struct SequenceView {
  std::span<const model::TokenId> tokens;  // every token whose KV is in the cache
  std::span<const uint32_t> block_ids;     // position p lives in block_ids[p / block_tokens]
  bool ready = false;                      // false while an import is reserved, not committed
};

// Thread ownership: one thread (the agent's engine thread) calls every method. The transfer
// engine may access the pools concurrently, but only the blocks of a sequence between its
// reserveImport() and commitImport() (writes) or of a sequence the caller does not decode or
// release while its KV is being read (exports).
class Engine {
 public:
  // A CPU engine. INVALID_ARGUMENT for a zero block_tokens, num_blocks or max_batch_tokens.
  static Result<std::unique_ptr<Engine>> create(std::shared_ptr<const LlamaWeights> weights,
                                                const EngineConfig& config);
  // An engine over any backend (the CUDA runner later). The runner's geometry must match
  // config.block_tokens and config.num_blocks (INVALID_ARGUMENT otherwise).
  static Result<std::unique_ptr<Engine>> create(std::unique_ptr<ModelRunner> runner,
                                                const EngineConfig& config);

  const model::LlamaParams& params() const { return params_; }
  uint32_t vocabSize() const { return params_.vocab_size; }
  uint32_t blockTokens() const { return config_.block_tokens; }
  // The longest sequence, in tokens, that prefill and decode accept.
  uint32_t maxSequenceTokens() const { return runner_->maxSequenceTokens(); }
  const KvGeometry& kvGeometry() const { return runner_->kvGeometry(); }
  // Layer `layer`'s pools, to register with the transfer engine.
  KvPoolRegion keyPool(uint32_t layer) { return runner_->keyPool(layer); }
  KvPoolRegion valuePool(uint32_t layer) { return runner_->valuePool(layer); }
  const KvBlockManager& blocks() const { return blocks_; }
  size_t sequenceCount() const { return sequences_.size(); }

  // The prefix index's changes since the last call, for the orchestrator's copy of it: see
  // KvBlockManager::drainEvents(). True on overflow: resync from cachedBlockHashes() then, before
  // the next call that changes the engine. An engine without prefix_caching has no events.
  bool drainKvEvents(std::vector<KvBlockEvent>& out) { return blocks_.drainEvents(out); }
  // Appends the hash of every block in the prefix index (any order).
  void cachedBlockHashes(std::vector<uint64_t>& out) const { blocks_.cachedHashes(out); }

  // Starts a sequence with `prompt`: reuses the KV of the longest cached prefix of whole blocks
  // (always leaving at least the last token to compute), computes the rest in chunks of
  // max_batch_tokens, and writes the last token's logits to `logits` (vocabSize() floats).
  // INVALID_ARGUMENT for an empty prompt, a token outside the vocabulary or a wrong logits size;
  // OUT_OF_RANGE for a prompt longer than maxSequenceTokens(); RESOURCE_EXHAUSTED when the cache
  // has too few blocks. Nothing changes on error.
  //
  // on_layer_done, when set, is called on this thread once per layer, in ascending order, during
  // the forward pass of the prompt's last chunk, as soon as that layer's K/V of the whole prompt
  // is final (earlier chunks ran every layer before): the caller may then start copying layer L
  // of the sequence's blocks while later layers compute. It fires for every prefill that
  // succeeds, a prompt served from the cache but for its last token included (that token is the
  // last chunk). During the callback, prefillingBlockIds() names the sequence's blocks; the
  // callback may read the engine (pools, geometry) but must not call prefill, decode, release or
  // the imports. On error it may have fired for some layers (the failing forward pass's earlier
  // ones) and the blocks were returned, to be reused: transfers it started must be abandoned (the
  // caller must not let them run on into blocks a later call rewrites).
  //
  // stop_requested, when set, is asked before each chunk's forward pass, the last one included
  // (a forward pass itself is not interruptible, so a stop never leaves on_layer_done half
  // done): true ends the prefill with CANCELLED, its blocks returned and nothing published.
  Result<PrefillResult> prefill(std::span<const model::TokenId> prompt, std::span<float> logits,
                                const LayerDoneCallback& on_layer_done = nullptr,
                                const std::function<bool()>& stop_requested = nullptr);
  // The same, but instead of the logits the first token, drawn from them as `draw` says
  // (ModelRunner::forwardSampled: on a CUDA runner the logits never leave the device).
  Result<PrefillResult> prefill(std::span<const model::TokenId> prompt, const TokenDraw& draw,
                                model::TokenId& first_token,
                                const LayerDoneCallback& on_layer_done = nullptr,
                                const std::function<bool()>& stop_requested = nullptr);
  // The block ids of the sequence prefill() is computing (position p in block p / blockTokens()),
  // as sequence(id).block_ids will hold them: for an on_layer_done callback, which runs before
  // the id exists. Empty outside prefill(); valid until the callback returns.
  std::span<const uint32_t> prefillingBlockIds() const {
    return prefilling_ != nullptr ? std::span<const uint32_t>(prefilling_->blocks)
                                  : std::span<const uint32_t>();
  }

  // One decode step: appends tokens[i] to sequence ids[i] and writes its logits to row i of
  // `logits` (ids.size() × vocabSize()). The result of each sequence is independent of the rest
  // of the batch. NOT_FOUND for an unknown id, FAILED_PRECONDITION for a sequence not ready,
  // INVALID_ARGUMENT for a repeated id, a token outside the vocabulary or wrong sizes,
  // OUT_OF_RANGE for a sequence at maxSequenceTokens(), RESOURCE_EXHAUSTED when a new block is
  // needed and none is available. Nothing changes on error.
  Status decode(std::span<const SequenceId> ids, std::span<const model::TokenId> tokens,
                std::span<float> logits);
  // The same, but instead of logits each sequence's next token, drawn as draws[i] says into
  // next[i] (ids.size() entries each).
  Status decode(std::span<const SequenceId> ids, std::span<const model::TokenId> tokens,
                std::span<const TokenDraw> draws, std::span<model::TokenId> next);

  // Ends a sequence and returns its blocks. NOT_FOUND for an unknown id.
  Status release(SequenceId id);

  Result<SequenceView> sequence(SequenceId id) const;

  // Reserves blocks for a sequence whose KV for `tokens` another agent computed, taking the
  // leading full blocks this engine already caches; the caller copies the rest into the other
  // blocks of sequence(id).block_ids, then calls commitImport(). Errors as prefill.
  Result<ImportReservation> reserveImport(std::span<const model::TokenId> tokens);
  // Declares a reserved sequence's KV complete: it becomes ready to decode, and its full blocks
  // join the prefix cache. NOT_FOUND for an unknown id, FAILED_PRECONDITION when not reserved.
  Status commitImport(SequenceId id);

 private:
  struct Sequence {
    std::vector<model::TokenId> tokens;
    std::vector<uint32_t> blocks;
    std::vector<uint64_t> hashes;  // of the full blocks hashed so far
    uint32_t published = 0;        // blocks [0, published) are in the prefix index (or tried)
    bool ready = false;
    uint64_t last_step = 0;  // the decode step that last fed this sequence (repeat check)
  };

  // Where a forward pass's result goes: logits, or tokens drawn from them.
  struct Output {
    std::span<float> logits;
    std::span<const TokenDraw> draws;
    std::span<model::TokenId> tokens;
    bool sampled() const { return !draws.empty(); }
    // The part for chunks [begin, end) of a batch whose chunks all want logits.
    Output slice(size_t begin, size_t end, size_t vocab) const;
  };

  Engine(std::unique_ptr<ModelRunner> runner, const EngineConfig& config);

  Status forward(std::span<const SequenceChunk> chunks, const Output& out,
                 const LayerDoneCallback& on_layer_done);
  Result<PrefillResult> prefillTo(std::span<const model::TokenId> prompt, const Output& out,
                                  const LayerDoneCallback& on_layer_done,
                                  const std::function<bool()>& stop_requested);
  Status decodeTo(std::span<const SequenceId> ids, std::span<const model::TokenId> tokens,
                  const Output& out);

  // Checks a prompt's tokens and length.
  Status checkTokens(std::span<const model::TokenId> tokens) const;
  // A sequence holding `tokens` with blocks for all of them: cached prefix blocks (at most
  // max_cached_blocks), then fresh ones. On RESOURCE_EXHAUSTED every block taken is returned.
  Result<Sequence> allocateSequence(std::span<const model::TokenId> tokens,
                                    uint32_t max_cached_blocks, uint32_t& cached_blocks);
  // Hashes and indexes the sequence's full blocks not yet indexed (prefix caching on).
  void publishFullBlocks(Sequence& sequence);
  void releaseBlocks(const Sequence& sequence);
  SequenceId insert(Sequence sequence);

  const EngineConfig config_;
  const model::LlamaParams params_;
  std::unique_ptr<ModelRunner> runner_;
  KvBlockManager blocks_;
  std::unordered_map<SequenceId, Sequence> sequences_;
  SequenceId next_id_ = 1;
  uint64_t step_ = 0;
  const Sequence* prefilling_ = nullptr;  // set while prefill() runs its forward passes
  // Reused by every decode step, so a step allocates nothing once they have grown.
  std::vector<SequenceChunk> chunks_;
  std::vector<Sequence*> step_sequences_;
  std::vector<uint32_t> step_new_blocks_;
};

}  // namespace kvferry::engine
