#include "rdma/verbs/wr_builder.h"

#include <arpa/inet.h>

#include <algorithm>

namespace kvferry::rdma::verbs_backend {

bool needsFlush(const RemoteRegion& region, config::GpuFlush mode) {
  switch (mode) {
    case config::GpuFlush::kAlways:
      return true;
    case config::GpuFlush::kNever:
      return false;
    case config::GpuFlush::kAuto:
      return region.gpu_memory;
  }
  return region.gpu_memory;
}

void buildWorkRequests(std::span<const TransferOp> ops, const EndpointInfo& remote,
                       const WrParams& p, VerbsBatch& b) {
  const size_t n = ops.size();
  b.bytes = 0;
  for (const TransferOp& op : ops) b.bytes += op.length;
  // The flush targets: per domain, 1 byte of the last op into it (any byte it wrote will do).
  b.flushes.clear();
  if (!p.is_read) {
    for (size_t i = 0; i < n; ++i) {
      const RemoteRegion& rr = *remote.findRegion(ops[i].remote_region);
      if (!needsFlush(rr, p.flush)) continue;
      const uint32_t domain = rr.gpu_memory ? rr.flush_domain : 0;
      auto it = std::find_if(b.flushes.begin(), b.flushes.end(),
                             [&](const VerbsBatch::FlushTarget& f) { return f.domain == domain; });
      if (it == b.flushes.end())
        it = b.flushes.insert(b.flushes.end(), VerbsBatch::FlushTarget{domain, 0, 0});
      it->remote_addr = rr.remote_base + ops[i].remote_offset;
      it->rkey = rr.remote_key;
    }
  }
  const size_t reads = b.flushes.size();
  const bool fenced_imm = reads > 0 && p.imm.has_value();
  // Sized before any sg_list pointer is taken: the vectors must not move afterwards.
  b.sges.resize(n + reads);
  b.wrs.resize(n + reads + (fenced_imm ? 1 : 0));
  auto signalEvery = [&](size_t i, ibv_send_wr& wr) {
    // A periodic signal keeps the send queue from filling with unreaped WRs.
    if ((i + 1) % p.signal_interval == 0) wr.send_flags |= IBV_SEND_SIGNALED;
  };
  for (size_t i = 0; i < n; ++i) {
    const RemoteRegion& rr = *remote.findRegion(ops[i].remote_region);
    b.sges[i] = ibv_sge{reinterpret_cast<uint64_t>(b.local.data(i)),
                        static_cast<uint32_t>(ops[i].length), b.local.localKey(i)};
    ibv_send_wr& wr = b.wrs[i];
    wr = ibv_send_wr{};
    wr.sg_list = &b.sges[i];
    wr.num_sge = 1;
    wr.opcode = p.is_read ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
    wr.wr.rdma.remote_addr = rr.remote_base + ops[i].remote_offset;
    wr.wr.rdma.rkey = rr.remote_key;
    // Every WR names its batch: after an error even unsignaled WRs complete (flushed).
    wr.wr_id = p.batch_id | kIntermediateSignal;
    if (!p.is_read && ops[i].length <= p.inline_limit) wr.send_flags |= IBV_SEND_INLINE;
    signalEvery(i, wr);
  }
  for (size_t k = 0; k < reads; ++k) {
    const size_t i = n + k;
    b.sges[i] = ibv_sge{p.flush_addr, 1, p.flush_lkey};
    ibv_send_wr& wr = b.wrs[i];
    wr = ibv_send_wr{};
    wr.sg_list = &b.sges[i];
    wr.num_sge = 1;
    wr.opcode = IBV_WR_RDMA_READ;
    wr.wr.rdma.remote_addr = b.flushes[k].remote_addr;
    wr.wr.rdma.rkey = b.flushes[k].rkey;
    wr.wr_id = p.batch_id | kIntermediateSignal;
    signalEvery(i, wr);
  }
  if (fenced_imm) {
    // Zero bytes: the immediate is the whole message. The fence waits for the READs above.
    ibv_send_wr& wr = b.wrs.back();
    wr = ibv_send_wr{};
    wr.num_sge = 0;
    wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    wr.send_flags = IBV_SEND_FENCE;
    wr.wr.rdma.remote_addr = b.flushes.back().remote_addr;
    wr.wr.rdma.rkey = b.flushes.back().rkey;
  }
  ibv_send_wr& last = b.wrs.back();
  last.send_flags |= IBV_SEND_SIGNALED;
  last.wr_id = p.batch_id;
  if (p.imm) {
    last.imm_data = htonl(*p.imm);
    if (!fenced_imm) last.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  }
  for (size_t i = 0; i < b.wrs.size(); ++i) b.wrs[i].next = nullptr;
}

}  // namespace kvferry::rdma::verbs_backend
