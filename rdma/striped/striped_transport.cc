#include "rdma/striped/striped_transport.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "rdma/batch_check.h"
#include "rdma/endpoint_blob.h"
#include "rdma/event_queue.h"
#include "rdma/region_table.h"
#include "rdma/transport_base.h"

namespace kvferry::rdma {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kBackendName = "striped";
constexpr uint64_t kSealBytes = 4096;       // held back to carry a batch's immediate
constexpr uint64_t kMinSliceBytes = 16384;  // a rail's share below this goes to the others
constexpr auto kPollWait = std::chrono::milliseconds(20);  // how long a poller blocks on a rail
constexpr size_t kPollBatch = 64;
constexpr uint32_t kAnyRail = UINT32_MAX;  // postSlice: the usable rail that finishes first

bool isLinkFailure(const Status& s) {
  switch (s.code()) {
    case StatusCode::kUnavailable:
    case StatusCode::kDeadlineExceeded:
    case StatusCode::kCancelled:
      return true;
    default:
      return false;
  }
}

// Little-endian fields of the striped blob's address bytes.
void putU32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  Result<uint32_t> u32(std::string_view what) {
    if (bytes_.size() - at_ < 4)
      return invalidArgument("striped blob: truncated at " + std::string(what));
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{bytes_[at_ + i]} << (8 * i);
    at_ += 4;
    return v;
  }
  Result<std::span<const uint8_t>> take(uint32_t n, std::string_view what) {
    if (bytes_.size() - at_ < n)
      return invalidArgument("striped blob: truncated in " + std::string(what));
    auto out = bytes_.subspan(at_, n);
    at_ += n;
    return out;
  }
  bool done() const { return at_ == bytes_.size(); }

 private:
  std::span<const uint8_t> bytes_;
  size_t at_ = 0;
};

class StripedTransport final : public TransportBase {
 public:
  StripedTransport(std::vector<std::unique_ptr<Transport>> rails,
                   const config::TransportConfig& config)
      : TransportBase(config), cooldown_(config.rail_cooldown_ms) {
    for (auto& transport : rails) {
      rails_.push_back(std::make_unique<Rail>());
      rails_.back()->transport = std::move(transport);
    }
  }

  void start() {
    for (size_t r = 0; r < rails_.size(); ++r) {
      rails_[r]->completion_poller = std::thread([this, r] { pollRail(r); });
      rails_[r]->immediate_poller = std::thread([this, r] { pollRailImmediates(r); });
    }
    repairer_ = std::thread([this] { repairLoop(); });
  }

  ~StripedTransport() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    repair_cv_.notify_all();
    if (repairer_.joinable()) repairer_.join();
    for (auto& rail : rails_) {
      if (rail->completion_poller.joinable()) rail->completion_poller.join();
      if (rail->immediate_poller.joinable()) rail->immediate_poller.join();
    }
    std::string summary;
    for (size_t r = 0; r < rails_.size(); ++r) {
      const RailStats& s = rails_[r]->stats;
      summary += fmt::format("{}rail {}: {} slices, {} bytes, {} failed", r ? "; " : "", r,
                             s.slices, s.bytes, s.failures);
    }
    spdlog::info("striped transport: {}", summary);
    // The rails go with rails_: their pending batches are dropped, as the interface says.
  }

  std::vector<RailStats> stats() const {
    std::lock_guard lock(mu_);
    std::vector<RailStats> out;
    for (const auto& rail : rails_) {
      RailStats s = rail->stats;
      s.bytes_per_s = rail->rate(Clock::now());
      out.push_back(s);
    }
    return out;
  }

  std::string_view name() const override { return rails_.front()->transport->name(); }

  Capabilities capabilities() const override {
    Capabilities caps = rails_.front()->transport->capabilities();
    for (const auto& rail : rails_) {
      const Capabilities c = rail->transport->capabilities();
      caps.host_memory = caps.host_memory && c.host_memory;
      caps.cuda_memory = caps.cuda_memory && c.cuda_memory;
      caps.dmabuf = caps.dmabuf && c.dmabuf;
      caps.reads = caps.reads && c.reads;
      caps.immediates = caps.immediates && c.immediates;
      caps.survives_remote_refusal = caps.survives_remote_refusal && c.survives_remote_refusal;
      caps.target_checks = caps.target_checks && c.target_checks;
    }
    caps.max_batch_ops = config_.max_batch_ops;
    caps.queue_depth = config_.queue_depth;
    return caps;
  }

  Result<RegionId> registerRegion(void* base, size_t bytes, MemoryKind kind) override {
    std::lock_guard reg(registration_mu_);
    ASSIGN_OR_RETURN(const RegionId id, regions_.add(base, bytes, kind));
    std::vector<RegionId> ids;
    for (auto& rail : rails_) {
      Result<RegionId> rail_id = rail->transport->registerRegion(base, bytes, kind);
      if (!rail_id.isOk()) {
        for (size_t r = 0; r < ids.size(); ++r)
          rails_[r]->transport->deregisterRegion(ids[r]).ignoreError();
        regions_.remove(id, std::chrono::milliseconds(0)).ignoreError();
        return rail_id.status().withContext("rail " + std::to_string(ids.size()));
      }
      ids.push_back(*rail_id);
    }
    std::lock_guard lock(mu_);
    local_ids_[id] = std::move(ids);
    return id;
  }

  Status deregisterRegion(RegionId region) override {
    std::lock_guard reg(registration_mu_);
    RETURN_IF_ERROR(regions_.remove(region, std::chrono::milliseconds(config_.op_timeout_ms)));
    std::vector<RegionId> ids;
    {
      std::lock_guard lock(mu_);
      auto it = local_ids_.find(region);
      if (it != local_ids_.end()) {
        ids = std::move(it->second);
        local_ids_.erase(it);
      }
    }
    Status result;
    for (size_t r = 0; r < ids.size(); ++r) {
      Status s = rails_[r]->transport->deregisterRegion(ids[r]);
      if (result.isOk() && !s.isOk()) result = s.withContext("rail " + std::to_string(r));
    }
    return result;
  }

  // The rails' blobs, and which of each rail's region ids every striped region is.
  Result<EndpointBlob> localBlob() const override {
    std::lock_guard reg(registration_mu_);
    EndpointInfo info;
    info.backend = std::string(kBackendName);
    info.endpoint_id = endpoint_id_;
    info.regions = regions_.describe();
    putU32(info.address, static_cast<uint32_t>(rails_.size()));
    for (const auto& rail : rails_) {
      ASSIGN_OR_RETURN(EndpointBlob blob, rail->transport->localBlob());
      putU32(info.address, static_cast<uint32_t>(blob.size()));
      info.address.insert(info.address.end(), blob.begin(), blob.end());
    }
    std::lock_guard lock(mu_);
    for (const RemoteRegion& region : info.regions) {
      const std::vector<RegionId>& ids = local_ids_.at(region.id);
      for (RegionId id : ids) putU32(info.address, id);
    }
    return encodeEndpoint(info);
  }

  Result<PeerId> connect(const EndpointBlob& peer_blob) override {
    ASSIGN_OR_RETURN(EndpointInfo info, decodeEndpoint(peer_blob));
    auto peer = std::make_unique<Peer>();
    std::vector<EndpointBlob> blobs;
    if (info.backend != kBackendName) {
      // A peer with one NIC: rail 0 reaches it, with its own region ids.
      blobs.push_back(peer_blob);
      for (const RemoteRegion& region : info.regions) peer->remote_ids[region.id] = {region.id};
    } else {
      Reader reader(info.address);
      ASSIGN_OR_RETURN(const uint32_t count, reader.u32("rail count"));
      if (count == 0 || count > 64) {
        return invalidArgument("striped blob: " + std::to_string(count) + " rails");
      }
      for (uint32_t r = 0; r < count; ++r) {
        ASSIGN_OR_RETURN(const uint32_t size, reader.u32("rail blob size"));
        ASSIGN_OR_RETURN(std::span<const uint8_t> bytes, reader.take(size, "rail blob"));
        blobs.emplace_back(bytes.begin(), bytes.end());
      }
      for (const RemoteRegion& region : info.regions) {
        std::vector<RegionId>& ids = peer->remote_ids[region.id];
        for (uint32_t r = 0; r < count; ++r) {
          ASSIGN_OR_RETURN(const uint32_t id, reader.u32("region ids"));
          ids.push_back(id);
        }
      }
      if (!reader.done()) return invalidArgument("striped blob: trailing bytes");
    }
    const size_t usable = std::min(blobs.size(), rails_.size());
    if (blobs.size() != rails_.size()) {
      spdlog::warn("striped transport: the peer has {} rails, this endpoint {}: using {}",
                   blobs.size(), rails_.size(), usable);
    }
    Status first_error;
    for (size_t r = 0; r < usable; ++r) {
      PeerRail rail;
      rail.blob = std::move(blobs[r]);
      Result<PeerId> id = rails_[r]->transport->connect(rail.blob);
      if (id.isOk()) {
        rail.id = *id;
        rail.connected = true;
        rail.up = true;
      } else {
        if (first_error.isOk()) first_error = id.status().withContext("rail " + std::to_string(r));
        spdlog::warn("striped transport: rail {} cannot reach the peer ({}); trying again in {} ms",
                     r, id.status().message(), cooldown_.count());
        rail.down_until = Clock::now() + cooldown_;
      }
      peer->rails.push_back(std::move(rail));
    }
    const bool any_up =
        std::any_of(peer->rails.begin(), peer->rails.end(), [](const PeerRail& r) { return r.up; });
    if (!any_up) return first_error;
    peer->info = std::move(info);
    std::lock_guard lock(mu_);
    const PeerId id = next_peer_++;
    peers_.emplace(id, std::move(peer));
    repair_cv_.notify_all();
    return id;
  }

  Status disconnect(PeerId peer_id) override {
    std::unique_ptr<Peer> peer;
    {
      std::lock_guard lock(mu_);
      auto it = peers_.find(peer_id);
      if (it == peers_.end())
        return notFound("peer " + std::to_string(peer_id) + " is not connected");
      peer = std::move(it->second);
      peers_.erase(it);
    }
    // Their pending slices complete CANCELLED; with the peer gone none is posted again.
    for (size_t r = 0; r < peer->rails.size(); ++r) {
      const PeerRail& rail = peer->rails[r];
      if (rail.connected && !rail.repairing)
        rails_[r]->transport->disconnect(rail.id).ignoreError();
    }
    return Status::ok();
  }

 private:
  struct Rail {
    std::unique_ptr<Transport> transport;
    std::thread completion_poller;
    std::thread immediate_poller;
    RailStats stats;
    // Throughput: bytes completed over the time the rail had slices in flight, halved together
    // now and then so the estimate follows the link.
    uint64_t queued_bytes = 0;
    uint32_t in_flight = 0;
    Clock::time_point busy_since;
    double busy_s = 0;
    double done_bytes = 0;

    double rate(Clock::time_point now) const {
      double busy = busy_s;
      if (in_flight > 0) busy += std::chrono::duration<double>(now - busy_since).count();
      return busy > 1e-4 ? done_bytes / busy : 0;
    }
  };
  struct PeerRail {
    EndpointBlob blob;
    PeerId id = 0;
    bool connected = false;  // `id` is a connection of the rail's (up, or failed and not closed)
    bool up = false;
    bool repairing = false;
    Clock::time_point down_until;
  };
  struct Peer {
    EndpointInfo info;  // the striped region table: what batches are checked against
    std::unordered_map<RegionId, std::vector<RegionId>> remote_ids;  // striped id → per rail
    std::vector<PeerRail> rails;
  };
  struct Slice {
    std::vector<TransferOp> ops;  // striped region ids
    uint64_t bytes = 0;
    uint32_t rail = 0;
    PeerId rail_peer = 0;
    bool done = false;
  };
  struct Batch {
    uint64_t cookie = 0;
    PeerId peer = 0;
    bool is_read = false;
    std::optional<uint32_t> imm;
    std::vector<Slice> slices;  // the data, then the seal when there is an immediate
    bool sealed = false;        // the last slice is the seal (posted once the others are done)
    uint32_t pending = 0;       // slices posted and not yet completed
    Status error;
    BatchPins pins;  // the local regions stay registered until the batch completes
  };
  struct SliceRef {
    uint64_t batch = 0;
    uint32_t slice = 0;
  };

  Status post(PeerId peer_id, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
              uint64_t cookie, bool is_read) override {
    const std::string_view what = is_read ? "read" : "write";
    std::lock_guard lock(mu_);
    auto peer_it = peers_.find(peer_id);
    if (peer_it == peers_.end()) {
      return unavailable("peer " + std::to_string(peer_id) + " is not connected");
    }
    Peer& peer = *peer_it->second;
    Batch batch;
    RETURN_IF_ERROR(checkBatch(ops, config_.max_batch_ops, regions_, peer.info, what, batch.pins));
    std::vector<uint32_t> usable = usableRails(peer);
    if (usable.empty()) {
      return unavailable("no rail reaches peer " + std::to_string(peer_id) +
                         " (every one failed; they are retried after their cooldown)");
    }
    if (!completions_.tryAcquire()) {
      return resourceExhausted(std::to_string(config_.queue_depth) + " batches outstanding");
    }
    batch.cookie = cookie;
    batch.peer = peer_id;
    batch.is_read = is_read;
    batch.imm = imm;
    std::vector<TransferOp> data(ops.begin(), ops.end());
    uint64_t total = 0;
    for (const TransferOp& op : data) total += op.length;
    if (total < config_.stripe_min_bytes || usable.size() == 1) {
      // Whole, on one rail, its immediate with it: the rail orders a batch's immediate after its
      // bytes, so no seal (and no round trip) is needed.
      Slice whole;
      whole.ops = std::move(data);
      whole.bytes = total;
      whole.rail = bestRail(usable, total);
      batch.slices.push_back(std::move(whole));
      batch.sealed = imm.has_value();
      return launch(std::move(batch));
    }
    std::optional<TransferOp> seal;
    if (imm) {
      TransferOp& last = data.back();
      if (last.length > kSealBytes) {
        seal = last;
        seal->local_offset += last.length - kSealBytes;
        seal->remote_offset += last.length - kSealBytes;
        seal->length = kSealBytes;
        last.length -= kSealBytes;
      } else {
        seal = last;
        data.pop_back();
      }
    }
    total = 0;
    for (const TransferOp& op : data) total += op.length;
    if (total > 0) {
      std::vector<uint64_t> shares;
      std::vector<uint32_t> chosen;
      sharesOver(usable, total, chosen, shares);
      std::vector<std::vector<TransferOp>> pieces = sliceOps(data, shares);
      for (size_t i = 0; i < pieces.size(); ++i) {
        Slice slice;
        slice.ops = std::move(pieces[i]);
        slice.bytes = shares[i];
        slice.rail = chosen[i];
        batch.slices.push_back(std::move(slice));
      }
    }
    if (seal) {
      Slice slice;
      slice.ops = {*seal};
      slice.bytes = seal->length;
      slice.rail = bestRail(usable, slice.bytes);
      batch.slices.push_back(std::move(slice));
      batch.sealed = true;
    }
    return launch(std::move(batch));
  }

  // Posts a new batch's data slices, or its seal when it has nothing else; the seal of one with
  // data goes once they complete (settleIfDone). mu_ held.
  Status launch(Batch batch) {
    const uint64_t id = next_batch_++;
    Batch& b = batches_.emplace(id, std::move(batch)).first->second;
    const size_t data_slices = b.slices.size() - (b.sealed ? 1 : 0);
    for (uint32_t i = 0; i < data_slices; ++i) postSlice(id, b, i, b.slices[i].rail);
    if (data_slices == 0) postSlice(id, b, 0, b.slices[0].rail);
    settleIfDone(id);
    return Status::ok();
  }

  // The peer's rails that are connected and not in cooldown. mu_ held.
  std::vector<uint32_t> usableRails(const Peer& peer) const {
    std::vector<uint32_t> out;
    for (uint32_t r = 0; r < peer.rails.size(); ++r) {
      if (peer.rails[r].up) out.push_back(r);
    }
    return out;
  }

  // A throughput for every rail in `rails`: its estimate, or the mean of the others' (1 when no
  // rail has one yet, so that all share equally). mu_ held.
  std::vector<double> ratesOf(std::span<const uint32_t> rails) const {
    const Clock::time_point now = Clock::now();
    std::vector<double> rates;
    double known = 0;
    int known_count = 0;
    for (uint32_t r : rails) {
      rates.push_back(rails_[r]->rate(now));
      if (rates.back() > 0) {
        known += rates.back();
        ++known_count;
      }
    }
    const double fallback = known_count > 0 ? known / known_count : 1.0;
    for (double& rate : rates) {
      if (rate <= 0) rate = fallback;
    }
    return rates;
  }

  // The rail expected to finish `bytes` first: its queued bytes plus these, over its rate.
  uint32_t bestRail(std::span<const uint32_t> rails, uint64_t bytes) const {
    const std::vector<double> rates = ratesOf(rails);
    uint32_t best = rails[0];
    double best_time = 1e300;
    for (size_t i = 0; i < rails.size(); ++i) {
      const double t = double(rails_[rails[i]]->queued_bytes + bytes) / rates[i];
      if (t < best_time) {
        best_time = t;
        best = rails[i];
      }
    }
    return best;
  }

  // `total` bytes shared over `rails` in proportion to their rates; shares under kMinSliceBytes
  // go to the others. Fills `chosen` and `shares` (same length, the shares summing to total).
  void sharesOver(std::span<const uint32_t> rails, uint64_t total, std::vector<uint32_t>& chosen,
                  std::vector<uint64_t>& shares) const {
    std::vector<double> rates = ratesOf(rails);
    std::vector<uint32_t> kept(rails.begin(), rails.end());
    while (true) {
      double sum = 0;
      for (double rate : rates) sum += rate;
      size_t smallest = 0;
      for (size_t i = 1; i < rates.size(); ++i) {
        if (rates[i] < rates[smallest]) smallest = i;
      }
      if (kept.size() == 1 || double(total) * rates[smallest] / sum >= double(kMinSliceBytes)) {
        break;
      }
      kept.erase(kept.begin() + smallest);
      rates.erase(rates.begin() + smallest);
    }
    double sum = 0;
    for (double rate : rates) sum += rate;
    uint64_t given = 0;
    for (size_t i = 0; i < kept.size(); ++i) {
      const uint64_t share = i + 1 == kept.size()
                                 ? total - given
                                 : static_cast<uint64_t>(double(total) * rates[i] / sum);
      if (share == 0) continue;
      chosen.push_back(kept[i]);
      shares.push_back(share);
      given += share;
    }
  }

  // Posts slice `index` of batch `id` on `rail`, or (kAnyRail, or that one failing as a link
  // fails) on the usable rail expected to finish it first. Records the batch's error when no rail
  // takes it; `why` says what sent the slice looking for a rail. mu_ held.
  void postSlice(uint64_t id, Batch& b, uint32_t index, uint32_t rail,
                 Status why = unavailable("no rail reaches the peer")) {
    auto peer_it = peers_.find(b.peer);
    if (peer_it == peers_.end()) {
      if (b.error.isOk()) b.error = cancelled("the peer was disconnected");
      return;
    }
    Peer& peer = *peer_it->second;
    Slice& slice = b.slices[index];
    while (true) {
      if (rail == kAnyRail) {
        std::vector<uint32_t> usable = usableRails(peer);
        if (usable.empty()) {
          if (b.error.isOk()) b.error = why.withContext("no rail left");
          return;
        }
        rail = bestRail(usable, slice.bytes);
      }
      Status s = postOn(peer, b, slice, rail, id, index);
      if (s.isOk()) return;
      why = s.withContext("rail " + std::to_string(rail));
      if (!isLinkFailure(s)) {
        if (b.error.isOk()) b.error = why;
        return;
      }
      railFailed(peer, rail, peer.rails[rail].id, s);
      rail = kAnyRail;
    }
  }

  // Translates the slice's region ids for `rail` and posts it there. mu_ held.
  Status postOn(Peer& peer, Batch& b, Slice& slice, uint32_t rail, uint64_t id, uint32_t index) {
    std::vector<TransferOp>& ops = rail_ops_;
    ops.assign(slice.ops.begin(), slice.ops.end());
    for (TransferOp& op : ops) {
      op.local_region = local_ids_.at(op.local_region)[rail];
      op.remote_region = peer.remote_ids.at(op.remote_region)[rail];
    }
    const uint64_t cookie = next_slice_cookie_++;
    const bool is_seal = b.sealed && index + 1 == b.slices.size();
    Transport& transport = *rails_[rail]->transport;
    const PeerId rail_peer = peer.rails[rail].id;
    Status s = b.is_read
                   ? transport.postRead(rail_peer, ops, cookie)
                   : transport.postWrite(rail_peer, ops, is_seal ? b.imm : std::nullopt, cookie);
    if (!s.isOk()) return s;
    slice.rail = rail;
    slice.rail_peer = rail_peer;
    slice_refs_[cookie] = SliceRef{id, index};
    ++b.pending;
    Rail& r = *rails_[rail];
    if (r.in_flight++ == 0) r.busy_since = Clock::now();
    r.queued_bytes += slice.bytes;
    ++r.stats.slices;
    return Status::ok();
  }

  // A rail failed for a peer (on its connection `rail_peer`): it sits out its cooldown, then the
  // repairer connects it afresh. A completion from an older connection changes nothing. mu_ held.
  void railFailed(Peer& peer, uint32_t rail, PeerId rail_peer, const Status& why) {
    ++rails_[rail]->stats.failures;
    PeerRail& pr = peer.rails[rail];
    if (!pr.up || pr.id != rail_peer) return;
    pr.up = false;
    pr.down_until = Clock::now() + cooldown_;
    spdlog::warn(
        "striped transport: rail {} failed ({}); its slices go to the other rails, and it "
        "is tried again in {} ms",
        rail, why.message(), cooldown_.count());
    repair_cv_.notify_all();
  }

  void onSliceDone(uint32_t rail, const Completion& c) {
    std::lock_guard lock(mu_);
    auto ref_it = slice_refs_.find(c.cookie);
    if (ref_it == slice_refs_.end()) return;
    const SliceRef ref = ref_it->second;
    slice_refs_.erase(ref_it);
    Batch& b = batches_.at(ref.batch);
    Slice& slice = b.slices[ref.slice];
    --b.pending;
    Rail& r = *rails_[rail];
    const Clock::time_point now = Clock::now();
    r.queued_bytes -= slice.bytes;
    if (--r.in_flight == 0) {
      r.busy_s += std::chrono::duration<double>(now - r.busy_since).count();
    }
    if (c.status.isOk()) {
      slice.done = true;
      r.stats.bytes += slice.bytes;
      r.done_bytes += double(slice.bytes);
      if (r.busy_s > 1.0) {  // forget the past by halves
        r.busy_s /= 2;
        r.done_bytes /= 2;
      }
    } else if (isLinkFailure(c.status) && b.error.isOk() && peers_.contains(b.peer)) {
      railFailed(*peers_.at(b.peer), rail, slice.rail_peer, c.status);
      postSlice(ref.batch, b, ref.slice, kAnyRail,
                c.status.withContext("rail " + std::to_string(rail)));
    } else if (b.error.isOk()) {
      b.error = c.status;
    }
    settleIfDone(ref.batch);
  }

  // Once nothing of the batch is in flight: its seal goes out, or it completes. mu_ held.
  void settleIfDone(uint64_t id) {
    auto it = batches_.find(id);
    Batch& b = it->second;
    if (b.pending > 0) return;
    const uint32_t seal = static_cast<uint32_t>(b.slices.size() - 1);
    if (b.error.isOk() && b.sealed && !b.slices[seal].done) {
      postSlice(id, b, seal, kAnyRail);
      if (b.pending > 0) return;
    }
    completions_.push(Completion{b.cookie, b.error});
    batches_.erase(it);
  }

  void pollRail(uint32_t r) {
    std::vector<Completion> buffer(kPollBatch);
    while (!stopping_.load(std::memory_order_relaxed)) {
      const size_t n = rails_[r]->transport->pollCompletions(buffer, kPollWait);
      for (size_t i = 0; i < n; ++i) onSliceDone(r, buffer[i]);
    }
  }

  void pollRailImmediates(uint32_t r) {
    std::vector<ImmediateEvent> buffer(kPollBatch);
    while (!stopping_.load(std::memory_order_relaxed)) {
      const size_t n = rails_[r]->transport->pollImmediates(buffer, kPollWait);
      for (size_t i = 0; i < n; ++i) immediates_.push(buffer[i]);
    }
  }

  // Connects rails afresh whose cooldown is over.
  void repairLoop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      Clock::time_point next = Clock::time_point::max();
      PeerId due_peer = 0;
      uint32_t due_rail = 0;
      bool due = false;
      const Clock::time_point now = Clock::now();
      for (auto& [id, peer] : peers_) {
        for (uint32_t r = 0; r < peer->rails.size(); ++r) {
          PeerRail& pr = peer->rails[r];
          if (pr.up || pr.repairing) continue;
          if (pr.down_until <= now && !due) {
            due = true;
            due_peer = id;
            due_rail = r;
          }
          next = std::min(next, pr.down_until);
        }
      }
      if (!due) {
        if (next == Clock::time_point::max()) {
          repair_cv_.wait(lock);
        } else {
          repair_cv_.wait_until(lock, next);
        }
        continue;
      }
      PeerRail& pr = peers_.at(due_peer)->rails[due_rail];
      pr.repairing = true;
      const PeerId old = pr.id;
      const bool had_connection = pr.connected;
      pr.connected = false;
      const EndpointBlob blob = pr.blob;
      Transport& transport = *rails_[due_rail]->transport;
      lock.unlock();
      if (had_connection) transport.disconnect(old).ignoreError();
      Result<PeerId> fresh = transport.connect(blob);
      lock.lock();
      auto peer = peers_.find(due_peer);
      if (peer == peers_.end()) {  // disconnected meanwhile
        if (fresh.isOk()) transport.disconnect(*fresh).ignoreError();
        continue;
      }
      PeerRail& again = peer->second->rails[due_rail];
      again.repairing = false;
      if (fresh.isOk()) {
        again.id = *fresh;
        again.connected = true;
        again.up = true;
        spdlog::info("striped transport: rail {} reaches the peer again", due_rail);
      } else {
        again.down_until = Clock::now() + cooldown_;
      }
    }
  }

  const std::chrono::milliseconds cooldown_;
  std::vector<std::unique_ptr<Rail>> rails_;
  // Registrations and the blob (taken before mu_); regions_ holds the striped ids, what batches
  // are checked against.
  mutable std::mutex registration_mu_;

  mutable std::mutex mu_;
  std::unordered_map<RegionId, std::vector<RegionId>> local_ids_;  // striped id → per rail
  std::map<PeerId, std::unique_ptr<Peer>> peers_;
  PeerId next_peer_ = 1;
  std::unordered_map<uint64_t, Batch> batches_;
  uint64_t next_batch_ = 1;
  std::unordered_map<uint64_t, SliceRef> slice_refs_;  // by the cookie the rail was given
  uint64_t next_slice_cookie_ = 1;
  std::vector<TransferOp> rail_ops_;  // postOn's, reused
  std::condition_variable repair_cv_;
  std::atomic<bool> stopping_{false};
  std::thread repairer_;
};

}  // namespace

uint32_t railQueueDepth(uint32_t queue_depth, size_t rails) {
  return static_cast<uint32_t>(std::min<uint64_t>(uint64_t{queue_depth} * (rails + 1), 1u << 20));
}

std::vector<std::vector<TransferOp>> sliceOps(std::span<const TransferOp> ops,
                                              std::span<const uint64_t> shares) {
  std::vector<std::vector<TransferOp>> pieces(shares.size());
  size_t piece = 0;
  uint64_t room = shares.empty() ? 0 : shares[0];
  for (TransferOp op : ops) {
    while (op.length > 0 && piece < shares.size()) {
      if (room == 0) {
        room = ++piece < shares.size() ? shares[piece] : 0;
        continue;
      }
      TransferOp part = op;
      part.length = std::min(op.length, room);
      pieces[piece].push_back(part);
      op.local_offset += part.length;
      op.remote_offset += part.length;
      op.length -= part.length;
      room -= part.length;
    }
  }
  return pieces;
}

Result<std::unique_ptr<Transport>> makeStripedTransport(
    std::vector<std::unique_ptr<Transport>> rails, const config::TransportConfig& config) {
  if (rails.empty()) return invalidArgument("a striped transport needs at least one rail");
  const uint64_t depth = railQueueDepth(config.queue_depth, rails.size());
  for (size_t r = 0; r < rails.size(); ++r) {
    const Capabilities caps = rails[r]->capabilities();
    if (caps.queue_depth < depth || caps.max_batch_ops < config.max_batch_ops + 2) {
      return invalidArgument(
          "rail " + std::to_string(r) + " holds " + std::to_string(caps.queue_depth) +
          " batches of " + std::to_string(caps.max_batch_ops) + " ops; striping needs " +
          std::to_string(depth) + " of " + std::to_string(config.max_batch_ops + 2));
    }
  }
  auto striped = std::make_unique<StripedTransport>(std::move(rails), config);
  striped->start();
  return std::unique_ptr<Transport>(std::move(striped));
}

std::vector<RailStats> railStats(const Transport& transport) {
  const auto* striped = dynamic_cast<const StripedTransport*>(&transport);
  return striped != nullptr ? striped->stats() : std::vector<RailStats>{};
}

}  // namespace kvferry::rdma
