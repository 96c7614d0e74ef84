// The TCP backend's wire format. Every frame is a fixed FrameHeader followed by `length` payload
// bytes. One connection carries both directions:
//
//   initiator → target   kHello (first frame), kWriteBatch + op table + payloads, kReadRequest
//   target → initiator   kHelloAck (+ error text), kAck (+ error text), kReadResponse + payload
//
// A write batch is ONE kWriteBatch frame: its payload is the table of its ops (op_index of them,
// each a WriteOp), then every op's bytes in table order. Knowing every destination before the
// first byte, the target receives the bytes straight into its regions with scatter reads (one
// system call for many ops, no staging copy) instead of parsing a header per op. It answers with
// one kAck after the frame (kFlagImm: deliver `imm` first). A read batch is a run of kReadRequest
// frames, the last flagged kFlagLast, each answered by one kReadResponse. Frames of two batches
// never interleave on a connection.
#pragma once

#include <bit>
#include <cstdint>

#include "common/status.h"

namespace kvferry::rdma::wire {

static_assert(std::endian::native == std::endian::little,
              "the TCP wire format is little-endian host order");

inline constexpr uint32_t kFrameMagic = 0x5246564B;  // "KVFR": catches a desynchronised stream
inline constexpr uint32_t kProtocolVersion = 2;      // 2: write batches as one frame with a table
inline constexpr uint64_t kMaxMessageBytes = 4096;   // error text after a kAck / kHelloAck

enum class Opcode : uint8_t {
  kHello = 1,         // request_id = initiator endpoint id, offset = expected target endpoint id,
                      // region = protocol version
  kHelloAck = 2,      // status; payload = error text
  kWriteBatch = 3,    // op_index = ops, imm, flags; payload = the op table, then the ops' bytes
  kReadRequest = 4,   // region, offset, length (wanted), op_index
  kReadResponse = 5,  // status, op_index; payload = the bytes (or error text when status != 0)
  kAck = 6,           // status of a write batch; payload = error text
};

enum FrameFlags : uint8_t {
  kFlagLast = 1,  // last frame of a batch (a write batch's one frame always has it)
  kFlagImm = 2,   // the batch carries `imm`, to be delivered after its last byte
};

struct FrameHeader {
  uint32_t magic = kFrameMagic;
  Opcode opcode = Opcode::kHello;
  uint8_t flags = 0;
  uint16_t status = 0;  // a kvferry::StatusCode
  uint32_t region = 0;
  uint32_t imm = 0;
  uint64_t request_id = 0;
  uint64_t offset = 0;
  uint64_t length = 0;  // payload bytes that follow (kReadRequest: bytes wanted, none follow)
  uint32_t op_index = 0;
  uint32_t reserved = 0;
};
static_assert(sizeof(FrameHeader) == 48, "FrameHeader is a wire format: no padding changes");

// One op of a kWriteBatch frame's table: `length` bytes for region `region` at `offset`.
struct WriteOp {
  uint32_t region = 0;
  uint32_t reserved = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};
static_assert(sizeof(WriteOp) == 24, "WriteOp is a wire format: no padding changes");

// FrameHeader::status as a StatusCode; a code this build does not know is INTERNAL.
inline StatusCode statusCodeOf(uint16_t code) {
  return code <= static_cast<uint16_t>(StatusCode::kDataLoss) ? static_cast<StatusCode>(code)
                                                              : StatusCode::kInternal;
}

}  // namespace kvferry::rdma::wire
