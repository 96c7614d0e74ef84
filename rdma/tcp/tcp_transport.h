// The always-available backend: Boost.Asio TCP with one-sided semantics emulated by the target.
//
// - Sends are zero-copy on our side: a batch is one gather list (header, payload, header, …)
//   handed to writev, straight out of the registered region.
// - The target writes payloads straight into the registered region: large payloads with a
//   direct read into it, small ones copied out of a staging buffer (fewer system calls).
// - Several connections per peer (connections_per_peer); batches are spread round-robin.
// - One progress thread per transport (named "kvf-tcp-io") runs every socket and timer; user
//   threads only check and queue.
// - CUDA regions (a build with CUDA) cross two bounded rings of pinned host chunks, one batched
//   device↔host copy per chunk, pipelined with the socket (staging_ring.h); an immediate is
//   delivered once the batch's bytes are in device memory. A connection error, or a batch
//   unanswered for op_timeout_ms, fails the peer: its sockets close and every pending batch
//   completes with the error.
//
// Files: tcp_transport_impl.h is the transport class, tcp_transport.cc its accepting, posting,
// deadlines and staging set-up, tcp_transport_connect.cc connecting through rdma/dial.h;
// tcp_connection.{h,cc} is one connection's frame state machine (tcp_connection_staging.cc its
// staged sends and receives), which calls back into the transport only through ConnectionOwner;
// tcp_wire.h is the frame format; staging_copier.h, staging_ring.{h,cc}, transport_staging.{h,cc}
// and cuda_staging_copier.{h,cc} stage CUDA regions through pinned memory.
#pragma once

#include <memory>

#include "config/config.h"
#include "rdma/tcp/staging_copier.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

// Starts listening on config.listen_address; fails with the address and the system error.
// Built with CUDA, it moves CUDA regions too, staged through pinned host memory.
Result<std::unique_ptr<Transport>> makeTcpTransport(const config::TransportConfig& config);
// The same with the copier that stages CUDA regions named (tests pass a host-memory fake); null:
// host regions only.
Result<std::unique_ptr<Transport>> makeTcpTransport(const config::TransportConfig& config,
                                                    tcp_backend::CopierFactory copier_factory);

}  // namespace kvferry::rdma
