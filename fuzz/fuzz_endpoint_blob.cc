// libFuzzer target: the transfer engine's endpoint blob (rdma/endpoint_blob.h), which peers send
// each other through the orchestrator: every length checked; what decodes re-encodes to a blob
// that decodes to the same endpoint.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "rdma/endpoint_blob.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvferry::rdma;
  const EndpointBlob blob(data, data + size);
  auto info = decodeEndpoint(blob);
  if (!info.isOk()) return 0;
  auto encoded = encodeEndpoint(*info);
  if (!encoded.isOk()) return 0;  // e.g. a v1 blob's field this build cannot write back
  auto again = decodeEndpoint(*encoded);
  if (!again.isOk() || again->endpoint_id != info->endpoint_id ||
      again->regions.size() != info->regions.size() || again->address != info->address) {
    std::abort();
  }
  return 0;
}
