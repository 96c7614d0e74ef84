// The tcp backend's transport class, split across files by concern (as rdma/verbs is):
// tcp_transport.cc (staging set-up, accepting, deadlines, posting, the factory) and
// tcp_transport_connect.cc (the hello exchange, connect, disconnect). Only those include it.
//
// Teardown order (member order): the staging rings and their copier first (the copier waits for
// its copies, whose completions post into io_), then the progress thread, then peers' sockets,
// then io_ itself.
#pragma once

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "rdma/asio_util.h"
#include "rdma/batch_check.h"
#include "rdma/endpoint_blob.h"
#include "rdma/tcp/tcp_connection.h"
#include "rdma/tcp/transport_staging.h"
#include "rdma/transport_base.h"

namespace kvferry::rdma::tcp_backend {

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

}  // namespace kvferry::rdma::tcp_backend
