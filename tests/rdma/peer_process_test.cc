// A peer *process* dies mid-batch (SIGKILL, no goodbye): every pending batch fails within the
// deadline, the old peer stays failed, and a restarted peer is reached again with its new blob.
// The peer is a real transfer_bench target process.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "rdma/endpoint_blob.h"
#include "rdma/factory.h"
#include "tests/rdma/transport_test_util.h"

extern char** environ;

namespace kvferry::rdma {
namespace {

using namespace std::chrono_literals;

class TargetProcess {
 public:
  // Starts transfer_bench --role target with `yaml` as its config; waits for its blob.
  static std::unique_ptr<TargetProcess> start(const std::string& transport, const std::string& yaml,
                                              const std::string& dir) {
    auto p = std::unique_ptr<TargetProcess>(new TargetProcess);
    p->blob_path_ = dir + "/blob";
    std::filesystem::remove(p->blob_path_);
    const std::string cfg = dir + "/target.yaml";
    std::ofstream(cfg) << yaml;
    std::vector<std::string> args{KVFERRY_TRANSFER_BENCH,
                                  "--role",
                                  "target",
                                  "--transport",
                                  transport,
                                  "--config",
                                  cfg,
                                  "--blob-file",
                                  p->blob_path_,
                                  "--pool-bytes",
                                  "16M"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&p->pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return nullptr;
    const auto give_up = std::chrono::steady_clock::now() + 60s;
    while (!std::filesystem::exists(p->blob_path_)) {
      if (std::chrono::steady_clock::now() > give_up) return nullptr;
      std::this_thread::sleep_for(20ms);
    }
    return p;
  }

  EndpointBlob blob() const {
    std::ifstream in(blob_path_);
    std::string hex;
    in >> hex;
    EndpointBlob out(hex.size() / 2);
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
    }
    return out;
  }

  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  ~TargetProcess() { kill(); }

 private:
  pid_t pid_ = -1;
  std::string blob_path_;
};

void killedPeerFailsPendingThenReconnects(const std::string& transport,
                                          const config::TransportConfig& initiator_cfg,
                                          const std::string& target_yaml) {
  const std::string dir = ::testing::TempDir() + "kvferry-peer-" + transport;
  std::filesystem::create_directories(dir);
  auto target = TargetProcess::start(transport, target_yaml, dir);
  ASSERT_TRUE(target) << "transfer_bench target did not start";
  auto initiator = std::move(makeTransport(initiator_cfg)).value();
  constexpr uint64_t kBlock = 256 * 1024;
  std::vector<uint8_t> mem(kBlock * 32);
  fillRandom(mem, 1);
  KvPool local = registerPool(*initiator, mem, kBlock);
  EndpointInfo info = *decodeEndpoint(target->blob());
  const KvPool remote{info.regions.at(0).id, kBlock, info.regions[0].bytes / kBlock};
  Result<PeerId> peer = initiator->connect(target->blob());
  ASSERT_TRUE(peer.isOk()) << peer.status().toString();

  std::vector<uint32_t> ids(16);
  for (uint32_t i = 0; i < 16; ++i) ids[i] = 2 * i;
  std::vector<TransferOp> ops;
  ASSERT_TRUE(appendBlockOps(local, remote, ids, ids, ops).isOk());
  uint64_t posted = 0;
  for (uint64_t i = 0; i < initiator_cfg.queue_depth; ++i) {
    if (initiator->postWrite(*peer, ops, 1u, i).isOk()) ++posted;
  }
  target->kill();  // mid-batch: no FIN for the data plane's sake, the process is just gone
  std::vector<Completion> done = drainCompletions(
      *initiator, posted, std::chrono::milliseconds(initiator_cfg.op_timeout_ms) + 20s);
  EXPECT_EQ(done.size(), posted) << "a pending batch never completed";
  Status after = initiator->postWrite(*peer, ops, 1u, 999);
  if (after.isOk()) after = waitOne(*initiator, 999);
  EXPECT_FALSE(after.isOk()) << "the dead peer still accepts batches";

  // The peer restarts: its new blob connects, the old peer id stays failed.
  auto restarted = TargetProcess::start(transport, target_yaml, dir);
  ASSERT_TRUE(restarted);
  Result<PeerId> again = initiator->connect(restarted->blob());
  ASSERT_TRUE(again.isOk()) << again.status().toString();
  EndpointInfo info2 = *decodeEndpoint(restarted->blob());
  const KvPool remote2{info2.regions.at(0).id, kBlock, info2.regions[0].bytes / kBlock};
  ops.clear();
  ASSERT_TRUE(appendBlockOps(local, remote2, ids, ids, ops).isOk());
  ASSERT_TRUE(initiator->postWrite(*again, ops, 2u, 1000).isOk());
  EXPECT_TRUE(waitOne(*initiator, 1000).isOk());
  EXPECT_TRUE(initiator->disconnect(*peer).isOk());
}

config::TransportConfig baseInitiator(config::TransportKind kind) {
  config::TransportConfig c;
  c.kind = kind;
  c.queue_depth = 8;
  c.op_timeout_ms = 3000;
  c.connect_retries = 0;
  return c;
}

TEST(PeerProcessTest, TcpKilledPeerFailsPendingBatchesThenReconnects) {
  auto c = baseInitiator(config::TransportKind::kTcp);
  c.listen_address = "127.0.0.1:0";
  killedPeerFailsPendingThenReconnects("tcp", c, "transport:\n  listen_address: 127.0.0.1:0\n");
}

#ifdef KVFERRY_HAVE_VERBS
TEST(PeerProcessTest, VerbsKilledPeerFailsPendingBatchesThenReconnects) {
  const std::string why = verbsTestUnavailableReason();
  if (!why.empty()) GTEST_SKIP() << why;
  auto c = baseInitiator(config::TransportKind::kVerbs);
  const VerbsTestEndpoint me = verbsTestEndpoint(false);
  const VerbsTestEndpoint peer = verbsTestEndpoint(true);
  c.verbs.devices = {me.device};
  c.listen_address = me.ip + ":0";
  killedPeerFailsPendingThenReconnects("verbs", c,
                                       "transport:\n  kind: verbs\n  listen_address: " + peer.ip +
                                           ":0\n  verbs:\n    devices: [" + peer.device + "]\n");
}
#endif

}  // namespace
}  // namespace kvferry::rdma
