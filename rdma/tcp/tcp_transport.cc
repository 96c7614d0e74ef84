#include "rdma/tcp/tcp_transport.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "common/coroutine_rules.h"
#include "rdma/asio_util.h"
#include "rdma/batch_check.h"
#include "rdma/dial.h"
#include "rdma/endpoint_blob.h"
#include "rdma/tcp/tcp_connection.h"
#include "rdma/tcp/transport_staging.h"
#include "rdma/transport_base.h"
#ifdef KVFERRY_HAVE_CUDA_IPC
#include "rdma/tcp/cuda_staging_copier.h"
#endif

namespace kvferry::rdma {
namespace tcp_backend {
namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

struct Peer {
  EndpointInfo info;
  std::vector<std::shared_ptr<Connection>> connections;
  size_t next_connection = 0;
  bool broken = false;
  Status broken_reason;
};

class TcpTransport final : public TransportBase, public ConnectionOwner {
 public:
  TcpTransport(const config::TransportConfig& config, CopierFactory copier_factory)
      : TransportBase(config),
        copier_factory_(std::move(copier_factory)),
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

  Capabilities capabilities() const override {
    Capabilities caps = TransportBase::capabilities();
    caps.cuda_memory = copier_factory_ != nullptr;
    return caps;
  }

  Result<RegionId> registerRegion(void* base, size_t bytes, MemoryKind kind) override {
    if (kind.type == MemoryKind::Type::kCuda) RETURN_IF_ERROR(ensureStaging(kind.device));
    return regions_.add(base, bytes, kind);
  }

  Result<EndpointBlob> localBlob() const override { return blobWithAddress(endpointText(listen_)); }

  Result<PeerId> connect(const EndpointBlob& peer_blob) override;
  Status disconnect(PeerId peer) override;

  // --- ConnectionOwner: called by connections, on the progress thread. ---
  const config::TransportConfig& config() const override { return config_; }
  uint64_t endpointId() const override { return endpoint_id_; }
  RegionTable& regions() override { return regions_; }
  const StagingRings* staging() const override {
    const TransportStaging* staging = staging_.load(std::memory_order_acquire);
    return staging != nullptr ? &staging->rings() : nullptr;
  }
  void deliverImmediate(uint64_t source, uint32_t imm) override { immediates_.push({source, imm}); }

  bool completeRequest(uint64_t request_id, Status status) override {
    return requests_.complete(request_id, std::move(status));
  }

  // Where the payload of op `op_index` of read batch `request_id` goes. The slot keeps it
  // registered; it cannot be recycled under the reader because only failPeer() recycles a slot
  // early, on this thread, after closing the socket the reader reads from.
  Result<ReadDestination> readDestination(uint64_t request_id, uint32_t op_index,
                                          uint64_t length) override {
    ReadDestination dest;
    requests_.update(request_id, [&](Requests::Slot& slot) -> std::optional<Status> {
      const TcpBatch& b = slot.payload;
      if (b.is_read && op_index < b.headers.size() && b.headers[op_index].length == length) {
        dest.data = b.local.data(op_index);
        dest.device = b.local.kind(op_index).type == MemoryKind::Type::kCuda;
      }
      return std::nullopt;
    });
    if (dest.data == nullptr) {
      return internalError("read response that matches no pending read (request " +
                           std::to_string(request_id) + ", op " + std::to_string(op_index) + ")");
    }
    return dest;
  }

  // One kReadResponse of a read batch has been received in full.
  bool readResponseDone(uint64_t request_id, const Status& status) override {
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
  void failPeer(PeerId id, const Status& reason) override {
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
  // The staging rings for GPU `device`, made at the first CUDA registration.
  Status ensureStaging(int device);
  void accept();
  void armSweep();
  void sweepDeadlines();
  // One connection's hello exchange, on the progress thread (rdma/dial.h runs it).
  asio::awaitable<Status> sayHello(tcp::socket& socket, std::string where, uint64_t target_id);
  // The peer's connections_per_peer connections, each dialled and greeted.
  Status connectAll(const tcp::endpoint& ep, const std::string& where, uint64_t target_id,
                    std::vector<std::shared_ptr<Connection>>& conns);

  const CopierFactory copier_factory_;  // null: no CUDA, host regions only
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
  // After io_ (destroyed before it): its copier's last completions post into io_, and the
  // connections its callbacks still own close their sockets on io_.
  std::mutex staging_mu_;
  std::unique_ptr<TransportStaging> staging_owner_;
  std::atomic<const TransportStaging*> staging_{nullptr};
};

// ---------------------------------------------------------------------------------------------
// TcpTransport: staging, accepting, connecting, posting, deadlines

Status TcpTransport::ensureStaging(int device) {
  if (!copier_factory_) {
    return invalidArgument(
        "the tcp transport of this build registers host memory only (built without CUDA)");
  }
  std::lock_guard lock(staging_mu_);
  if (staging_owner_ != nullptr) {
    if (staging_owner_->device() == device) return Status::ok();
    return invalidArgument(
        "the tcp transport stages GPU " + std::to_string(staging_owner_->device()) +
        " already; one GPU per transport (got a region on GPU " + std::to_string(device) + ")");
  }
  ASSIGN_OR_RETURN(staging_owner_, TransportStaging::make(copier_factory_, device, config_,
                                                          [this](std::function<void()> fn) {
                                                            asio::post(io_, std::move(fn));
                                                          }));
  staging_.store(staging_owner_.get(), std::memory_order_release);
  return Status::ok();
}

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

asio::awaitable<Status> TcpTransport::sayHello(tcp::socket& socket, std::string where,
                                               uint64_t target_id) {
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  FrameHeader hello;
  hello.opcode = Opcode::kHello;
  hello.region = wire::kProtocolVersion;
  hello.request_id = endpoint_id_;
  hello.offset = target_id;
  auto [sent, sent_bytes] =
      co_await asio::async_write(socket, asio::buffer(&hello, kHeaderBytes), kNoThrow);
  if (sent) co_return unavailable("hello to " + where + ": " + sent.message());
  FrameHeader reply;
  auto [got, got_bytes] =
      co_await asio::async_read(socket, asio::buffer(&reply, kHeaderBytes), kNoThrow);
  if (got) co_return unavailable("hello from " + where + ": " + got.message());
  if (reply.magic != wire::kFrameMagic || reply.opcode != Opcode::kHelloAck ||
      reply.length > wire::kMaxMessageBytes) {
    co_return unavailable(where + " is not a kvferry tcp endpoint");
  }
  std::string message(reply.length, '\0');
  auto [text, text_bytes] = co_await asio::async_read(socket, asio::buffer(message), kNoThrow);
  if (text) co_return unavailable("hello from " + where + ": " + text.message());
  if (reply.status != 0) {
    co_return Status(wire::statusCodeOf(reply.status), message)
        .withContext(where + " refused the connection");
  }
  co_return Status::ok();
}

Status TcpTransport::connectAll(const tcp::endpoint& ep, const std::string& where,
                                uint64_t target_id,
                                std::vector<std::shared_ptr<Connection>>& conns) {
  const SocketSetup setup = [this](tcp::socket& s, boost::system::error_code& ec) {
    setBufferSizes(s, ec);
  };
  const Handshake hello = [this, where, target_id](tcp::socket& s) {
    return sayHello(s, where, target_id);
  };
  const auto timeout = std::chrono::milliseconds(config_.connect_timeout_ms);
  conns.clear();
  for (uint32_t i = 0; i < config_.connections_per_peer; ++i) {
    ASSIGN_OR_RETURN(tcp::socket socket, dialOnce(io_, ep, timeout, setup, hello, where));
    conns.push_back(
        std::make_shared<Connection>(*this, std::move(socket), Connection::Role::kInitiator));
  }
  return Status::ok();
}

Result<PeerId> TcpTransport::connect(const EndpointBlob& peer_blob) {
  ASSIGN_OR_RETURN(EndpointInfo info, decodePeerBlob(peer_blob));
  const std::string address(info.address.begin(), info.address.end());
  ASSIGN_OR_RETURN(tcp::endpoint ep, ipEndpoint(address, "blob address"));

  std::vector<std::shared_ptr<Connection>> conns;
  Status connected = retryWithBackoff(
      DialPolicy::fromConfig(config_), "tcp transport: connect to " + address,
      [&] { return connectAll(ep, address, info.endpoint_id, conns); },
      // A refusal (stale blob, wrong version) will not change on retry.
      [](const Status& s) { return s.code() != StatusCode::kFailedPrecondition; });
  if (!connected.isOk()) {
    // Connections already made close on the progress thread, where their sockets live.
    asio::post(io_, [conns = std::move(conns)] {
      for (auto& c : conns) c->close();
    });
    return connected;
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
  b.segments.clear();
  b.staged = !is_read && b.local.anyCuda();  // payloads leave through the staging ring
  for (size_t i = 0; i < ops.size(); ++i) {
    FrameHeader& h = b.headers[i];
    h = FrameHeader{};
    h.opcode = is_read ? Opcode::kReadRequest : Opcode::kWrite;
    h.region = ops[i].remote_region;
    h.request_id = request_id;
    h.offset = ops[i].remote_offset;
    h.length = ops[i].length;
    h.op_index = static_cast<uint32_t>(i);
    if (b.staged) {
      b.segments.push_back(Segment{reinterpret_cast<const uint8_t*>(&h), kHeaderBytes, false});
      b.segments.push_back(
          Segment{b.local.data(i), ops[i].length, b.local.kind(i).type == MemoryKind::Type::kCuda});
      continue;
    }
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
}  // namespace tcp_backend

Result<std::unique_ptr<Transport>> makeTcpTransport(const config::TransportConfig& config) {
#ifdef KVFERRY_HAVE_CUDA_IPC
  return makeTcpTransport(config, tcp_backend::makeCudaStagingCopier);
#else
  return makeTcpTransport(config, nullptr);
#endif
}

Result<std::unique_ptr<Transport>> makeTcpTransport(const config::TransportConfig& config,
                                                    tcp_backend::CopierFactory copier_factory) {
  auto transport = std::make_unique<tcp_backend::TcpTransport>(config, std::move(copier_factory));
  RETURN_IF_ERROR(transport->start());
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace kvferry::rdma
