#include "rdma/kv_layout.h"

#include <string>

namespace kvferry::rdma {

Status appendBlockOps(const KvPool& local, const KvPool& remote,
                      std::span<const uint32_t> local_ids, std::span<const uint32_t> remote_ids,
                      std::vector<TransferOp>& out) {
  if (local_ids.size() != remote_ids.size()) {
    return invalidArgument("block lists differ in length: " + std::to_string(local_ids.size()) +
                           " local, " + std::to_string(remote_ids.size()) + " remote");
  }
  if (local.block_bytes != remote.block_bytes || local.block_bytes == 0) {
    return invalidArgument("block sizes differ or are 0: local " +
                           std::to_string(local.block_bytes) + ", remote " +
                           std::to_string(remote.block_bytes));
  }
  for (size_t i = 0; i < local_ids.size(); ++i) {
    const uint32_t l = local_ids[i];
    const uint32_t r = remote_ids[i];
    if (l >= local.num_blocks || r >= remote.num_blocks) {
      return outOfRange("block pair " + std::to_string(i) + " (" + std::to_string(l) + " → " +
                        std::to_string(r) + ") is past a pool's end (" +
                        std::to_string(local.num_blocks) + " local, " +
                        std::to_string(remote.num_blocks) + " remote blocks)");
    }
    const bool extends = i > 0 && l == local_ids[i - 1] + 1 && r == remote_ids[i - 1] + 1;
    if (extends) {
      out.back().length += local.block_bytes;
    } else {
      out.push_back(TransferOp{local.region, local.offsetOf(l), remote.region, remote.offsetOf(r),
                               local.block_bytes});
    }
  }
  return Status::ok();
}

}  // namespace kvferry::rdma
