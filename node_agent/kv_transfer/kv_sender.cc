#include "node_agent/kv_transfer/kv_sender.h"

#include <spdlog/spdlog.h>

#include "node_agent/fault_point.h"
#include "node_agent/kv_transfer/immediate.h"
#include "node_agent/kv_transfer/kv_checksum.h"
#include "node_agent/wire_engine.h"

namespace kvferry::agent::kv_transfer {
namespace {

double msSince(KvSender::Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(KvSender::Clock::now() - start).count();
}

std::string transferFailed(uint32_t node_id, const Status& status) {
  return "transfer to node " + std::to_string(node_id) + " failed: " + status.toString();
}

// A refusal before anything was posted: no write of this prefill can land on the target.
Reply refusal(unsigned status, std::string message) {
  return errorReply(status, std::move(message), "", true);
}

}  // namespace

KvSender::KvSender(engine::Engine& engine, PrefillRunner& prefills, rdma::Transport& transport,
                   PeerConnector& connector, boost::asio::any_io_executor engine_executor,
                   std::vector<rdma::KvPool> pools, AgentMetrics& metrics,
                   std::chrono::milliseconds op_timeout, bool kv_checksum)
    : engine_(engine),
      prefills_(prefills),
      transport_(transport),
      connector_(connector),
      engine_executor_(std::move(engine_executor)),
      pools_(std::move(pools)),
      metrics_(metrics),
      op_timeout_(op_timeout),
      kv_checksum_(kv_checksum) {}

AgentMetrics::Peer KvSender::peerMetrics(uint32_t node_id) {
  auto it = peer_metrics_.find(node_id);
  if (it == peer_metrics_.end()) it = peer_metrics_.emplace(node_id, metrics_.peer(node_id)).first;
  return it->second;
}

void KvSender::prefill(wire::PrefillRequest request, std::shared_ptr<ReplyChannel> reply,
                       std::shared_ptr<const StopFlag> stop) {
  const wire::TransferTarget& target = request.target;
  const engine::KvGeometry& geometry = engine_.kvGeometry();
  const uint64_t prompt_blocks =
      (request.tokens.size() + geometry.block_tokens - 1) / geometry.block_tokens;
  if (target.block_ids.size() != prompt_blocks || target.cached_blocks > prompt_blocks ||
      target.regions.size() != 2 * uint64_t{geometry.layers}) {
    return sendReply(
        *reply,
        refusal(400, "prefill: the target holds " + std::to_string(target.block_ids.size()) +
                         " blocks and " + std::to_string(target.regions.size()) +
                         " regions; the prompt needs " + std::to_string(prompt_blocks) +
                         " blocks and this model " + std::to_string(2 * geometry.layers) +
                         " regions"));
  }
  const engine::SamplingParams sampling = samplingOf(request.sampling);
  engine::LogitParams logits = logitParamsOf(request.sampling, request.stop_tokens);
  if (Status s = prefills_.check(sampling, logits, request.rng_draws); !s.isOk()) {
    return sendReply(*reply, refusal(400, "prefill: " + s.message()));
  }
  const bool sends = target.cached_blocks < prompt_blocks;
  const uint64_t key = next_key_++;
  Pending& p = pending_[key];
  p.sampling = sampling;
  p.logits = std::move(logits);
  p.reply = std::move(reply);
  p.stop = std::move(stop);
  p.metrics = peerMetrics(target.node_id);
  p.request = std::move(request);
  if (!sends) return compute(key);  // the target caches every block: nothing to send

  const std::string& blob = p.request.target.transport_blob;
  auto peer = peers_.find(blob);
  if (peer != peers_.end() && peer->second.id) {
    p.peer = *peer->second.id;
    return compute(key);
  }
  if (peer == peers_.end()) {
    Result<std::vector<uint8_t>> bytes = wire::base64Decode(blob);
    if (!bytes.isOk()) {
      p.metrics.errors->Increment();
      return answerWaiting(key,
                           refusal(502, transferFailed(p.request.target.node_id, bytes.status())));
    }
    peer = peers_.emplace(blob, Peer{}).first;
    // The connect runs on the connector's threads; its result comes back to this thread.
    connector_.connect(
        std::move(bytes).value(), engine_executor_,
        [this, blob](Result<rdma::PeerId> result) { onConnected(blob, std::move(result)); });
  }
  p.waiting_for_peer = true;
  peer->second.waiting.push_back(key);
}

void KvSender::onConnected(const std::string& blob, Result<rdma::PeerId> result) {
  auto peer = peers_.find(blob);
  if (peer == peers_.end()) return;
  const std::vector<uint64_t> waiting = std::move(peer->second.waiting);
  peer->second.waiting.clear();
  if (!result.isOk()) {
    peers_.erase(peer);  // the next prefill for it connects again
    for (uint64_t key : waiting) {
      auto it = pending_.find(key);
      if (it == pending_.end()) continue;
      it->second.metrics.errors->Increment();
      answerWaiting(
          key, refusal(502, transferFailed(it->second.request.target.node_id, result.status())));
    }
    return;
  }
  peer->second.id = *result;
  for (uint64_t key : waiting) {
    auto it = pending_.find(key);
    if (it == pending_.end()) continue;  // cancelled while connecting
    it->second.waiting_for_peer = false;
    it->second.peer = *result;
    compute(key);
  }
}

void KvSender::answerWaiting(uint64_t key, Reply reply) {
  auto it = pending_.find(key);
  sendReply(*it->second.reply, std::move(reply));
  pending_.erase(it);
}

bool KvSender::cancel(uint64_t request_id) {
  bool found = false;
  std::vector<uint64_t> waiting;
  for (const auto& [key, p] : pending_) {
    if (p.request.request_id != request_id) continue;
    found = true;
    if (p.waiting_for_peer) waiting.push_back(key);
  }
  for (uint64_t key : waiting) {
    Peer& peer = peers_.at(pending_.at(key).request.target.transport_blob);
    std::erase(peer.waiting, key);
    answerWaiting(key, refusal(409, "prefill: cancelled while connecting to its target"));
  }
  return found;
}

void KvSender::compute(uint64_t key) {
  Pending& p = pending_.at(key);
  auto on_layer = [this, key, &p](uint32_t layer) { onLayer(key, p, layer); };
  const std::vector<model::TokenId> tokens = tokensOf(p.request.tokens);
  engine::LogitProcessor processor(std::move(p.logits), tokens, p.request.sampling.answer_tokens);
  auto prefilled = prefills_.run(tokens, p.sampling, processor, p.request.rng_draws, on_layer,
                                 p.stop.get(), nullptr);
  p.computed = true;
  p.computed_at = Clock::now();
  if (!prefilled.isOk()) {
    if (p.error.isOk()) p.error = prefilled.status();
    dropRefused(key);  // the engine took the blocks back: nothing more may be read from them
  } else {
    p.seq = prefilled->seq;
    p.response.first_token = prefilled->first.token;
    p.response.logprobs = wireLogprobs(prefilled->first.logprobs);
    p.response.rng_draws = prefilled->rng.draws();
    p.response.cached_tokens = prefilled->cached_tokens;
    p.response.prefill_ms = prefilled->prefill_ms;
  }
  finishIfDone(key);
}

// After each layer of the last chunk: that layer's K and V of every block the target lacks.
void KvSender::onLayer(uint64_t key, Pending& p, uint32_t layer) {
  const wire::TransferTarget& target = p.request.target;
  const uint32_t first_block = target.cached_blocks;
  std::span<const uint32_t> blocks = engine_.prefillingBlockIds();
  if (first_block >= blocks.size() || !p.error.isOk()) return;
  ops_.clear();
  auto local = blocks.subspan(first_block);
  auto remote = std::span<const uint32_t>(target.block_ids).subspan(first_block);
  const uint64_t block_bytes = engine_.kvGeometry().blockBytes();
  for (uint32_t kv = 0; kv < 2; ++kv) {
    rdma::KvPool remote_pool{target.regions[2 * layer + kv], block_bytes, UINT32_MAX};
    Status s = rdma::appendBlockOps(pools_[2 * layer + kv], remote_pool, local, remote, ops_);
    if (!s.isOk()) {
      p.error = s;
      return;
    }
  }
  if (kv_checksum_) {
    Result<uint64_t> checksum = checksummer_.layer(layer, local);
    if (!checksum.isOk()) {
      p.error = checksum.status();
      return;
    }
    p.response.kv_checksums.resize(engine_.kvGeometry().layers);
    p.response.kv_checksums[layer] = *checksum;
  }
  if (!p.posted) {
    p.first_post = Clock::now();
    p.posted = true;
  }
  post(key, p, encodeImmediate(target.slot, layer));
  p.last_post = Clock::now();
  faultPoint(config::FaultPhase::kTransferLayer, layer);
}

void KvSender::post(uint64_t key, Pending& p, uint32_t imm) {
  uint64_t bytes = 0;
  for (const rdma::TransferOp& op : ops_) bytes += op.length;
  if (refused_.empty()) {
    Status s = transport_.postWrite(p.peer, ops_, imm, key);
    if (s.isOk()) {
      ++p.outstanding;
      countPosted(p, bytes);
      return;
    }
    if (s.code() != StatusCode::kResourceExhausted) {
      p.error = s;
      return;
    }
  }
  // Full: the queue drains as completions come (retryRefused), never by waiting here.
  refused_.push_back(Refused{key, p.peer, imm, ops_, bytes, Clock::now() + op_timeout_});
  ++p.outstanding;
}

void KvSender::countPosted(Pending& p, uint64_t bytes) {
  p.response.transfer_bytes += bytes;
  p.metrics.bytes->Increment(static_cast<double>(bytes));
  p.metrics.batches->Increment();
}

void KvSender::retryRefused(Clock::time_point now) {
  while (!refused_.empty()) {
    Refused& r = refused_.front();
    const uint64_t key = r.key;
    Pending& p = pending_.at(key);  // its outstanding count keeps it
    Status s = p.error;
    if (s.isOk()) {
      s = transport_.postWrite(r.peer, r.ops, r.imm, key);
      if (s.isOk()) {
        countPosted(p, r.bytes);  // still outstanding: its completion ends it
        refused_.pop_front();
        continue;
      }
      if (s.code() == StatusCode::kResourceExhausted && now <= r.give_up) return;  // still full
      p.error = s;
    }
    refused_.pop_front();
    --p.outstanding;
    finishIfDone(key);
  }
}

void KvSender::dropRefused(uint64_t key) {
  Pending& p = pending_.at(key);
  const auto dropped = std::erase_if(refused_, [key](const Refused& r) { return r.key == key; });
  p.outstanding -= static_cast<uint32_t>(dropped);
}

void KvSender::onCompletion(const rdma::Completion& completion) {
  auto it = pending_.find(completion.cookie);
  if (it != pending_.end()) {
    Pending& p = it->second;
    if (!completion.status.isOk() && p.error.isOk()) p.error = completion.status;
    if (!completion.status.isOk()) p.write_failed = true;
    if (p.outstanding > 0) --p.outstanding;
  }
  retryRefused(Clock::now());  // a completion frees room in the transport's queue
  finishIfDone(completion.cookie);
}

void KvSender::finishIfDone(uint64_t key) {
  auto it = pending_.find(key);
  if (it != pending_.end() && it->second.computed && it->second.outstanding == 0) finish(key);
}

void KvSender::finish(uint64_t key) {
  auto it = pending_.find(key);
  Pending& p = it->second;
  if (p.seq) engine_.release(*p.seq).ignoreError();
  Reply reply;
  if (!p.error.isOk()) {
    const bool transfer = p.computed && p.posted;
    // The compute stopped (a cancel): nothing was posted, the peer is fine.
    const bool stopped = !p.posted && p.error.code() == StatusCode::kCancelled;
    if (transfer) p.metrics.errors->Increment();
    if (!stopped && (p.error.code() == StatusCode::kUnavailable ||
                     p.error.code() == StatusCode::kDeadlineExceeded ||
                     p.error.code() == StatusCode::kCancelled)) {
      // The peer is gone or stuck: reconnect (with a fresh blob) next time. Only the connection
      // this prefill used: a new one to the same blob may be under way already.
      auto peer = peers_.find(p.request.target.transport_blob);
      if (peer != peers_.end() && peer->second.id == p.peer) {
        transport_.disconnect(p.peer).ignoreError();
        peers_.erase(peer);
      }
    }
    unsigned status = transfer || p.error.code() == StatusCode::kUnavailable ? 502 : 400;
    if (p.error.code() == StatusCode::kResourceExhausted) status = 503;
    if (stopped) status = 409;
    // Every batch posted has completed by now (outstanding is 0); one that failed may still have
    // bytes on their way to the target.
    reply = errorReply(status,
                       transfer ? transferFailed(p.request.target.node_id, p.error)
                                : "prefill: " + p.error.toString(),
                       p.posted ? "" : capacityCode(p.error), !p.write_failed);
  } else {
    p.response.transfer_ms = p.posted ? msSince(p.first_post) : 0;
    if (p.posted) {
      metrics_.transfer_seconds.Observe(p.response.transfer_ms / 1000);
      // Where a transfer's time goes, from its first post: the layers' posts, the prefill's end,
      // the last write's completion (now).
      const auto at = [&p](Clock::time_point t) {
        return std::chrono::duration<double, std::milli>(t - p.first_post).count();
      };
      spdlog::debug(
          "node agent: request {}: {} bytes of KV sent; from the first post, the last post at "
          "+{:.2f} ms, the prefill done at +{:.2f} ms, the last write done at +{:.2f} ms",
          p.request.request_id, p.response.transfer_bytes, at(p.last_post), at(p.computed_at),
          p.response.transfer_ms);
    }
    reply = jsonReply(200, wire::encode(p.response));
  }
  sendReply(*p.reply, std::move(reply));
  pending_.erase(it);
}

}  // namespace kvferry::agent::kv_transfer
