#include "rdma/tcp/staging_ring.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace kvferry::rdma::tcp_backend {
namespace {

// Appends a copy, merged into the last one when both sides continue it.
void appendPiece(std::vector<CopyPiece>& pieces, void* dst, const void* src, size_t bytes) {
  if (!pieces.empty()) {
    CopyPiece& last = pieces.back();
    if (static_cast<uint8_t*>(last.dst) + last.bytes == dst &&
        static_cast<const uint8_t*>(last.src) + last.bytes == src) {
      last.bytes += bytes;
      return;
    }
  }
  pieces.push_back(CopyPiece{dst, src, bytes});
}

}  // namespace

StagingRing::StagingRing(StagingCopier& copier, std::span<uint8_t> memory, size_t chunk_bytes,
                         CopyDirection direction, PostFn post)
    : copier_(copier), chunk_bytes_(chunk_bytes), direction_(direction), post_(std::move(post)) {
  const size_t count = chunk_bytes == 0 ? 0 : memory.size() / chunk_bytes;
  for (size_t i = 0; i < count; ++i) {
    auto chunk = std::make_unique<Chunk>();
    chunk->ring = this;
    chunk->index = static_cast<uint32_t>(i);
    chunk->data = memory.data() + i * chunk_bytes;
    chunks_.push_back(std::move(chunk));
  }
  // Handed out lowest index first (the back of the list).
  for (size_t i = count; i > 0; --i) free_.push_back(static_cast<uint32_t>(i - 1));
}

std::optional<uint32_t> StagingRing::acquire(std::function<void()> wake) {
  if (free_.empty()) {
    waiters_.push_back(std::move(wake));
    return std::nullopt;
  }
  const uint32_t chunk = free_.back();
  free_.pop_back();
  return chunk;
}

void StagingRing::release(uint32_t chunk) {
  free_.push_back(chunk);
  // Every waiter tries again: one that finds its connection closed must not swallow the wake-up
  // another one needed. Those that lose the race wait again.
  std::vector<std::function<void()>> waiters;
  waiters.swap(waiters_);
  for (auto& wake : waiters) post_(std::move(wake));
}

Status StagingRing::copy(uint32_t chunk, std::span<const CopyPiece> pieces,
                         std::function<void(uint32_t)> copied) {
  Chunk& c = *chunks_[chunk];
  c.on_copied = std::move(copied);
  Status status = copier_.copy(pieces, direction_, c);
  if (!status.isOk()) c.on_copied = nullptr;
  return status;
}

void StagingRing::Chunk::copied() {
  StagingRing* r = ring;
  const uint32_t i = index;
  r->post_([r, i] { r->onCopied(i); });
}

void StagingRing::onCopied(uint32_t chunk) {
  std::function<void(uint32_t)> copied = std::move(chunks_[chunk]->on_copied);
  chunks_[chunk]->on_copied = nullptr;
  if (copied) copied(chunk);
}

size_t packChunk(std::span<const Segment> segments, StreamCursor& cursor, std::span<uint8_t> chunk,
                 std::vector<CopyPiece>& pieces) {
  pieces.clear();
  size_t filled = 0;
  while (filled < chunk.size() && !cursor.atEnd(segments)) {
    const Segment& s = segments[cursor.segment];
    const size_t take = std::min(s.bytes - cursor.offset, chunk.size() - filled);
    const uint8_t* src = s.data + cursor.offset;
    if (s.device) {
      appendPiece(pieces, chunk.data() + filled, src, take);
    } else {
      std::memcpy(chunk.data() + filled, src, take);
    }
    filled += take;
    cursor.offset += take;
    if (cursor.offset == s.bytes) {
      ++cursor.segment;
      cursor.offset = 0;
    }
  }
  return filled;
}

std::span<uint8_t> RxStager::space(std::function<void()> wake) {
  if (!chunk_) {
    chunk_ = ring_.acquire(std::move(wake));
    if (!chunk_) return {};
    fill_ = 0;
    pieces_.clear();
  }
  return {ring_.data(*chunk_) + fill_, ring_.chunkBytes() - fill_};
}

bool RxStager::commit(uint8_t* dst, size_t bytes) {
  appendPiece(pieces_, dst, ring_.data(*chunk_) + fill_, bytes);
  fill_ += bytes;
  return fill_ == ring_.chunkBytes();
}

Status RxStager::flush(std::function<void(uint32_t)> copied) {
  if (!chunk_) return Status::ok();
  const uint32_t chunk = *chunk_;
  chunk_.reset();
  if (pieces_.empty()) {
    ring_.release(chunk);
    return Status::ok();
  }
  Status status = ring_.copy(chunk, pieces_, std::move(copied));
  if (!status.isOk()) {
    ring_.release(chunk);
    return status;
  }
  ++in_flight_;
  return Status::ok();
}

void RxStager::onCopied(uint32_t chunk) {
  --in_flight_;
  ring_.release(chunk);
}

void RxStager::abandon() {
  if (chunk_) ring_.release(*chunk_);
  chunk_.reset();
}

}  // namespace kvferry::rdma::tcp_backend
