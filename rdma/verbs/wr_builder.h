// Building one batch's work requests, apart from posting them, so the sequence a batch puts on
// the wire is testable without a device. For a write batch:
//   RDMA WRITE × ops                         (the payload; tiny ones inline)
//   RDMA READ of 1 byte × flush domains      (when the batch needs the GPU flush, see below)
//   WRITE WITH IMM of 0 bytes, fenced        (when it carries an immediate and was flushed)
// Without a flush the immediate rides on the last WRITE, as before. The flush (Ampere-class
// GPUDirect): a NIC's RDMA WRITEs into GPU memory may still be in flight over PCIe when their
// completion arrives; a READ from the same GPU returns only after them, and IBV_SEND_FENCE
// holds the notification until the READ is done, so the target sees its immediate only once
// every byte is in GPU memory. One READ per target GPU (flush domain); host regions share one.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "config/config.h"
#include "rdma/endpoint_blob.h"
#include "rdma/region_table.h"

namespace kvferry::rdma::verbs_backend {

// wr_id flag of every WR but a batch's last: bounds the send queue, ends no batch.
inline constexpr uint64_t kIntermediateSignal = 1ull << 63;

// Per-batch state: the local pins and the prebuilt work requests (vectors keep their capacity
// across batches, so a steady stream allocates nothing).
struct VerbsBatch {
  struct FlushTarget {
    uint32_t domain = 0;
    uint64_t remote_addr = 0;
    uint32_t rkey = 0;
  };
  BatchPins local;
  uint64_t bytes = 0;  // the ops' payload
  std::vector<ibv_send_wr> wrs;
  std::vector<ibv_sge> sges;
  std::vector<FlushTarget> flushes;
  void release() { local.clear(); }
};

struct WrParams {
  uint64_t batch_id = 0;
  bool is_read = false;
  std::optional<uint32_t> imm;
  uint32_t inline_limit = 0;
  uint32_t signal_interval = 16;
  config::GpuFlush flush = config::GpuFlush::kAuto;
  // Where flush READs land: a registered scratch byte (its contents are never used).
  uint64_t flush_addr = 0;
  uint32_t flush_lkey = 0;
};

// What a QP may take in flight: `sq_depth` work requests and, when `max_bytes` is not 0, that
// many payload bytes; a batch larger than max_bytes still goes once nothing else is in flight.
struct SendBudget {
  uint64_t sq_depth = 0;
  uint64_t max_bytes = 0;

  bool fits(uint64_t wrs_in_flight, uint64_t bytes_in_flight, uint64_t wrs, uint64_t bytes) const {
    if (wrs_in_flight + wrs > sq_depth) return false;
    return max_bytes == 0 || bytes_in_flight == 0 || bytes_in_flight + bytes <= max_bytes;
  }
};

// Whether a write into `region` needs the flush under `mode`, and its domain.
bool needsFlush(const RemoteRegion& region, config::GpuFlush mode);

// Fills batch.wrs and batch.sges for `ops` (already checked: batch.local holds every op's local
// address and key, and every remote region is in `remote`). The last WR is signaled and carries
// wr_id = batch_id; the others carry batch_id | kIntermediateSignal.
void buildWorkRequests(std::span<const TransferOp> ops, const EndpointInfo& remote,
                       const WrParams& params, VerbsBatch& batch);

}  // namespace kvferry::rdma::verbs_backend
