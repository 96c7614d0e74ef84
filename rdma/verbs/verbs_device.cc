#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "rdma/verbs/gpu_mr.h"
#include "rdma/verbs/verbs_transport.h"
#include "rdma/verbs/verbs_transport_impl.h"

namespace kvferry::rdma {
namespace verbs_backend {
namespace {

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

}  // namespace

uint32_t randomPsn() {
  static thread_local std::mt19937 rng(std::random_device{}());
  return rng() & 0xffffff;
}

// ---------------------------------------------------------------------------------------------
// Device, queue pairs

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
  // Room for a whole batch twice over (n writes, up to n flush READs and the fenced immediate),
  // so any batch fits into an empty send queue.
  sq_depth_ = std::min<uint32_t>(static_cast<uint32_t>(device_attr_.max_qp_wr),
                                 std::max<uint32_t>(config_.max_batch_ops * 2 + 2, 256));

  pd_.reset(ibv_alloc_pd(ctx_.get()));
  if (!pd_) return ioError("ibv_alloc_pd", errno);
  flush_mr_.reset(
      ibv_reg_mr(pd_.get(), flush_scratch_, sizeof flush_scratch_, IBV_ACCESS_LOCAL_WRITE));
  if (!flush_mr_) return ioError("ibv_reg_mr(flush scratch)", errno);
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
  if (base == nullptr || bytes == 0) return invalidArgument("cannot register an empty region");
  constexpr int kAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  verbs::MemoryRegion mr;
  if (kind.type == MemoryKind::Type::kCuda) {
    // GPUDirect RDMA: dma-buf and/or nvidia-peermem per transport.verbs.gpu_registration.
    GpuRegistrationPath path{};
    Result<verbs::MemoryRegion> gpu_mr =
        registerGpuRegion(pd_.get(), base, bytes, kAccess, config_.verbs.gpu_registration, path);
    if (!gpu_mr.isOk()) {
      return gpu_mr.status().withContext("GPU " + std::to_string(kind.device) + " region of " +
                                         std::to_string(bytes) + " bytes");
    }
    mr = std::move(gpu_mr).value();
    spdlog::info("verbs transport: GPU {} region of {} bytes registered through {}", kind.device,
                 bytes, gpuRegistrationPathName(path));
  } else {
    mr.reset(ibv_reg_mr(pd_.get(), base, bytes, kAccess));
    if (!mr) return ioError("ibv_reg_mr(" + std::to_string(bytes) + " bytes)", errno);
  }
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

}  // namespace verbs_backend

Result<GidEntry> probeGid(const config::VerbsConfig& config) {
  std::string name;
  ASSIGN_OR_RETURN(verbs::Context ctx, verbs_backend::openConfiguredDevice(config, name));
  ibv_port_attr port{};
  VERBS_CHECK(ibv_query_port(ctx.get(), static_cast<uint8_t>(config.port), &port));
  return verbs_backend::chooseGid(ctx.get(), port, config);
}

Result<std::unique_ptr<Transport>> makeVerbsTransport(const config::TransportConfig& config) {
  auto transport = std::make_unique<verbs_backend::VerbsTransport>(config);
  RETURN_IF_ERROR(transport->start());
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace kvferry::rdma
