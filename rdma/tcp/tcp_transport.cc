#include "rdma/tcp/tcp_transport.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "rdma/asio_util.h"
#include "rdma/batch_check.h"
#include "rdma/endpoint_blob.h"
#include "rdma/event_queue.h"
#include "rdma/region_table.h"
#include "rdma/request_table.h"
#include "rdma/tcp/tcp_wire.h"
#include "rdma/transport_base.h"

namespace kvferry::rdma {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using wire::FrameHeader;
using wire::Opcode;
using Clock = std::chrono::steady_clock;

constexpr size_t kHeaderBytes = sizeof(FrameHeader);
constexpr size_t kStagingBytes = 256 * 1024;
constexpr size_t kMaxGatherItems = 32;  // small frames (acks, read responses) per writev

StatusCode wireToStatusCode(uint16_t code) {
  return code <= static_cast<uint16_t>(StatusCode::kIoError) ? static_cast<StatusCode>(code)
                                                             : StatusCode::kInternal;
}

class TcpTransport;

// One in-flight batch on the initiator. Request slots are reused, so these vectors stop
// allocating once they have grown to the batch size.
struct TcpBatch {
  bool is_read = false;
  uint32_t responses_left = 0;             // reads: kReadResponse frames still expected
  Status first_error;                      // reads: the first failed op
  BatchPins local;                         // local side of each op
  std::vector<FrameHeader> headers;        // one per op
  std::vector<asio::const_buffer> gather;  // header, payload, header, … for writev
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
};

// One TCP connection, either end. Owned by shared_ptr: by its peer (initiator side) and by its
// pending handlers. All of its members are touched on the progress thread only.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  enum class Role { kInitiator, kTarget };

  Connection(TcpTransport& owner, tcp::socket socket, Role role)
      : owner_(owner), socket_(std::move(socket)), role_(role), staging_(kStagingBytes) {
    boost::system::error_code ec;
    remote_ = endpointText(socket_.remote_endpoint(ec));
  }

  void start() { process(); }
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
    queue_.push_back(OutItem{nullptr, header, payload, std::move(pin), std::move(message)});
    flush();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    queue_.clear();
    batch_pins_.clear();
  }

 private:
  void flush();
  void process();
  void readMore();
  void onIoError(const boost::system::error_code& ec, const char* what);
  Status onHeader();
  Status onFrameEnd();
  Status onTargetHeader();
  Status onTargetFrameEnd();
  Status onInitiatorHeader();
  Status onInitiatorFrameEnd();
  void replyStatus(Opcode opcode, uint64_t request_id, uint32_t op_index, const Status& status);

  TcpTransport& owner_;
  tcp::socket socket_;
  const Role role_;
  PeerId peer_ = 0;
  std::string remote_;
  bool closed_ = false;
  bool close_after_flush_ = false;

  // Send side.
  std::deque<OutItem> queue_;
  bool writing_ = false;
  std::vector<asio::const_buffer> gather_;

  // Receive side: a staging buffer parsed in place, plus the frame being received.
  std::vector<uint8_t> staging_;
  size_t rx_begin_ = 0;
  size_t rx_end_ = 0;
  bool in_payload_ = false;
  FrameHeader rx_header_;
  uint8_t* rx_dest_ = nullptr;  // where the payload goes; null = discard it
  uint64_t rx_left_ = 0;
  uint64_t rx_done_ = 0;
  std::string rx_message_;

  // Target side.
  bool hello_done_ = false;
  uint64_t source_id_ = 0;  // the initiator's endpoint id, from its hello
  Status batch_error_;      // first refused op of the write batch being received
  BatchPins batch_pins_;    // regions of the write batch being received, pinned until its end
};

struct Peer {
  EndpointInfo info;
  std::vector<std::shared_ptr<Connection>> connections;
  size_t next_connection = 0;
  bool broken = false;
  Status broken_reason;
};

class TcpTransport final : public TransportBase {
 public:
  explicit TcpTransport(const config::TransportConfig& config)
      : TransportBase(config),
        requests_(completions_, config.queue_depth),
        acceptor_(io_),
        sweep_timer_(io_),
        work_(asio::make_work_guard(io_)) {}

  ~TcpTransport() override {
    asio::post(io_, [this] {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      sweep_timer_.cancel();
      std::lock_guard lock(peers_mu_);
      for (auto& [id, peer] : peers_) {
        for (auto& c : peer->connections) c->close();
      }
    });
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
    // Accepted connections are owned by their pending handlers, destroyed with io_ below
    // (members after io_ go first: peers' sockets before the io_context they belong to).
  }

  Status start() {
    RETURN_IF_ERROR(listenOn(acceptor_, config_.listen_address,
                             [this](tcp::acceptor& a, boost::system::error_code& ec) {
                               setBufferSizes(a, ec);  // accepted sockets inherit them
                             }));
    boost::system::error_code ec;
    listen_ = acceptor_.local_endpoint(ec);
    accept();
    armSweep();
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "kvf-tcp-io");
      io_.run();
    });
    spdlog::info("tcp transport: endpoint {:016x} listening on {}", endpoint_id_,
                 endpointText(listen_));
    return Status::ok();
  }

  std::string_view name() const override { return "tcp"; }

  Result<RegionId> registerRegion(void* base, size_t bytes, MemoryKind kind) override {
    if (kind.type != MemoryKind::Type::kHost) {
      return invalidArgument("the tcp transport registers host memory only (got a CUDA region)");
    }
    return regions_.add(base, bytes, kind);
  }

  Result<EndpointBlob> localBlob() const override { return blobWithAddress(endpointText(listen_)); }

  Result<PeerId> connect(const EndpointBlob& peer_blob) override;
  Status disconnect(PeerId peer) override;

  // --- Called by connections, on the progress thread. ---
  const config::TransportConfig& config() const { return config_; }
  uint64_t endpointId() const { return endpoint_id_; }
  RegionTable& regions() { return regions_; }
  void deliverImmediate(uint64_t source, uint32_t imm) { immediates_.push({source, imm}); }

  bool completeRequest(uint64_t request_id, Status status) {
    return requests_.complete(request_id, std::move(status));
  }

  // Where the payload of op `op_index` of read batch `request_id` goes. The slot keeps it
  // registered; it cannot be recycled under the reader because only failPeer() recycles a slot
  // early, on this thread, after closing the socket the reader reads from.
  Result<uint8_t*> readDestination(uint64_t request_id, uint32_t op_index, uint64_t length) {
    uint8_t* dest = nullptr;
    requests_.update(request_id, [&](Requests::Slot& slot) -> std::optional<Status> {
      const TcpBatch& b = slot.payload;
      if (b.is_read && op_index < b.headers.size() && b.headers[op_index].length == length) {
        dest = b.local.data(op_index);
      }
      return std::nullopt;
    });
    if (dest == nullptr) {
      return internalError("read response that matches no pending read (request " +
                           std::to_string(request_id) + ", op " + std::to_string(op_index) + ")");
    }
    return dest;
  }

  // One kReadResponse of a read batch has been received in full.
  bool readResponseDone(uint64_t request_id, const Status& status) {
    bool expected = false;
    requests_.update(request_id, [&](Requests::Slot& slot) -> std::optional<Status> {
      TcpBatch& b = slot.payload;
      if (!b.is_read || b.responses_left == 0) return std::nullopt;
      expected = true;
      if (!status.isOk() && b.first_error.isOk()) b.first_error = status;
      if (--b.responses_left == 0) return b.first_error;
      return std::nullopt;
    });
    return expected;
  }

  // Closes every connection of the peer and fails its pending batches with `reason`. Runs on
  // the progress thread, so no handler of these sockets runs concurrently: once the sockets are
  // closed no byte can land in a region of a batch we report as failed.
  void failPeer(PeerId id, const Status& reason) {
    {
      std::lock_guard lock(peers_mu_);
      auto it = peers_.find(id);
      if (it == peers_.end() || it->second->broken) return;
      Peer& peer = *it->second;
      peer.broken = true;
      peer.broken_reason = reason;
      for (auto& c : peer.connections) c->close();
      if (reason.code() != StatusCode::kCancelled) {
        spdlog::warn("tcp transport: peer {} ({}) failed: {}", id,
                     peer.connections.empty() ? "?" : peer.connections[0]->remote(),
                     reason.toString());
      }
    }
    requests_.failPeer(id, reason);
  }

 private:
  // SO_SNDBUF/SO_RCVBUF before connect/listen (so the window scale fits); 0 keeps the
  // kernel's autotuning.
  template <typename Socket>
  void setBufferSizes(Socket& s, boost::system::error_code& ec) const {
    if (config_.socket_buffer_bytes == 0) return;
    const int bytes = static_cast<int>(config_.socket_buffer_bytes);
    s.set_option(asio::socket_base::send_buffer_size(bytes), ec);
    if (!ec) s.set_option(asio::socket_base::receive_buffer_size(bytes), ec);
  }

  Status post(PeerId peer_id, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
              uint64_t cookie, bool is_read) override;
  void accept();
  void armSweep();
  void sweepDeadlines();
  Result<std::shared_ptr<Connection>> connectOne(const tcp::endpoint& ep, uint64_t target_id);

  Requests requests_;

  // io_ before everything that owns a socket or timer, so those are destroyed first.
  asio::io_context io_;
  tcp::acceptor acceptor_;
  tcp::endpoint listen_;
  asio::steady_timer sweep_timer_;
  std::mutex peers_mu_;
  std::unordered_map<PeerId, std::unique_ptr<Peer>> peers_;
  PeerId next_peer_ = 1;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// Connection: sending

void Connection::flush() {
  if (writing_ || closed_ || queue_.empty()) return;
  size_t items = 0;
  const std::vector<asio::const_buffer>* buffers = nullptr;
  if (queue_.front().batch != nullptr) {
    buffers = &queue_.front().batch->gather;
    items = 1;
  } else {
    gather_.clear();
    for (const OutItem& item : queue_) {
      if (item.batch != nullptr || items == kMaxGatherItems) break;
      gather_.emplace_back(&item.header, kHeaderBytes);
      if (item.payload.size() > 0) gather_.push_back(item.payload);
      if (!item.message.empty()) gather_.emplace_back(item.message.data(), item.message.size());
      ++items;
    }
    buffers = &gather_;
  }
  writing_ = true;
  asio::async_write(
      socket_, *buffers,
      [self = shared_from_this(), items](const boost::system::error_code& ec, size_t) {
        self->writing_ = false;
        if (ec) return self->onIoError(ec, "send");
        for (size_t i = 0; i < items && !self->queue_.empty(); ++i) {
          self->queue_.pop_front();
        }
        if (self->close_after_flush_ && self->queue_.empty()) return self->close();
        self->flush();
      });
}

void Connection::onIoError(const boost::system::error_code& ec, const char* what) {
  if (closed_) return;
  if (role_ == Role::kInitiator) {
    owner_.failPeer(
        peer_, unavailable("connection to " + remote_ + " lost (" + what + "): " + ec.message()));
  } else {
    if (ec != asio::error::eof) {
      spdlog::debug("tcp transport: connection from {} closed ({}): {}", remote_, what,
                    ec.message());
    }
    close();
  }
}

// ---------------------------------------------------------------------------------------------
// Connection: receiving. A state machine over the staging buffer: header, then payload, which
// is copied from staging or (when large and wanted) read straight into its destination.

void Connection::readMore() {
  const size_t leftover = rx_end_ - rx_begin_;
  if (leftover > 0 && rx_begin_ > 0) std::memmove(staging_.data(), &staging_[rx_begin_], leftover);
  rx_begin_ = 0;
  rx_end_ = leftover;
  socket_.async_read_some(
      asio::buffer(staging_.data() + rx_end_, staging_.size() - rx_end_),
      [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
        if (ec) return self->onIoError(ec, "receive");
        self->rx_end_ += n;
        self->process();
      });
}

void Connection::process() {
  while (!closed_) {
    if (!in_payload_) {
      if (rx_end_ - rx_begin_ < kHeaderBytes) return readMore();
      std::memcpy(&rx_header_, &staging_[rx_begin_], kHeaderBytes);
      rx_begin_ += kHeaderBytes;
      rx_dest_ = nullptr;
      rx_done_ = 0;
      rx_left_ = rx_header_.length;
      if (rx_header_.magic != wire::kFrameMagic) {
        return onIoError(asio::error::make_error_code(asio::error::invalid_argument),
                         "bad frame magic");
      }
      if (Status s = onHeader(); !s.isOk()) {
        spdlog::warn("tcp transport: protocol error from {}: {}", remote_, s.toString());
        return onIoError(asio::error::make_error_code(asio::error::invalid_argument),
                         "protocol error");
      }
      in_payload_ = true;
      continue;
    }
    if (rx_left_ > 0) {
      const size_t avail = rx_end_ - rx_begin_;
      if (avail > 0) {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(avail, rx_left_));
        if (rx_dest_ != nullptr) std::memcpy(rx_dest_ + rx_done_, &staging_[rx_begin_], take);
        rx_begin_ += take;
        rx_done_ += take;
        rx_left_ -= take;
        continue;
      }
      if (rx_dest_ != nullptr && rx_left_ >= owner_.config().direct_receive_bytes) {
        asio::async_read(
            socket_, asio::buffer(rx_dest_ + rx_done_, rx_left_),
            [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
              if (ec) return self->onIoError(ec, "receive");
              self->rx_done_ += n;
              self->rx_left_ = 0;
              self->process();
            });
        return;
      }
      return readMore();
    }
    in_payload_ = false;
    Status s = onFrameEnd();
    if (!s.isOk()) {
      spdlog::warn("tcp transport: protocol error from {}: {}", remote_, s.toString());
      return onIoError(asio::error::make_error_code(asio::error::invalid_argument),
                       "protocol error");
    }
  }
}

Status Connection::onHeader() {
  return role_ == Role::kTarget ? onTargetHeader() : onInitiatorHeader();
}
Status Connection::onFrameEnd() {
  return role_ == Role::kTarget ? onTargetFrameEnd() : onInitiatorFrameEnd();
}

// Error text payloads (acks, failed read responses) go to rx_message_.
static Status receiveMessage(const FrameHeader& h, std::string& message, uint8_t*& dest) {
  if (h.length > wire::kMaxMessageBytes) {
    return invalidArgument("error text of " + std::to_string(h.length) + " bytes");
  }
  message.resize(h.length);
  dest = reinterpret_cast<uint8_t*>(message.data());
  return Status::ok();
}

void Connection::replyStatus(Opcode opcode, uint64_t request_id, uint32_t op_index,
                             const Status& status) {
  FrameHeader h;
  h.opcode = opcode;
  h.request_id = request_id;
  h.op_index = op_index;
  h.status = static_cast<uint16_t>(status.code());
  std::string text = status.isOk() ? std::string() : status.message();
  if (text.size() > wire::kMaxMessageBytes) text.resize(wire::kMaxMessageBytes);
  h.length = text.size();
  sendFrame(h, {}, std::nullopt, std::move(text));
}

Status Connection::onTargetHeader() {
  const FrameHeader& h = rx_header_;
  if (!hello_done_) {
    if (h.opcode != Opcode::kHello || h.length != 0) return invalidArgument("expected a hello");
    hello_done_ = true;
    source_id_ = h.request_id;
    Status verdict;
    if (h.region != wire::kProtocolVersion) {
      verdict =
          failedPrecondition("protocol version " + std::to_string(h.region) +
                             ", this endpoint speaks " + std::to_string(wire::kProtocolVersion));
    } else if (h.offset != owner_.endpointId()) {
      verdict =
          failedPrecondition("stale endpoint blob: it names endpoint " + std::to_string(h.offset) +
                             ", this is endpoint " + std::to_string(owner_.endpointId()) +
                             " (the peer restarted; fetch its new blob)");
    }
    replyStatus(Opcode::kHelloAck, 0, 0, verdict);
    if (!verdict.isOk()) close_after_flush_ = true;
    return Status::ok();
  }
  switch (h.opcode) {
    case Opcode::kWrite: {
      Status ok = batch_pins_.add(owner_.regions(), h.region, h.offset, h.length, "write");
      if (ok.isOk()) {
        rx_dest_ = batch_pins_.data(batch_pins_.size() - 1);
      } else if (batch_error_.isOk()) {
        batch_error_ = ok;  // refused: the payload is read and dropped
      }
      return Status::ok();
    }
    case Opcode::kReadRequest: {
      rx_left_ = 0;  // a read request carries no payload: its length is the size wanted
      Result<RegionTable::Pin> pin = owner_.regions().pin(h.region, h.offset, h.length, "read");
      if (!pin.isOk()) {
        replyStatus(Opcode::kReadResponse, h.request_id, h.op_index, pin.status());
        return Status::ok();
      }
      FrameHeader resp;
      resp.opcode = Opcode::kReadResponse;
      resp.request_id = h.request_id;
      resp.op_index = h.op_index;
      resp.length = h.length;
      asio::const_buffer payload(pin->data, h.length);
      sendFrame(resp, payload, std::move(pin).value(), {});
      return Status::ok();
    }
    default:
      return invalidArgument("unexpected opcode " + std::to_string(static_cast<int>(h.opcode)) +
                             " at a target");
  }
}

Status Connection::onTargetFrameEnd() {
  const FrameHeader& h = rx_header_;
  if (h.opcode != Opcode::kWrite || !(h.flags & wire::kFlagLast)) return Status::ok();
  // The whole batch is in the region (or refused): deliver the immediate, then acknowledge.
  if (batch_error_.isOk() && (h.flags & wire::kFlagImm)) owner_.deliverImmediate(source_id_, h.imm);
  replyStatus(Opcode::kAck, h.request_id, 0, batch_error_);
  batch_error_ = Status::ok();
  batch_pins_.clear();
  return Status::ok();
}

Status Connection::onInitiatorHeader() {
  const FrameHeader& h = rx_header_;
  switch (h.opcode) {
    case Opcode::kAck:
      return receiveMessage(h, rx_message_, rx_dest_);
    case Opcode::kReadResponse: {
      if (h.status != 0) return receiveMessage(h, rx_message_, rx_dest_);
      ASSIGN_OR_RETURN(rx_dest_, owner_.readDestination(h.request_id, h.op_index, h.length));
      return Status::ok();
    }
    default:
      return invalidArgument("unexpected opcode " + std::to_string(static_cast<int>(h.opcode)) +
                             " at an initiator");
  }
}

Status Connection::onInitiatorFrameEnd() {
  const FrameHeader& h = rx_header_;
  Status status = h.status == 0 ? Status::ok() : Status(wireToStatusCode(h.status), rx_message_);
  if (!status.isOk()) status = status.withContext("target " + remote_);
  const bool known = h.opcode == Opcode::kAck ? owner_.completeRequest(h.request_id, status)
                                              : owner_.readResponseDone(h.request_id, status);
  if (!known) return internalError("answer for unknown request " + std::to_string(h.request_id));
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// TcpTransport: accepting, connecting, posting, deadlines

void TcpTransport::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      boost::system::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      auto conn = std::make_shared<Connection>(*this, std::move(socket), Connection::Role::kTarget);
      spdlog::debug("tcp transport: accepted a connection from {}", conn->remote());
      conn->start();
    } else {
      spdlog::warn("tcp transport: accept failed: {}", ec.message());
    }
    accept();
  });
}

void TcpTransport::armSweep() {
  const auto tick =
      std::chrono::milliseconds(std::clamp<uint32_t>(config_.op_timeout_ms / 10, 5, 250));
  sweep_timer_.expires_after(tick);
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    sweepDeadlines();
    armSweep();
  });
}

void TcpTransport::sweepDeadlines() {
  for (PeerId id : requests_.latePeers()) {
    failPeer(id, deadlineExceeded("a batch got no answer within op_timeout_ms=" +
                                  std::to_string(config_.op_timeout_ms)));
  }
}

Result<std::shared_ptr<Connection>> TcpTransport::connectOne(const tcp::endpoint& ep,
                                                             uint64_t target_id) {
  // The handshake runs on the progress thread; this thread waits for it with a deadline.
  struct Attempt {
    explicit Attempt(asio::io_context& io) : socket(io) {}
    tcp::socket socket;
    FrameHeader hello;
    FrameHeader reply;
    std::string message;
    std::promise<Status> done;
  };
  auto attempt = std::make_shared<Attempt>(io_);
  attempt->hello.opcode = Opcode::kHello;
  attempt->hello.region = wire::kProtocolVersion;
  attempt->hello.request_id = endpoint_id_;
  attempt->hello.offset = target_id;
  std::future<Status> result = attempt->done.get_future();
  const std::string where = endpointText(ep);

  asio::post(io_, [this, attempt, ep, where] {
    boost::system::error_code ec;
    attempt->socket.open(ep.protocol(), ec);
    if (!ec) setBufferSizes(attempt->socket, ec);
    if (ec) return attempt->done.set_value(ioError("socket", ec.value()));
    attempt->socket.async_connect(ep, [attempt, where](const boost::system::error_code& ec1) {
      if (ec1)
        return attempt->done.set_value(unavailable("connect " + where + ": " + ec1.message()));
      boost::system::error_code ignored;
      attempt->socket.set_option(tcp::no_delay(true), ignored);
      asio::async_write(attempt->socket, asio::buffer(&attempt->hello, kHeaderBytes),
                        [attempt, where](const boost::system::error_code& ec2, size_t) {
                          if (ec2)
                            return attempt->done.set_value(
                                unavailable("hello to " + where + ": " + ec2.message()));
                          asio::async_read(
                              attempt->socket, asio::buffer(&attempt->reply, kHeaderBytes),
                              [attempt, where](const boost::system::error_code& ec3, size_t) {
                                const FrameHeader& r = attempt->reply;
                                if (ec3)
                                  return attempt->done.set_value(
                                      unavailable("hello from " + where + ": " + ec3.message()));
                                if (r.magic != wire::kFrameMagic || r.opcode != Opcode::kHelloAck ||
                                    r.length > wire::kMaxMessageBytes) {
                                  return attempt->done.set_value(
                                      unavailable(where + " is not a kvferry tcp endpoint"));
                                }
                                attempt->message.resize(r.length);
                                asio::async_read(
                                    attempt->socket, asio::buffer(attempt->message),
                                    [attempt, where](const boost::system::error_code& ec4, size_t) {
                                      const FrameHeader& r2 = attempt->reply;
                                      if (ec4)
                                        return attempt->done.set_value(unavailable(
                                            "hello from " + where + ": " + ec4.message()));
                                      if (r2.status != 0) {
                                        return attempt->done.set_value(
                                            Status(wireToStatusCode(r2.status), attempt->message)
                                                .withContext(where + " refused the connection"));
                                      }
                                      attempt->done.set_value(Status::ok());
                                    });
                              });
                        });
    });
  });

  if (result.wait_for(std::chrono::milliseconds(config_.connect_timeout_ms)) !=
      std::future_status::ready) {
    asio::post(io_, [attempt] {
      boost::system::error_code ignored;
      attempt->socket.close(ignored);  // the pending handler then completes the promise
    });
    result.wait();
    return deadlineExceeded("connect to " + where + " took longer than connect_timeout_ms=" +
                            std::to_string(config_.connect_timeout_ms));
  }
  RETURN_IF_ERROR(result.get());
  // The handshake is over and its handlers are done: the socket is ours to hand over.
  return std::make_shared<Connection>(*this, std::move(attempt->socket),
                                      Connection::Role::kInitiator);
}

Result<PeerId> TcpTransport::connect(const EndpointBlob& peer_blob) {
  ASSIGN_OR_RETURN(EndpointInfo info, decodePeerBlob(peer_blob));
  const std::string address(info.address.begin(), info.address.end());
  ASSIGN_OR_RETURN(tcp::endpoint ep, ipEndpoint(address, "blob address"));

  Status last;
  auto backoff = std::chrono::milliseconds(config_.retry_backoff_ms);
  std::vector<std::shared_ptr<Connection>> conns;
  for (uint32_t attempt = 0; attempt <= config_.connect_retries; ++attempt) {
    if (attempt > 0) {
      spdlog::info("tcp transport: connect to {} failed ({}); retry {} of {} in {} ms", address,
                   last.toString(), attempt, config_.connect_retries, backoff.count());
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
    conns.clear();
    last = Status::ok();
    for (uint32_t i = 0; i < config_.connections_per_peer && last.isOk(); ++i) {
      Result<std::shared_ptr<Connection>> c = connectOne(ep, info.endpoint_id);
      if (c.isOk()) {
        conns.push_back(std::move(c).value());
      } else {
        last = c.status();
      }
    }
    // A refusal (stale blob, wrong version) will not change on retry.
    if (last.isOk() || last.code() == StatusCode::kFailedPrecondition) break;
  }
  if (!last.isOk()) {
    // Connections already made close on the progress thread, where their sockets live.
    asio::post(io_, [conns = std::move(conns)] {
      for (auto& c : conns) c->close();
    });
    return last;
  }

  PeerId id = 0;
  {
    std::lock_guard lock(peers_mu_);
    id = next_peer_++;
    auto peer = std::make_unique<Peer>();
    peer->info = std::move(info);
    peer->connections = conns;
    for (auto& c : conns) c->setPeer(id);
    peers_.emplace(id, std::move(peer));
  }
  asio::post(io_, [conns = std::move(conns)] {
    for (auto& c : conns) c->start();
  });
  spdlog::info("tcp transport: connected to {} as peer {} ({} connections)", address, id,
               config_.connections_per_peer);
  return id;
}

Status TcpTransport::disconnect(PeerId peer) {
  {
    std::lock_guard lock(peers_mu_);
    if (peers_.find(peer) == peers_.end()) return notFound("no peer " + std::to_string(peer));
  }
  std::promise<void> done;
  asio::post(io_, [&] {
    failPeer(peer, cancelled("disconnected"));
    std::lock_guard lock(peers_mu_);
    peers_.erase(peer);
    done.set_value();
  });
  done.get_future().wait();
  return Status::ok();
}

Status TcpTransport::post(PeerId peer_id, std::span<const TransferOp> ops,
                          std::optional<uint32_t> imm, uint64_t cookie, bool is_read) {
  const char* what = is_read ? "read" : "write";
  ASSIGN_OR_RETURN(Requests::Slot * slot, requests_.acquire());
  TcpBatch& b = slot->payload;
  std::shared_ptr<Connection> conn;
  {
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(peer_id);
    if (it == peers_.end()) {
      return requests_.giveBack(slot, notFound("no peer " + std::to_string(peer_id)));
    }
    Peer& peer = *it->second;
    if (peer.broken) {
      return requests_.giveBack(slot,
                                peer.broken_reason.withContext("peer " + std::to_string(peer_id) +
                                                               " failed earlier; reconnect"));
    }
    Status ok = checkBatch(ops, config_.max_batch_ops, regions_, peer.info, what, b.local);
    if (!ok.isOk()) return requests_.giveBack(slot, ok);
    conn = peer.connections[peer.next_connection++ % peer.connections.size()];
  }

  // Build the frames; the id is stable while the slot is ours.
  const uint64_t request_id = requests_.idOf(*slot);
  b.is_read = is_read;
  b.responses_left = is_read ? static_cast<uint32_t>(ops.size()) : 0;
  b.headers.resize(ops.size());
  b.gather.clear();
  for (size_t i = 0; i < ops.size(); ++i) {
    FrameHeader& h = b.headers[i];
    h = FrameHeader{};
    h.opcode = is_read ? Opcode::kReadRequest : Opcode::kWrite;
    h.region = ops[i].remote_region;
    h.request_id = request_id;
    h.offset = ops[i].remote_offset;
    h.length = ops[i].length;
    h.op_index = static_cast<uint32_t>(i);
    b.gather.emplace_back(&h, kHeaderBytes);
    if (!is_read) b.gather.emplace_back(b.local.data(i), ops[i].length);
  }
  FrameHeader& last = b.headers.back();
  last.flags = wire::kFlagLast;
  if (imm) {
    last.flags |= wire::kFlagImm;
    last.imm = *imm;
  }
  requests_.publish(slot, cookie, peer_id, std::chrono::milliseconds(config_.op_timeout_ms));
  asio::post(io_, [this, conn, batch = &b, request_id] {
    // The peer may have failed since we looked: then this batch fails here, exactly once.
    if (conn->closed()) {
      completeRequest(request_id, unavailable("connection to " + conn->remote() + " closed"));
      return;
    }
    conn->sendBatch(batch);
  });
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<Transport>> makeTcpTransport(const config::TransportConfig& config) {
  auto transport = std::make_unique<TcpTransport>(config);
  RETURN_IF_ERROR(transport->start());
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace kvferry::rdma
