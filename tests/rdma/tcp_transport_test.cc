// TCP-only behaviour, checked by speaking the wire protocol from a raw socket: the target's own
// bounds checks (the initiator's checks are bypassed), a peer that hangs, a stale blob.
#include <gtest/gtest.h>

#include <array>
#include <boost/asio.hpp>
#include <cstring>
#include <random>
#include <thread>

#include "rdma/endpoint_blob.h"
#include "rdma/factory.h"
#include "rdma/tcp/stream_copy.h"
#include "rdma/tcp/tcp_wire.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::rdma {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using wire::FrameHeader;
using wire::Opcode;
using namespace std::chrono_literals;

config::TransportConfig tcpConfig() {
  config::TransportConfig c;
  c.kind = config::TransportKind::kTcp;
  c.listen_address = "127.0.0.1:0";
  c.connect_retries = 0;
  c.connect_timeout_ms = 2000;
  return c;
}

std::unique_ptr<Transport> makeTcp(const config::TransportConfig& c) {
  Result<std::unique_ptr<Transport>> t = makeTransport(c);
  EXPECT_TRUE(t.isOk()) << t.status().toString();
  return std::move(t).value();
}

tcp::endpoint endpointOf(const EndpointInfo& info) {
  std::string addr(info.address.begin(), info.address.end());
  auto colon = addr.rfind(':');
  return {asio::ip::make_address(addr.substr(0, colon)),
          static_cast<uint16_t>(std::stoi(addr.substr(colon + 1)))};
}

// A raw client that has done the hello.
struct RawClient {
  asio::io_context io;
  tcp::socket socket{io};

  FrameHeader readHeader(std::string* text = nullptr) {
    FrameHeader h;
    asio::read(socket, asio::buffer(&h, sizeof h));
    std::string body(h.length, '\0');
    if (h.length > 0) asio::read(socket, asio::buffer(body));
    if (text) *text = body;
    return h;
  }
  FrameHeader hello(const EndpointInfo& target, uint64_t target_id) {
    socket.connect(endpointOf(target));
    FrameHeader h;
    h.opcode = Opcode::kHello;
    h.region = wire::kProtocolVersion;
    h.request_id = 0x1234;
    h.offset = target_id;
    asio::write(socket, asio::buffer(&h, sizeof h));
    return readHeader();
  }
};

// A status code crosses the wire as a number: every code this build knows comes back as
// itself (a new last code must move statusCodeOf's bound), and an unknown one as INTERNAL.
TEST(TcpWireTest, EveryStatusCodeCrossesTheWireAsItself) {
  for (uint16_t code = 0; code <= static_cast<uint16_t>(StatusCode::kDataLoss); ++code) {
    EXPECT_EQ(wire::statusCodeOf(code), static_cast<StatusCode>(code));
    EXPECT_NE(statusCodeName(static_cast<StatusCode>(code)), "UNKNOWN") << code;
  }
  EXPECT_EQ(
      statusCodeName(static_cast<StatusCode>(static_cast<uint16_t>(StatusCode::kDataLoss) + 1)),
      "UNKNOWN");
  EXPECT_EQ(wire::statusCodeOf(static_cast<uint16_t>(StatusCode::kDataLoss) + 1),
            StatusCode::kInternal);
}

// streamCopy (non-temporal stores into regions) copies what memcpy would, at every length around
// its thresholds and every alignment of either side, and not a byte more.
TEST(StreamCopyTest, CopiesEveryLengthAndAlignmentExactly) {
  std::vector<uint8_t> src(80 * 1024);
  std::mt19937 rng(3);
  for (uint8_t& b : src) b = static_cast<uint8_t>(rng());
  std::vector<size_t> lengths;
  for (size_t n = 0; n < 700; ++n) lengths.push_back(n);
  for (size_t n : {4095, 4096, 4097, 65536, 65536 + 33}) lengths.push_back(n);
  for (size_t length : lengths) {
    for (size_t src_at : {0, 1, 7, 16, 31}) {
      for (size_t dst_at : {0, 3, 8, 15, 64}) {
        std::vector<uint8_t> dst(length + 160, 0x5A);
        tcp_backend::streamCopy(dst.data() + dst_at, src.data() + src_at, length);
        tcp_backend::streamFence();
        ASSERT_EQ(std::memcmp(dst.data() + dst_at, src.data() + src_at, length), 0)
            << length << " bytes from +" << src_at << " to +" << dst_at;
        for (size_t i = 0; i < dst_at; ++i) ASSERT_EQ(dst[i], 0x5A) << "before, " << length;
        for (size_t i = dst_at + length; i < dst.size(); ++i) {
          ASSERT_EQ(dst[i], 0x5A) << "after, " << length << " bytes to +" << dst_at;
        }
      }
    }
  }
}

// Many batches posted without waiting leave together (several to one sendmsg, a write split
// where they pass its 1,024 buffers), their ops of every size (under the streaming copy's
// threshold, over it, past the direct-read size) land intact, every batch completes once and
// every immediate comes after its bytes.
TEST(TcpTransportTest, BatchesPostedBackToBackLandIntactWithEveryImmediate) {
  config::TransportConfig c = tcpConfig();
  c.connections_per_peer = 1;         // every batch on one connection: they queue behind each other
  c.socket_buffer_bytes = 64 * 1024;  // full at once: writes stop part-way and resume
  auto target = makeTcp(c);
  auto initiator = makeTcp(c);
  std::mt19937 rng(11);
  std::vector<uint8_t> source(8 << 20);
  std::vector<uint8_t> dest(40 << 20, 0);
  for (uint8_t& b : source) b = static_cast<uint8_t>(rng());
  const RegionId from =
      *initiator->registerRegion(source.data(), source.size(), MemoryKind::host());
  const RegionId to = *target->registerRegion(dest.data(), dest.size(), MemoryKind::host());
  Result<PeerId> peer = initiator->connect(*target->localBlob());
  ASSERT_TRUE(peer.isOk()) << peer.status().toString();

  // 24 batches of 150 ops (3,600 buffers): op i of batch b is a slice of its own 8 KiB slot, or
  // of a 96 KiB one for every 50th op; lengths 1 … 8 KiB.
  constexpr uint32_t kBatches = 24;
  constexpr uint32_t kOps = 150;
  uint64_t next = 0;
  std::vector<std::vector<TransferOp>> batches(kBatches);
  for (auto& ops : batches) {
    for (uint32_t i = 0; i < kOps; ++i) {
      const bool large = i % 50 == 49;
      const uint64_t slot = large ? 96 * 1024 : 8192;
      const uint64_t length = large ? slot - rng() % 64 : 1 + rng() % slot;
      const uint64_t at = next + rng() % (slot - length + 1);
      ops.push_back(TransferOp{from, (at * 7 + 5) % (source.size() - length), to, at, length});
      next += slot;
    }
  }
  ASSERT_LE(next, dest.size());
  for (uint32_t b = 0; b < kBatches; ++b) {
    ASSERT_TRUE(initiator->postWrite(*peer, batches[b], 100 + b, b).isOk()) << "batch " << b;
  }
  std::vector<Completion> done = drainCompletions(*initiator, kBatches, std::chrono::seconds(20));
  ASSERT_EQ(done.size(), kBatches);
  std::vector<int> seen(kBatches, 0);
  for (const Completion& completion : done) {
    ASSERT_TRUE(completion.status.isOk()) << completion.status.toString();
    ASSERT_LT(completion.cookie, kBatches);
    ++seen[completion.cookie];
  }
  EXPECT_EQ(seen, std::vector<int>(kBatches, 1));
  std::vector<ImmediateEvent> imms(kBatches + 1);
  size_t got = 0;
  for (int i = 0; i < 100 && got < kBatches; ++i) {
    got += target->pollImmediates({imms.data() + got, imms.size() - got}, 50ms);
  }
  ASSERT_EQ(got, kBatches);
  for (size_t i = 0; i < got; ++i) EXPECT_EQ(imms[i].imm, 100 + i) << "in posting order";
  for (const auto& ops : batches) {
    for (const TransferOp& op : ops) {
      ASSERT_EQ(
          std::memcmp(dest.data() + op.remote_offset, source.data() + op.local_offset, op.length),
          0)
          << op.length << " bytes at " << op.remote_offset;
    }
  }
}

TEST(TcpTransportTest, TargetRefusesOutOfRangeWritesItself) {
  auto target = makeTcp(tcpConfig());
  std::vector<uint8_t> mem(8192, 0);
  RegionId region = *target->registerRegion(mem.data(), mem.size(), MemoryKind::host());
  EndpointInfo info = *decodeEndpoint(*target->localBlob());

  RawClient client;
  FrameHeader ack = client.hello(info, info.endpoint_id);
  ASSERT_EQ(ack.opcode, Opcode::kHelloAck);
  ASSERT_EQ(ack.status, 0);

  // Batch 1: an in-range write, then one that runs past the end, with an immediate.
  std::vector<uint8_t> payload(4096, 0xAB);
  FrameHeader batch;
  batch.opcode = Opcode::kWriteBatch;
  batch.request_id = 1;
  batch.op_index = 2;
  batch.flags = wire::kFlagLast | wire::kFlagImm;
  batch.imm = 5;
  batch.length = 2 * sizeof(wire::WriteOp) + 2 * payload.size();
  std::array<wire::WriteOp, 2> table{wire::WriteOp{region, 0, 0, 4096},
                                     wire::WriteOp{region, 0, 6000, 4096}};  // 6000 + 4096 > 8192
  std::vector<asio::const_buffer> frames{asio::buffer(&batch, sizeof batch), asio::buffer(table),
                                         asio::buffer(payload), asio::buffer(payload)};
  asio::write(client.socket, frames);
  std::string text;
  FrameHeader reply = client.readHeader(&text);
  EXPECT_EQ(reply.opcode, Opcode::kAck);
  EXPECT_EQ(reply.request_id, 1u);
  EXPECT_EQ(reply.status, static_cast<uint16_t>(StatusCode::kOutOfRange));
  EXPECT_NE(text.find("exceeds region"), std::string::npos) << text;
  // The refused op left no byte behind; no immediate for a failed batch.
  EXPECT_TRUE(std::all_of(mem.begin() + 4096, mem.end(), [](uint8_t b) { return b == 0; }));
  ImmediateEvent ev;
  EXPECT_EQ(target->pollImmediates({&ev, 1}, 100ms), 0u);

  // Batch 2 on the same connection still works: the refused payload was drained exactly.
  batch.request_id = 2;
  batch.op_index = 1;
  batch.length = sizeof(wire::WriteOp) + payload.size();
  table[0].offset = 4096;
  asio::write(client.socket, std::vector<asio::const_buffer>{
                                 asio::buffer(&batch, sizeof batch),
                                 asio::buffer(&table[0], sizeof table[0]), asio::buffer(payload)});
  reply = client.readHeader();
  EXPECT_EQ(reply.request_id, 2u);
  EXPECT_EQ(reply.status, 0);
  ASSERT_EQ(target->pollImmediates({&ev, 1}, 5s), 1u);
  EXPECT_EQ(ev.imm, 5u);
  EXPECT_EQ(ev.source_id, 0x1234u);
  EXPECT_TRUE(std::all_of(mem.begin() + 4096, mem.end(), [](uint8_t b) { return b == 0xAB; }));

  // A read past the end is refused with an error response, and nothing else is sent.
  FrameHeader rd;
  rd.opcode = Opcode::kReadRequest;
  rd.region = region;
  rd.request_id = 3;
  rd.offset = 8000;
  rd.length = 500;
  rd.flags = wire::kFlagLast;
  asio::write(client.socket, asio::buffer(&rd, sizeof rd));
  reply = client.readHeader(&text);
  EXPECT_EQ(reply.opcode, Opcode::kReadResponse);
  EXPECT_EQ(reply.status, static_cast<uint16_t>(StatusCode::kOutOfRange));
}

TEST(TcpTransportTest, GarbageOnTheWireClosesOnlyThatConnection) {
  auto target = makeTcp(tcpConfig());
  std::vector<uint8_t> mem(4096, 0);
  ASSERT_TRUE(target->registerRegion(mem.data(), mem.size(), MemoryKind::host()).isOk());
  EndpointInfo info = *decodeEndpoint(*target->localBlob());
  RawClient client;
  client.socket.connect(endpointOf(info));
  std::vector<uint8_t> junk(sizeof(FrameHeader), 0x5A);
  asio::write(client.socket, asio::buffer(junk));
  uint8_t byte;
  boost::system::error_code ec;
  asio::read(client.socket, asio::buffer(&byte, 1), ec);
  EXPECT_EQ(ec, asio::error::eof);  // the target hung up
  // … and still serves others.
  auto initiator = makeTcp(tcpConfig());
  EXPECT_TRUE(initiator->connect(*target->localBlob()).isOk());
}

TEST(TcpTransportTest, StaleBlobIsRefusedAfterAPeerRestart) {
  auto first = makeTcp(tcpConfig());
  EndpointBlob old_blob = *first->localBlob();
  EndpointInfo info = *decodeEndpoint(old_blob);
  const std::string addr(info.address.begin(), info.address.end());
  first.reset();
  auto cfg = tcpConfig();
  cfg.listen_address = addr;  // the restarted peer listens where the old one did
  auto second = makeTcp(cfg);
  auto initiator = makeTcp(tcpConfig());
  Result<PeerId> peer = initiator->connect(old_blob);
  ASSERT_FALSE(peer.isOk());
  EXPECT_EQ(peer.status().code(), StatusCode::kFailedPrecondition) << peer.status().toString();
  EXPECT_NE(peer.status().message().find("stale endpoint blob"), std::string::npos);
  // The refusal does not tell the caller the endpoint id it lacks (the blob's capability).
  const uint64_t real_id = decodeEndpoint(*second->localBlob())->endpoint_id;
  EXPECT_EQ(peer.status().message().find(std::to_string(real_id)), std::string::npos)
      << peer.status().message();
  EXPECT_TRUE(initiator->connect(*second->localBlob()).isOk());
}

TEST(TcpTransportTest, UnreachablePeerFailsAfterTheConfiguredRetries) {
  asio::io_context io;
  tcp::acceptor closed(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const uint16_t port = closed.local_endpoint().port();
  closed.close();  // nothing listens there now
  std::string addr = "127.0.0.1:" + std::to_string(port);
  EndpointBlob blob =
      *encodeEndpoint(EndpointInfo{"tcp", 42, {}, std::vector<uint8_t>(addr.begin(), addr.end())});
  auto cfg = tcpConfig();
  cfg.connect_retries = 2;
  cfg.retry_backoff_ms = 1;
  auto initiator = makeTcp(cfg);
  Result<PeerId> peer = initiator->connect(blob);
  ASSERT_FALSE(peer.isOk());
  EXPECT_EQ(peer.status().code(), StatusCode::kUnavailable) << peer.status().toString();
}

// A peer that accepts, answers the hello, then swallows everything and never answers.
TEST(TcpTransportTest, HungPeerFailsPendingBatchesWithDeadlineExceeded) {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const uint16_t port = acceptor.local_endpoint().port();
  std::atomic<bool> stop{false};
  std::thread hung([&] {
    tcp::socket s = acceptor.accept();
    FrameHeader h;
    asio::read(s, asio::buffer(&h, sizeof h));
    FrameHeader ack;
    ack.opcode = Opcode::kHelloAck;
    asio::write(s, asio::buffer(&ack, sizeof ack));
    std::vector<uint8_t> sink(65536);
    boost::system::error_code ec;
    while (!stop && !ec) s.read_some(asio::buffer(sink), ec);
  });
  std::string addr = "127.0.0.1:" + std::to_string(port);
  EndpointBlob blob = *encodeEndpoint(EndpointInfo{
      "tcp", 42, {RemoteRegion{1, 1 << 20, 0, 0}}, std::vector<uint8_t>(addr.begin(), addr.end())});
  auto cfg = tcpConfig();
  cfg.connections_per_peer = 1;
  cfg.op_timeout_ms = 300;
  auto initiator = makeTcp(cfg);
  std::vector<uint8_t> mem(4096, 1);
  RegionId local = *initiator->registerRegion(mem.data(), mem.size(), MemoryKind::host());
  Result<PeerId> peer = initiator->connect(blob);
  ASSERT_TRUE(peer.isOk()) << peer.status().toString();
  std::vector<TransferOp> ops{{local, 0, 1, 0, 4096}};
  ASSERT_TRUE(initiator->postWrite(*peer, ops, 1u, 1).isOk());
  ASSERT_TRUE(initiator->postRead(*peer, ops, 2).isOk());
  std::vector<Completion> done = drainCompletions(*initiator, 2, 10s);
  ASSERT_EQ(done.size(), 2u);
  for (const Completion& c : done) {
    EXPECT_EQ(c.status.code(), StatusCode::kDeadlineExceeded) << c.status.toString();
  }
  // The peer is marked failed: new batches are refused at once, naming the reason.
  Status again = initiator->postWrite(*peer, ops, std::nullopt, 3);
  EXPECT_EQ(again.code(), StatusCode::kDeadlineExceeded) << again.toString();
  EXPECT_NE(again.message().find("reconnect"), std::string::npos);
  stop = true;
  initiator.reset();  // closes the socket, ending the hung reader
  hung.join();
}

}  // namespace
}  // namespace kvferry::rdma
