// The checks every backend makes before it sends anything: the batch's size, its local side
// against the local region table, its remote side against the regions the peer advertised.
// (The target checks again on arrival: a peer's table may have changed since its blob.)
#pragma once

#include <span>
#include <string_view>

#include "common/status.h"
#include "rdma/endpoint_blob.h"
#include "rdma/region_table.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

// `what` is "write" or "read". On success `local` holds every op's local address (it is cleared
// first), and keeps the local regions registered until the caller clears it.
Status checkBatch(std::span<const TransferOp> ops, uint32_t max_batch_ops, const RegionTable& local,
                  const EndpointInfo& remote, std::string_view what, BatchPins& local_pins);

}  // namespace kvferry::rdma
