// The KV transfer engine's one interface. Shaped after NCCL's net plugin (listen/connect/regMr/
// isend/test) with capability flags, and after RDMA verbs semantics: one-sided WRITE and READ
// into registered memory regions, WRITE WITH IMMEDIATE to tell the target a batch has landed.
//
// Lifecycle of one pair of endpoints:
//   target:    registerRegion(pool...)  →  localBlob()  — ship the blob over the control plane
//   initiator: registerRegion(pool...)  →  connect(blob) → PeerId
//   initiator: postWrite(peer, ops, imm, cookie) ... pollCompletions()  → one Completion per batch
//   target:    pollImmediates()         → one ImmediateEvent per batch that carried an immediate
//
// Threading: every method is thread-safe and non-blocking except connect() (bounded by the
// connect timeout and retries) and the optional wait in the poll calls. Completions and
// immediates are produced by the transport's own progress threads.
//
// Ownership: registered memory belongs to the caller and must outlive its registration (i.e.
// until deregisterRegion() returns or the transport is destroyed). Destroying a transport closes
// its connections; requests still pending are dropped without completions.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvferry::rdma {

// Where a region's memory lives: host, or a CUDA device (registered via dma-buf or
// nvidia-peermem by the verbs backend, or mapped by cuda_ipc).
struct MemoryKind {
  enum class Type : uint8_t { kHost, kCuda };
  Type type = Type::kHost;
  int device = -1;  // CUDA ordinal when type == kCuda

  static MemoryKind host() { return {}; }
  static MemoryKind cuda(int ordinal) { return {Type::kCuda, ordinal}; }
  bool operator==(const MemoryKind&) const = default;
};

// A region id is local to the transport that registered it; peers learn it from the blob.
using RegionId = uint32_t;
// A peer handle returned by connect(); local to the initiator.
using PeerId = uint32_t;

// One contiguous one-sided transfer. For a write, bytes go from the local region to the remote
// one; for a read, from the remote region to the local one.
struct TransferOp {
  RegionId local_region = 0;
  uint64_t local_offset = 0;
  RegionId remote_region = 0;
  uint64_t remote_offset = 0;
  uint64_t length = 0;
};

// One completed batch: the cookie given at post time and how it ended.
struct Completion {
  uint64_t cookie = 0;
  Status status;
};

// An immediate delivered on the target, exactly once per batch that carried one, after every
// byte of that batch is in the target's regions.
struct ImmediateEvent {
  uint64_t source_id = 0;  // the initiator's endpoint id (its blob's `endpoint_id`)
  uint32_t imm = 0;
};

struct Capabilities {
  bool host_memory = true;
  bool cuda_memory = false;
  bool dmabuf = false;
  bool reads = true;
  bool immediates = true;
  // Whether the connection stays usable after the target refuses an op (tcp, loopback). On
  // verbs a remote access error moves the RC queue pair to the error state: the peer reports
  // failure and must be reconnected (with a fresh blob).
  bool survives_remote_refusal = true;
  // Whether the target checks each op again when it arrives (and so refuses writes into a region
  // it deregistered after its blob was taken). cuda_ipc's one-sided device writes cannot be.
  bool target_checks = true;
  uint32_t max_batch_ops = 0;
  uint32_t queue_depth = 0;
};

// A registered region as a peer sees it (carried in the endpoint blob). `remote_base` and
// `remote_key` are meaningful to verbs (virtual address + rkey); TCP leaves them 0.
struct RemoteRegion {
  RegionId id = 0;
  uint64_t bytes = 0;
  uint64_t remote_base = 0;
  uint32_t remote_key = 0;
  // GPU memory needs the initiator's flush (a READ before the immediate) on some platforms.
  // flush_domain names the GPU (regions of one GPU share one flush read); 0 for host memory.
  // Carried since blob v2; a v1 blob reads as host memory.
  bool gpu_memory = false;
  uint32_t flush_domain = 0;
};

// The opaque, bounded bytes that tell a peer how to reach this endpoint and its regions. Only
// endpoint_blob.h looks inside.
using EndpointBlob = std::vector<uint8_t>;
inline constexpr size_t kMaxEndpointBlobBytes = 64 * 1024;

class Transport {
 public:
  virtual ~Transport() = default;

  virtual std::string_view name() const = 0;
  virtual Capabilities capabilities() const = 0;

  // Registers [base, base + bytes) for remote access. A region registered after localBlob()
  // was exported is not known to peers until they reconnect with a fresh blob.
  virtual Result<RegionId> registerRegion(void* base, size_t bytes, MemoryKind kind) = 0;
  // Waits (bounded by op_timeout_ms) for remote accesses in progress on the region, then
  // removes it; later accesses to it are refused with NOT_FOUND.
  virtual Status deregisterRegion(RegionId region) = 0;

  // This endpoint's address and region table, at most kMaxEndpointBlobBytes.
  virtual Result<EndpointBlob> localBlob() const = 0;

  // Opens the configured number of connections to a peer. Fails with INVALID_ARGUMENT for a
  // malformed blob or one from another backend, UNAVAILABLE/DEADLINE_EXCEEDED when the peer
  // cannot be reached within the connect timeout and retries.
  virtual Result<PeerId> connect(const EndpointBlob& peer_blob) = 0;
  // Closes the peer's connections; its pending batches complete with CANCELLED.
  virtual Status disconnect(PeerId peer) = 0;

  // Posts a batch. Validation failures (unknown peer or region, out-of-range op, empty or
  // oversized batch) are returned here and nothing is sent. RESOURCE_EXHAUSTED means
  // queue_depth batches are outstanding: poll completions, then post again. Otherwise the batch
  // completes exactly once through pollCompletions() with `cookie`, OK or with the error (peer
  // died → UNAVAILABLE, no answer within op_timeout_ms → DEADLINE_EXCEEDED, target refused an
  // op → the target's code).
  // Writes: `imm`, when present, is delivered to the target after the whole batch has landed.
  virtual Status postWrite(PeerId peer, std::span<const TransferOp> ops,
                           std::optional<uint32_t> imm, uint64_t cookie) = 0;
  virtual Status postRead(PeerId peer, std::span<const TransferOp> ops, uint64_t cookie) = 0;

  // Moves up to out.size() completions into `out`; waits up to `wait` for the first one.
  virtual size_t pollCompletions(std::span<Completion> out, std::chrono::microseconds wait) = 0;
  // Moves up to out.size() received immediates into `out`; waits up to `wait` for the first.
  virtual size_t pollImmediates(std::span<ImmediateEvent> out, std::chrono::microseconds wait) = 0;
};

}  // namespace kvferry::rdma
