// The endpoint blob's layout, shared by every backend: a versioned header naming the backend and
// the endpoint, the region table, and backend-specific address bytes (TCP: "host:port"; verbs:
// QPNs, GID, …). Little-endian, every length checked on decode.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

struct EndpointInfo {
  std::string backend;       // Transport::name() of the backend that made it
  uint64_t endpoint_id = 0;  // random per transport instance: a restarted peer has a new one
  std::vector<RemoteRegion> regions;
  std::vector<uint8_t> address;  // backend-specific

  const RemoteRegion* findRegion(RegionId id) const;
};

// Blob versions: 1 (no memory kind per region) and 2 (adds whether a region is GPU memory and
// its flush domain). This build writes 2 and reads both; a v1 blob's regions are host memory.
inline constexpr uint16_t kEndpointBlobVersion = 2;
inline constexpr uint16_t kOldestEndpointBlobVersion = 1;

// `version` is for talking to (and testing against) older peers: v1 cannot describe GPU
// memory, so a GPU region in it is INVALID_ARGUMENT rather than silently unflushed.
Result<EndpointBlob> encodeEndpoint(const EndpointInfo& info,
                                    uint16_t version = kEndpointBlobVersion);
// INVALID_ARGUMENT for a truncated, oversized, foreign or corrupted blob.
Result<EndpointInfo> decodeEndpoint(const EndpointBlob& blob);

// A random, non-zero 64-bit id for a new endpoint.
uint64_t newEndpointId();

}  // namespace kvferry::rdma
