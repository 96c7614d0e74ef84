// One TCP connection of the tcp backend, either end: the frame state machine over
// rdma/tcp/tcp_wire.h. It sends batches and small frames (one gather list per writev), parses
// what arrives in place in a staging buffer, writes payloads straight into registered regions,
// answers as a target and completes requests as an initiator. It reaches its transport only
// through ConnectionOwner, so the arrows run one way: the transport (tcp_transport.cc) owns
// connections and peers, a connection calls back.
//
// Bytes of CUDA regions go through the transport's pinned staging rings (staging_ring.h): a send
// with device payloads is laid into chunks, copied device→host and written chunk by chunk
// (tcp_connection_staging.cc); a payload bound for device memory is received into chunks that
// are copied host→device, and a batch's immediate and answer wait until those copies are done.
//
// Threading: every member of a Connection runs on the transport's progress thread.
#pragma once

#include <sys/uio.h>

#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "rdma/asio_util.h"
#include "rdma/batch_check.h"
#include "rdma/region_table.h"
#include "rdma/request_table.h"
#include "rdma/tcp/staging_ring.h"
#include "rdma/tcp/tcp_wire.h"
#include "rdma/tcp/transport_staging.h"
#include "rdma/transport.h"

namespace kvferry::rdma::tcp_backend {

namespace asio = boost::asio;
using asio::ip::tcp;
using wire::FrameHeader;
using wire::Opcode;

inline constexpr size_t kHeaderBytes = sizeof(FrameHeader);
inline constexpr size_t kStagingBytes = 256 * 1024;
// One sendmsg takes the queued items' buffers up to Linux's IOV_MAX: several batches, or many
// acks, leave in one system call (asio's own writes stop at 64 buffers, less than one batch of
// 1 KiB blocks).
inline constexpr size_t kMaxWriteBuffers = 1024;
inline constexpr size_t kMaxScatterOps = 64;  // ops of a write batch received by one readv

// One in-flight batch on the initiator. Request slots are reused, so these vectors stop
// allocating once they have grown to the batch size.
struct TcpBatch {
  bool is_read = false;
  uint32_t responses_left = 0;             // reads: kReadResponse frames still expected
  Status first_error;                      // reads: the first failed op
  BatchPins local;                         // local side of each op
  std::vector<FrameHeader> headers;        // writes: the one kWriteBatch; reads: one per op
  std::vector<wire::WriteOp> table;        // writes: the frame's op table
  std::vector<asio::const_buffer> gather;  // header, table, payloads (reads: headers) for writev
  bool staged = false;                     // writes from a CUDA region: sent from `segments`
  std::vector<Segment> segments;           // header, table, payloads when staged
  void release() {
    local.clear();
    first_error = Status::ok();
  }
};
using Requests = RequestTable<TcpBatch>;

// Something a connection has to send: a prepared batch (initiator), or one small frame with an
// optional payload (target: acks and read responses).
struct OutItem {
  TcpBatch* batch = nullptr;
  FrameHeader header;
  asio::const_buffer payload;
  std::optional<RegionTable::Pin> pin;  // keeps a read response's source registered
  std::string message;                  // error text payload
  bool staged = false;                  // a read response out of a CUDA region: `segments`
  std::array<Segment, 2> segments;
};

// Where a read response's payload goes.
struct ReadDestination {
  uint8_t* data = nullptr;
  bool device = false;  // in a CUDA region: received through the staging ring
};

// What a connection needs from its transport; every call is made on the progress thread.
class ConnectionOwner {
 public:
  virtual const config::TransportConfig& config() const = 0;
  virtual uint64_t endpointId() const = 0;
  virtual RegionTable& regions() = 0;
  // The staging rings; null while no CUDA region was ever registered.
  virtual const StagingRings* staging() const = 0;
  // Target: a write batch that carried an immediate has landed in full.
  virtual void deliverImmediate(uint64_t source, uint32_t imm) = 0;
  // Initiator: a write batch was acknowledged; false when no such request is pending.
  virtual bool completeRequest(uint64_t request_id, Status status) = 0;
  // Initiator: where the payload of op `op_index` of read batch `request_id` goes.
  virtual Result<ReadDestination> readDestination(uint64_t request_id, uint32_t op_index,
                                                  uint64_t length) = 0;
  // Initiator: one kReadResponse of a read batch has been received in full; false when it was
  // not expected.
  virtual bool readResponseDone(uint64_t request_id, const Status& status) = 0;
  // Initiator: the connection to `peer` broke; fails the peer and its pending batches.
  virtual void failPeer(PeerId peer, const Status& reason) = 0;

 protected:
  ~ConnectionOwner() = default;
};

// One TCP connection, either end. Owned by shared_ptr: by its peer (initiator side) and by its
// pending handlers. All of its members are touched on the progress thread only.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  enum class Role { kInitiator, kTarget };

  Connection(ConnectionOwner& owner, tcp::socket socket, Role role)
      : owner_(owner), socket_(std::move(socket)), role_(role), staging_(kStagingBytes) {
    boost::system::error_code ec;
    remote_ = endpointText(socket_.remote_endpoint(ec));
  }

  void start() {
    boost::system::error_code ignored;
    socket_.native_non_blocking(true, ignored);  // writeQueued() sends with sendmsg itself
    process();
  }
  void setPeer(PeerId peer) { peer_ = peer; }
  bool closed() const { return closed_; }
  const std::string& remote() const { return remote_; }

  void sendBatch(TcpBatch* batch) {
    OutItem item;
    item.batch = batch;
    queue_.push_back(std::move(item));
    flush();
  }
  void sendFrame(const FrameHeader& header, asio::const_buffer payload,
                 std::optional<RegionTable::Pin> pin, std::string message) {
    OutItem item;
    item.header = header;
    item.payload = payload;
    item.pin = std::move(pin);
    item.message = std::move(message);
    if (item.pin && item.pin->entry->kind.type == MemoryKind::Type::kCuda) {
      item.staged = true;
      item.segments = {Segment{nullptr, kHeaderBytes, false},
                       Segment{static_cast<const uint8_t*>(payload.data()), payload.size(), true}};
    }
    queue_.push_back(std::move(item));
    // The header's address is stable once the item is in the deque.
    if (queue_.back().staged) {
      queue_.back().segments[0].data = reinterpret_cast<const uint8_t*>(&queue_.back().header);
    }
    flush();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    queue_.clear();
    abandonStaging();
  }

 private:
  // Sends what is queued: staged items through startStagedSend(), the rest as many items per
  // sendmsg as kMaxWriteBuffers allows. Held while process() parses (deferring_), so the acks and
  // read responses of every frame one read brought in leave together.
  void flush();
  // Writes iov_ from iov_pos_; false when the socket is full (an async_wait resumes it) or failed.
  bool writeQueued();
  void process();
  void processFrames();
  void readMore();
  void onIoError(const boost::system::error_code& ec, const char* what);
  Status onHeader();
  Status onFrameEnd();
  Status onTargetHeader();
  Status onTargetFrameEnd();
  Status onInitiatorHeader();
  Status onInitiatorFrameEnd();
  void replyStatus(Opcode opcode, uint64_t request_id, uint32_t op_index, const Status& status);
  void finishFrame();
  // Target, in a kWriteBatch frame: after the table, checks the ops and pins their regions; after
  // an op, moves to the next one. Clears rx_batch_ after the last op (the frame ends).
  Status nextBatchPart();
  // Target: reads the current op's remaining bytes, and those of the host-memory ops after it,
  // straight into their regions with one readv.
  void scatterRead();

  // Staging (tcp_connection_staging.cc).
  bool isStaged(const OutItem& item) const;
  void startStagedSend(const OutItem& item);
  void fillStaged();
  void pumpStaged();
  void onSendCopied(uint32_t chunk);
  bool receiveToDevice();
  void commitReceived(size_t bytes);
  bool drainAtFrameEnd();
  void onReceiveCopied(uint32_t chunk);
  void onStagingError(const Status& status);
  void abandonStaging();

  ConnectionOwner& owner_;
  tcp::socket socket_;
  const Role role_;
  PeerId peer_ = 0;
  std::string remote_;
  bool closed_ = false;
  bool close_after_flush_ = false;

  // Send side.
  std::deque<OutItem> queue_;
  bool writing_ = false;
  bool deferring_ = false;  // process() is parsing: flush() waits for its end
  std::vector<iovec> iov_;  // the write under way: the buffers of its first write_items_ items
  size_t iov_pos_ = 0;
  size_t write_items_ = 0;

  // Receive side: a staging buffer parsed in place, plus the frame being received.
  std::vector<uint8_t> staging_;
  size_t rx_begin_ = 0;
  size_t rx_end_ = 0;
  bool in_payload_ = false;
  FrameHeader rx_header_;
  uint8_t* rx_dest_ = nullptr;  // where the payload goes; null = discard it
  bool rx_region_ = false;      // rx_dest_ is in a registered region: streamCopy() into it
  uint64_t rx_left_ = 0;
  uint64_t rx_done_ = 0;
  std::string rx_message_;

  // Staged send: the item at the front of queue_, laid into send-ring chunks in order.
  struct SendChunk {
    uint32_t index = 0;
    size_t bytes = 0;
    bool ready = false;    // its device→host copy is done
    bool on_wire = false;  // being written
  };
  bool staged_sending_ = false;
  std::span<const Segment> send_segments_;
  StreamCursor send_cursor_;
  std::deque<SendChunk> send_chunks_;
  std::vector<CopyPiece> send_pieces_;
  bool send_waiting_ = false;  // for a free chunk

  // Staged receive: payloads bound for device memory.
  bool rx_device_ = false;              // the current payload goes to device memory
  std::unique_ptr<RxStager> rx_stage_;  // made at the first such payload
  bool rx_waiting_ = false;             // for a free chunk; the ring's wake-up resumes
  bool rx_draining_ = false;            // at a completion point, for copies to finish

  // Target: the kWriteBatch frame being received: its op table, then each op's bytes in turn.
  bool rx_batch_ = false;     // in a kWriteBatch frame
  bool rx_in_table_ = false;  // receiving its table
  std::vector<wire::WriteOp> rx_table_;
  std::vector<uint8_t*> rx_op_dest_;  // per op: where its bytes go; null = refused, dropped
  std::vector<bool> rx_op_device_;    // per op: its destination is CUDA memory
  size_t rx_op_ = 0;                  // the op being received
  std::vector<asio::mutable_buffer> scatter_;

  // Target side.
  bool hello_done_ = false;
  uint64_t source_id_ = 0;  // the initiator's endpoint id, from its hello
  Status batch_error_;      // first refused op of the write batch being received
  BatchPins batch_pins_;    // regions of the write batch being received, pinned until its end
};

}  // namespace kvferry::rdma::tcp_backend
