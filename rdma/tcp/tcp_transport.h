// The always-available backend: Boost.Asio TCP with one-sided semantics emulated by the target.
//
// - Sends are zero-copy on our side: a batch is one gather list (header, payload, header, …)
//   handed to writev, straight out of the registered region.
// - The target writes payloads straight into the registered region: large payloads with a
//   direct read into it, small ones copied out of a staging buffer (fewer system calls).
// - Several connections per peer (connections_per_peer); batches are spread round-robin.
// - One progress thread per transport (named "kvf-tcp-io") runs every socket and timer; user
//   threads only check and queue. A connection error, or a batch unanswered for op_timeout_ms,
//   fails the peer: its sockets close and every pending batch completes with the error.
//
// Files: tcp_transport.cc is the transport (accepting, connecting through rdma/dial.h, posting,
// deadlines, peers); tcp_connection.{h,cc} is one connection's frame state machine, which calls
// back into the transport only through ConnectionOwner; tcp_wire.h is the frame format.
#pragma once

#include <memory>

#include "config/config.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

// Starts listening on config.listen_address; fails with the address and the system error.
Result<std::unique_ptr<Transport>> makeTcpTransport(const config::TransportConfig& config);

}  // namespace kvferry::rdma
