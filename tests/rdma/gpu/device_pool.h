// A KV pool in device memory for the GPU transport tests, registered with a transport, with the
// host mirror of what it should hold.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "rdma/cuda_ipc/device_memory.h"
#include "rdma/kv_layout.h"
#include "rdma/transport.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::rdma {

struct DevicePool {
  cuda_ipc::DeviceMemory memory;
  std::vector<uint8_t> host;  // what it should hold
  KvPool pool;
};

// `blocks` blocks of `block_bytes` on `gpu`, filled from `seed` (zeros when 0), registered as
// MemoryKind::cuda(gpu).
inline DevicePool makeDevicePool(Transport& t, uint64_t block_bytes, uint32_t blocks, uint32_t seed,
                                 int gpu = 0) {
  DevicePool p;
  Result<cuda_ipc::DeviceMemory> memory =
      cuda_ipc::DeviceMemory::allocate(gpu, block_bytes * blocks);
  EXPECT_TRUE(memory.isOk()) << memory.status().toString();
  if (!memory.isOk()) return p;
  p.memory = std::move(memory).value();
  p.host.assign(block_bytes * blocks, 0);
  if (seed != 0) fillRandom(p.host, seed);
  EXPECT_TRUE(p.memory.upload(p.host.data(), p.host.size()).isOk());
  Result<RegionId> id = t.registerRegion(p.memory.data(), p.memory.bytes(), MemoryKind::cuda(gpu));
  EXPECT_TRUE(id.isOk()) << id.status().toString();
  p.pool = KvPool{id.isOk() ? *id : 0, block_bytes, blocks};
  return p;
}

// What the pool's device memory holds now.
inline std::vector<uint8_t> deviceBytes(const DevicePool& p) {
  std::vector<uint8_t> out(p.memory.bytes());
  EXPECT_TRUE(p.memory.download(out.data(), out.size()).isOk());
  return out;
}

}  // namespace kvferry::rdma
