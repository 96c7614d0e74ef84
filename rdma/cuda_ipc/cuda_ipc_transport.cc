#include "rdma/cuda_ipc/cuda_ipc_transport.h"

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "rdma/batch_check.h"
#include "rdma/cuda_ipc/batch_copy.h"
#include "rdma/doorbell_ring.h"
#include "rdma/endpoint_blob.h"
#include "rdma/event_queue.h"
#include "rdma/region_table.h"

namespace kvferry::rdma {
namespace {

using cuda_ipc::CopyOp;
using Clock = std::chrono::steady_clock;

// 2: doorbells through a shared-memory ring (doorbell_ring.h); 1 rang them over TCP.
constexpr uint32_t kAddressVersion = 2;
// An idle progress thread sleeps this long between looks; busy, it only yields.
constexpr auto kIdleSleep = std::chrono::microseconds(50);
// How long it stays busy after the last work it found.
constexpr auto kBusyWindow = std::chrono::milliseconds(2);
// Batches go to this many streams in turn, so that one batch's copy overlaps the start and end
// of the next (on one stream each kernel waits for the previous one to drain).
constexpr uint32_t kStreams = 4;
// Only batches this large take turns; smaller ones all go to the first stream (on one H200, same
// machine: four streams lifted 64 MiB batches from 0.83 to 1.02 of a contiguous copy, 16 MiB
// ones went from 0.29 to 0.24–0.26 while posting cost 18 µs a batch; once it cost 10–15, a
// three-round A/B moved 16 MiB batches 0.42 → 0.51 with one round below the base, and 4 MiB
// ones slightly down: results/gpu/h200-2026-12-06/ab-streams).
constexpr uint64_t kTurnBytes = 32ull << 20;
// Batches this large pass their ops inside the copy kernel's launch (no PCIe read of the op list
// before the first load); smaller ones leave them in pinned memory, where the launch costs the
// host less. One H100, one run: 512 × 32 KiB batches 0.55 → 0.66 of a contiguous copy inline,
// 512 × 8 KiB ones 0.31 → 0.25, host-bound, the post 2 µs dearer
// (results/gpu/h100-2026-12-06-night).
constexpr uint64_t kInlineOpsBytes = 8ull << 20;
// How many times a post tries mu_ (yielding between) before it sleeps on it.
constexpr int kPostSpins = 64;
// How often an initiator looks for targets that closed their doorbell socket.
constexpr auto kPeerCheckInterval = std::chrono::milliseconds(1);

Status cudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return Status::ok();
  return internalError(std::string(what) + ": " + cudaGetErrorName(error) + " (" +
                       cudaGetErrorString(error) + ")");
}

// The boot id tells apart hosts (and reboots): CUDA IPC handles mean nothing elsewhere.
std::string bootId() {
  std::ifstream file("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(file, id);
  return id;
}

// One region as the blob describes it to a cuda_ipc peer.
struct RegionAddress {
  RegionId id = 0;
  uint64_t bytes = 0;
  uint64_t offset = 0;  // of the region's start inside the exported allocation
  cudaIpcMemHandle_t handle{};
};

// The device addresses of this process's cuda_ipc regions, by (endpoint id, region id): a peer
// in the same process uses them directly (IPC handles cannot be opened by their own process),
// and so no blob carries a process address.
class LocalRegions {
 public:
  static LocalRegions& instance() {
    static LocalRegions regions;
    return regions;
  }
  void add(uint64_t endpoint, RegionId region, uint64_t pointer) {
    std::lock_guard lock(mu_);
    pointers_[{endpoint, region}] = pointer;
  }
  void remove(uint64_t endpoint, RegionId region) {
    std::lock_guard lock(mu_);
    pointers_.erase({endpoint, region});
  }
  void removeEndpoint(uint64_t endpoint) {
    std::lock_guard lock(mu_);
    std::erase_if(pointers_,
                  [endpoint](const auto& entry) { return entry.first.first == endpoint; });
  }
  std::optional<uint64_t> find(uint64_t endpoint, RegionId region) const {
    std::lock_guard lock(mu_);
    auto it = pointers_.find({endpoint, region});
    if (it == pointers_.end()) return std::nullopt;
    return it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::pair<uint64_t, RegionId>, uint64_t> pointers_;
};

struct AddressHeader {
  uint32_t version = kAddressVersion;
  uint32_t regions = 0;
  uint64_t pid = 0;
  char boot_id[48] = {};
  char doorbell_socket[64] = {};  // the target's abstract unix socket (doorbell_ring.h)
};

template <typename T>
void append(std::vector<uint8_t>& out, const T& value) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

// The start of the allocation holding `pointer`, through the driver (the runtime API has no
// call for it); the pointer itself when the driver entry point is unavailable.
uint64_t allocationBase(void* pointer) {
  using GetAddressRange = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);
  static GetAddressRange get_range = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &function, 12000,
                                         cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      return static_cast<GetAddressRange>(nullptr);
    }
    return reinterpret_cast<GetAddressRange>(function);
  }();
  CUdeviceptr base = 0;
  size_t size = 0;
  if (get_range == nullptr ||
      get_range(&base, &size, reinterpret_cast<CUdeviceptr>(pointer)) != CUDA_SUCCESS) {
    return reinterpret_cast<uint64_t>(pointer);
  }
  return base;
}

class CudaIpcTransport final : public Transport {
 public:
  explicit CudaIpcTransport(const config::TransportConfig& config)
      : config_(config), endpoint_id_(newEndpointId()), completions_(config.queue_depth) {}

  ~CudaIpcTransport() override {
    stop_ = true;
    if (progress_.joinable()) progress_.join();
    if (!streams_.empty()) {
      synchronize();
      for (Slot& slot : slots_) {
        cudaEventDestroy(slot.done);
      }
      cudaFreeHost(host_ops_);
      for (cudaStream_t stream : streams_) cudaStreamDestroy(stream);
    }
    std::lock_guard lock(mu_);
    for (auto& [id, peer] : peers_) closeMappings(peer);
    LocalRegions::instance().removeEndpoint(endpoint_id_);
  }

  Status init() {
    RETURN_IF_ERROR(cudaStatus(cudaGetDeviceCount(&device_count_), "cudaGetDeviceCount"));
    ASSIGN_OR_RETURN(doorbells_, DoorbellReceiver::listen(endpoint_id_));
    progress_ = std::thread([this] { progressLoop(); });
    return Status::ok();
  }

  std::string_view name() const override { return "cuda_ipc"; }

  Capabilities capabilities() const override {
    Capabilities caps;
    caps.cuda_memory = true;
    caps.max_batch_ops = config_.max_batch_ops;
    caps.queue_depth = config_.queue_depth;
    caps.target_checks = false;
    return caps;
  }

  Result<RegionId> registerRegion(void* base, size_t bytes, MemoryKind kind) override {
    RegionAddress address;
    address.bytes = bytes;
    if (kind.type != MemoryKind::Type::kCuda) {
      return invalidArgument("cuda_ipc moves device memory; register host memory with tcp");
    }
    {
      cudaPointerAttributes attributes{};
      RETURN_IF_ERROR(
          cudaStatus(cudaPointerGetAttributes(&attributes, base), "cudaPointerGetAttributes"));
      if (attributes.type != cudaMemoryTypeDevice || attributes.device != kind.device) {
        return invalidArgument("cuda_ipc: the region is not device memory of GPU " +
                               std::to_string(kind.device));
      }
      RETURN_IF_ERROR(ensureStream(kind.device));
      RETURN_IF_ERROR(
          cudaStatus(cudaIpcGetMemHandle(&address.handle, base), "cudaIpcGetMemHandle"));
      address.offset = reinterpret_cast<uint64_t>(base) - allocationBase(base);
    }
    ASSIGN_OR_RETURN(address.id, regions_.add(base, bytes, kind));
    LocalRegions::instance().add(endpoint_id_, address.id, reinterpret_cast<uint64_t>(base));
    std::lock_guard lock(mu_);
    addresses_[address.id] = address;
    return address.id;
  }

  Status deregisterRegion(RegionId region) override {
    RETURN_IF_ERROR(regions_.remove(region, std::chrono::milliseconds(config_.op_timeout_ms)));
    LocalRegions::instance().remove(endpoint_id_, region);
    std::lock_guard lock(mu_);
    addresses_.erase(region);
    return Status::ok();
  }

  Result<EndpointBlob> localBlob() const override {
    std::vector<uint8_t> address;
    AddressHeader header;
    std::lock_guard lock(mu_);
    header.regions = static_cast<uint32_t>(addresses_.size());
    header.pid = static_cast<uint64_t>(::getpid());
    std::strncpy(header.boot_id, bootId().c_str(), sizeof(header.boot_id) - 1);
    std::strncpy(header.doorbell_socket, doorbells_->socketName().c_str(),
                 sizeof(header.doorbell_socket) - 1);
    append(address, header);
    for (const auto& [id, region] : addresses_) append(address, region);
    return encodeEndpoint(EndpointInfo{"cuda_ipc", endpoint_id_, regions_.describe(), address});
  }

  Result<PeerId> connect(const EndpointBlob& peer_blob) override {
    ASSIGN_OR_RETURN(EndpointInfo info, decodeEndpoint(peer_blob));
    if (info.backend != "cuda_ipc") {
      return invalidArgument("blob is for the '" + info.backend + "' transport, not cuda_ipc");
    }
    AddressHeader header;
    if (info.address.size() < sizeof(header)) return invalidArgument("cuda_ipc blob truncated");
    std::memcpy(&header, info.address.data(), sizeof(header));
    const uint64_t expected = sizeof(header) + uint64_t{header.regions} * sizeof(RegionAddress);
    if (header.version != kAddressVersion || info.address.size() != expected ||
        header.boot_id[sizeof(header.boot_id) - 1] != 0 ||
        header.doorbell_socket[sizeof(header.doorbell_socket) - 1] != 0) {
      return invalidArgument("cuda_ipc blob malformed");
    }
    if (std::string(header.boot_id) != bootId()) {
      return unavailable(
          "cuda_ipc connects endpoints of one host; this blob is from another "
          "(use the tcp or verbs transport between hosts)");
    }
    const bool same_process = header.pid == static_cast<uint64_t>(::getpid());
    Peer peer;
    peer.info = info;
    const uint8_t* cursor = info.address.data() + sizeof(header);
    for (uint32_t i = 0; i < header.regions; ++i, cursor += sizeof(RegionAddress)) {
      RegionAddress region;
      std::memcpy(&region, cursor, sizeof(region));
      if (info.findRegion(region.id) == nullptr ||
          info.findRegion(region.id)->bytes != region.bytes) {
        closeMappings(peer);
        return invalidArgument("cuda_ipc blob: region " + std::to_string(region.id) +
                               " disagrees with the region table");
      }
      Mapping mapping;
      mapping.bytes = region.bytes;
      if (same_process) {
        const std::optional<uint64_t> local =
            LocalRegions::instance().find(info.endpoint_id, region.id);
        if (!local) {
          closeMappings(peer);
          return invalidArgument("cuda_ipc blob: region " + std::to_string(region.id) +
                                 " is not registered in this process any more");
        }
        mapping.base = *local;
      } else {
        void* opened = nullptr;
        const Status status =
            cudaStatus(cudaIpcOpenMemHandle(&opened, region.handle, cudaIpcMemLazyEnablePeerAccess),
                       "cudaIpcOpenMemHandle");
        if (!status.isOk()) {
          closeMappings(peer);
          return status;
        }
        mapping.opened = opened;
        mapping.base = reinterpret_cast<uint64_t>(opened) + region.offset;
      }
      peer.mappings[region.id] = mapping;
    }
    Result<std::unique_ptr<DoorbellSender>> doorbell =
        DoorbellSender::connect(header.doorbell_socket, info.endpoint_id, endpoint_id_,
                                std::chrono::milliseconds(config_.connect_timeout_ms));
    if (!doorbell.isOk()) {
      closeMappings(peer);
      return doorbell.status();
    }
    peer.doorbell = std::move(doorbell).value();
    std::lock_guard lock(mu_);
    const PeerId id = next_peer_++;
    peers_.emplace(id, std::move(peer));
    return id;
  }

  Status disconnect(PeerId peer_id) override {
    Peer peer;
    {
      std::lock_guard lock(mu_);
      auto it = peers_.find(peer_id);
      if (it == peers_.end()) return notFound("peer " + std::to_string(peer_id));
      peer = std::move(it->second);
      peers_.erase(it);
    }
    // Copies into the peer's memory must finish before its mappings close; the progress thread
    // completes the peer's batches CANCELLED.
    synchronize();
    closeMappings(peer);
    return Status::ok();
  }

  Status postWrite(PeerId peer, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
                   uint64_t cookie) override {
    return post(peer, ops, imm, cookie, false);
  }
  Status postRead(PeerId peer, std::span<const TransferOp> ops, uint64_t cookie) override {
    return post(peer, ops, std::nullopt, cookie, true);
  }
  size_t pollCompletions(std::span<Completion> out, std::chrono::microseconds wait) override {
    return completions_.pop(out, wait);
  }
  size_t pollImmediates(std::span<ImmediateEvent> out, std::chrono::microseconds wait) override {
    return immediates_.pop(out, wait);
  }

 private:
  struct Mapping {
    uint64_t base = 0;
    uint64_t bytes = 0;
    void* opened = nullptr;  // from cudaIpcOpenMemHandle; closed with the peer
  };
  struct Peer {
    EndpointInfo info;
    std::map<RegionId, Mapping> mappings;
    std::unique_ptr<DoorbellSender> doorbell;
    bool gone = false;  // its process closed the doorbell socket: it is dead or disconnected
  };
  // A batch between its post and its completion.
  struct Batch {
    uint64_t cookie = 0;
    PeerId peer = 0;
    std::optional<uint32_t> imm;
    uint32_t slot = 0;
    uint32_t stream = 0;  // index into streams_
    Clock::time_point deadline;
  };
  // One batch in flight: its op list is in host_ops_ (pinned, read by the kernel over the bus:
  // no copy to the device first), its event marks the copy's end.
  struct Slot {
    cudaEvent_t done = nullptr;
    bool busy = false;
    BatchPins pins;  // keeps the local regions registered; kept grown for the next batch
  };

  Status ensureStream(int device) {
    std::lock_guard lock(mu_);
    if (!streams_.empty()) {
      if (device != device_) {
        return invalidArgument("cuda_ipc: regions on GPU " + std::to_string(device_) + " and " +
                               std::to_string(device) + "; one transport serves one GPU");
      }
      return Status::ok();
    }
    device_ = device;
    RETURN_IF_ERROR(cudaStatus(cudaSetDevice(device), "cudaSetDevice"));
    for (uint32_t i = 0; i < kStreams; ++i) {
      cudaStream_t stream = nullptr;
      RETURN_IF_ERROR(cudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                 "cudaStreamCreate"));
      streams_.push_back(stream);
    }
    const uint64_t slot_bytes = uint64_t{config_.max_batch_ops} * sizeof(CopyOp);
    RETURN_IF_ERROR(cudaStatus(
        cudaMallocHost(reinterpret_cast<void**>(&host_ops_), slot_bytes * config_.queue_depth),
        "cudaMallocHost"));
    slots_.resize(config_.queue_depth);
    for (Slot& slot : slots_) {
      RETURN_IF_ERROR(cudaStatus(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming),
                                 "cudaEventCreate"));
    }
    return Status::ok();
  }

  void closeMappings(Peer& peer) {
    for (auto& [id, mapping] : peer.mappings) {
      if (mapping.opened != nullptr) cudaIpcCloseMemHandle(mapping.opened);
      mapping.opened = nullptr;
    }
    peer.mappings.clear();
  }

  Status post(PeerId peer_id, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
              uint64_t cookie, bool is_read) {
    const std::string_view what = is_read ? "read" : "write";
    Batch batch;
    batch.cookie = cookie;
    batch.peer = peer_id;
    batch.imm = imm;
    std::unique_lock lock = lockForPost();
    auto it = peers_.find(peer_id);
    if (it == peers_.end())
      return unavailable("peer " + std::to_string(peer_id) + " is not connected");
    Peer& peer = it->second;
    if (peer.gone) {
      return unavailable("peer " + std::to_string(peer_id) +
                         " is gone: its process closed the doorbell socket (it exited or died)");
    }
    UniformBatch uniform;
    const bool is_uniform = stageUniform(peer, ops, is_read, what, uniform);
    Status checked =
        is_uniform ? Status::ok()
                   : checkBatch(ops, config_.max_batch_ops, regions_, peer.info, what, checked_);
    if (checked.isOk() && streams_.empty())
      checked = failedPrecondition("cuda_ipc: no device region is registered");
    if (checked.isOk() && !completions_.tryAcquire())
      checked = resourceExhausted(std::to_string(config_.queue_depth) + " batches outstanding");
    if (!checked.isOk()) {
      checked_.clear();  // unpins its regions
      return checked;
    }
    uint32_t slot_index = 0;
    while (slots_[slot_index].busy) ++slot_index;  // a free one exists: outstanding < depth
    Slot& slot = slots_[slot_index];
    std::swap(slot.pins, checked_);  // checked_ takes the slot's cleared, grown vectors
    CopyOp* staged = host_ops_ + uint64_t{slot_index} * config_.max_batch_ops;
    uint64_t longest = uniform.bytes;
    uint64_t total = uniform.bytes * ops.size();
    if (!is_uniform) total = stageGeneral(peer, ops, is_read, slot.pins, staged, longest);
    if (total >= kTurnBytes) {
      batch.stream = next_stream_;
      next_stream_ = (next_stream_ + 1) % kStreams;
    }
    cudaStream_t stream = streams_[batch.stream];
    Status launched = cudaStatus(cudaSetDevice(device_), "cudaSetDevice");
    if (launched.isOk()) {
      // `staged` stays untouched until the slot's event has completed (slot.busy); the uniform
      // list is copied into the launch.
      const auto count = static_cast<uint32_t>(ops.size());
      cudaError_t error = cudaSuccess;
      if (is_uniform) {
        error = cuda_ipc::launchUniformBatchCopy(uniform.src_base, uniform.dst_base, uniform.bytes,
                                                 uniform_ops_.data(), count, stream);
      } else if (total >= kInlineOpsBytes) {
        error = cuda_ipc::launchBatchCopyFromHost(staged, count, longest, stream);
      } else {
        error = cuda_ipc::launchBatchCopy(staged, count, longest, stream);
      }
      launched = cudaStatus(error, "batch copy");
    }
    if (launched.isOk())
      launched = cudaStatus(cudaEventRecord(slot.done, stream), "cudaEventRecord");
    if (!launched.isOk()) {
      slot.pins.clear();
      completions_.release();
      return launched;
    }
    slot.busy = true;
    batch.slot = slot_index;
    batch.deadline = Clock::now() + std::chrono::milliseconds(config_.op_timeout_ms);
    batches_.emplace(next_batch_++, std::move(batch));
    return Status::ok();
  }

  // A batch whose every op has one length and one region on each side (a layer's blocks), all
  // in 16-byte units, travels as bases and 8-byte ops (cuda_ipc::UniformOp).
  struct UniformBatch {
    uint64_t src_base = 0;
    uint64_t dst_base = 0;
    uint64_t bytes = 0;
  };
  // Checks and stages a uniform batch (its ops in uniform_ops_, its local region pinned in
  // checked_); false when the batch is not uniform or an op fails a check, which checkBatch then
  // finds and explains. checked_ keeps only the region: this backend never reads an op's address
  // back from its pins.
  bool stageUniform(const Peer& peer, std::span<const TransferOp> ops, bool is_read,
                    std::string_view what, UniformBatch& out) {
    constexpr uint64_t kUnit = cuda_ipc::kUniformUnit;
    constexpr uint64_t kReach = uint64_t{1} << 32;  // an offset's reach, in units
    if (ops.empty() || ops.size() > cuda_ipc::kMaxUniformOps || ops.size() > config_.max_batch_ops)
      return false;
    const TransferOp& first = ops.front();
    const uint64_t bytes = first.length;
    const RemoteRegion* remote = peer.info.findRegion(first.remote_region);
    auto mapping = peer.mappings.find(first.remote_region);
    if (bytes % kUnit != 0 || remote == nullptr || mapping == peer.mappings.end()) return false;
    checked_.clear();
    if (!checked_.add(regions_, first.local_region, first.local_offset, bytes, what).isOk()) {
      checked_.clear();
      return false;
    }
    const RegionTable::Entry& local = checked_.lastRegion();
    const auto local_base = reinterpret_cast<uint64_t>(local.base);
    const uint64_t remote_base = mapping->second.base;
    if ((local_base | remote_base) % kUnit != 0) return false;
    for (size_t i = 0; i < ops.size(); ++i) {
      const TransferOp& op = ops[i];
      if (op.local_region != first.local_region || op.remote_region != first.remote_region ||
          op.length != bytes || (op.local_offset | op.remote_offset) % kUnit != 0 ||
          !fitsRegion(local.bytes, op.local_offset, bytes) ||
          !fitsRegion(remote->bytes, op.remote_offset, bytes)) {
        return false;
      }
      const uint64_t near = op.local_offset / kUnit;
      const uint64_t far = op.remote_offset / kUnit;
      if ((near | far) >= kReach) return false;
      uniform_ops_[i] =
          is_read ? cuda_ipc::UniformOp{static_cast<uint32_t>(far), static_cast<uint32_t>(near)}
                  : cuda_ipc::UniformOp{static_cast<uint32_t>(near), static_cast<uint32_t>(far)};
    }
    out = is_read ? UniformBatch{remote_base, local_base, bytes}
                  : UniformBatch{local_base, remote_base, bytes};
    return true;
  }

  // Stages a checked batch's ops as CopyOps in `staged` (the slot's pinned list); returns its
  // bytes, and its longest op's in `longest`.
  static uint64_t stageGeneral(const Peer& peer, std::span<const TransferOp> ops, bool is_read,
                               const BatchPins& pins, CopyOp* staged, uint64_t& longest) {
    uint64_t total = 0;
    const Mapping* remote = nullptr;  // the last op's region: a layer's blocks share one pool
    RegionId remote_id = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      if (remote == nullptr || remote_id != ops[i].remote_region) {
        remote_id = ops[i].remote_region;
        remote = &peer.mappings.at(remote_id);
      }
      const uint64_t local = reinterpret_cast<uint64_t>(pins.data(i));
      const uint64_t far = remote->base + ops[i].remote_offset;
      staged[i] = is_read ? CopyOp{far, local, ops[i].length} : CopyOp{local, far, ops[i].length};
      longest = std::max(longest, ops[i].length);
      total += ops[i].length;
    }
    return total;
  }

  // The progress thread takes mu_ in a loop; a post that slept on it would pay a futex wake-up
  // (microseconds: a 16 MiB batch copies in about 10) per batch. It spins a little first, and
  // the progress thread stands aside while a post waits.
  std::unique_lock<std::mutex> lockForPost() {
    posting_.fetch_add(1, std::memory_order_relaxed);
    std::unique_lock lock(mu_, std::try_to_lock);
    for (int spin = 0; !lock.owns_lock() && spin < kPostSpins; ++spin) {
      std::this_thread::yield();
      if (lock.try_lock()) break;
    }
    if (!lock.owns_lock()) lock.lock();
    posting_.fetch_sub(1, std::memory_order_relaxed);
    return lock;
  }

  // Waits for every copy this endpoint started.
  void synchronize() {
    for (cudaStream_t stream : streams_) cudaStreamSynchronize(stream);
  }

  // Ends a batch: its completion, its slot and its pins.
  void complete(std::map<uint64_t, Batch>::iterator it, Status status) {
    Slot& slot = slots_[it->second.slot];
    slot.busy = false;
    slot.pins.clear();
    completions_.push(Completion{it->second.cookie, std::move(status)});
    batches_.erase(it);
  }

  // The one progress thread: completes batches whose copy has finished (ringing the target's
  // doorbell first where they carry an immediate), notices targets that are gone, and turns
  // this endpoint's own doorbells into immediates. Busy, it spins (yielding); idle, it sleeps.
  void progressLoop() {
    ::prctl(PR_SET_TIMERSLACK, 1000UL);  // 1 µs: the idle sleep is as short as it says
    std::array<ImmediateEvent, 256> rung;
    Clock::time_point busy_until{};
    Clock::time_point next_peer_check{};
    while (!stop_) {
      if (posting_.load(std::memory_order_relaxed) != 0) {
        std::this_thread::yield();  // a post is waiting for mu_
        continue;
      }
      bool worked = false;
      bool outstanding = false;
      {
        std::lock_guard lock(mu_);
        const Clock::time_point now = Clock::now();
        if (now >= next_peer_check) {
          for (auto& [id, peer] : peers_) {
            if (!peer.gone && !peer.doorbell->receiverAlive()) peer.gone = true;
          }
          next_peer_check = now + kPeerCheckInterval;
        }
        // In posting order; past a batch still copying, its stream's later ones are too.
        uint32_t blocked = 0;  // a bit per stream
        for (auto it = batches_.begin(); it != batches_.end();) {
          auto current = it++;
          const uint32_t bit = 1u << current->second.stream;
          if ((blocked & bit) != 0) continue;
          if (settle(current, now)) {
            worked = true;
          } else {
            blocked |= bit;
          }
        }
        outstanding = !batches_.empty();
      }
      const size_t n = doorbells_->poll(rung);
      for (size_t i = 0; i < n; ++i) immediates_.push(rung[i]);
      const Clock::time_point now = Clock::now();
      if (worked || n > 0) busy_until = now + kBusyWindow;
      if (outstanding || now < busy_until) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(kIdleSleep);
      }
    }
  }

  // Moves one batch on; true when it completed. Holds mu_.
  bool settle(std::map<uint64_t, Batch>::iterator it, Clock::time_point now) {
    Batch& batch = it->second;
    const cudaError_t state = cudaEventQuery(slots_[batch.slot].done);
    if (state == cudaErrorNotReady) {
      if (now <= batch.deadline) return false;
      complete(it, deadlineExceeded("the copy did not finish within op_timeout_ms"));
      return true;
    }
    if (state != cudaSuccess) {
      complete(it, cudaStatus(state, "batch copy"));
      return true;
    }
    auto peer = peers_.find(batch.peer);
    if (peer == peers_.end()) {
      complete(it, cancelled("the peer was disconnected"));
      return true;
    }
    if (peer->second.gone) {
      complete(it, unavailable("the peer is gone: its process closed the doorbell socket"));
      return true;
    }
    // Every byte is in place: ring the target's doorbell with the immediate.
    if (batch.imm && !peer->second.doorbell->ring(*batch.imm)) {
      if (now <= batch.deadline) return false;  // its ring is full: the target is behind
      complete(it, deadlineExceeded("the target did not read its doorbells within op_timeout_ms"));
      return true;
    }
    complete(it, Status::ok());
    return true;
  }

  const config::TransportConfig config_;
  const uint64_t endpoint_id_;  // immediates name the sender by it
  int device_count_ = 0;
  std::unique_ptr<DoorbellReceiver> doorbells_;  // read by the progress thread only
  RegionTable regions_;
  CompletionQueue completions_;
  ImmediateQueue immediates_;

  mutable std::mutex mu_;  // everything below
  std::map<RegionId, RegionAddress> addresses_;
  std::map<PeerId, Peer> peers_;
  PeerId next_peer_ = 1;
  std::map<uint64_t, Batch> batches_;  // in posting order
  uint64_t next_batch_ = 1;
  int device_ = -1;
  std::vector<cudaStream_t> streams_;  // kStreams once a region is registered
  uint32_t next_stream_ = 0;
  CopyOp* host_ops_ = nullptr;
  std::vector<Slot> slots_;
  std::array<cuda_ipc::UniformOp, cuda_ipc::kMaxUniformOps>
      uniform_ops_;              // a uniform batch's, until launched
  BatchPins checked_;            // post()'s check fills it, then trades it with its slot's
  std::atomic<int> posting_{0};  // posts waiting for mu_ (lockForPost)

  std::atomic<bool> stop_{false};
  std::thread progress_;  // last: joined first
};

}  // namespace

Result<std::unique_ptr<Transport>> makeCudaIpcTransport(const config::TransportConfig& config) {
  auto transport = std::make_unique<CudaIpcTransport>(config);
  const Status started = transport->init();
  if (!started.isOk()) {
    return started.code() == StatusCode::kInternal
               ? unavailable("cuda_ipc needs a CUDA device: " + started.message())
               : started;
  }
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace kvferry::rdma
