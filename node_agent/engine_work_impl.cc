#include "node_agent/engine_work_impl.h"

#include <spdlog/spdlog.h>

namespace kvferry::agent {

Reply EngineWorkImpl::reserve(const wire::ReserveRequest& request) {
  if (takeCancelled(request.request_id)) return errorReply(409, "the request was cancelled");
  return receiver_.reserve(request);
}

void EngineWorkImpl::prefill(wire::PrefillRequest request, std::shared_ptr<ReplyChannel> reply,
                             std::shared_ptr<const StopFlag> stop) {
  backlog_.remove(request.tokens.size());
  if (takeCancelled(request.request_id)) {
    return sendReply(*reply, errorReply(409, "cancelled", "", /*writes_settled=*/true));
  }
  sender_.prefill(std::move(request), std::move(reply), std::move(stop));
}

void EngineWorkImpl::decode(wire::DecodeRequest request, std::shared_ptr<Stream> stream) {
  receiver_.decode(request, std::move(stream));
}

void EngineWorkImpl::generate(wire::GenerateRequest request, std::shared_ptr<Stream> stream,
                              std::shared_ptr<const StopFlag> stop) {
  backlog_.remove(request.tokens.size());
  if (stream->cancelled || takeCancelled(request.request_id)) {
    stream->emit(finishLine("error", "cancelled"), true);  // ends the stream it would feed
    return;
  }
  loop_.generate(request, std::move(stream), stop.get());
}

void EngineWorkImpl::release(uint64_t lease_id, bool writer_done) {
  receiver_.release(lease_id, writer_done);
}

void EngineWorkImpl::cancel(uint64_t request_id) {
  // A prefill of it that was computing when the cancel came has stopped or ended by now (this
  // thread ran it, its stop flag raised); work not yet run is refused through cancelled_.
  bool found = receiver_.cancel(request_id);
  found = loop_.cancel(request_id) || found;
  found = sender_.cancel(request_id) || found;  // a transfer in flight finishes on its own
  if (!found && cancelled_.insert(request_id).second) {
    cancelled_order_.push_back(request_id);
    if (cancelled_order_.size() > kMaxCancelled) {
      cancelled_.erase(cancelled_order_.front());
      cancelled_order_.pop_front();
    }
  }
}

void EngineWorkImpl::forgotten() {
  const size_t ended = receiver_.endAll("the orchestrator no longer knows this node");
  if (ended > 0) {
    spdlog::warn("node agent: ended {} lease(s) the orchestrator took before it forgot this node",
                 ended);
  }
}

bool EngineWorkImpl::idle() const {
  return receiver_.leaseCount() == 0 && loop_.decoding() == 0 && sender_.idle();
}

NodeReport EngineWorkImpl::report(bool snapshot) {
  NodeReport report;
  report.load.queued_prefill_tokens = backlog_.tokens;
  report.load.queued_prefill_requests = backlog_.requests;
  report.load.active_leases = static_cast<uint32_t>(receiver_.leaseCount());
  report.load.leased_blocks = receiver_.leasedBlocks();
  report.load.kv_sequence = receiver_.reservationsGranted();  // same thread: consistent figures
  report.prefill_model = prefills_.costModel();
  loop_.report(snapshot, report);
  return report;
}

}  // namespace kvferry::agent
