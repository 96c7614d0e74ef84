#include "node_agent/batch_loop.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "node_agent/fault_point.h"
#include "node_agent/wire_engine.h"

namespace kvferry::agent {

using Clock = std::chrono::steady_clock;

BatchLoop::BatchLoop(engine::Engine& engine, PrefillRunner& prefills, AgentMetrics& metrics,
                     uint32_t max_batch_sequences)
    : engine_(engine),
      prefills_(prefills),
      metrics_(metrics),
      max_batch_sequences_(max_batch_sequences),
      sampler_(engine.vocabSize()) {}

void BatchLoop::run(boost::asio::io_context& work, const std::atomic<bool>& stop,
                    const std::function<void()>& each_turn) {
  while (!stop) {
    work.poll();
    if (stop) break;
    each_turn();
    if (!decoding_.empty()) {
      decodeStep();
      publishGauges();
      continue;
    }
    publishGauges();
    work.run_one_for(std::chrono::milliseconds(20));
  }
}

// Once per loop turn (a decode step, or at most every 20 ms when idle). The KV block states are
// the agent's to publish: it knows the leases.
void BatchLoop::publishGauges() {
  metrics_.decoding_sequences.Set(static_cast<double>(decoding_.size()));
}

void BatchLoop::generate(const wire::GenerateRequest& request, std::shared_ptr<Stream> stream,
                         const StopFlag* stop) {
  const engine::SamplingParams sampling = samplingOf(request.sampling);
  engine::LogitParams logit_params = logitParamsOf(request.sampling, request.stop_tokens);
  if (Status s = prefills_.check(sampling, logit_params, request.rng_draws); !s.isOk()) {
    stream->emit(finishLine("error", s.message()), true);
    return;
  }
  const std::vector<model::TokenId> tokens = tokensOf(request.tokens);
  engine::LogitProcessor processor(std::move(logit_params), tokens, request.sampling.answer_tokens);
  auto prefilled = prefills_.run(tokens, sampling, processor, request.rng_draws, nullptr, stop,
                                 &stream->cancelled);
  if (!prefilled.isOk()) {
    const Status& s = prefilled.status();
    const bool stopped = s.code() == StatusCode::kCancelled;
    stream->emit(
        finishLine("error", stopped ? "cancelled" : "prefill: " + s.toString(), capacityCode(s)),
        true);
    return;
  }
  Decoding d;
  d.request_id = request.request_id;
  d.seq = prefilled->seq;
  d.stream = std::move(stream);
  d.sampling = sampling;
  d.rng = prefilled->rng;
  d.logits = std::move(processor);
  d.stop = tokensOf(request.stop_tokens);
  const model::TokenId first = prefilled->first.token;
  decoding_.push_back(std::move(d));
  Decoding& a = decoding_.back();
  // A stop token is sent too (it counts as an answer token, as the prefill agent's first token
  // does), then ends the answer.
  if (!a.stream->emit(tokenLine(prefilled->first, prefilled->cached_tokens), false)) {
    return finish(decoding_.size() - 1, "error", "cancelled");
  }
  if (std::find(a.stop.begin(), a.stop.end(), first) != a.stop.end()) {
    return finish(decoding_.size() - 1, "stop");
  }
  if (request.max_new_tokens <= 1) return finish(decoding_.size() - 1, "length");
  a.next = first;
  a.remaining = request.max_new_tokens - 1;
}

void BatchLoop::admitImported(engine::SequenceId seq, const wire::DecodeRequest& decode,
                              std::shared_ptr<Stream> stream) {
  Decoding d;
  d.request_id = decode.request_id;
  d.seq = seq;
  d.stream = std::move(stream);
  d.sampling = samplingOf(decode.sampling);
  d.rng = engine::SamplingRng(d.sampling.seed);
  d.rng.discard(decode.rng_draws);
  d.next = decode.first_token;
  d.remaining = decode.max_new_tokens;
  d.stop = tokensOf(decode.stop_tokens);
  engine::LogitParams logit_params = logitParamsOf(decode.sampling, decode.stop_tokens);
  Status valid = engine::validateSamplingParams(d.sampling);
  if (valid.isOk()) valid = engine::validateLogitParams(logit_params, engine_.vocabSize());
  if (!valid.isOk()) {
    d.stream->emit(finishLine("error", valid.message()), true);
    engine_.release(d.seq).ignoreError();
    return;
  }
  // The sequence holds the prompt; the prefill agent picked the answer's first token.
  auto view = engine_.sequence(seq);
  d.logits = engine::LogitProcessor(std::move(logit_params),
                                    view.isOk() ? view->tokens : std::span<const model::TokenId>(),
                                    decode.sampling.answer_tokens);
  d.logits.accept(decode.first_token);
  if (d.remaining == 0) {
    d.stream->emit(finishLine("length"), true);
    engine_.release(d.seq).ignoreError();
    return;
  }
  decoding_.push_back(std::move(d));
}

bool BatchLoop::cancel(uint64_t request_id) {
  bool found = false;
  for (size_t i = 0; i < decoding_.size();) {
    if (decoding_[i].request_id == request_id) {
      finish(i, "error", "cancelled");
      found = true;
    } else {
      ++i;
    }
  }
  return found;
}

void BatchLoop::finish(size_t index, std::string_view reason, std::string_view message,
                       std::string_view code) {
  Decoding& d = decoding_[index];
  if (!d.stream->cancelled) d.stream->emit(finishLine(reason, message, code), true);
  engine_.release(d.seq).ignoreError();
  decoding_.erase(decoding_.begin() + static_cast<ptrdiff_t>(index));
}

void BatchLoop::decodeStep() {
  // Drop cancelled streams and sequences at the end of the context first.
  for (size_t i = 0; i < decoding_.size();) {
    auto view = engine_.sequence(decoding_[i].seq);
    if (decoding_[i].stream->cancelled) {
      finish(i, "error", "cancelled");
    } else if (view.isOk() && view->tokens.size() >= engine_.maxSequenceTokens()) {
      finish(i, "length");
    } else {
      ++i;
    }
  }
  if (decoding_.empty()) return;
  faultPoint(config::FaultPhase::kDecodeStep);
  const size_t n = std::min<size_t>(decoding_.size(), max_batch_sequences_);
  step_ids_.clear();
  step_tokens_.clear();
  for (size_t i = 0; i < n; ++i) {
    step_ids_.push_back(decoding_[i].seq);
    step_tokens_.push_back(decoding_[i].next);
  }
  // Each sequence's draw comes from its own stream; the engine picks the token (on a CUDA
  // runner, on the device: the logits never reach the host) unless a sequence's processors need
  // its logits here. A failed step has used one draw of each stream; it fails only when the
  // cache is full, and then the newest sequence ends.
  step_draws_.clear();
  bool on_host = false;
  for (size_t i = 0; i < n; ++i) {
    step_draws_.push_back(engine::drawFor(decoding_[i].sampling, decoding_[i].rng));
    on_host = on_host || decoding_[i].logits.active();
  }
  step_next_.resize(n);
  const size_t vocab = engine_.vocabSize();
  if (on_host) step_logits_.resize(n * vocab);
  const Clock::time_point step_start = Clock::now();
  Status s = on_host ? engine_.decode(step_ids_, step_tokens_,
                                      std::span<float>(step_logits_.data(), n * vocab))
                     : engine_.decode(step_ids_, step_tokens_, step_draws_, step_next_);
  metrics_.decode_step_seconds.Observe(
      std::chrono::duration<double>(Clock::now() - step_start).count());
  metrics_.decode_batch_sequences.Observe(static_cast<double>(n));
  if (!s.isOk()) {
    // Out of KV blocks: the newest sequence of the step gives way so the others go on.
    spdlog::warn("node agent: decode step of {} sequences failed: {}", n, s.toString());
    finish(n - 1, "error", "decode: " + s.toString(), capacityCode(s));
    return;
  }
  step_done_.clear();
  for (size_t i = 0; i < n; ++i) {
    Decoding& d = decoding_[i];
    engine::LogitProcessor::PickedToken picked;
    if (on_host) {
      picked = d.logits.pick(std::span<float>(step_logits_.data() + i * vocab, vocab), sampler_,
                             step_draws_[i]);
    } else {
      picked.token = step_next_[i];
      d.logits.accept(picked.token);
    }
    const model::TokenId token = picked.token;
    if (std::find(d.stop.begin(), d.stop.end(), token) != d.stop.end()) {
      // Sent, then the answer ends: a stop token counts as an answer token on every path.
      if (!d.stream->emit(tokenLine(picked), false)) d.stream->cancelled = true;
      step_done_.push_back(i);
      d.remaining = 0;
      d.next = -1;  // marks a stop
      continue;
    }
    if (!d.stream->emit(tokenLine(picked), false)) {
      d.stream->cancelled = true;
      step_done_.push_back(i);
      continue;
    }
    d.next = token;
    if (--d.remaining == 0) step_done_.push_back(i);
  }
  for (auto it = step_done_.rbegin(); it != step_done_.rend(); ++it) {
    const Decoding& d = decoding_[*it];
    if (d.stream->cancelled) {
      finish(*it, "error", "cancelled");
    } else {
      finish(*it, d.next == -1 ? "stop" : "length");
    }
  }
  // Fairness when more sequences decode than one step takes.
  if (decoding_.size() > max_batch_sequences_) {
    const size_t shift = std::min<size_t>(n - step_done_.size(), decoding_.size());
    std::rotate(decoding_.begin(), decoding_.begin() + static_cast<ptrdiff_t>(shift),
                decoding_.end());
  }
}

void BatchLoop::report(bool snapshot, NodeReport& out) {
  const engine::KvBlockManager& blocks = engine_.blocks();
  out.load.active_decode_seqs = static_cast<uint32_t>(decoding_.size());
  out.load.free_kv_blocks = blocks.availableBlocks();
  out.load.cached_kv_blocks = blocks.evictableBlocks();
  out.load.total_kv_blocks = blocks.numBlocks();
  events_.clear();
  out.overflowed = engine_.drainKvEvents(events_);
  if (snapshot) {
    out.snapshot.emplace();
    engine_.cachedBlockHashes(*out.snapshot);
    return;
  }
  // The net effect per hash (its last event), so the batch's stored and evicted sets are
  // disjoint and their order does not matter.
  std::unordered_map<uint64_t, bool> last;
  for (const engine::KvBlockEvent& e : events_) {
    last[e.hash] = e.kind == engine::KvBlockEvent::Kind::kStored;
  }
  for (const auto& [hash, stored] : last) (stored ? out.stored : out.evicted).push_back(hash);
}

}  // namespace kvferry::agent
