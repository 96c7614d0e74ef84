// The verbs backend's one class, split across files by concern as eRPC splits its Rpc class:
//   verbs_device.cc     device, port and GID; protection domain, completion channel, SRQ;
//                       queue pair creation and RESET→INIT→RTR→RTS; regions; start
//   verbs_handshake.cc  the QP exchange over TCP, both sides (connect, disconnect, accept)
//   verbs_datapath.cc   posting work requests in chains, failing peers, the progress thread
// Internal to rdma/verbs: the public face is verbs_transport.h.
//
// Threads: user threads call the Transport methods; "kvf-verbs-hs" runs the io_context of the
// handshake (its sockets and coroutines); "kvf-verbs-cq" polls the completion queues.
// Teardown order (the destructor): threads, then QPs, the CQs and SRQ they use, MRs, PD,
// channel, device context. A coroutine or handler left on the io_context owns no verbs object,
// so ~io_context may destroy it after the device state is gone.
#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "rdma/asio_util.h"
#include "rdma/batch_check.h"
#include "rdma/endpoint_blob.h"
#include "rdma/request_table.h"
#include "rdma/transport_base.h"
#include "rdma/verbs/gid_select.h"
#include "rdma/verbs/verbs_resources.h"
#include "rdma/verbs/wr_builder.h"

namespace kvferry::rdma::verbs_backend {

namespace asio = boost::asio;
using asio::ip::tcp;

inline constexpr uint32_t kHandshakeMagic = 0x4846564B;  // "KVFH"
inline constexpr uint32_t kHandshakeVersion = 1;
inline constexpr uint32_t kMaxQpsPerPeer = 64;
inline constexpr int kPollBatch = 32;
// How long the progress thread keeps polling an idle queue before it sleeps on the channel.
inline constexpr auto kSpinBeforeSleep = std::chrono::microseconds(50);

// The QP exchange, one message each way over the handshake connection.
struct HandshakeMsg {
  uint32_t magic = kHandshakeMagic;
  uint32_t version = kHandshakeVersion;
  uint64_t from_endpoint = 0;
  uint64_t to_endpoint = 0;  // the endpoint the sender expects (stale-blob check)
  uint8_t gid[16] = {};
  uint16_t lid = 0;
  uint8_t mtu = 0;  // enum ibv_mtu
  uint8_t reserved = 0;
  uint32_t status = 0;  // StatusCode in replies
  uint32_t num_qps = 0;
  uint32_t qpn[kMaxQpsPerPeer] = {};
  uint32_t psn[kMaxQpsPerPeer] = {};
  char message[192] = {};
};
static_assert(sizeof(HandshakeMsg) == 760, "HandshakeMsg is a wire format: no layout changes");

// The device named first in config.devices that is present (else the system's first one);
// `name` receives its name.
Result<verbs::Context> openConfiguredDevice(const config::VerbsConfig& vc, std::string& name);
// Reads the port's GID table and applies the selection rule of gid_select.h.
Result<GidEntry> chooseGid(ibv_context* ctx, const ibv_port_attr& port,
                           const config::VerbsConfig& vc);
// A random 24-bit packet sequence number.
uint32_t randomPsn();

// The state of one RC queue pair on the initiator: send-queue accounting and batches waiting
// for room. Guarded by `mu` (user threads post, the progress thread completes).
struct QpState;

using Requests = RequestTable<VerbsBatch>;

struct QpState {
  verbs::QueuePair qp;
  std::mutex mu;
  SendBudget budget;
  uint64_t posted = 0;        // WRs posted so far
  uint64_t completed = 0;     // WRs known complete (every WR up to a completed signaled one)
  uint64_t posted_bytes = 0;  // payload bytes of those
  uint64_t completed_bytes = 0;
  struct Signal {
    uint64_t wr = 0;     // SQ sequence of a signaled WR in flight
    uint64_t bytes = 0;  // posted_bytes once it was posted
  };
  std::deque<Signal> signals;  // in order

  bool fits(const VerbsBatch& b) const {
    return budget.fits(posted - completed, posted_bytes - completed_bytes, b.wrs.size(), b.bytes);
  }
  std::deque<std::pair<uint64_t, Requests::Slot*>> waiting;  // batches (id, slot) without room
};

struct Peer {
  PeerId id = 0;
  EndpointInfo info;
  verbs::CompletionQueue cq;  // declared before the QPs that use it: destroyed after them
  std::vector<std::unique_ptr<QpState>> qps;
  size_t next_qp = 0;
  std::shared_ptr<tcp::socket> handshake;  // touched on the handshake thread only
  std::mutex fail_mu;
  std::atomic<bool> broken{false};
  Status reason;  // written once under fail_mu, before `broken` is set; read after seeing it
};

// The target's side of one initiator: its QPs (receiving through the shared SRQ).
struct Inbound {
  uint64_t source_id = 0;
  std::vector<verbs::QueuePair> qps;
};

class VerbsTransport final : public TransportBase {
 public:
  explicit VerbsTransport(const config::TransportConfig& config)
      : TransportBase(config),
        requests_(completions_, config.queue_depth),
        acceptor_(io_),
        work_(asio::make_work_guard(io_)) {}

  ~VerbsTransport() override {
    stop_ = true;
    work_.reset();
    io_.stop();  // pending handlers own no verbs object; ~io_context destroys them last
    if (io_thread_.joinable()) io_thread_.join();
    if (progress_thread_.joinable()) progress_thread_.join();
    // Teardown order: QPs, then the CQs and SRQ they use, MRs, then PD, channel, context.
    peers_.clear();
    inbound_.clear();
    mrs_.clear();
    flush_mr_.reset();
    srq_.reset();
    recv_cq_.reset();
    pd_.reset();
    channel_.reset();
    ctx_.reset();
  }

  Status start();

  std::string_view name() const override { return "verbs"; }
  Capabilities capabilities() const override {
    Capabilities caps = TransportBase::capabilities();
    caps.survives_remote_refusal = false;  // a remote access error ends the RC queue pair
#if KVFERRY_HAVE_CUDA
    caps.cuda_memory = true;  // dma-buf or nvidia-peermem, see transport.verbs.gpu_registration
    caps.dmabuf = true;
#endif
    return caps;
  }
  Result<RegionId> registerRegion(void* base, size_t bytes, MemoryKind kind) override;
  Status deregisterRegion(RegionId region) override;
  Result<EndpointBlob> localBlob() const override { return blobWithAddress(endpointText(listen_)); }
  Result<PeerId> connect(const EndpointBlob& peer_blob) override;
  Status disconnect(PeerId peer) override;

 private:
  // Device setup and queue pairs (verbs_device.cc).
  Status openDevice();
  Result<verbs::QueuePair> createQp(ibv_cq* cq, uint32_t sq_depth, bool with_srq);
  Status toInit(ibv_qp* qp);
  Status toRtr(ibv_qp* qp, const HandshakeMsg& remote, uint32_t index);
  Status toRts(ibv_qp* qp, uint32_t psn);
  void fillLocal(HandshakeMsg& msg) const;
  Status postReceives(uint32_t count);

  // The datapath (verbs_datapath.cc): user threads post, the progress thread completes.
  Status post(PeerId peer_id, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
              uint64_t cookie, bool is_read) override;
  // Posts the batch's WRs on the QP in chains; qp.mu held; room already checked.
  Status postChains(QpState& qp, VerbsBatch& batch);
  void drainWaiting(QpState& qp, Peer& peer);
  void failPeer(Peer& peer, const Status& reason);

  // Target side of the handshake, on the handshake thread.
  void accept();
  asio::awaitable<void> serveHandshake(tcp::socket socket);
  Status acceptPeer(const HandshakeMsg& request, HandshakeMsg& reply, Inbound& inbound);
  // Initiator side: the QP exchange rdma/dial runs, and the watch on the connection it leaves.
  static asio::awaitable<Status> exchangeQps(tcp::socket& socket, const HandshakeMsg& request,
                                             HandshakeMsg& reply, std::string where, bool* refused);
  asio::awaitable<void> watchPeer(std::weak_ptr<Peer> weak, std::shared_ptr<tcp::socket> socket);

  // The progress thread (verbs_datapath.cc).
  void progressLoop();
  size_t pollPeer(Peer& peer, ibv_wc* wcs);
  size_t pollReceives(ibv_wc* wcs);

  Requests requests_;

  // Device state: see the destructor for the teardown order.
  verbs::Context ctx_;
  verbs::ProtectionDomain pd_;
  verbs::CompChannel channel_;
  verbs::CompletionQueue recv_cq_;  // the SRQ's completions (and the target QPs' send CQ)
  verbs::SharedReceiveQueue srq_;
  ibv_device_attr device_attr_{};
  ibv_port_attr port_attr_{};
  GidEntry gid_;
  ibv_mtu mtu_ = IBV_MTU_4096;
  uint32_t sq_depth_ = 0;
  uint32_t inline_limit_ = 0;

  std::mutex mrs_mu_;
  std::map<RegionId, verbs::MemoryRegion> mrs_;
  // Where the GPU flush's 1-byte READs land (never read back; concurrent READs may share it).
  uint8_t flush_scratch_[64] = {};
  verbs::MemoryRegion flush_mr_;

  std::mutex peers_mu_;
  std::map<PeerId, std::shared_ptr<Peer>> peers_;
  PeerId next_peer_ = 1;
  std::atomic<uint64_t> peers_version_{0};

  std::mutex inbound_mu_;
  std::map<uint32_t, uint64_t> source_of_qpn_;  // target QP number → initiator endpoint id
  std::vector<std::unique_ptr<Inbound>> inbound_;

  asio::io_context io_;
  tcp::acceptor acceptor_;
  tcp::endpoint listen_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::atomic<bool> stop_{false};
  std::thread io_thread_;
  std::thread progress_thread_;
};

}  // namespace kvferry::rdma::verbs_backend
