#include "rdma/tcp/tcp_transport.h"

#include "rdma/tcp/tcp_transport_impl.h"
#ifdef KVFERRY_HAVE_CUDA_IPC
#include "rdma/tcp/cuda_staging_copier.h"
#endif

namespace kvferry::rdma {
namespace tcp_backend {

// ---------------------------------------------------------------------------------------------
// TcpTransport: staging, accepting, deadlines, posting

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
  b.gather.clear();
  b.segments.clear();
  b.staged = !is_read && b.local.anyCuda();  // payloads leave through the staging ring
  if (is_read) {
    b.headers.resize(ops.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      FrameHeader& h = b.headers[i];
      h = FrameHeader{};
      h.opcode = Opcode::kReadRequest;
      h.region = ops[i].remote_region;
      h.request_id = request_id;
      h.offset = ops[i].remote_offset;
      h.length = ops[i].length;
      h.op_index = static_cast<uint32_t>(i);
      b.gather.emplace_back(&h, kHeaderBytes);
    }
  } else {
    // One frame: the header, the op table, then every op's bytes in table order.
    b.headers.assign(1, FrameHeader{});
    b.table.resize(ops.size());
    uint64_t payload = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      b.table[i] = wire::WriteOp{ops[i].remote_region, 0, ops[i].remote_offset, ops[i].length};
      payload += ops[i].length;
    }
    FrameHeader& h = b.headers[0];
    h.opcode = Opcode::kWriteBatch;
    h.request_id = request_id;
    h.op_index = static_cast<uint32_t>(ops.size());
    const size_t table_bytes = ops.size() * sizeof(wire::WriteOp);
    h.length = table_bytes + payload;
    if (b.staged) {
      b.segments.push_back(Segment{reinterpret_cast<const uint8_t*>(&h), kHeaderBytes, false});
      b.segments.push_back(
          Segment{reinterpret_cast<const uint8_t*>(b.table.data()), table_bytes, false});
    } else {
      b.gather.emplace_back(&h, kHeaderBytes);
      b.gather.emplace_back(b.table.data(), table_bytes);
    }
    for (size_t i = 0; i < ops.size(); ++i) {
      if (b.staged) {
        b.segments.push_back(Segment{b.local.data(i), ops[i].length,
                                     b.local.kind(i).type == MemoryKind::Type::kCuda});
      } else {
        b.gather.emplace_back(b.local.data(i), ops[i].length);
      }
    }
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
