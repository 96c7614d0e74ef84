// KV block digests on the device (kv_digest.cu): the same values as kvBlockDigest
// (node_agent/engine/kv_digest.h) computes on the CPU, for agent.kv_checksum on GPU pools.
// Only CUDA code includes this header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvferry::engine::cuda {

// out[p · count + i] = the digest of block ids[i] of pool pools[p] (block b of a pool starts
// b · block_bytes from its base; block_bytes a multiple of kDigestWordBytes and every block 8-byte
// aligned), for p < pool_count (at most 65,535) and i < count. `pools`, `ids` and `out` are in
// device memory; the ids are not checked against the pools.
cudaError_t launchBlockDigests(const uint8_t* const* pools, uint32_t pool_count,
                               const uint32_t* ids, uint32_t count, uint64_t block_bytes,
                               uint64_t* out, cudaStream_t stream);

}  // namespace kvferry::engine::cuda
