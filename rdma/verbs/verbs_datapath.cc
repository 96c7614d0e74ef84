#include <arpa/inet.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

#include "rdma/verbs/verbs_transport_impl.h"

namespace kvferry::rdma::verbs_backend {
namespace {

Status wcError(const ibv_wc& wc) {
  std::string what = std::string("work request failed: ") + ibv_wc_status_str(wc.status) +
                     " (vendor error " + std::to_string(wc.vendor_err) + ")";
  switch (wc.status) {
    case IBV_WC_REM_ACCESS_ERR:
      return outOfRange(what + ": the peer refused the remote address or key");
    case IBV_WC_WR_FLUSH_ERR:
      return unavailable(what + ": the queue pair had already failed");
    default:
      return unavailable(what);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Posting

Status VerbsTransport::post(PeerId peer_id, std::span<const TransferOp> ops,
                            std::optional<uint32_t> imm, uint64_t cookie, bool is_read) {
  const char* what = is_read ? "read" : "write";
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(peer_id);
    if (it == peers_.end()) return notFound("no peer " + std::to_string(peer_id));
    peer = it->second;
  }
  if (peer->broken) {
    return peer->reason.withContext("peer " + std::to_string(peer_id) +
                                    " failed earlier; reconnect");
  }
  ASSIGN_OR_RETURN(Requests::Slot * slot, requests_.acquire());
  VerbsBatch& b = slot->payload;
  Status ok = checkBatch(ops, config_.max_batch_ops, regions_, peer->info, what, b.local);
  if (!ok.isOk()) return requests_.giveBack(slot, ok);

  // Prebuild the work requests (the vectors keep their capacity across batches).
  const uint64_t id = requests_.idOf(*slot);
  WrParams params;
  params.batch_id = id;
  params.is_read = is_read;
  params.imm = imm;
  params.inline_limit = inline_limit_;
  params.signal_interval = config_.signal_interval;
  params.flush = config_.verbs.gpu_flush;
  params.flush_addr = reinterpret_cast<uint64_t>(flush_scratch_);
  params.flush_lkey = flush_mr_->lkey;
  buildWorkRequests(ops, peer->info, params, b);
  const size_t n = b.wrs.size();
  if (n > sq_depth_) {
    // Only where the device's max_qp_wr capped the send queue below twice max_batch_ops.
    return requests_.giveBack(
        slot, invalidArgument(std::string(what) + " batch needs " + std::to_string(n) +
                              " work requests (GPU flush reads included); a send queue holds " +
                              std::to_string(sq_depth_)));
  }
  requests_.publish(slot, cookie, peer_id, std::chrono::milliseconds(config_.op_timeout_ms));

  QpState& qp = *peer->qps[peer->next_qp++ % peer->qps.size()];
  std::lock_guard lock(qp.mu);
  if (peer->broken) {
    // failPeer() may have swept the table before this batch was published: finish it here
    // (a batch completes once; a second completion of the same id is ignored).
    requests_.complete(id, peer->reason);
    return Status::ok();
  }
  if (qp.waiting.empty() && qp.fits(b)) {
    Status s = postChains(qp, b);
    if (!s.isOk()) {
      requests_.complete(id, s);
      return Status::ok();
    }
  } else {
    qp.waiting.emplace_back(id, slot);
  }
  return Status::ok();
}

Status VerbsTransport::postChains(QpState& qp, VerbsBatch& b) {
  const size_t n = b.wrs.size();
  const size_t chain = config_.chain_length;
  for (size_t start = 0; start < n; start += chain) {
    const size_t end = std::min(n, start + chain);
    for (size_t i = start; i < end; ++i) b.wrs[i].next = i + 1 < end ? &b.wrs[i + 1] : nullptr;
    ibv_send_wr* bad = nullptr;
    VERBS_CHECK(ibv_post_send(qp.qp.get(), &b.wrs[start], &bad));
    // Record where each signaled WR sits in the send queue: its completion frees up to there.
    for (size_t i = start; i < end; ++i) {
      for (int s = 0; s < b.wrs[i].num_sge; ++s) qp.posted_bytes += b.wrs[i].sg_list[s].length;
      if (b.wrs[i].send_flags & IBV_SEND_SIGNALED) {
        qp.signals.push_back({qp.posted + i - start + 1, qp.posted_bytes});
      }
    }
    qp.posted += end - start;
  }
  return Status::ok();
}

void VerbsTransport::drainWaiting(QpState& qp, Peer& peer) {
  while (!qp.waiting.empty() && !peer.broken) {
    auto [id, slot] = qp.waiting.front();
    if (!qp.fits(slot->payload)) return;
    qp.waiting.pop_front();
    Status s = postChains(qp, slot->payload);
    if (!s.isOk()) requests_.complete(id, s);
  }
}

void VerbsTransport::failPeer(Peer& peer, const Status& reason) {
  {
    std::lock_guard lock(peer.fail_mu);  // only the first failure counts
    if (peer.broken) return;
    peer.reason = reason;
    peer.broken = true;
  }
  // Stop the NIC first (outstanding WRs flush), so nothing lands after we report failure.
  for (auto& qp : peer.qps) {
    std::lock_guard lock(qp->mu);
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_ERR;
    ibv_modify_qp(qp->qp.get(), &a, IBV_QP_STATE);
    qp->waiting.clear();
  }
  if (reason.code() != StatusCode::kCancelled) {
    spdlog::warn("verbs transport: peer {} failed: {}", peer.id, reason.toString());
  }
  requests_.failPeer(peer.id, reason);
}

// ---------------------------------------------------------------------------------------------
// Progress

size_t VerbsTransport::pollPeer(Peer& peer, ibv_wc* wcs) {
  const int n = ibv_poll_cq(peer.cq.get(), kPollBatch, wcs);
  for (int i = 0; i < n; ++i) {
    const ibv_wc& wc = wcs[i];
    QpState* qp = nullptr;
    for (auto& q : peer.qps) {
      if (q->qp->qp_num == wc.qp_num) qp = q.get();
    }
    if (qp == nullptr) continue;
    if (wc.status != IBV_WC_SUCCESS) {
      if (!peer.broken) {
        Status why = wcError(wc);
        // The batch whose WR failed learns the precise cause; the rest, that the peer failed.
        if (!(wc.wr_id & kIntermediateSignal)) requests_.complete(wc.wr_id, why);
        failPeer(peer, why);
      }
      continue;
    }
    {
      std::lock_guard lock(qp->mu);
      if (!qp->signals.empty()) {
        qp->completed = qp->signals.front().wr;
        qp->completed_bytes = qp->signals.front().bytes;
        qp->signals.pop_front();
      }
      drainWaiting(*qp, peer);
    }
    if (!(wc.wr_id & kIntermediateSignal)) requests_.complete(wc.wr_id, Status::ok());
  }
  return n > 0 ? static_cast<size_t>(n) : 0;
}

size_t VerbsTransport::pollReceives(ibv_wc* wcs) {
  const int n = ibv_poll_cq(recv_cq_.get(), kPollBatch, wcs);
  for (int i = 0; i < n; ++i) {
    const ibv_wc& wc = wcs[i];
    if (wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
      uint64_t source = 0;
      {
        std::lock_guard lock(inbound_mu_);
        auto it = source_of_qpn_.find(wc.qp_num);
        if (it != source_of_qpn_.end()) source = it->second;
      }
      immediates_.push(ImmediateEvent{source, ntohl(wc.imm_data)});
    }
    if (wc.status == IBV_WC_SUCCESS || wc.status == IBV_WC_WR_FLUSH_ERR) {
      // Give the receive back (a flushed one belonged to a QP that is going away).
      ibv_recv_wr wr{};
      ibv_recv_wr* bad = nullptr;
      wr.wr_id = wc.wr_id;
      if (ibv_post_srq_recv(srq_.get(), &wr, &bad) != 0) {
        spdlog::error("verbs transport: could not repost a receive: {}", std::strerror(errno));
      }
    }
  }
  return n > 0 ? static_cast<size_t>(n) : 0;
}

void VerbsTransport::progressLoop() {
  std::vector<std::shared_ptr<Peer>> peers;
  uint64_t seen_version = ~0ull;
  ibv_wc wcs[kPollBatch];
  auto next_sweep = std::chrono::steady_clock::now();
  auto last_work = std::chrono::steady_clock::now();
  while (!stop_) {
    if (peers_version_ != seen_version) {
      std::lock_guard lock(peers_mu_);
      seen_version = peers_version_;
      peers.clear();
      for (auto& [id, p] : peers_) peers.push_back(p);
    }
    size_t got = pollReceives(wcs);
    for (auto& p : peers) got += pollPeer(*p, wcs);

    const auto now = std::chrono::steady_clock::now();
    if (now >= next_sweep) {
      next_sweep = now + std::chrono::milliseconds(10);
      for (PeerId late : requests_.latePeers()) {
        for (auto& p : peers) {
          if (p->id == late) {
            failPeer(*p, deadlineExceeded("a batch got no completion within op_timeout_ms=" +
                                          std::to_string(config_.op_timeout_ms)));
          }
        }
      }
    }
    if (got > 0) {
      last_work = now;
      continue;
    }
    // Busy-poll while work is flowing (a completion-channel wake-up costs an interrupt and two
    // context switches per completion); sleep once the queue has been quiet for a while.
    if (now - last_work < kSpinBeforeSleep) continue;
    // Sleep on the completion channel: arm every CQ, re-poll (a completion may have raced the
    // arming), then wait for an event or 10 ms (deadlines and shutdown are checked then).
    ibv_req_notify_cq(recv_cq_.get(), 0);
    for (auto& p : peers) ibv_req_notify_cq(p->cq.get(), 0);
    got = pollReceives(wcs);
    for (auto& p : peers) got += pollPeer(*p, wcs);
    if (got > 0) {
      last_work = std::chrono::steady_clock::now();
      continue;
    }
    pollfd pfd{channel_->fd, POLLIN, 0};
    if (poll(&pfd, 1, 10) > 0) {
      ibv_cq* cq = nullptr;
      void* ctx = nullptr;
      while (ibv_get_cq_event(channel_.get(), &cq, &ctx) == 0) ibv_ack_cq_events(cq, 1);
    }
    last_work = std::chrono::steady_clock::now();
  }
}

}  // namespace kvferry::rdma::verbs_backend
