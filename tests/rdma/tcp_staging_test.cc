// The tcp backend's staging for CUDA regions, without sockets: how a frame stream is laid into
// pinned chunks, the ring's backpressure, and the receiver's chunking, with a copier that memcpys.
#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <numeric>
#include <vector>

#include "rdma/kv_layout.h"
#include "rdma/tcp/staging_ring.h"
#include "rdma/tcp/tcp_transport.h"
#include "tests/rdma/fake_staging_copier.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::rdma::tcp_backend {
namespace {

std::vector<uint8_t> pattern(size_t bytes, uint8_t seed) {
  std::vector<uint8_t> v(bytes);
  for (size_t i = 0; i < bytes; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

// The progress thread, by hand: posted functions run when the test says so.
struct ManualPost {
  std::deque<std::function<void()>> queue;
  PostFn fn() {
    return [this](std::function<void()> f) { queue.push_back(std::move(f)); };
  }
  size_t runAll() {
    size_t n = 0;
    while (!queue.empty()) {
      auto f = std::move(queue.front());
      queue.pop_front();
      f();
      ++n;
    }
    return n;
  }
};

// Lays the whole stream out chunk by chunk, running each chunk's copies; returns the chunks.
std::vector<std::vector<uint8_t>> packAll(std::span<const Segment> segments, size_t chunk_bytes,
                                          std::vector<size_t>* pieces_per_chunk = nullptr) {
  std::vector<std::vector<uint8_t>> chunks;
  StreamCursor cursor;
  std::vector<CopyPiece> pieces;
  while (!cursor.atEnd(segments)) {
    std::vector<uint8_t> chunk(chunk_bytes, 0);
    const size_t n = packChunk(segments, cursor, chunk, pieces);
    for (const CopyPiece& p : pieces) std::memcpy(p.dst, p.src, p.bytes);
    if (pieces_per_chunk != nullptr) pieces_per_chunk->push_back(pieces.size());
    chunk.resize(n);
    chunks.push_back(std::move(chunk));
  }
  return chunks;
}

std::vector<uint8_t> concat(const std::vector<std::vector<uint8_t>>& parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(PackChunkTest, AStreamCrossesChunkBoundariesIntactAndAnOpLargerThanAChunkSpansSeveral) {
  const std::vector<uint8_t> header = pattern(48, 1);
  const std::vector<uint8_t> big = pattern(10'000, 2);  // device: larger than a chunk
  const std::vector<uint8_t> host = pattern(300, 3);    // host payload among device ones
  const std::vector<Segment> segments{{header.data(), header.size(), false},
                                      {big.data(), big.size(), true},
                                      {header.data(), header.size(), false},
                                      {host.data(), host.size(), false}};
  std::vector<size_t> pieces;
  const auto chunks = packAll(segments, 4096, &pieces);
  ASSERT_EQ(chunks.size(), 3u);  // 10,396 bytes
  EXPECT_EQ(chunks[0].size(), 4096u);
  EXPECT_EQ(chunks[1].size(), 4096u);
  EXPECT_EQ(chunks[2].size(), 10'396u - 8192u);
  EXPECT_EQ(pieces, (std::vector<size_t>{1, 1, 1}));  // the device op, one piece per chunk
  std::vector<uint8_t> want;
  for (const Segment& s : segments) want.insert(want.end(), s.data, s.data + s.bytes);
  EXPECT_EQ(concat(chunks), want);
}

TEST(PackChunkTest, ManySmallOpsShareOneChunkAsOneBatchedCopy) {
  const std::vector<uint8_t> header = pattern(48, 9);
  const std::vector<uint8_t> region = pattern(64 * 100, 4);
  std::vector<Segment> segments;
  for (int op = 0; op < 40; ++op) {
    segments.push_back({header.data(), header.size(), false});
    segments.push_back({region.data() + op * 2 * 64, 64, true});  // every other block
  }
  std::vector<size_t> pieces;
  const auto chunks = packAll(segments, 1 << 20, &pieces);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(pieces, std::vector<size_t>{40});  // one copy call of 40 pieces
  // Back-to-back device segments continuing each other merge into one piece.
  const std::vector<Segment> adjacent{{region.data(), 64, true}, {region.data() + 64, 64, true}};
  pieces.clear();
  packAll(adjacent, 4096, &pieces);
  EXPECT_EQ(pieces, std::vector<size_t>{1});
}

struct RingFixture : ::testing::Test {
  static constexpr size_t kChunk = 4096;
  static constexpr uint32_t kChunks = 3;
  FakeStagingCopier copier{kChunk * kChunks};
  ManualPost post;
  StagingRing ring{copier, copier.arena(), kChunk, CopyDirection::kHostToDevice, post.fn()};
};

TEST_F(RingFixture, AFullRingWakesItsWaitersWhenAChunkIsReleased) {
  EXPECT_EQ(ring.chunks(), kChunks);
  std::vector<uint32_t> taken;
  for (uint32_t i = 0; i < kChunks; ++i) {
    auto c = ring.acquire([] { FAIL() << "no wait expected"; });
    ASSERT_TRUE(c.has_value());
    taken.push_back(*c);
  }
  EXPECT_EQ(ring.freeChunks(), 0u);
  int woken = 0;
  EXPECT_FALSE(ring.acquire([&] { ++woken; }).has_value());
  EXPECT_FALSE(ring.acquire([&] { ++woken; }).has_value());
  EXPECT_EQ(post.runAll(), 0u);
  ring.release(taken[1]);
  EXPECT_EQ(post.runAll(), 2u);  // every waiter tries again
  EXPECT_EQ(woken, 2);
  auto again = ring.acquire([] {});
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, taken[1]);
}

TEST_F(RingFixture, ReceivedBytesLandInDeviceMemoryOneCopyPerChunk) {
  std::vector<uint8_t> device(3 * kChunk + 100, 0);
  const std::vector<uint8_t> wire = pattern(device.size(), 5);
  RxStager rx(ring);
  size_t copied_chunks = 0;
  auto copied = [&](uint32_t chunk) {
    rx.onCopied(chunk);
    ++copied_chunks;
  };
  copier.hold();
  size_t done = 0;
  bool waiting = false;
  // Receive in odd pieces, as a socket would deliver them.
  while (done < wire.size()) {
    std::span<uint8_t> space = rx.space([&] { waiting = false; });
    if (space.empty()) {
      // Backpressure: three chunks are full and being copied; nothing more is received until
      // one lands.
      waiting = true;
      EXPECT_EQ(copier.batches(), kChunks);
      copier.releaseHeld();
      post.runAll();
      EXPECT_FALSE(waiting);
      continue;
    }
    const size_t n = std::min({space.size(), wire.size() - done, size_t{1000}});
    std::memcpy(space.data(), wire.data() + done, n);
    if (rx.commit(device.data() + done, n)) {
      ASSERT_TRUE(rx.flush(copied).isOk());
    }
    done += n;
  }
  EXPECT_FALSE(rx.idle());
  ASSERT_TRUE(rx.flush(copied).isOk());  // the completion point: the partial chunk too
  copier.releaseHeld();
  post.runAll();
  EXPECT_TRUE(rx.idle());
  EXPECT_EQ(copied_chunks, 4u);
  EXPECT_EQ(copier.batches(), 4u);
  EXPECT_EQ(copier.pieces(), 4u);  // contiguous destination: one piece per chunk
  EXPECT_EQ(device, wire);
  EXPECT_EQ(ring.freeChunks(), kChunks);
}

TEST_F(RingFixture, AnAbandonedReceiveGivesItsChunksBack) {
  std::vector<uint8_t> device(kChunk, 0);
  RxStager rx(ring);
  std::span<uint8_t> space = rx.space([] {});
  ASSERT_FALSE(space.empty());
  EXPECT_FALSE(rx.commit(device.data(), 10));
  rx.abandon();
  EXPECT_TRUE(rx.idle());
  EXPECT_EQ(ring.freeChunks(), kChunks);
  EXPECT_TRUE(std::all_of(device.begin(), device.end(), [](uint8_t b) { return b == 0; }));
}

// Over real sockets: the bytes of CUDA regions really go through the copier (one batched copy
// per chunk both ways), and a batch many times the ring's size gets through it.
TEST(TcpStagingTransportTest, CudaRegionsCrossTheRingInBatchedCopies) {
  std::vector<FakeStagingCopier*> copiers;
  CopierFactory factory = [&](int, size_t bytes) -> Result<std::unique_ptr<StagingCopier>> {
    auto copier = std::make_unique<FakeStagingCopier>(bytes);
    copiers.push_back(copier.get());
    return std::unique_ptr<StagingCopier>(std::move(copier));
  };
  config::TransportConfig c;
  c.gpu_staging_chunk_bytes = 64 * 1024;
  c.gpu_staging_chunks = 2;
  c.direct_receive_bytes = 4096;
  auto target = makeTcpTransport(c, factory);
  auto initiator = makeTcpTransport(c, factory);
  ASSERT_TRUE(target.isOk() && initiator.isOk());
  EXPECT_TRUE((*target)->capabilities().cuda_memory);
  constexpr uint64_t kBlock = 32 * 1024;
  constexpr uint32_t kBlocks = 64;  // 2 MiB: 16 times the ring
  std::vector<uint8_t> src(kBlock * kBlocks), dst(kBlock * kBlocks, 0);
  fillRandom(src, 11);
  KvPool src_pool = registerPool(**initiator, src, kBlock, MemoryKind::cuda(0));
  KvPool dst_pool = registerPool(**target, dst, kBlock, MemoryKind::cuda(0));
  ASSERT_EQ(copiers.size(), 2u);  // one per transport, made at its first CUDA region
  Result<PeerId> peer = (*initiator)->connect(*(*target)->localBlob());
  ASSERT_TRUE(peer.isOk()) << peer.status().toString();
  std::vector<uint32_t> ids(kBlocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<uint32_t> reversed(ids.rbegin(), ids.rend());  // no two blocks coalesce
  std::vector<TransferOp> ops;
  ASSERT_TRUE(appendBlockOps(src_pool, dst_pool, ids, reversed, ops).isOk());
  ASSERT_TRUE((*initiator)->postWrite(*peer, ops, 5u, 1).isOk());
  ASSERT_TRUE(waitOne(**initiator, 1).isOk());
  ImmediateEvent ev;
  ASSERT_EQ((*target)->pollImmediates({&ev, 1}, std::chrono::seconds(5)), 1u);
  for (uint32_t b = 0; b < kBlocks; ++b) {
    ASSERT_EQ(blockChecksum(dst, dst_pool, kBlocks - 1 - b), blockChecksum(src, src_pool, b));
  }
  // 2 MiB of payload plus headers in 64 KiB chunks: one batched copy per chunk each way (33
  // chunks), not one per block (64).
  EXPECT_GE(copiers[1]->batches(), 32u);  // initiator: device→host
  EXPECT_GE(copiers[0]->batches(), 32u);  // target: host→device
  EXPECT_LE(copiers[1]->batches(), 40u);
}

TEST(TcpStagingTransportTest, WithoutACopierCudaRegionsAreRefused) {
  config::TransportConfig c;
  auto t = makeTcpTransport(c, nullptr);
  ASSERT_TRUE(t.isOk());
  EXPECT_FALSE((*t)->capabilities().cuda_memory);
  std::vector<uint8_t> mem(4096);
  Result<RegionId> id = (*t)->registerRegion(mem.data(), mem.size(), MemoryKind::cuda(0));
  EXPECT_EQ(id.status().code(), StatusCode::kInvalidArgument) << id.status().toString();
}

TEST(TcpStagingTransportTest, OneGpuPerTransport) {
  config::TransportConfig c;
  auto t = makeTcpTransport(c, fakeCopierFactory());
  ASSERT_TRUE(t.isOk());
  std::vector<uint8_t> mem(4096);
  EXPECT_TRUE((*t)->registerRegion(mem.data(), 2048, MemoryKind::cuda(0)).isOk());
  EXPECT_TRUE((*t)->registerRegion(mem.data() + 2048, 2048, MemoryKind::cuda(0)).isOk());
  EXPECT_EQ((*t)->registerRegion(mem.data(), 2048, MemoryKind::cuda(1)).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvferry::rdma::tcp_backend
