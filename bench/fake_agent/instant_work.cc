#include "bench/fake_agent/instant_work.h"

#include <algorithm>
#include <utility>

namespace kvferry::bench {

InstantWork::InstantWork(std::vector<model::TokenId> tokens, engine::KvGeometry geometry,
                         agent::PrefillBacklog& backlog)
    : tokens_(std::move(tokens)), geometry_(geometry), backlog_(backlog) {}

agent::Reply InstantWork::reserve(const wire::ReserveRequest& request) {
  wire::ReserveResponse lease;
  lease.lease_id = next_lease_++;
  lease.slot = static_cast<uint32_t>(lease.lease_id & 0xFFFFF);
  const size_t blocks = request.tokens.size() / geometry_.block_tokens + 1;
  for (size_t b = 0; b < blocks; ++b) lease.block_ids.push_back(static_cast<uint32_t>(b));
  for (uint32_t r = 0; r < 2 * geometry_.layers; ++r) lease.regions.push_back(r);
  lease.kv_sequence = ++kv_sequence_;
  return agent::jsonReply(200, wire::encode(lease));
}

void InstantWork::prefill(wire::PrefillRequest request, std::shared_ptr<agent::ReplyChannel> reply,
                          std::shared_ptr<const agent::StopFlag> stop) {
  (void)stop;
  backlog_.remove(request.tokens.size());
  wire::PrefillResponse first;
  first.first_token = tokenAt(0);
  first.rng_draws = request.rng_draws + wire::randomDrawsPerToken(request.sampling);
  agent::sendReply(*reply, agent::jsonReply(200, wire::encode(first)));
}

void InstantWork::decode(wire::DecodeRequest request, std::shared_ptr<agent::Stream> stream) {
  // The prefill's token was the cycle's first: the stream goes on from the second.
  streamTokens(*stream, 1, request.max_new_tokens, request.stop_tokens, std::nullopt);
}

void InstantWork::generate(wire::GenerateRequest request, std::shared_ptr<agent::Stream> stream,
                           std::shared_ptr<const agent::StopFlag> stop) {
  (void)stop;
  backlog_.remove(request.tokens.size());
  streamTokens(*stream, 0, request.max_new_tokens, request.stop_tokens, 0u);
}

void InstantWork::streamTokens(agent::Stream& stream, uint64_t from, uint32_t count,
                               const std::vector<int32_t>& stop_tokens,
                               std::optional<uint32_t> cached_tokens) const {
  // The control API sized the stream for max_new_tokens + 4 lines: all of them fit at once.
  for (uint32_t i = 0; i < count; ++i) {
    wire::StreamLine line;
    line.token = tokenAt(from + i);
    if (i == 0) line.cached_tokens = cached_tokens;
    if (!stream.emit(wire::encode(line), false)) return;  // the reader left
    if (std::find(stop_tokens.begin(), stop_tokens.end(), *line.token) != stop_tokens.end()) {
      stream.emit(agent::finishLine("stop"), true);
      return;
    }
  }
  stream.emit(agent::finishLine("length"), true);
}

void InstantWork::release(uint64_t lease_id, bool writer_done) {
  (void)lease_id;
  (void)writer_done;
}

void InstantWork::cancel(uint64_t request_id) { (void)request_id; }

agent::NodeReport InstantWork::report(bool snapshot) {
  agent::NodeReport report;
  report.load.free_kv_blocks = geometry_.num_blocks;
  report.load.total_kv_blocks = geometry_.num_blocks;
  report.load.kv_sequence = kv_sequence_;
  if (snapshot) report.snapshot.emplace();  // nothing is cached
  return report;
}

}  // namespace kvferry::bench
