// cuda_ipc: KV between GPUs of one host (DESIGN.md §4). The initiator maps the target's device
// pools with CUDA IPC (the handles travel in the endpoint blob) and moves each batch with one
// launch of a gather/scatter copy kernel (batch_copy.h; batches take four streams in turn) —
// never a copy per block. Doorbells go through shared memory (doorbell_ring.h): connect() hands
// the target a ring over its abstract unix socket (named in the blob); once a batch's copy has
// completed on the device, the initiator's progress thread writes the batch's immediate into
// that ring and completes the batch, and the target's progress thread reads it — so the target
// learns of a batch only after every byte is in its pools, with no network round trip per
// batch. The socket stays open: a target that exits or dies is seen within a millisecond, after
// which its batches and posts fail UNAVAILABLE.
//
// Checks: every op is bounds-checked against both sides' region tables before anything is
// copied (the blob's table on the remote side, as verbs does). One-sided device writes cannot be
// refused by the target afterwards: a target's deregistration reaches an initiator only when it
// reconnects with a fresh blob (capabilities().target_checks is false).
//
// Peers must be on one host and in one network namespace (the blob carries the boot id; the
// doorbell socket is abstract); endpoints of one process use each other's pointers without IPC.
// Only device memory is registered (tcp moves host memory). legacy CUDA IPC does not keep a
// dead exporter's memory alive, so a copy already running into it when it dies is undefined;
// nothing is posted to it once its socket has closed.
#pragma once

#include <memory>

#include "config/config.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

// UNAVAILABLE when CUDA has no device; otherwise listens for doorbell rings (no TCP port:
// config.listen_address is not used).
Result<std::unique_ptr<Transport>> makeCudaIpcTransport(const config::TransportConfig& config);

}  // namespace kvferry::rdma
