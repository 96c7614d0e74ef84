#include "rdma/fault/fault_transport.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace kvferry::rdma {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kScratchBytes = 4096;  // the bytes a corrupted batch writes from
constexpr uint64_t kCorruptBytes = 16;  // overwritten in one op of a corrupted batch
constexpr auto kRetryPause = std::chrono::milliseconds(1);  // a delayed batch met a full queue

// A batch held back by a delay.
struct Held {
  PeerId peer = 0;
  std::vector<TransferOp> ops;
  std::optional<uint32_t> imm;
  uint64_t cookie = 0;
  bool is_read = false;
  Clock::time_point give_up;  // still refused as RESOURCE_EXHAUSTED by then: it fails
};

class FaultInjectingTransport final : public Transport {
 public:
  FaultInjectingTransport(std::unique_ptr<Transport> inner, const config::TransportConfig& config)
      : inner_(std::move(inner)),
        faults_(config.faults),
        op_timeout_(config.op_timeout_ms),
        queue_depth_(inner_->capabilities().queue_depth),
        rng_(config.faults.seed) {}

  Status init() {
    const Capabilities caps = inner_->capabilities();
    if (faults_.corrupt_rate > 0) {
      if (!caps.host_memory) {
        return invalidArgument("transport.faults.corrupt_rate needs a transport that sends from " +
                               std::string("host memory; '") + std::string(inner_->name()) +
                               "' does not");
      }
      scratch_.resize(kScratchBytes);
      for (uint8_t& b : scratch_) b = static_cast<uint8_t>(rng_());
      ASSIGN_OR_RETURN(scratch_region_, inner_->registerRegion(scratch_.data(), scratch_.size(),
                                                               MemoryKind::host()));
    }
    if (faults_.delay_ms > 0 || faults_.delay_jitter_ms > 0) {
      sender_ = std::thread([this] { sendHeld(); });
    }
    spdlog::warn(
        "transport faults ON ({}): delay {} ms + 0..{} ms, drop {}, corrupt {}, connect fail {}, "
        "cut every {} batches, seed {}",
        inner_->name(), faults_.delay_ms, faults_.delay_jitter_ms, faults_.drop_rate,
        faults_.corrupt_rate, faults_.connect_fail_rate, faults_.cut_every_batches, faults_.seed);
    return Status::ok();
  }

  ~FaultInjectingTransport() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    held_cv_.notify_all();
    if (sender_.joinable()) sender_.join();
    spdlog::info(
        "transport faults: delayed {}, dropped {}, corrupted {}, connects failed {}, cuts {}",
        counts_.delayed, counts_.dropped, counts_.corrupted, counts_.connects_failed, counts_.cuts);
    // inner_ goes last: the held batches it never saw are dropped with it, as the interface says.
  }

  FaultCounts counts() const {
    std::lock_guard lock(mu_);
    return counts_;
  }

  std::string_view name() const override { return inner_->name(); }
  Capabilities capabilities() const override { return inner_->capabilities(); }
  Result<RegionId> registerRegion(void* base, size_t bytes, MemoryKind kind) override {
    return inner_->registerRegion(base, bytes, kind);
  }
  Status deregisterRegion(RegionId region) override { return inner_->deregisterRegion(region); }
  Result<EndpointBlob> localBlob() const override { return inner_->localBlob(); }

  Result<PeerId> connect(const EndpointBlob& peer_blob) override {
    if (roll(faults_.connect_fail_rate)) {
      std::lock_guard lock(mu_);
      ++counts_.connects_failed;
      return unavailable("connect failed (injected fault: transport.faults.connect_fail_rate)");
    }
    return inner_->connect(peer_blob);
  }

  Status disconnect(PeerId peer) override {
    bool was_cut = false;
    {
      std::lock_guard lock(mu_);
      was_cut = cut_peers_.erase(peer) > 0;
      batches_to_.erase(peer);
    }
    Status s = inner_->disconnect(peer);
    return was_cut ? Status::ok() : s;  // the cut already closed it
  }

  Status postWrite(PeerId peer, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
                   uint64_t cookie) override {
    return post(peer, ops, imm, cookie, /*is_read=*/false);
  }
  Status postRead(PeerId peer, std::span<const TransferOp> ops, uint64_t cookie) override {
    return post(peer, ops, std::nullopt, cookie, /*is_read=*/true);
  }

  size_t pollCompletions(std::span<Completion> out, std::chrono::microseconds wait) override {
    const Clock::time_point deadline = Clock::now() + wait;
    while (true) {
      size_t n = takeMade(out);
      if (n < out.size()) n += fromInner(out.subspan(n), std::chrono::microseconds(0));
      if (n > 0) return n;
      const Clock::time_point now = Clock::now();
      if (now >= deadline) return 0;
      // Wait on the backend, but not past the next made-up completion (a lost batch's timeout).
      Clock::time_point until = deadline;
      {
        std::lock_guard lock(mu_);
        if (!made_.empty()) until = std::min(until, made_.begin()->first);
      }
      auto slice = std::chrono::duration_cast<std::chrono::microseconds>(until - now);
      n = fromInner(out, std::max(slice, std::chrono::microseconds(1)));
      if (n > 0) return n;
    }
  }

  size_t pollImmediates(std::span<ImmediateEvent> out, std::chrono::microseconds wait) override {
    return inner_->pollImmediates(out, wait);
  }

 private:
  bool roll(double rate) {
    std::lock_guard lock(mu_);
    return rollLocked(rate);
  }
  // With probability `rate`; draws from the RNG only when rate > 0 (so a seed replays). mu_ held.
  bool rollLocked(double rate) {
    return rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < rate;
  }

  Status post(PeerId peer, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
              uint64_t cookie, bool is_read) {
    std::vector<TransferOp> sent(ops.begin(), ops.end());
    bool cut = false;
    {
      std::lock_guard lock(mu_);
      if (cut_peers_.contains(peer)) {
        return unavailable("connection to the peer was cut (injected fault); disconnect it");
      }
      if (outstanding_ >= queue_depth_) {
        return resourceExhausted(std::to_string(queue_depth_) + " batches outstanding");
      }
      if (rollLocked(faults_.drop_rate)) {
        ++outstanding_;
        ++counts_.dropped;
        made_.emplace(Clock::now() + op_timeout_,
                      Completion{cookie, deadlineExceeded("batch lost (injected fault: "
                                                          "transport.faults.drop_rate)")});
        return Status::ok();
      }
      if (!is_read && rollLocked(faults_.corrupt_rate) && !sent.empty() &&
          sent.size() < inner_->capabilities().max_batch_ops) {
        const TransferOp& victim = sent[rng_() % sent.size()];
        if (victim.length > 0) {
          sent.push_back(corruption(victim));
          ++counts_.corrupted;
        }
      }
      if (faults_.cut_every_batches > 0 && ++batches_to_[peer] % faults_.cut_every_batches == 0) {
        cut = true;
      }
      // The slot (and a cut's remapping) is taken before the backend sees the batch: its
      // completion may be polled on another thread before post() returns.
      ++outstanding_;
      if (cut) {
        cut_cookies_.insert(cookie);
      } else if (sender_.joinable()) {
        auto delay = std::chrono::milliseconds(faults_.delay_ms);
        if (faults_.delay_jitter_ms > 0) {
          delay += std::chrono::milliseconds(rng_() % (faults_.delay_jitter_ms + 1));
        }
        ++counts_.delayed;
        const Clock::time_point due = Clock::now() + delay;
        held_.emplace(due, Held{peer, std::move(sent), imm, cookie, is_read, due + op_timeout_});
        held_cv_.notify_one();
        return Status::ok();
      }
    }
    Status s = forward(peer, sent, imm, cookie, is_read);
    std::lock_guard lock(mu_);
    if (!s.isOk()) {
      --outstanding_;
      cut_cookies_.erase(cookie);
      return s;
    }
    if (cut) {
      // Handed to the backend, then its connections closed under it: what lands is what the
      // socket took; the batch ends CANCELLED there, UNAVAILABLE here (a peer lost mid-batch).
      ++counts_.cuts;
      cut_peers_.insert(peer);
      inner_->disconnect(peer).ignoreError();
    }
    return Status::ok();
  }

  TransferOp corruption(const TransferOp& victim) {
    const uint64_t n = std::min(kCorruptBytes, victim.length);
    TransferOp op;
    op.local_region = scratch_region_;
    op.local_offset = rng_() % (kScratchBytes - kCorruptBytes);
    op.remote_region = victim.remote_region;
    op.remote_offset = victim.remote_offset + rng_() % (victim.length - n + 1);
    op.length = n;
    return op;
  }

  Status forward(PeerId peer, std::span<const TransferOp> ops, std::optional<uint32_t> imm,
                 uint64_t cookie, bool is_read) {
    return is_read ? inner_->postRead(peer, ops, cookie)
                   : inner_->postWrite(peer, ops, imm, cookie);
  }

  // The delay thread: sends each held batch when it is due.
  void sendHeld() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      if (held_.empty()) {
        held_cv_.wait(lock);
        continue;
      }
      auto first = held_.begin();
      if (Clock::now() < first->first) {
        held_cv_.wait_until(lock, first->first);
        continue;
      }
      Held h = std::move(first->second);
      held_.erase(first);
      lock.unlock();
      Status s = forward(h.peer, h.ops, h.imm, h.cookie, h.is_read);
      lock.lock();
      if (s.code() == StatusCode::kResourceExhausted && Clock::now() < h.give_up) {
        const Clock::time_point again = Clock::now() + kRetryPause;
        held_.emplace(again, std::move(h));
      } else if (!s.isOk()) {
        made_.emplace(Clock::now(), Completion{h.cookie, s.withContext("delayed batch")});
      }
    }
  }

  // Made-up completions that are due.
  size_t takeMade(std::span<Completion> out) {
    std::lock_guard lock(mu_);
    size_t n = 0;
    const Clock::time_point now = Clock::now();
    while (n < out.size() && !made_.empty() && made_.begin()->first <= now) {
      out[n++] = std::move(made_.begin()->second);
      made_.erase(made_.begin());
    }
    outstanding_ -= n;
    return n;
  }

  size_t fromInner(std::span<Completion> out, std::chrono::microseconds wait) {
    const size_t n = inner_->pollCompletions(out, wait);
    if (n == 0) return 0;
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < n; ++i) {
      // Even one whose ack beat the cut: the caller saw its connection die under the batch.
      if (cut_cookies_.erase(out[i].cookie) > 0) {
        out[i].status = unavailable(
            "connection cut mid-batch (injected fault: "
            "transport.faults.cut_every_batches)");
      }
    }
    outstanding_ -= n;
    return n;
  }

  std::unique_ptr<Transport> inner_;
  const config::TransportFaults faults_;
  const std::chrono::milliseconds op_timeout_;
  const uint32_t queue_depth_;
  std::vector<uint8_t> scratch_;
  RegionId scratch_region_ = 0;

  mutable std::mutex mu_;
  std::mt19937_64 rng_;
  FaultCounts counts_;
  uint32_t outstanding_ = 0;
  std::multimap<Clock::time_point, Held> held_;
  std::multimap<Clock::time_point, Completion> made_;
  std::map<PeerId, uint64_t> batches_to_;
  std::set<PeerId> cut_peers_;
  std::set<uint64_t> cut_cookies_;
  std::condition_variable held_cv_;
  bool stopping_ = false;
  std::thread sender_;
};

}  // namespace

Result<std::unique_ptr<Transport>> wrapWithFaults(std::unique_ptr<Transport> inner,
                                                  const config::TransportConfig& config) {
  auto wrapped = std::make_unique<FaultInjectingTransport>(std::move(inner), config);
  RETURN_IF_ERROR(wrapped->init());
  return std::unique_ptr<Transport>(std::move(wrapped));
}

FaultCounts faultCounts(const Transport& transport) {
  const auto* wrapped = dynamic_cast<const FaultInjectingTransport*>(&transport);
  return wrapped != nullptr ? wrapped->counts() : FaultCounts{};
}

}  // namespace kvferry::rdma
