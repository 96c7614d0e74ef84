#include "rdma/verbs/verbs_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "rdma/asio_util.h"
#include "rdma/batch_check.h"
#include "rdma/endpoint_blob.h"
#include "rdma/event_queue.h"
#include "rdma/region_table.h"
#include "rdma/request_table.h"
#include "rdma/transport_base.h"
#include "rdma/verbs/gid_select.h"
#include "rdma/verbs/verbs_resources.h"

namespace kvferry::rdma {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr uint32_t kHandshakeMagic = 0x4846564B;  // "KVFH"
constexpr uint32_t kHandshakeVersion = 1;
constexpr uint32_t kMaxQpsPerPeer = 64;
constexpr uint64_t kIntermediateSignal = 1ull << 63;  // wr_id flag: bounds the SQ, no batch ends
constexpr int kPollBatch = 32;
// How long the progress thread keeps polling an idle queue before it sleeps on the channel.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(50);

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

ibv_mtu mtuEnum(uint32_t bytes) {
  switch (bytes) {
    case 256:
      return IBV_MTU_256;
    case 512:
      return IBV_MTU_512;
    case 1024:
      return IBV_MTU_1024;
    case 2048:
      return IBV_MTU_2048;
    default:
      return IBV_MTU_4096;
  }
}

uint32_t randomPsn() {
  static thread_local std::mt19937 rng(std::random_device{}());
  return rng() & 0xffffff;
}

Status wcError(const ibv_wc& wc) {
  std::string what = std::string("work request failed: ") + ibv_wc_status_str(wc.status) +
                     " (vendor error " + std::to_string(wc.vendor_err) + ")";
  switch (wc.status) {
    case IBV_WC_REM_ACCESS_ERR:
      return outOfRange(what + ": the peer refused the remote address or key");
    case IBV_WC_WR_FLUSH_ERR:
      return unavailable(what + ": the queue pair had already failed");
    default:
      return unavailable(what);
  }
}

// The state of one RC queue pair on the initiator: send-queue accounting and batches waiting
// for room. Guarded by `mu` (user threads post, the progress thread completes).
struct QpState;

// Per-batch state: the prebuilt work requests.
struct VerbsBatch {
  BatchPins local;
  std::vector<ibv_send_wr> wrs;
  std::vector<ibv_sge> sges;
  std::vector<uint64_t> signaled_at;  // SQ sequence number of each signaled WR, in post order
  void release() { local.clear(); }
};
using Requests = RequestTable<VerbsBatch>;

struct QpState {
  verbs::QueuePair qp;
  std::mutex mu;
  uint32_t sq_depth = 0;
  uint64_t posted = 0;           // WRs posted so far
  uint64_t completed = 0;        // WRs known complete (every WR up to a completed signaled one)
  std::deque<uint64_t> signals;  // SQ sequence of each signaled WR in flight, in order
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
    return caps;
  }
  Result<RegionId> registerRegion(void* base, size_t bytes, MemoryKind kind) override;
  Status deregisterRegion(RegionId region) override;
  Result<EndpointBlob> localBlob() const override { return blobWithAddress(endpointText(listen_)); }
  Result<PeerId> connect(const EndpointBlob& peer_blob) override;
  Status disconnect(PeerId peer) override;

 private:
  Status openDevice();
  Result<verbs::QueuePair> createQp(ibv_cq* cq, uint32_t sq_depth, bool with_srq);
  Status toInit(ibv_qp* qp);
  Status toRtr(ibv_qp* qp, const HandshakeMsg& remote, uint32_t index);
  Status toRts(ibv_qp* qp, uint32_t psn);
  void fillLocal(HandshakeMsg& msg) const;
  Status postReceives(uint32_t count);

  Status post(PeerId peer_id, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
              uint64_t cookie, bool is_read) override;
  // Posts the batch's WRs on the QP in chains; qp.mu held; room already checked.
  Status postChains(QpState& qp, VerbsBatch& batch);
  void drainWaiting(QpState& qp, Peer& peer);
  void failPeer(Peer& peer, const Status& reason);

  void accept();
  void serveHandshake(std::shared_ptr<tcp::socket> socket);
  Status acceptPeer(const HandshakeMsg& request, HandshakeMsg& reply, Inbound& inbound);

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

// ---------------------------------------------------------------------------------------------
// Device, queue pairs

// Opens the first configured device present (or the system's first device).
Result<verbs::Context> openConfiguredDevice(const config::VerbsConfig& vc, std::string& name) {
  int count = 0;
  verbs::DeviceList list(ibv_get_device_list(&count));
  if (!list) return ioError("ibv_get_device_list", errno);
  if (count == 0) {
    return unavailable(
        "no RDMA device on this host (ibv_get_device_list is empty); use "
        "transport.kind: tcp, or load a driver (e.g. rdma_rxe for Soft-RoCE)");
  }
  std::string present;
  ibv_device* chosen = vc.devices.empty() ? list.get()[0] : nullptr;
  for (int i = 0; i < count; ++i) {
    present += (i ? ", " : "") + std::string(ibv_get_device_name(list.get()[i]));
  }
  for (const std::string& want : vc.devices) {
    for (int i = 0; i < count && chosen == nullptr; ++i) {
      if (want == ibv_get_device_name(list.get()[i])) chosen = list.get()[i];
    }
  }
  if (chosen == nullptr) {
    return notFound("none of transport.verbs.devices is present (present: " + present + ")");
  }
  name = ibv_get_device_name(chosen);
  verbs::Context ctx(ibv_open_device(chosen));
  if (!ctx) return ioError("ibv_open_device(" + name + ")", errno);
  return ctx;
}

// Reads the port's GID table and applies the selection rule of gid_select.h.
Result<GidEntry> chooseGid(ibv_context* ctx, const ibv_port_attr& port,
                           const config::VerbsConfig& vc) {
  std::vector<GidEntry> table;
  for (int i = 0; i < port.gid_tbl_len; ++i) {
    ibv_gid_entry entry{};
    if (ibv_query_gid_ex(ctx, vc.port, static_cast<uint32_t>(i), &entry, 0) != 0) continue;
    GidEntry e;
    e.index = entry.gid_index;
    std::memcpy(e.gid.data(), entry.gid.raw, 16);
    e.type = entry.gid_type == IBV_GID_TYPE_ROCE_V2   ? GidType::kRoceV2
             : entry.gid_type == IBV_GID_TYPE_ROCE_V1 ? GidType::kRoceV1
                                                      : GidType::kIb;
    char ifname[IF_NAMESIZE] = {};
    if (entry.ndev_ifindex != 0 && if_indextoname(entry.ndev_ifindex, ifname) != nullptr) {
      e.netdev = ifname;
    }
    table.push_back(e);
  }
  return selectGid(table, vc.gid_index, vc.netdev);
}

Status VerbsTransport::openDevice() {
  const config::VerbsConfig& vc = config_.verbs;
  std::string dev_name;
  ASSIGN_OR_RETURN(ctx_, openConfiguredDevice(vc, dev_name));
  VERBS_CHECK(ibv_query_device(ctx_.get(), &device_attr_));
  VERBS_CHECK(ibv_query_port(ctx_.get(), static_cast<uint8_t>(vc.port), &port_attr_));
  if (port_attr_.state != IBV_PORT_ACTIVE) {
    return failedPrecondition(dev_name + " port " + std::to_string(vc.port) + " is not active");
  }
  Result<GidEntry> gid = chooseGid(ctx_.get(), port_attr_, vc);
  if (!gid.isOk()) return gid.status().withContext(dev_name + " port " + std::to_string(vc.port));
  gid_ = *gid;
  mtu_ = std::min(mtuEnum(vc.mtu), port_attr_.active_mtu);
  spdlog::info("verbs transport: device {} port {}, GID index {} ({}{}), {}, MTU {}", dev_name,
               vc.port, gid_.index, gidToString(gid_.gid),
               gid_.netdev.empty() ? "" : " on " + gid_.netdev,
               vc.gid_index >= 0 ? "set by gid_index" : "chosen automatically",
               128 << static_cast<int>(mtu_));

  if (config_.max_batch_ops > static_cast<uint32_t>(device_attr_.max_qp_wr)) {
    return invalidArgument("transport.max_batch_ops " + std::to_string(config_.max_batch_ops) +
                           " exceeds the device's max_qp_wr " +
                           std::to_string(device_attr_.max_qp_wr));
  }
  // Room for one whole batch plus its chain, so any batch fits into an empty send queue.
  sq_depth_ = std::min<uint32_t>(static_cast<uint32_t>(device_attr_.max_qp_wr),
                                 std::max<uint32_t>(config_.max_batch_ops * 2, 256));

  pd_.reset(ibv_alloc_pd(ctx_.get()));
  if (!pd_) return ioError("ibv_alloc_pd", errno);
  channel_.reset(ibv_create_comp_channel(ctx_.get()));
  if (!channel_) return ioError("ibv_create_comp_channel", errno);
  const int flags = fcntl(channel_->fd, F_GETFL);
  if (fcntl(channel_->fd, F_SETFL, flags | O_NONBLOCK) != 0) return ioError("fcntl", errno);

  const uint32_t recv_depth =
      std::min<uint32_t>(config_.verbs.recv_depth, static_cast<uint32_t>(device_attr_.max_srq_wr));
  recv_cq_.reset(
      ibv_create_cq(ctx_.get(), static_cast<int>(recv_depth) + 1, nullptr, channel_.get(), 0));
  if (!recv_cq_) return ioError("ibv_create_cq", errno);
  ibv_srq_init_attr srq_attr{};
  srq_attr.attr.max_wr = recv_depth;
  srq_attr.attr.max_sge = 1;
  srq_.reset(ibv_create_srq(pd_.get(), &srq_attr));
  if (!srq_) return ioError("ibv_create_srq", errno);
  return postReceives(recv_depth);
}

// Zero-length receives: a WRITE WITH IMMEDIATE consumes one and carries no data into it.
Status VerbsTransport::postReceives(uint32_t count) {
  for (uint32_t i = 0; i < count; ++i) {
    ibv_recv_wr wr{};
    ibv_recv_wr* bad = nullptr;
    wr.wr_id = i;
    VERBS_CHECK(ibv_post_srq_recv(srq_.get(), &wr, &bad));
  }
  return Status::ok();
}

Result<verbs::QueuePair> VerbsTransport::createQp(ibv_cq* cq, uint32_t sq_depth, bool with_srq) {
  ibv_qp_init_attr attr{};
  attr.send_cq = cq;
  attr.recv_cq = recv_cq_.get();
  attr.srq = with_srq ? srq_.get() : nullptr;
  attr.qp_type = IBV_QPT_RC;
  attr.cap.max_send_wr = sq_depth;
  attr.cap.max_recv_wr = with_srq ? 0 : 1;
  attr.cap.max_send_sge = 1;
  attr.cap.max_recv_sge = 1;
  attr.cap.max_inline_data = config_.verbs.inline_bytes;
  verbs::QueuePair qp(ibv_create_qp(pd_.get(), &attr));
  if (!qp) return ioError("ibv_create_qp", errno);
  inline_limit_ = std::min(config_.verbs.inline_bytes, attr.cap.max_inline_data);
  RETURN_IF_ERROR(toInit(qp.get()));
  return qp;
}

Status VerbsTransport::toInit(ibv_qp* qp) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_INIT;
  a.pkey_index = 0;
  a.port_num = static_cast<uint8_t>(config_.verbs.port);
  a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  VERBS_CHECK(
      ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS));
  return Status::ok();
}

Status VerbsTransport::toRtr(ibv_qp* qp, const HandshakeMsg& remote, uint32_t index) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = std::min(mtu_, static_cast<ibv_mtu>(remote.mtu));
  a.dest_qp_num = remote.qpn[index];
  a.rq_psn = remote.psn[index];
  a.max_dest_rd_atomic = static_cast<uint8_t>(
      std::min<uint32_t>(config_.verbs.max_rd_atomic, device_attr_.max_qp_rd_atom));
  a.min_rnr_timer = 12;
  a.ah_attr.is_global = 1;
  std::memcpy(a.ah_attr.grh.dgid.raw, remote.gid, 16);
  a.ah_attr.grh.sgid_index = static_cast<uint8_t>(gid_.index);
  a.ah_attr.grh.hop_limit = 64;
  a.ah_attr.dlid = remote.lid;
  a.ah_attr.port_num = static_cast<uint8_t>(config_.verbs.port);
  VERBS_CHECK(ibv_modify_qp(qp, &a,
                            IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER));
  return Status::ok();
}

Status VerbsTransport::toRts(ibv_qp* qp, uint32_t psn) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTS;
  a.sq_psn = psn;
  a.timeout = static_cast<uint8_t>(config_.verbs.qp_timeout);
  a.retry_cnt = static_cast<uint8_t>(config_.verbs.retry_count);
  a.rnr_retry = static_cast<uint8_t>(config_.verbs.rnr_retry);
  a.max_rd_atomic = static_cast<uint8_t>(
      std::min<uint32_t>(config_.verbs.max_rd_atomic, device_attr_.max_qp_rd_atom));
  VERBS_CHECK(ibv_modify_qp(qp, &a,
                            IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC));
  return Status::ok();
}

void VerbsTransport::fillLocal(HandshakeMsg& msg) const {
  msg.from_endpoint = endpoint_id_;
  std::memcpy(msg.gid, gid_.gid.data(), 16);
  msg.lid = port_attr_.lid;
  msg.mtu = static_cast<uint8_t>(mtu_);
}

// ---------------------------------------------------------------------------------------------
// Start, regions

Status VerbsTransport::start() {
  RETURN_IF_ERROR(openDevice());
  RETURN_IF_ERROR(listenOn(acceptor_, config_.listen_address,
                           [](tcp::acceptor&, boost::system::error_code&) {}));
  boost::system::error_code ec;
  listen_ = acceptor_.local_endpoint(ec);
  accept();
  io_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kvf-verbs-hs");
    io_.run();
  });
  progress_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kvf-verbs-cq");
    progressLoop();
  });
  return Status::ok();
}

Result<RegionId> VerbsTransport::registerRegion(void* base, size_t bytes, MemoryKind kind) {
  if (kind.type != MemoryKind::Type::kHost) {
    // GPU memory (dma-buf or nvidia-peermem) is registered by the CUDA-enabled build.
    return invalidArgument("this build registers host memory only (CUDA region requested)");
  }
  if (base == nullptr || bytes == 0) return invalidArgument("cannot register an empty region");
  verbs::MemoryRegion mr(
      ibv_reg_mr(pd_.get(), base, bytes,
                 IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ));
  if (!mr) return ioError("ibv_reg_mr(" + std::to_string(bytes) + " bytes)", errno);
  ASSIGN_OR_RETURN(RegionId id, regions_.add(base, bytes, kind, {mr->lkey, mr->rkey}));
  std::lock_guard lock(mrs_mu_);
  mrs_.emplace(id, std::move(mr));
  return id;
}

Status VerbsTransport::deregisterRegion(RegionId region) {
  RETURN_IF_ERROR(TransportBase::deregisterRegion(region));
  std::lock_guard lock(mrs_mu_);
  mrs_.erase(region);  // ibv_dereg_mr: peers' later accesses fail with a remote access error
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// Handshake: initiator side

Result<PeerId> VerbsTransport::connect(const EndpointBlob& peer_blob) {
  ASSIGN_OR_RETURN(EndpointInfo info, decodePeerBlob(peer_blob));
  const std::string address(info.address.begin(), info.address.end());
  ASSIGN_OR_RETURN(tcp::endpoint ep, ipEndpoint(address, "blob address"));
  const uint32_t n = std::min(config_.connections_per_peer, kMaxQpsPerPeer);

  auto peer = std::make_shared<Peer>();
  peer->info = std::move(info);
  peer->cq.reset(
      ibv_create_cq(ctx_.get(), static_cast<int>(n * sq_depth_) + 1, nullptr, channel_.get(), 0));
  if (!peer->cq) return ioError("ibv_create_cq", errno);
  HandshakeMsg request;
  fillLocal(request);
  request.to_endpoint = peer->info.endpoint_id;
  request.num_qps = n;
  for (uint32_t i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(verbs::QueuePair qp, createQp(peer->cq.get(), sq_depth_, false));
    auto state = std::make_unique<QpState>();
    state->qp = std::move(qp);
    state->sq_depth = sq_depth_;
    request.qpn[i] = state->qp->qp_num;
    request.psn[i] = randomPsn();
    peer->qps.push_back(std::move(state));
  }

  // Exchange over TCP, with the connect timeout and retries of the config.
  Status last;
  HandshakeMsg reply;
  auto backoff = std::chrono::milliseconds(config_.retry_backoff_ms);
  for (uint32_t attempt = 0; attempt <= config_.connect_retries; ++attempt) {
    if (attempt > 0) {
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
    auto socket = std::make_shared<tcp::socket>(io_);
    std::promise<Status> done;
    auto result = done.get_future();
    asio::post(io_, [&, socket] {
      socket->async_connect(ep, [&, socket](const boost::system::error_code& e1) {
        if (e1) return done.set_value(unavailable("connect " + address + ": " + e1.message()));
        asio::async_write(
            *socket, asio::buffer(&request, sizeof request),
            [&, socket](const boost::system::error_code& e2, size_t) {
              if (e2) return done.set_value(unavailable("handshake: " + e2.message()));
              asio::async_read(*socket, asio::buffer(&reply, sizeof reply),
                               [&](const boost::system::error_code& e3, size_t) {
                                 done.set_value(e3 ? unavailable("handshake reply: " + e3.message())
                                                   : Status::ok());
                               });
            });
      });
    });
    if (result.wait_for(std::chrono::milliseconds(config_.connect_timeout_ms)) !=
        std::future_status::ready) {
      asio::post(io_, [socket] {
        boost::system::error_code ignored;
        socket->close(ignored);
      });
      result.wait();
      last = deadlineExceeded("handshake with " + address + " took longer than " +
                              std::to_string(config_.connect_timeout_ms) + " ms");
      continue;
    }
    last = result.get();
    if (!last.isOk()) continue;
    if (reply.magic != kHandshakeMagic || reply.version != kHandshakeVersion) {
      return unavailable(address + " is not a kvferry verbs endpoint");
    }
    if (reply.status != 0) {
      reply.message[sizeof reply.message - 1] = '\0';
      return Status(static_cast<StatusCode>(reply.status), reply.message)
          .withContext(address + " refused the connection");
    }
    if (reply.num_qps != n) return internalError("peer answered with a different QP count");
    peer->handshake = socket;
    break;
  }
  if (!last.isOk()) return last;

  for (uint32_t i = 0; i < n; ++i) {
    RETURN_IF_ERROR(toRtr(peer->qps[i]->qp.get(), reply, i));
    RETURN_IF_ERROR(toRts(peer->qps[i]->qp.get(), request.psn[i]));
  }
  {
    std::lock_guard lock(peers_mu_);
    peer->id = next_peer_++;
    peers_.emplace(peer->id, peer);
    ++peers_version_;
  }
  // The handshake socket stays open: EOF means the peer process is gone. Handlers hold the
  // peer weakly: only peers_ and the progress thread own QPs, so teardown order stays ours.
  asio::post(io_, [this, weak = std::weak_ptr<Peer>(peer), socket = peer->handshake] {
    auto byte = std::make_shared<uint8_t>();
    asio::async_read(*socket, asio::buffer(byte.get(), 1),
                     [this, weak, socket, byte](const boost::system::error_code& e, size_t) {
                       std::shared_ptr<Peer> p = weak.lock();
                       if (stop_ || !p || p->broken) return;
                       failPeer(*p, unavailable("peer endpoint closed its handshake connection (" +
                                                e.message() + ")"));
                     });
  });
  spdlog::info("verbs transport: connected to {} as peer {} ({} RC QPs)", address, peer->id, n);
  return peer->id;
}

Status VerbsTransport::disconnect(PeerId id) {
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(id);
    if (it == peers_.end()) return notFound("no peer " + std::to_string(id));
    peer = it->second;
    peers_.erase(it);
    ++peers_version_;
  }
  failPeer(*peer, cancelled("disconnected"));
  std::promise<void> closed;
  asio::post(io_, [&] {
    boost::system::error_code ignored;
    if (peer->handshake) peer->handshake->close(ignored);
    closed.set_value();
  });
  closed.get_future().wait();
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// Handshake: target side

void VerbsTransport::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) serveHandshake(std::make_shared<tcp::socket>(std::move(socket)));
    accept();
  });
}

void VerbsTransport::serveHandshake(std::shared_ptr<tcp::socket> socket) {
  auto request = std::make_shared<HandshakeMsg>();
  asio::async_read(
      *socket, asio::buffer(request.get(), sizeof *request),
      [this, socket, request](const boost::system::error_code& ec, size_t) {
        if (ec) return;
        auto reply = std::make_shared<HandshakeMsg>();
        auto inbound = std::make_unique<Inbound>();
        Status s = acceptPeer(*request, *reply, *inbound);
        if (!s.isOk()) {
          spdlog::warn("verbs transport: refused a connection: {}", s.toString());
          reply->status = static_cast<uint32_t>(s.code());
          std::snprintf(reply->message, sizeof reply->message, "%s", s.message().c_str());
        }
        Inbound* kept = nullptr;
        if (s.isOk()) {
          kept = inbound.get();
          std::lock_guard lock(inbound_mu_);
          for (const auto& qp : inbound->qps) source_of_qpn_[qp->qp_num] = inbound->source_id;
          inbound_.push_back(std::move(inbound));
        }
        asio::async_write(
            *socket, asio::buffer(reply.get(), sizeof *reply),
            [this, socket, reply, kept](const boost::system::error_code& e2, size_t) {
              if (e2 || kept == nullptr) return;
              // Hold the connection; when the initiator goes away, so do its QPs.
              auto byte = std::make_shared<uint8_t>();
              asio::async_read(
                  *socket, asio::buffer(byte.get(), 1),
                  [this, socket, byte, kept](const boost::system::error_code&, size_t) {
                    if (stop_) return;
                    std::lock_guard lock(inbound_mu_);
                    for (auto it = inbound_.begin(); it != inbound_.end(); ++it) {
                      if (it->get() != kept) continue;
                      for (const auto& qp : kept->qps) {
                        source_of_qpn_.erase(qp->qp_num);
                      }
                      inbound_.erase(it);
                      break;
                    }
                  });
            });
      });
}

Status VerbsTransport::acceptPeer(const HandshakeMsg& request, HandshakeMsg& reply,
                                  Inbound& inbound) {
  fillLocal(reply);
  reply.to_endpoint = request.from_endpoint;
  if (request.magic != kHandshakeMagic || request.version != kHandshakeVersion) {
    return failedPrecondition("not a kvferry verbs handshake (or another protocol version)");
  }
  if (request.to_endpoint != endpoint_id_) {
    return failedPrecondition("stale endpoint blob: it names endpoint " +
                              std::to_string(request.to_endpoint) + ", this is endpoint " +
                              std::to_string(endpoint_id_) + " (the peer restarted)");
  }
  if (request.num_qps == 0 || request.num_qps > kMaxQpsPerPeer) {
    return invalidArgument("bad QP count " + std::to_string(request.num_qps));
  }
  inbound.source_id = request.from_endpoint;
  reply.num_qps = request.num_qps;
  for (uint32_t i = 0; i < request.num_qps; ++i) {
    // The target's QPs never send: a send queue of 1, receives from the shared queue.
    ASSIGN_OR_RETURN(verbs::QueuePair qp, createQp(recv_cq_.get(), 1, true));
    reply.qpn[i] = qp->qp_num;
    reply.psn[i] = randomPsn();
    RETURN_IF_ERROR(toRtr(qp.get(), request, i));
    RETURN_IF_ERROR(toRts(qp.get(), reply.psn[i]));
    inbound.qps.push_back(std::move(qp));
  }
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// Posting

Status VerbsTransport::post(PeerId peer_id, std::span<const TransferOp> ops,
                            std::optional<uint32_t> imm, uint64_t cookie, bool is_read) {
  const char* what = is_read ? "read" : "write";
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(peer_id);
    if (it == peers_.end()) return notFound("no peer " + std::to_string(peer_id));
    peer = it->second;
  }
  if (peer->broken) {
    return peer->reason.withContext("peer " + std::to_string(peer_id) +
                                    " failed earlier; reconnect");
  }
  ASSIGN_OR_RETURN(Requests::Slot * slot, requests_.acquire());
  VerbsBatch& b = slot->payload;
  Status ok = checkBatch(ops, config_.max_batch_ops, regions_, peer->info, what, b.local);
  if (!ok.isOk()) return requests_.giveBack(slot, ok);

  // Prebuild the work requests (the vectors keep their capacity across batches).
  const uint64_t id = requests_.idOf(*slot);
  const size_t n = ops.size();
  b.wrs.resize(n);
  b.sges.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const RemoteRegion* rr = peer->info.findRegion(ops[i].remote_region);  // checked above
    b.sges[i] = ibv_sge{reinterpret_cast<uint64_t>(b.local.data(i)),
                        static_cast<uint32_t>(ops[i].length), b.local.localKey(i)};
    ibv_send_wr& wr = b.wrs[i];
    wr = ibv_send_wr{};
    wr.sg_list = &b.sges[i];
    wr.num_sge = 1;
    wr.opcode = is_read ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
    wr.wr.rdma.remote_addr = rr->remote_base + ops[i].remote_offset;
    wr.wr.rdma.rkey = rr->remote_key;
    // Every WR names its batch: after an error even unsignaled WRs complete (flushed).
    wr.wr_id = id | kIntermediateSignal;
    if (!is_read && ops[i].length <= inline_limit_) wr.send_flags |= IBV_SEND_INLINE;
    // A periodic signal keeps the send queue from filling with unreaped WRs.
    if ((i + 1) % config_.signal_interval == 0) wr.send_flags |= IBV_SEND_SIGNALED;
  }
  ibv_send_wr& last = b.wrs.back();
  last.send_flags |= IBV_SEND_SIGNALED;
  last.wr_id = id;
  if (imm) {
    last.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    last.imm_data = htonl(*imm);
  }
  requests_.publish(slot, cookie, peer_id, std::chrono::milliseconds(config_.op_timeout_ms));

  QpState& qp = *peer->qps[peer->next_qp++ % peer->qps.size()];
  std::lock_guard lock(qp.mu);
  if (peer->broken) {
    // failPeer() may have swept the table before this batch was published: finish it here
    // (a batch completes once; a second completion of the same id is ignored).
    requests_.complete(id, peer->reason);
    return Status::ok();
  }
  if (qp.waiting.empty() && qp.posted - qp.completed + n <= qp.sq_depth) {
    Status s = postChains(qp, b);
    if (!s.isOk()) {
      requests_.complete(id, s);
      return Status::ok();
    }
  } else {
    qp.waiting.emplace_back(id, slot);
  }
  return Status::ok();
}

Status VerbsTransport::postChains(QpState& qp, VerbsBatch& b) {
  const size_t n = b.wrs.size();
  const size_t chain = config_.chain_length;
  for (size_t start = 0; start < n; start += chain) {
    const size_t end = std::min(n, start + chain);
    for (size_t i = start; i < end; ++i) b.wrs[i].next = i + 1 < end ? &b.wrs[i + 1] : nullptr;
    ibv_send_wr* bad = nullptr;
    VERBS_CHECK(ibv_post_send(qp.qp.get(), &b.wrs[start], &bad));
    // Record where each signaled WR sits in the send queue: its completion frees up to there.
    for (size_t i = start; i < end; ++i) {
      if (b.wrs[i].send_flags & IBV_SEND_SIGNALED) qp.signals.push_back(qp.posted + i - start + 1);
    }
    qp.posted += end - start;
  }
  return Status::ok();
}

void VerbsTransport::drainWaiting(QpState& qp, Peer& peer) {
  while (!qp.waiting.empty() && !peer.broken) {
    auto [id, slot] = qp.waiting.front();
    const size_t n = slot->payload.wrs.size();
    if (qp.posted - qp.completed + n > qp.sq_depth) return;
    qp.waiting.pop_front();
    Status s = postChains(qp, slot->payload);
    if (!s.isOk()) requests_.complete(id, s);
  }
}

void VerbsTransport::failPeer(Peer& peer, const Status& reason) {
  {
    std::lock_guard lock(peer.fail_mu);  // only the first failure counts
    if (peer.broken) return;
    peer.reason = reason;
    peer.broken = true;
  }
  // Stop the NIC first (outstanding WRs flush), so nothing lands after we report failure.
  for (auto& qp : peer.qps) {
    std::lock_guard lock(qp->mu);
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_ERR;
    ibv_modify_qp(qp->qp.get(), &a, IBV_QP_STATE);
    qp->waiting.clear();
  }
  if (reason.code() != StatusCode::kCancelled) {
    spdlog::warn("verbs transport: peer {} failed: {}", peer.id, reason.toString());
  }
  requests_.failPeer(peer.id, reason);
}

// ---------------------------------------------------------------------------------------------
// Progress

size_t VerbsTransport::pollPeer(Peer& peer, ibv_wc* wcs) {
  const int n = ibv_poll_cq(peer.cq.get(), kPollBatch, wcs);
  for (int i = 0; i < n; ++i) {
    const ibv_wc& wc = wcs[i];
    QpState* qp = nullptr;
    for (auto& q : peer.qps) {
      if (q->qp->qp_num == wc.qp_num) qp = q.get();
    }
    if (qp == nullptr) continue;
    if (wc.status != IBV_WC_SUCCESS) {
      if (!peer.broken) {
        Status why = wcError(wc);
        // The batch whose WR failed learns the precise cause; the rest, that the peer failed.
        if (!(wc.wr_id & kIntermediateSignal)) requests_.complete(wc.wr_id, why);
        failPeer(peer, why);
      }
      continue;
    }
    {
      std::lock_guard lock(qp->mu);
      if (!qp->signals.empty()) {
        qp->completed = qp->signals.front();
        qp->signals.pop_front();
      }
      drainWaiting(*qp, peer);
    }
    if (!(wc.wr_id & kIntermediateSignal)) requests_.complete(wc.wr_id, Status::ok());
  }
  return n > 0 ? static_cast<size_t>(n) : 0;
}

size_t VerbsTransport::pollReceives(ibv_wc* wcs) {
  const int n = ibv_poll_cq(recv_cq_.get(), kPollBatch, wcs);
  for (int i = 0; i < n; ++i) {
    const ibv_wc& wc = wcs[i];
    if (wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
      uint64_t source = 0;
      {
        std::lock_guard lock(inbound_mu_);
        auto it = source_of_qpn_.find(wc.qp_num);
        if (it != source_of_qpn_.end()) source = it->second;
      }
      immediates_.push(ImmediateEvent{source, ntohl(wc.imm_data)});
    }
    if (wc.status == IBV_WC_SUCCESS || wc.status == IBV_WC_WR_FLUSH_ERR) {
      // Give the receive back (a flushed one belonged to a QP that is going away).
      ibv_recv_wr wr{};
      ibv_recv_wr* bad = nullptr;
      wr.wr_id = wc.wr_id;
      if (ibv_post_srq_recv(srq_.get(), &wr, &bad) != 0) {
        spdlog::error("verbs transport: could not repost a receive: {}", std::strerror(errno));
      }
    }
  }
  return n > 0 ? static_cast<size_t>(n) : 0;
}

void VerbsTransport::progressLoop() {
  std::vector<std::shared_ptr<Peer>> peers;
  uint64_t seen_version = ~0ull;
  ibv_wc wcs[kPollBatch];
  auto next_sweep = std::chrono::steady_clock::now();
  auto last_work = std::chrono::steady_clock::now();
  while (!stop_) {
    if (peers_version_ != seen_version) {
      std::lock_guard lock(peers_mu_);
      seen_version = peers_version_;
      peers.clear();
      for (auto& [id, p] : peers_) peers.push_back(p);
    }
    size_t got = pollReceives(wcs);
    for (auto& p : peers) got += pollPeer(*p, wcs);

    const auto now = std::chrono::steady_clock::now();
    if (now >= next_sweep) {
      next_sweep = now + std::chrono::milliseconds(10);
      for (PeerId late : requests_.latePeers()) {
        for (auto& p : peers) {
          if (p->id == late) {
            failPeer(*p, deadlineExceeded("a batch got no completion within op_timeout_ms=" +
                                          std::to_string(config_.op_timeout_ms)));
          }
        }
      }
    }
    if (got > 0) {
      last_work = now;
      continue;
    }
    // Busy-poll while work is flowing (a completion-channel wake-up costs an interrupt and two
    // context switches per completion); sleep once the queue has been quiet for a while.
    if (now - last_work < kSpinBeforeSleep) continue;
    // Sleep on the completion channel: arm every CQ, re-poll (a completion may have raced the
    // arming), then wait for an event or 10 ms (deadlines and shutdown are checked then).
    ibv_req_notify_cq(recv_cq_.get(), 0);
    for (auto& p : peers) ibv_req_notify_cq(p->cq.get(), 0);
    got = pollReceives(wcs);
    for (auto& p : peers) got += pollPeer(*p, wcs);
    if (got > 0) {
      last_work = std::chrono::steady_clock::now();
      continue;
    }
    pollfd pfd{channel_->fd, POLLIN, 0};
    if (poll(&pfd, 1, 10) > 0) {
      ibv_cq* cq = nullptr;
      void* ctx = nullptr;
      while (ibv_get_cq_event(channel_.get(), &cq, &ctx) == 0) ibv_ack_cq_events(cq, 1);
    }
    last_work = std::chrono::steady_clock::now();
  }
}

}  // namespace

Result<GidEntry> probeGid(const config::VerbsConfig& config) {
  std::string name;
  ASSIGN_OR_RETURN(verbs::Context ctx, openConfiguredDevice(config, name));
  ibv_port_attr port{};
  VERBS_CHECK(ibv_query_port(ctx.get(), static_cast<uint8_t>(config.port), &port));
  return chooseGid(ctx.get(), port, config);
}

Result<std::unique_ptr<Transport>> makeVerbsTransport(const config::TransportConfig& config) {
  auto transport = std::make_unique<VerbsTransport>(config);
  RETURN_IF_ERROR(transport->start());
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace kvferry::rdma
