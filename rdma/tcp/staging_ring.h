// tcp from GPU memory: bytes of CUDA regions cross a bounded ring of pinned host chunks, one
// batched device↔host copy per chunk (StagingCopier), so that the sender copies the next chunks
// device→host while the current one is on the wire, and the receiver copies each chunk
// host→device as soon as it is full while the next one is being received.
//
// - StagingRing: one direction's chunks: a free list, waiters woken when a chunk frees (this is
//   the backpressure: a sender with no free chunk waits, a receiver stops reading its socket),
//   and the copy completions, handed to the progress thread.
// - packChunk: how a sender lays a frame stream (headers from host memory, payloads from host or
//   device memory) into a chunk: host bytes copied at once, device bytes as copy pieces.
// - RxStager: how a receiver fills chunks with payload bytes bound for device memory.
//
// Each transport has two rings (send and receive), so a send can never wait for a chunk that only
// a receive would free. Threading: all of it runs on the transport's progress thread, except
// the copier's completion, which only posts to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/status.h"
#include "rdma/tcp/staging_copier.h"

namespace kvferry::rdma::tcp_backend {

// Runs a function on the progress thread.
using PostFn = std::function<void(std::function<void()>)>;

class StagingRing {
 public:
  // `memory` is cut into memory.size() / chunk_bytes chunks.
  StagingRing(StagingCopier& copier, std::span<uint8_t> memory, size_t chunk_bytes,
              CopyDirection direction, PostFn post);
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  size_t chunkBytes() const { return chunk_bytes_; }
  uint32_t chunks() const { return static_cast<uint32_t>(chunks_.size()); }
  uint32_t freeChunks() const { return static_cast<uint32_t>(free_.size()); }
  uint8_t* data(uint32_t chunk) const { return chunks_[chunk]->data; }

  // A free chunk; none when all are taken: then `wake` runs (posted) once one is released.
  std::optional<uint32_t> acquire(std::function<void()> wake);
  void release(uint32_t chunk);
  // Enqueues the chunk's batched copy; `copied(chunk)` runs on the progress thread when it has
  // completed. The chunk stays taken: its user releases it.
  Status copy(uint32_t chunk, std::span<const CopyPiece> pieces,
              std::function<void(uint32_t)> copied);

 private:
  struct Chunk final : CopyDone {
    StagingRing* ring = nullptr;
    uint32_t index = 0;
    uint8_t* data = nullptr;
    std::function<void(uint32_t)> on_copied;
    void copied() override;
  };
  void onCopied(uint32_t chunk);

  StagingCopier& copier_;
  const size_t chunk_bytes_;
  const CopyDirection direction_;
  const PostFn post_;
  std::vector<std::unique_ptr<Chunk>> chunks_;  // stable addresses: the copier holds them
  std::vector<uint32_t> free_;
  std::vector<std::function<void()>> waiters_;
};

// A piece of a frame stream a sender lays into chunks.
struct Segment {
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  bool device = false;
};

// How far into a stream of segments the sender has laid out.
struct StreamCursor {
  size_t segment = 0;
  size_t offset = 0;
  bool atEnd(std::span<const Segment> segments) const { return segment >= segments.size(); }
};

// Fills `chunk` from `segments` at `cursor` (advanced past what was taken). Host bytes are copied
// now; device bytes are appended to `pieces` (cleared first) as device→chunk copies, adjacent
// ones merged. Returns the bytes laid out (chunk.size() unless the stream ended).
size_t packChunk(std::span<const Segment> segments, StreamCursor& cursor, std::span<uint8_t> chunk,
                 std::vector<CopyPiece>& pieces);

// The receiving side of one connection: payload bytes bound for device memory are received into
// a pinned chunk, and each full chunk (or the partial one at a completion point) goes to device
// memory in one batched copy. The owner passes its callbacks in; nothing here outlives it.
class RxStager {
 public:
  explicit RxStager(StagingRing& ring) : ring_(ring) {}

  // Where the next received bytes go; empty when no chunk is free: `wake` then runs once one is.
  std::span<uint8_t> space(std::function<void()> wake);
  // `bytes` were received at the start of space(); they belong at device address `dst`. True
  // when that filled the chunk: then flush() it.
  bool commit(uint8_t* dst, size_t bytes);
  // Copies the (full or partly filled) chunk to device memory in one batched copy;
  // `copied(chunk)` runs when it completes and must call onCopied(). Nothing when no chunk holds
  // received bytes.
  Status flush(std::function<void(uint32_t)> copied);
  // A copy completed: its chunk goes back to the ring.
  void onCopied(uint32_t chunk);
  // Nothing received is waiting or being copied.
  bool idle() const { return !chunk_ && in_flight_ == 0; }
  // The connection closed: the partly filled chunk goes back unused; copies in flight still end
  // in onCopied().
  void abandon();

 private:
  StagingRing& ring_;
  std::optional<uint32_t> chunk_;
  size_t fill_ = 0;
  std::vector<CopyPiece> pieces_;
  uint32_t in_flight_ = 0;
};

}  // namespace kvferry::rdma::tcp_backend
