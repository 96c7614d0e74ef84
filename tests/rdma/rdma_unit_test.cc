// Unit tests of the engine's shared pieces: blob codec, paged addressing, region table.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <thread>

#include "rdma/endpoint_blob.h"
#include "rdma/kv_layout.h"
#include "rdma/region_table.h"
#include "rdma/verbs/gid_select.h"

namespace kvferry::rdma {
namespace {

TEST(EndpointBlobTest, RoundTripsAndRejectsEveryTruncation) {
  EndpointInfo info{
      "tcp", 0xDEADBEEFCAFEull, {{1, 4096, 0x1000, 7}, {2, 1 << 20, 0, 0}}, {'a', 'b'}};
  Result<EndpointBlob> blob = encodeEndpoint(info);
  ASSERT_TRUE(blob.isOk());
  Result<EndpointInfo> back = decodeEndpoint(*blob);
  ASSERT_TRUE(back.isOk()) << back.status().toString();
  EXPECT_EQ(back->backend, "tcp");
  EXPECT_EQ(back->endpoint_id, info.endpoint_id);
  ASSERT_EQ(back->regions.size(), 2u);
  EXPECT_EQ(back->regions[0].remote_key, 7u);
  EXPECT_EQ(back->findRegion(2)->bytes, 1u << 20);
  EXPECT_EQ(back->findRegion(3), nullptr);
  EXPECT_EQ(back->address, info.address);
  for (size_t n = 0; n < blob->size(); ++n) {
    EndpointBlob cut(blob->begin(), blob->begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_EQ(decodeEndpoint(cut).status().code(), StatusCode::kInvalidArgument) << n;
  }
  EndpointBlob longer = *blob;
  longer.push_back(0);
  EXPECT_EQ(decodeEndpoint(longer).status().code(), StatusCode::kInvalidArgument);
  // A region count that claims more than the blob holds must not allocate or read past the end.
  EndpointBlob lying = *blob;
  const size_t count_at = 4 + 2 + 1 + 3 + 8;
  lying[count_at + 3] = 0x7f;
  EXPECT_EQ(decodeEndpoint(lying).status().code(), StatusCode::kInvalidArgument);
}

// v2 carries each region's memory kind; v1 blobs (older peers) still decode, as host memory.
TEST(EndpointBlobTest, Version2CarriesGpuRegionsAndVersion1StillReads) {
  RemoteRegion host{1, 4096, 0x1000, 7};
  RemoteRegion gpu{2, 1 << 20, 0x7f0000000000, 9, true, 3};
  EndpointInfo info{"verbs", 77, {host, gpu}, {'x'}};
  Result<EndpointBlob> v2 = encodeEndpoint(info);
  ASSERT_TRUE(v2.isOk()) << v2.status().toString();
  EXPECT_EQ((*v2)[4], kEndpointBlobVersion);
  Result<EndpointInfo> back = decodeEndpoint(*v2);
  ASSERT_TRUE(back.isOk()) << back.status().toString();
  EXPECT_FALSE(back->findRegion(1)->gpu_memory);
  EXPECT_EQ(back->findRegion(1)->flush_domain, 0u);
  EXPECT_TRUE(back->findRegion(2)->gpu_memory);
  EXPECT_EQ(back->findRegion(2)->flush_domain, 3u);
  EXPECT_EQ(back->findRegion(2)->remote_base, gpu.remote_base);
  for (size_t n = 0; n < v2->size(); ++n) {
    EndpointBlob cut(v2->begin(), v2->begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_EQ(decodeEndpoint(cut).status().code(), StatusCode::kInvalidArgument) << n;
  }
  // The first region's flags byte follows id, bytes, base and key: unknown flags and a GPU flag
  // without a domain are refused.
  const size_t flags_at = 4 + 2 + 1 + 5 + 8 + 4 + 4 + 8 + 8 + 4;
  EndpointBlob odd = *v2;
  odd[flags_at] = 0x80;
  EXPECT_EQ(decodeEndpoint(odd).status().code(), StatusCode::kInvalidArgument);
  odd[flags_at] = 1;  // GPU memory, but domain 0
  EXPECT_EQ(decodeEndpoint(odd).status().code(), StatusCode::kInvalidArgument);

  // An old peer's v1 blob: same header, regions without the kind.
  EXPECT_EQ(encodeEndpoint(info, 1).status().code(), StatusCode::kInvalidArgument)
      << "v1 cannot describe a GPU region; dropping its flush would be silent";
  info.regions = {host};
  Result<EndpointBlob> v1 = encodeEndpoint(info, 1);
  ASSERT_TRUE(v1.isOk()) << v1.status().toString();
  EXPECT_EQ((*v1)[4], 1);
  EXPECT_EQ(v1->size() + 5, encodeEndpoint(info)->size());
  Result<EndpointInfo> old = decodeEndpoint(*v1);
  ASSERT_TRUE(old.isOk()) << old.status().toString();
  ASSERT_EQ(old->regions.size(), 1u);
  EXPECT_EQ(old->regions[0].remote_key, 7u);
  EXPECT_FALSE(old->regions[0].gpu_memory);
  EXPECT_EQ(old->address, info.address);
  EndpointBlob future = *v1;
  future[4] = kEndpointBlobVersion + 1;
  Result<EndpointInfo> refused = decodeEndpoint(future);
  EXPECT_NE(refused.status().message().find("this build reads 1..2"), std::string::npos)
      << refused.status().toString();
  EXPECT_EQ(encodeEndpoint(info, 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(RegionTableTest, DescribesCudaRegionsAsGpuMemoryWithOneFlushDomainPerDevice) {
  RegionTable table;
  uint8_t a[64], b[64], c[64];
  RegionId host = *table.add(a, sizeof a, MemoryKind::host());
  RegionId gpu0 = *table.add(b, sizeof b, MemoryKind::cuda(0));
  RegionId gpu1 = *table.add(c, sizeof c, MemoryKind::cuda(1));
  EndpointInfo info{"verbs", 1, table.describe(), {}};
  EXPECT_FALSE(info.findRegion(host)->gpu_memory);
  EXPECT_EQ(info.findRegion(host)->flush_domain, 0u);
  EXPECT_TRUE(info.findRegion(gpu0)->gpu_memory);
  EXPECT_TRUE(info.findRegion(gpu1)->gpu_memory);
  EXPECT_NE(info.findRegion(gpu0)->flush_domain, 0u);
  EXPECT_NE(info.findRegion(gpu0)->flush_domain, info.findRegion(gpu1)->flush_domain);
}

TEST(EndpointBlobTest, OversizedRegionTablesAreRefused) {
  EndpointInfo info{"tcp", 1, std::vector<RemoteRegion>(4000), {}};
  EXPECT_EQ(encodeEndpoint(info).status().code(), StatusCode::kResourceExhausted);
}

TEST(KvLayoutTest, CoalescesRunsWhereBothSidesAreAdjacent) {
  KvPool local{1, 100, 50};
  KvPool remote{2, 100, 40};
  std::vector<TransferOp> ops;
  std::vector<uint32_t> l{0, 1, 2, 9, 10, 30};
  std::vector<uint32_t> r{5, 6, 7, 8, 20, 21};
  ASSERT_TRUE(appendBlockOps(local, remote, l, r, ops).isOk());
  ASSERT_EQ(ops.size(), 4u);
  EXPECT_EQ(ops[0].local_offset, 0u);
  EXPECT_EQ(ops[0].remote_offset, 500u);
  EXPECT_EQ(ops[0].length, 300u);
  EXPECT_EQ(ops[1].length, 100u);  // 9 → 8: local jumps from 2 to 9
  EXPECT_EQ(ops[2].length, 100u);  // 10 → 20: remote jumps from 8 to 20
  EXPECT_EQ(ops[3].local_offset, 3000u);
  EXPECT_EQ(ops[3].remote_offset, 2100u);
  // Appends, never clears.
  ASSERT_TRUE(appendBlockOps(local, remote, std::vector<uint32_t>{3}, std::vector<uint32_t>{3}, ops)
                  .isOk());
  EXPECT_EQ(ops.size(), 5u);
}

TEST(KvLayoutTest, RejectsMismatchedListsSizesAndIdsPastTheEnd) {
  KvPool local{1, 100, 50};
  KvPool remote{2, 100, 40};
  std::vector<TransferOp> ops;
  EXPECT_EQ(
      appendBlockOps(local, remote, std::vector<uint32_t>{1, 2}, std::vector<uint32_t>{1}, ops)
          .code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(appendBlockOps(local, KvPool{2, 64, 40}, std::vector<uint32_t>{1},
                           std::vector<uint32_t>{1}, ops)
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(appendBlockOps(local, remote, std::vector<uint32_t>{1}, std::vector<uint32_t>{40}, ops)
                .code(),
            StatusCode::kOutOfRange);
}

TEST(RegionTableTest, PinsAreBoundsCheckedAndHoldOffDeregistration) {
  RegionTable table;
  std::vector<uint8_t> mem(1000);
  EXPECT_EQ(table.add(nullptr, 10, MemoryKind::host()).status().code(),
            StatusCode::kInvalidArgument);
  RegionId id = *table.add(mem.data(), mem.size(), MemoryKind::host());
  EXPECT_TRUE(table.pin(id, 0, 1000, "write").isOk());
  EXPECT_EQ(table.pin(id, 1, 1000, "write").status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(table.pin(id, ~0ull, 2, "write").status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(table.pin(id + 1, 0, 1, "write").status().code(), StatusCode::kNotFound);

  Result<RegionTable::Pin> pin = table.pin(id, 10, 10, "read");
  ASSERT_TRUE(pin.isOk());
  EXPECT_EQ(pin->data, mem.data() + 10);
  // While pinned, removal waits, then gives up and keeps the region.
  EXPECT_EQ(table.remove(id, std::chrono::milliseconds(20)).code(), StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(table.pin(id, 0, 1, "read").isOk());
  // Released from another thread while removal waits: removal succeeds.
  std::thread releaser([p = std::move(pin).value()]() mutable {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    p = {};
  });
  EXPECT_TRUE(table.remove(id, std::chrono::seconds(10)).isOk());
  releaser.join();
  EXPECT_EQ(table.pin(id, 0, 1, "read").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvferry::rdma

namespace kvferry::rdma {
namespace {

GidEntry gid(uint32_t index, GidType type, const char* v6, const char* netdev = "eth0") {
  GidEntry e;
  e.index = index;
  e.type = type;
  inet_pton(AF_INET6, v6, e.gid.data());
  e.netdev = netdev;
  return e;
}

TEST(GidSelectTest, PrefersRoceV2Ipv4MappedThenFallsBackInTheDocumentedOrder) {
  std::vector<GidEntry> table{
      gid(0, GidType::kRoceV1, "fe80::1"),
      gid(1, GidType::kRoceV2, "fe80::1"),
      gid(2, GidType::kRoceV1, "::ffff:10.0.0.5"),
      gid(3, GidType::kRoceV2, "::ffff:10.0.0.5"),
      gid(4, GidType::kRoceV2, "::ffff:10.1.0.5", "eth1"),
  };
  EXPECT_EQ(selectGid(table, -1, "")->index, 3u);  // RoCE v2 + IPv4, lowest index
  EXPECT_EQ(selectGid(table, -1, "eth1")->index, 4u);
  table.erase(table.begin() + 3, table.end());
  EXPECT_EQ(selectGid(table, -1, "")->index, 1u);  // RoCE v2 (IPv6) beats RoCE v1 IPv4
  table.erase(table.begin() + 1);
  EXPECT_EQ(selectGid(table, -1, "")->index, 2u);  // RoCE v1 IPv4-mapped
  EXPECT_EQ(selectGid(table, 0, "")->index, 0u);   // the override wins
  EXPECT_EQ(selectGid(table, 9, "").status().code(), StatusCode::kNotFound);
  Result<GidEntry> none = selectGid(table, -1, "eth7");
  ASSERT_FALSE(none.isOk());
  EXPECT_NE(none.status().message().find("::ffff:10.0.0.5"), std::string::npos)
      << "the error lists what the table holds: " << none.status().message();
  // All-zero (empty) entries never qualify.
  EXPECT_FALSE(selectGid({gid(0, GidType::kRoceV2, "::")}, -1, "").isOk());
  EXPECT_EQ(gidToString(gid(0, GidType::kRoceV2, "::ffff:192.168.77.1").gid),
            "::ffff:192.168.77.1");
}

}  // namespace
}  // namespace kvferry::rdma
