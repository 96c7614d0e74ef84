// The RDMA backend, on rdma-core's libibverbs (the only code that includes <infiniband/verbs.h>).
//
// - Every region is registered once (ibv_reg_mr); the blob carries base + rkey per region, so a
//   remote address is base + offset and no per-block metadata crosses the wire.
// - Per peer, connections_per_peer RC queue pairs, set up RESET→INIT→RTR→RTS from an exchange
//   of QPN/PSN/GID/LID/MTU over a small TCP handshake (the blob names its address), which then
//   stays open: its EOF is how a dead peer process is noticed at once.
// - A batch goes to one QP (round-robin) as prebuilt, chained work requests (chain_length per
//   ibv_post_send); only the last one is signaled, plus every signal_interval-th to bound the
//   send queue; tiny writes go inline. The last write of a batch is RDMA WRITE WITH IMMEDIATE;
//   the target counts immediates from a shared receive queue.
// - One progress thread polls the completion queues (sleeping on a completion channel when
//   idle) and enforces op_timeout_ms.
//
// Files: verbs_transport_impl.h declares the one class; verbs_device.cc (device, GID, queue
// pairs, regions), verbs_handshake.cc (the QP exchange, through rdma/dial.h) and
// verbs_datapath.cc (posting, progress) define it.
#pragma once

#include <memory>

#include "config/config.h"
#include "rdma/transport.h"
#include "rdma/verbs/gid_select.h"

namespace kvferry::rdma {

// Opens the configured device and port, picks the GID (logged) and starts the handshake
// listener on config.listen_address. UNAVAILABLE when no RDMA device exists.
Result<std::unique_ptr<Transport>> makeVerbsTransport(const config::TransportConfig& config);

// The GID a transport with this config would use (for `verify` tools and tests).
Result<GidEntry> probeGid(const config::VerbsConfig& config);

}  // namespace kvferry::rdma
