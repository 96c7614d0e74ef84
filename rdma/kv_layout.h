// Paged KV addressing (DESIGN.md §4): each KV pool is one registered region of
// num_blocks × block_bytes, so a block's address is base + block_id × block_bytes and no
// per-block metadata crosses the wire.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

struct KvPool {
  RegionId region = 0;
  uint64_t block_bytes = 0;
  uint64_t num_blocks = 0;

  uint64_t offsetOf(uint64_t block_id) const { return block_id * block_bytes; }
};

// Appends to `out` the ops that copy block local_ids[i] of `local` to block remote_ids[i] of
// `remote`, one op per run of pairs whose local AND remote ids both ascend by one (adjacent
// blocks coalesce into one write). `out` is appended to, never shrunk, so a caller that reuses
// it allocates nothing once it has grown. INVALID_ARGUMENT when the id lists differ in length or
// the pools' block sizes differ; OUT_OF_RANGE for an id past a pool's end.
Status appendBlockOps(const KvPool& local, const KvPool& remote,
                      std::span<const uint32_t> local_ids, std::span<const uint32_t> remote_ids,
                      std::vector<TransferOp>& out);

}  // namespace kvferry::rdma
