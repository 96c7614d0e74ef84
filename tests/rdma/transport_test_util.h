// Helpers shared by the transport tests: pools, random block ids, checksums, completion waits.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
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

// What runScatteredBatches() sends.
struct ScatteredBatches {
  int batches = 0;
  uint32_t batch_blocks = 16;  // scattered source blocks per batch
  uint32_t in_flight = 8;      // batches at once; the target pool holds in_flight × batch_blocks
  uint32_t imm_base = 1000;    // batch n carries immediate imm_base + n
  std::chrono::seconds limit{30};
  std::function<void(int completed)> after_completion;  // optional, after each completion
};

// Write batches of scattered blocks from `from` to `to`, each landing in a part of the target's
// pool no other batch in flight writes, each with an immediate: every batch must complete OK
// with its blocks intact, and every immediate arrive (at least once).
inline void runScatteredBatches(Transport& initiator, PeerId peer, const KvPool& from,
                                const std::vector<uint8_t>& from_mem, Transport& target,
                                const KvPool& to, const std::vector<uint8_t>& to_mem,
                                const ScatteredBatches& run) {
  using namespace std::chrono_literals;
  ASSERT_GE(to.num_blocks, uint64_t{run.in_flight} * run.batch_blocks);
  std::mt19937 rng(3);
  struct InFlight {
    std::vector<uint32_t> src, dst;
    uint32_t part = 0;
  };
  std::map<uint64_t, InFlight> in_flight;
  std::vector<uint32_t> free_parts(run.in_flight);
  std::iota(free_parts.begin(), free_parts.end(), 0u);
  int posted = 0;
  int completed = 0;
  const auto give_up = std::chrono::steady_clock::now() + run.limit;
  while (completed < run.batches && std::chrono::steady_clock::now() < give_up) {
    while (posted < run.batches && !free_parts.empty()) {
      InFlight batch;
      batch.part = free_parts.back();
      free_parts.pop_back();
      batch.src = randomIds(static_cast<uint32_t>(from.num_blocks), run.batch_blocks, rng);
      for (uint32_t id : randomIds(run.batch_blocks, run.batch_blocks, rng)) {
        batch.dst.push_back(batch.part * run.batch_blocks + id);
      }
      std::vector<TransferOp> ops;
      ASSERT_TRUE(appendBlockOps(from, to, batch.src, batch.dst, ops).isOk());
      Status s = initiator.postWrite(peer, ops, run.imm_base + posted, posted);
      ASSERT_TRUE(s.isOk()) << s.toString();
      in_flight[posted++] = std::move(batch);
    }
    for (const Completion& c : drainCompletions(initiator, 1, 100ms)) {
      EXPECT_TRUE(c.status.isOk()) << "batch " << c.cookie << ": " << c.status.toString();
      const InFlight& batch = in_flight.at(c.cookie);
      for (size_t i = 0; i < run.batch_blocks; ++i) {
        EXPECT_EQ(blockChecksum(to_mem, to, batch.dst[i]),
                  blockChecksum(from_mem, from, batch.src[i]))
            << "batch " << c.cookie << " block " << i;
      }
      free_parts.push_back(batch.part);
      in_flight.erase(c.cookie);
      ++completed;
      if (run.after_completion) run.after_completion(completed);
    }
  }
  ASSERT_EQ(completed, run.batches);
  std::set<uint32_t> seen;
  ImmediateEvent buf[64];
  const auto imm_give_up = std::chrono::steady_clock::now() + 10s;
  while (seen.size() < size_t(run.batches) && std::chrono::steady_clock::now() < imm_give_up) {
    const size_t n = target.pollImmediates(buf, 50ms);
    for (size_t i = 0; i < n; ++i) seen.insert(buf[i].imm);
  }
  EXPECT_EQ(seen.size(), size_t(run.batches)) << "immediates missing";
  if (!seen.empty()) {
    EXPECT_EQ(*seen.begin(), run.imm_base);
    EXPECT_EQ(*seen.rbegin(), run.imm_base + run.batches - 1);
  }
}

// A fixture for runScatteredBatches(): an initiator's pool of random blocks, a target's pool
// of room for `run.in_flight × run.batch_blocks` of them, registered and connected.
class ScatteredPairTest : public ::testing::Test {
 protected:
  // Registers the pools on target_ and initiator_ (made by the test) and connects them.
  void connectPair(uint64_t block_bytes, uint64_t source_blocks, uint64_t target_blocks,
                   uint32_t seed) {
    ASSERT_TRUE(target_ && initiator_);
    target_mem_.assign(block_bytes * target_blocks, 0);
    initiator_mem_.resize(block_bytes * source_blocks);
    fillRandom(initiator_mem_, seed);
    target_pool_ = registerPool(*target_, target_mem_, block_bytes);
    initiator_pool_ = registerPool(*initiator_, initiator_mem_, block_bytes);
    Result<EndpointBlob> blob = target_->localBlob();
    ASSERT_TRUE(blob.isOk()) << blob.status().toString();
    Result<PeerId> peer = initiator_->connect(*blob);
    ASSERT_TRUE(peer.isOk()) << peer.status().toString();
    peer_ = *peer;
  }
  void runBatches(const ScatteredBatches& run) {
    runScatteredBatches(*initiator_, peer_, initiator_pool_, initiator_mem_, *target_, target_pool_,
                        target_mem_, run);
  }

  std::unique_ptr<Transport> target_, initiator_;
  std::vector<uint8_t> target_mem_, initiator_mem_;
  KvPool target_pool_, initiator_pool_;
  PeerId peer_ = 0;
};

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
