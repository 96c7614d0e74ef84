// cuda_ipc: KV between GPUs of one host (DESIGN.md §4). The initiator maps the target's device
// pools with CUDA IPC (the handles travel in the endpoint blob) and moves each batch with one
// launch of a gather/scatter copy kernel (batch_copy.h) on its own stream — never a copy per
// block. A small TCP transport (tcp_transport.h) beside it is the control channel: once a
// batch's copy has completed on the device, an 8-byte doorbell write over it carries the
// immediate, so the target learns of a batch only after every byte is in its pools; the
// doorbell's completion completes the batch, and the TCP connection's failure or timeout fails
// the peer's batches as every backend does.
//
// Checks: every op is bounds-checked against both sides' region tables before anything is
// copied (the blob's table on the remote side, as verbs does). One-sided device writes cannot be
// refused by the target afterwards: a target's deregistration reaches an initiator only when it
// reconnects with a fresh blob (capabilities().target_checks is false).
//
// Peers must be on one host (the blob carries the boot id); endpoints of one process use each
// other's pointers without IPC. Only device memory is registered (tcp moves host memory).
// A target process that dies leaves its IPC mappings open in the initiator until disconnect()
// or teardown closes them; legacy CUDA IPC does not keep a dead exporter's memory alive, so a copy
// already running into it is undefined — the doorbell protocol keeps that window to one batch.
#pragma once

#include <memory>

#include "config/config.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

// UNAVAILABLE when CUDA has no device; otherwise starts the control channel on
// config.listen_address.
Result<std::unique_ptr<Transport>> makeCudaIpcTransport(const config::TransportConfig& config);

}  // namespace kvferry::rdma
