// A Transport that wraps another and injects faults into the batches this endpoint sends (config
// `transport.faults`): a delay before a batch leaves, a lost batch (nothing lands, it ends with
// DEADLINE_EXCEEDED after op_timeout_ms, as an unanswered batch does), a corrupted batch (it
// lands, with 16 bytes of one op overwritten before its immediate), a failed connect, and a
// connection cut right after a batch was handed to it (the target sees the stream end mid-batch
// or just after; the batch ends UNAVAILABLE). For tests and chaos runs: makeTransport() wraps a
// backend only when a fault is configured. Immediates, registration and blobs pass through.
//
// A delayed batch is checked by the wrapped backend when it leaves, so a batch it refuses ends
// through pollCompletions() with the refusal instead of being refused by postWrite().
#pragma once

#include <memory>

#include "config/config.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

// What was injected so far (tests and the shutdown log read it).
struct FaultCounts {
  uint64_t delayed = 0;
  uint64_t dropped = 0;
  uint64_t corrupted = 0;
  uint64_t connects_failed = 0;
  uint64_t cuts = 0;
};

// Wraps `inner` with config.faults. INVALID_ARGUMENT when a configured fault cannot be injected
// on this backend (corruption needs a backend that sends from host memory).
Result<std::unique_ptr<Transport>> wrapWithFaults(std::unique_ptr<Transport> inner,
                                                  const config::TransportConfig& config);

// The counts of a transport made by wrapWithFaults(); all zero for any other transport.
FaultCounts faultCounts(const Transport& transport);

}  // namespace kvferry::rdma
