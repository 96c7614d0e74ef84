#include "node_agent/engine/engine.h"

#include <algorithm>
#include <cassert>
#include <string>

#include "node_agent/engine/cpu/cpu_model_runner.h"

namespace kvferry::engine {
namespace {

std::string str(uint64_t value) { return std::to_string(value); }

}  // namespace

Result<std::unique_ptr<Engine>> Engine::create(std::shared_ptr<const LlamaWeights> weights,
                                               const EngineConfig& config) {
  const RunnerConfig runner_config{config.block_tokens, config.num_blocks, config.max_batch_tokens,
                                   config.threads};
  ASSIGN_OR_RETURN(std::unique_ptr<cpu::CpuModelRunner> runner,
                   cpu::CpuModelRunner::create(std::move(weights), runner_config));
  return create(std::move(runner), config);
}

Result<std::unique_ptr<Engine>> Engine::create(std::unique_ptr<ModelRunner> runner,
                                               const EngineConfig& config) {
  if (runner == nullptr) return invalidArgument("no model runner");
  const KvGeometry& geometry = runner->kvGeometry();
  if (geometry.block_tokens != config.block_tokens || geometry.num_blocks != config.num_blocks) {
    return invalidArgument("the runner's cache has " + str(geometry.num_blocks) + " blocks of " +
                           str(geometry.block_tokens) + " tokens, the config " +
                           str(config.num_blocks) + " of " + str(config.block_tokens));
  }
  return std::unique_ptr<Engine>(new Engine(std::move(runner), config));
}

Engine::Engine(std::unique_ptr<ModelRunner> runner, const EngineConfig& config)
    : config_(config),
      params_(runner->params()),
      runner_(std::move(runner)),
      blocks_(config.num_blocks, config.max_pending_kv_events) {}

Status Engine::checkTokens(std::span<const model::TokenId> tokens) const {
  if (tokens.empty()) return invalidArgument("no tokens");
  if (tokens.size() > maxSequenceTokens()) {
    return outOfRange(str(tokens.size()) + " tokens exceed the " + str(maxSequenceTokens()) +
                      " a sequence may hold");
  }
  for (model::TokenId token : tokens) {
    if (token < 0 || static_cast<uint32_t>(token) >= params_.vocab_size) {
      return invalidArgument("token " + std::to_string(token) + " outside the vocabulary of " +
                             str(params_.vocab_size));
    }
  }
  return Status::ok();
}

Result<Engine::Sequence> Engine::allocateSequence(std::span<const model::TokenId> tokens,
                                                  uint32_t max_cached_blocks,
                                                  uint32_t& cached_blocks) {
  const uint32_t block_tokens = config_.block_tokens;
  const auto needed = static_cast<uint32_t>((tokens.size() + block_tokens - 1) / block_tokens);
  Sequence sequence;
  sequence.tokens.assign(tokens.begin(), tokens.end());
  sequence.blocks.reserve(needed);
  if (config_.prefix_caching) {
    RETURN_IF_ERROR(
        model::appendBlockHashes(config_.hash_seed, tokens, block_tokens, sequence.hashes));
    const size_t limit = std::min<size_t>(max_cached_blocks, sequence.hashes.size());
    for (size_t i = 0; i < limit; ++i) {
      const std::optional<uint32_t> block = blocks_.acquireCached(sequence.hashes[i]);
      if (!block) break;
      sequence.blocks.push_back(*block);
    }
  }
  cached_blocks = static_cast<uint32_t>(sequence.blocks.size());
  sequence.published = cached_blocks;
  if (needed - cached_blocks > blocks_.availableBlocks()) {
    const uint32_t available = blocks_.availableBlocks();
    releaseBlocks(sequence);
    return resourceExhausted(str(tokens.size()) + " tokens need " + str(needed - cached_blocks) +
                             " new KV blocks, " + str(available) + " are available");
  }
  while (sequence.blocks.size() < needed) {
    Result<uint32_t> block = blocks_.allocate();
    assert(block.isOk());  // counted above
    sequence.blocks.push_back(*block);
  }
  return sequence;
}

void Engine::publishFullBlocks(Sequence& sequence) {
  if (!config_.prefix_caching) return;
  [[maybe_unused]] const Status status = model::appendBlockHashes(
      config_.hash_seed, sequence.tokens, config_.block_tokens, sequence.hashes);
  assert(status.isOk());  // block_tokens > 0 and the hashes only ever grow with the tokens
  for (; sequence.published < sequence.hashes.size(); ++sequence.published) {
    blocks_.publish(sequence.blocks[sequence.published], sequence.hashes[sequence.published]);
  }
}

void Engine::releaseBlocks(const Sequence& sequence) {
  // Last block first: the LRU then evicts a prefix's tail before its head, which keeps the
  // shorter, more widely shared prefixes cached longer.
  for (auto it = sequence.blocks.rbegin(); it != sequence.blocks.rend(); ++it) {
    blocks_.release(*it);
  }
}

SequenceId Engine::insert(Sequence sequence) {
  const SequenceId id = next_id_++;
  sequences_.emplace(id, std::move(sequence));
  return id;
}

Engine::Output Engine::Output::slice(size_t begin, size_t end, size_t vocab) const {
  if (sampled()) {
    return {{}, draws.subspan(begin, end - begin), tokens.subspan(begin, end - begin)};
  }
  return {logits.subspan(begin * vocab, (end - begin) * vocab), {}, {}};
}

Status Engine::forward(std::span<const SequenceChunk> chunks, const Output& out,
                       const LayerDoneCallback& on_layer_done) {
  if (out.sampled()) return runner_->forwardSampled(chunks, out.draws, out.tokens, on_layer_done);
  return runner_->forward(chunks, out.logits, on_layer_done);
}

Result<PrefillResult> Engine::prefill(std::span<const model::TokenId> prompt,
                                      std::span<float> logits,
                                      const LayerDoneCallback& on_layer_done,
                                      const std::function<bool()>& stop_requested) {
  if (logits.size() != params_.vocab_size) {
    return invalidArgument("logits hold " + str(logits.size()) + " floats, not " +
                           str(params_.vocab_size));
  }
  return prefillTo(prompt, Output{logits, {}, {}}, on_layer_done, stop_requested);
}

Result<PrefillResult> Engine::prefill(std::span<const model::TokenId> prompt, const TokenDraw& draw,
                                      model::TokenId& first_token,
                                      const LayerDoneCallback& on_layer_done,
                                      const std::function<bool()>& stop_requested) {
  return prefillTo(prompt, Output{{}, {&draw, 1}, {&first_token, 1}}, on_layer_done,
                   stop_requested);
}

Result<PrefillResult> Engine::prefillTo(std::span<const model::TokenId> prompt, const Output& out,
                                        const LayerDoneCallback& on_layer_done,
                                        const std::function<bool()>& stop_requested) {
  RETURN_IF_ERROR(checkTokens(prompt));
  // The last token is always computed: its logits are the point of a prefill.
  const auto max_cached = static_cast<uint32_t>((prompt.size() - 1) / config_.block_tokens);
  uint32_t cached_blocks = 0;
  ASSIGN_OR_RETURN(Sequence sequence, allocateSequence(prompt, max_cached, cached_blocks));

  const auto length = static_cast<uint32_t>(prompt.size());
  const LayerDoneCallback no_callback;
  prefilling_ = &sequence;
  for (uint32_t position = cached_blocks * config_.block_tokens; position < length;) {
    // As many chunks as the batch cap needs, of even sizes: a prompt just past the cap would
    // otherwise end in a chunk of a few tokens, which pays a whole pass over the weights and
    // attends the whole prompt with too few queries to fill the GPU (8,192 + 1 tokens on an H100
    // with the 8B shape: the 1-token chunk took 23 ms).
    const uint32_t remaining = length - position;
    const uint32_t cap = runner_->maxBatchTokens();
    const uint32_t chunks = (remaining + cap - 1) / cap;
    const uint32_t count = (remaining + chunks - 1) / chunks;
    const bool last = position + count == length;
    const SequenceChunk chunk{prompt.subspan(position, count), position, sequence.blocks, last};
    // Only the last chunk's layer L completes layer L of the whole prompt.
    const Status status =
        stop_requested && stop_requested()
            ? cancelled("prefill stopped after " + str(position) + " of " + str(length) + " tokens")
            : forward({&chunk, 1}, last ? out : Output{}, last ? on_layer_done : no_callback);
    if (!status.isOk()) {
      prefilling_ = nullptr;
      releaseBlocks(sequence);
      return status;
    }
    position += count;
  }
  prefilling_ = nullptr;
  sequence.ready = true;
  publishFullBlocks(sequence);
  return PrefillResult{insert(std::move(sequence)), cached_blocks * config_.block_tokens};
}

Status Engine::decode(std::span<const SequenceId> ids, std::span<const model::TokenId> tokens,
                      std::span<float> logits) {
  if (logits.size() != ids.size() * params_.vocab_size) {
    return invalidArgument("logits hold " + str(logits.size()) + " floats, not " + str(ids.size()) +
                           " × " + str(params_.vocab_size));
  }
  return decodeTo(ids, tokens, Output{logits, {}, {}});
}

Status Engine::decode(std::span<const SequenceId> ids, std::span<const model::TokenId> tokens,
                      std::span<const TokenDraw> draws, std::span<model::TokenId> next) {
  if (draws.size() != ids.size() || next.size() != ids.size()) {
    return invalidArgument(str(ids.size()) + " sequences but " + str(draws.size()) + " draws and " +
                           str(next.size()) + " next tokens");
  }
  return decodeTo(ids, tokens, Output{{}, draws, next});
}

Status Engine::decodeTo(std::span<const SequenceId> ids, std::span<const model::TokenId> tokens,
                        const Output& out) {
  if (tokens.size() != ids.size()) {
    return invalidArgument(str(ids.size()) + " sequences but " + str(tokens.size()) + " tokens");
  }
  ++step_;
  step_sequences_.clear();
  uint32_t new_blocks = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto it = sequences_.find(ids[i]);
    if (it == sequences_.end()) return notFound("sequence " + str(ids[i]));
    Sequence& sequence = it->second;
    if (!sequence.ready) {
      return failedPrecondition("sequence " + str(ids[i]) + " is reserved for an import");
    }
    if (sequence.last_step == step_) {
      return invalidArgument("sequence " + str(ids[i]) + " appears twice in one step");
    }
    sequence.last_step = step_;
    if (tokens[i] < 0 || static_cast<uint32_t>(tokens[i]) >= params_.vocab_size) {
      return invalidArgument("token " + std::to_string(tokens[i]) + " outside the vocabulary of " +
                             str(params_.vocab_size));
    }
    if (sequence.tokens.size() >= maxSequenceTokens()) {
      return outOfRange("sequence " + str(ids[i]) + " holds " + str(maxSequenceTokens()) +
                        " tokens, the most it may");
    }
    if (sequence.tokens.size() % config_.block_tokens == 0) ++new_blocks;
    step_sequences_.push_back(&sequence);
  }
  if (new_blocks > blocks_.availableBlocks()) {
    return resourceExhausted("the step needs " + str(new_blocks) + " new KV blocks, " +
                             str(blocks_.availableBlocks()) + " are available");
  }
  step_new_blocks_.clear();
  for (Sequence* sequence : step_sequences_) {
    const bool grows = sequence->tokens.size() % config_.block_tokens == 0;
    if (grows) {
      Result<uint32_t> block = blocks_.allocate();
      assert(block.isOk());  // counted above
      sequence->blocks.push_back(*block);
    }
    step_new_blocks_.push_back(grows ? 1 : 0);
  }

  const size_t vocab = params_.vocab_size;
  const size_t batch = std::min(runner_->maxBatchTokens(), runner_->maxBatchSequences());
  for (size_t begin = 0; begin < ids.size(); begin += batch) {
    const size_t end = std::min(ids.size(), begin + batch);
    chunks_.clear();
    for (size_t i = begin; i < end; ++i) {
      const Sequence& sequence = *step_sequences_[i];
      chunks_.push_back({tokens.subspan(i, 1), static_cast<uint32_t>(sequence.tokens.size()),
                         sequence.blocks, true});
    }
    const Status status = forward(chunks_, out.slice(begin, end, vocab), nullptr);
    if (!status.isOk()) {
      // K/V already written past a sequence's end is never read: undoing the blocks suffices.
      for (size_t i = 0; i < step_sequences_.size(); ++i) {
        if (step_new_blocks_[i] == 0) continue;
        blocks_.release(step_sequences_[i]->blocks.back());
        step_sequences_[i]->blocks.pop_back();
      }
      return status;
    }
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    Sequence& sequence = *step_sequences_[i];
    sequence.tokens.push_back(tokens[i]);
    if (sequence.tokens.size() % config_.block_tokens == 0) publishFullBlocks(sequence);
  }
  return Status::ok();
}

Status Engine::release(SequenceId id) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return notFound("sequence " + str(id));
  releaseBlocks(it->second);
  sequences_.erase(it);
  return Status::ok();
}

Result<SequenceView> Engine::sequence(SequenceId id) const {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return notFound("sequence " + str(id));
  return SequenceView{it->second.tokens, it->second.blocks, it->second.ready};
}

Result<ImportReservation> Engine::reserveImport(std::span<const model::TokenId> tokens) {
  RETURN_IF_ERROR(checkTokens(tokens));
  // Every full block may come from the cache: the sender computed the logits already.
  uint32_t cached_blocks = 0;
  ASSIGN_OR_RETURN(Sequence sequence, allocateSequence(tokens, UINT32_MAX, cached_blocks));
  return ImportReservation{insert(std::move(sequence)), cached_blocks};
}

Status Engine::commitImport(SequenceId id) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return notFound("sequence " + str(id));
  if (it->second.ready) return failedPrecondition("sequence " + str(id) + " is not reserved");
  it->second.ready = true;
  publishFullBlocks(it->second);
  return Status::ok();
}

}  // namespace kvferry::engine
