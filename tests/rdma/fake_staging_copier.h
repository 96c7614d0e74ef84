// A StagingCopier over host memory: "device" regions are ordinary memory flagged CUDA, copies
// are memcpy. It runs the tcp backend's staging logic (rings, chunking, pipelining, completion
// points) on machines without a GPU. `hold()` keeps completions back until `releaseHeld()`, so a
// test can see a full ring.
#pragma once

#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "rdma/tcp/staging_copier.h"

namespace kvferry::rdma {

class FakeStagingCopier final : public tcp_backend::StagingCopier {
 public:
  explicit FakeStagingCopier(size_t arena_bytes) : arena_(arena_bytes) {}

  std::span<uint8_t> arena() override { return arena_; }

  Status copy(std::span<const tcp_backend::CopyPiece> pieces, tcp_backend::CopyDirection,
              tcp_backend::CopyDone& done) override {
    for (const tcp_backend::CopyPiece& p : pieces) std::memcpy(p.dst, p.src, p.bytes);
    std::lock_guard lock(mu_);
    ++batches_;
    pieces_ += pieces.size();
    if (holding_) {
      held_.push_back(&done);
      return Status::ok();
    }
    done.copied();
    return Status::ok();
  }

  void hold() {
    std::lock_guard lock(mu_);
    holding_ = true;
  }
  // Tells every held completion, and stops holding.
  void releaseHeld() {
    std::vector<tcp_backend::CopyDone*> held;
    {
      std::lock_guard lock(mu_);
      holding_ = false;
      held.swap(held_);
    }
    for (tcp_backend::CopyDone* done : held) done->copied();
  }
  size_t batches() const {
    std::lock_guard lock(mu_);
    return batches_;
  }
  size_t pieces() const {
    std::lock_guard lock(mu_);
    return pieces_;
  }

 private:
  std::vector<uint8_t> arena_;
  mutable std::mutex mu_;
  bool holding_ = false;
  std::vector<tcp_backend::CopyDone*> held_;
  size_t batches_ = 0;
  size_t pieces_ = 0;
};

// The factory the transports of the fake-GPU tests are made with.
inline tcp_backend::CopierFactory fakeCopierFactory() {
  return [](int, size_t arena_bytes) -> Result<std::unique_ptr<tcp_backend::StagingCopier>> {
    return std::unique_ptr<tcp_backend::StagingCopier>(
        std::make_unique<FakeStagingCopier>(arena_bytes));
  };
}

}  // namespace kvferry::rdma
