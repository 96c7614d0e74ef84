// Helpers shared by the transport tests: pools, random block ids, checksums, completion waits.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "rdma/kv_layout.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

inline void fillRandom(std::vector<uint8_t>& mem, uint32_t seed) {
  std::mt19937_64 rng(seed);
  for (uint8_t& b : mem) b = static_cast<uint8_t>(rng());
}

// `kind` cuda over host memory: the tcp fake-GPU tests (their copier memcpys).
inline KvPool registerPool(Transport& t, std::vector<uint8_t>& mem, uint64_t block_bytes,
                           MemoryKind kind = MemoryKind::host()) {
  Result<RegionId> id = t.registerRegion(mem.data(), mem.size(), kind);
  EXPECT_TRUE(id.isOk()) << id.status().toString();
  return KvPool{id.isOk() ? *id : 0, block_bytes, mem.size() / block_bytes};
}

// FNV-1a over one block.
inline uint64_t blockChecksum(const std::vector<uint8_t>& mem, const KvPool& pool, uint64_t block) {
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < pool.block_bytes; ++i) {
    h = (h ^ mem[pool.offsetOf(block) + i]) * 1099511628211ull;
  }
  return h;
}

// n distinct ids below `blocks`, in random order.
inline std::vector<uint32_t> randomIds(uint32_t blocks, size_t n, std::mt19937& rng) {
  std::vector<uint32_t> all(blocks);
  for (uint32_t i = 0; i < blocks; ++i) all[i] = i;
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(n);
  return all;
}

// Collects up to `n` completions, giving up after `limit`.
inline std::vector<Completion> drainCompletions(Transport& t, size_t n,
                                                std::chrono::milliseconds limit) {
  std::vector<Completion> out;
  const auto give_up = std::chrono::steady_clock::now() + limit;
  Completion buf[16];
  while (out.size() < n && std::chrono::steady_clock::now() < give_up) {
    size_t want = std::min<size_t>(std::size(buf), n - out.size());
    size_t got = t.pollCompletions({buf, want}, std::chrono::milliseconds(50));
    for (size_t i = 0; i < got; ++i) out.push_back(std::move(buf[i]));
  }
  return out;
}

// Waits for the completion of `cookie` (the only one outstanding) and returns its status.
inline Status waitOne(Transport& t, uint64_t cookie) {
  std::vector<Completion> c = drainCompletions(t, 1, std::chrono::seconds(10));
  if (c.empty()) return deadlineExceeded("no completion within 10 s");
  EXPECT_EQ(c[0].cookie, cookie);
  return c[0].status;
}

// Where the verbs tests run: the rxe VM's two devices, or devices named by the environment.
struct VerbsTestEndpoint {
  std::string device;
  std::string ip;
};

inline std::string envOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

inline VerbsTestEndpoint verbsTestEndpoint(bool target) {
  if (target) {
    return {envOr("KVFERRY_VERBS_TARGET_DEV", envOr("RXE_VM_SERVER_DEV", "").c_str()),
            envOr("KVFERRY_VERBS_TARGET_IP", envOr("RXE_VM_SERVER_IP", "127.0.0.1").c_str())};
  }
  return {envOr("KVFERRY_VERBS_INITIATOR_DEV", envOr("RXE_VM_CLIENT_DEV", "").c_str()),
          envOr("KVFERRY_VERBS_INITIATOR_IP", envOr("RXE_VM_CLIENT_IP", "127.0.0.1").c_str())};
}

// Empty when verbs tests can run here; otherwise why not.
inline std::string verbsTestUnavailableReason() {
  if (verbsTestEndpoint(true).device.empty() || verbsTestEndpoint(false).device.empty()) {
    return "no RDMA devices named for the test (run under the rxe VM: ctest -L rxe, or set "
           "KVFERRY_VERBS_TARGET_DEV and KVFERRY_VERBS_INITIATOR_DEV)";
  }
  return "";
}

inline size_t countEntries(const char* dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

}  // namespace kvferry::rdma
