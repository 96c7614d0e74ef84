#include "rdma/batch_check.h"

#include <string>

namespace kvferry::rdma {

Status checkBatch(std::span<const TransferOp> ops, uint32_t max_batch_ops, const RegionTable& local,
                  const EndpointInfo& remote, std::string_view what, BatchPins& local_pins) {
  local_pins.clear();
  if (ops.empty()) return invalidArgument(std::string(what) + " batch is empty");
  if (ops.size() > max_batch_ops) {
    return invalidArgument(std::string(what) + " batch of " + std::to_string(ops.size()) +
                           " ops exceeds max_batch_ops " + std::to_string(max_batch_ops));
  }
  local_pins.reserve(ops.size());
  const RemoteRegion* rr = nullptr;  // the last op's: a layer's blocks share one pool
  for (size_t i = 0; i < ops.size(); ++i) {
    const TransferOp& op = ops[i];
    // Messages are built only on failure: this loop runs for every op of every batch.
    auto where = [&](std::string_view side) {
      return std::string(side) + " side of " + std::string(what) + " op " + std::to_string(i);
    };
    if (rr == nullptr || rr->id != op.remote_region) rr = remote.findRegion(op.remote_region);
    if (rr == nullptr) {
      return notFound(where("remote") + ": the peer has no region " +
                      std::to_string(op.remote_region));
    }
    if (!fitsRegion(rr->bytes, op.remote_offset, op.length)) {
      return checkRange(op.remote_region, rr->bytes, op.remote_offset, op.length, what)
          .withContext(where("remote"));
    }
    Status pinned = local_pins.add(local, op.local_region, op.local_offset, op.length, what);
    if (!pinned.isOk()) return pinned.withContext(where("local"));
  }
  return Status::ok();
}

}  // namespace kvferry::rdma
