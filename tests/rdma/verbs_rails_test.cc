// transport.rails over real verbs: two RDMA devices per side on two links (the Soft-RoCE VM's
// two veth pairs, tests/rdma/rxe_rails.sh, ctest -L rxe), or the devices the environment names
// on a host with RDMA NICs:
//   KVFERRY_RAILS_TARGET_DEVS / KVFERRY_RAILS_INITIATOR_DEVS  comma-separated device names
//   KVFERRY_RAILS_TARGET_IP / KVFERRY_RAILS_INITIATOR_IP      where each side's handshakes listen
//   KVFERRY_RAILS_LINK_DOWN / KVFERRY_RAILS_LINK_UP           shell commands that take the last
//                                                             rail's link down and up again
#include <gtest/gtest.h>

#include <cstdlib>
#include <numeric>
#include <random>
#include <sstream>

#include "rdma/factory.h"
#include "rdma/kv_layout.h"
#include "rdma/striped/striped_transport.h"
#include "tests/rdma/transport_test_util.h"

namespace kvferry::rdma {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> splitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

class VerbsRailsTest : public ScatteredPairTest {
 protected:
  static constexpr uint64_t kBlockBytes = 64 * 1024;
  static constexpr uint32_t kSourceBlocks = 64;
  static constexpr uint32_t kBatchBlocks = 16;
  static constexpr uint32_t kInFlight = 4;

  void SetUp() override {
    target_devs_ = splitList(envOr("KVFERRY_RAILS_TARGET_DEVS", ""));
    initiator_devs_ = splitList(envOr("KVFERRY_RAILS_INITIATOR_DEVS", ""));
    if (target_devs_.size() < 2 || initiator_devs_.size() != target_devs_.size()) {
      GTEST_SKIP() << "no two RDMA rails per side named (KVFERRY_RAILS_TARGET_DEVS, "
                      "KVFERRY_RAILS_INITIATOR_DEVS; ctest -L rxe runs tests/rdma/rxe_rails.sh)";
    }
  }

  config::TransportConfig railsConfig(const std::vector<std::string>& devs, const char* ip_env) {
    config::TransportConfig c;
    c.kind = config::TransportKind::kVerbs;
    c.rails = devs;
    c.listen_address = envOr(ip_env, "127.0.0.1") + ":0";
    c.queue_depth = 16;
    c.connect_timeout_ms = 2000;
    c.connect_retries = 0;
    c.op_timeout_ms =
        5000;  // a slice stuck on a dead link (rxe may never fail it) is retried after this
    c.stripe_min_bytes = 64 * 1024;
    c.rail_cooldown_ms = 500;
    return c;
  }

  void connect() {
    Result<std::unique_ptr<Transport>> target =
        makeTransport(railsConfig(target_devs_, "KVFERRY_RAILS_TARGET_IP"));
    ASSERT_TRUE(target.isOk()) << target.status().toString();
    Result<std::unique_ptr<Transport>> initiator =
        makeTransport(railsConfig(initiator_devs_, "KVFERRY_RAILS_INITIATOR_IP"));
    ASSERT_TRUE(initiator.isOk()) << initiator.status().toString();
    target_ = std::move(target).value();
    initiator_ = std::move(initiator).value();
    connectPair(kBlockBytes, kSourceBlocks, kInFlight * kBatchBlocks, 11);
  }

  // `batches` batches of 16 scattered 64 KiB blocks, kInFlight at a time, each with an immediate;
  // `after_completions(n)` runs once n have completed. Every batch must complete OK with its
  // blocks intact and every immediate arrive.
  void run(int batches, const std::function<void(int)>& after_completions = nullptr) {
    ScatteredBatches run;
    run.batches = batches;
    run.batch_blocks = kBatchBlocks;
    run.in_flight = kInFlight;
    run.imm_base = 5000;
    run.limit = std::chrono::seconds(240);
    run.after_completion = after_completions;
    runScatteredBatches(*initiator_, peer_, initiator_pool_, initiator_mem_, *target_, target_pool_,
                        target_mem_, run);
  }

  std::vector<std::string> target_devs_, initiator_devs_;
};

TEST_F(VerbsRailsTest, BytesSpreadOverEveryRail) {
  connect();
  run(24);
  const std::vector<RailStats> stats = railStats(*initiator_);
  ASSERT_EQ(stats.size(), target_devs_.size());
  uint64_t total = 0;
  for (const RailStats& s : stats) total += s.bytes;
  EXPECT_EQ(total, 24u * kBatchBlocks * kBlockBytes);
  for (size_t r = 0; r < stats.size(); ++r) {
    std::printf("rail %zu (%s): %lu bytes, %lu slices, %.1f MB/s estimated\n", r,
                initiator_devs_[r].c_str(), static_cast<unsigned long>(stats[r].bytes),
                static_cast<unsigned long>(stats[r].slices), stats[r].bytes_per_s / 1e6);
    EXPECT_GT(stats[r].bytes, total / 10) << "rail " << r << " carried almost nothing";
  }
}

// The last rail's link goes down after a few batches and comes back near the end: every batch
// still completes with its bytes and immediate.
TEST_F(VerbsRailsTest, ALinkDownMidRunLosesNoBatch) {
  const std::string down = envOr("KVFERRY_RAILS_LINK_DOWN", "");
  const std::string up = envOr("KVFERRY_RAILS_LINK_UP", "");
  if (down.empty() || up.empty()) {
    GTEST_SKIP() << "KVFERRY_RAILS_LINK_DOWN / _UP name no commands to take a link down and up";
  }
  connect();
  bool link_down = false;
  run(40, [&](int completed) {
    if (completed == 6) {
      ASSERT_EQ(std::system(down.c_str()), 0) << down;
      link_down = true;
    }
    if (completed == 30 && link_down) {
      ASSERT_EQ(std::system(up.c_str()), 0) << up;
      link_down = false;
    }
  });
  // The link back up for what runs after, whatever failed above (an error here is reported).
  if (link_down) {
    EXPECT_EQ(std::system(up.c_str()), 0) << up;
  }
  const std::vector<RailStats> stats = railStats(*initiator_);
  ASSERT_FALSE(stats.empty());
  EXPECT_GT(stats.back().failures, 0u) << "the link went down and no slice failed: not tested";
  for (size_t r = 0; r < stats.size(); ++r) {
    std::printf("rail %zu: %lu bytes, %lu slices, %lu failed\n", r,
                static_cast<unsigned long>(stats[r].bytes),
                static_cast<unsigned long>(stats[r].slices),
                static_cast<unsigned long>(stats[r].failures));
  }
}

}  // namespace
}  // namespace kvferry::rdma
