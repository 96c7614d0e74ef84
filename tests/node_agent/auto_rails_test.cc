// transport.rails: [auto] as the agent resolves it at start-up, over a fake sysfs tree (the PCIe
// ordering itself is tested in tests/rdma/nic_topology_test.cc).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "node_agent/load_model.h"

namespace kvferry::agent {
namespace {

namespace fs = std::filesystem;

class AutoRailsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    sysfs_ = fs::path(::testing::TempDir()) /
             ("auto_rails_" + std::string(info->name()) + "_" + std::to_string(getpid()));
    fs::remove_all(sysfs_);
    fs::create_directories(sysfs_ / "class" / "infiniband" / "mlx5_1");
    fs::create_directories(sysfs_ / "class" / "infiniband" / "mlx5_0");
    config_.transport.kind = config::TransportKind::kVerbs;
    config_.transport.rails = {"auto"};
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(sysfs_, ec);
  }

  fs::path sysfs_;
  config::NodeAgentConfig config_;
};

TEST_F(AutoRailsTest, TheCpuRuntimeTakesEveryDeviceByName) {
  config_.gpu = -1;
  ASSERT_TRUE(resolveAutoRails(config_, sysfs_).isOk());
  EXPECT_EQ(config_.transport.rails, (std::vector<std::string>{"mlx5_0", "mlx5_1"}));
}

TEST_F(AutoRailsTest, NamedRailsAndOtherTransportsAreLeftAlone) {
  config_.gpu = -1;
  config_.transport.rails = {"mlx5_1"};
  ASSERT_TRUE(resolveAutoRails(config_, sysfs_).isOk());
  EXPECT_EQ(config_.transport.rails, (std::vector<std::string>{"mlx5_1"}));

  // tcp's [auto] stays for rdma::makeTransport to refuse.
  config_.transport.kind = config::TransportKind::kTcp;
  config_.transport.rails = {"auto"};
  ASSERT_TRUE(resolveAutoRails(config_, sysfs_).isOk());
  EXPECT_EQ(config_.transport.rails, (std::vector<std::string>{"auto"}));
}

TEST_F(AutoRailsTest, ErrorsNameTheSetting) {
  config_.gpu = -1;
  fs::remove_all(sysfs_ / "class");
  Status none = resolveAutoRails(config_, sysfs_);
  ASSERT_FALSE(none.isOk());
  EXPECT_EQ(none.code(), StatusCode::kNotFound);
  EXPECT_NE(none.message().find("transport.rails"), std::string::npos) << none.toString();

  // A GPU: without CUDA its address is unavailable; with it, the fake sysfs lacks the device.
  config_.gpu = 0;
  Status gpu = resolveAutoRails(config_, sysfs_);
  ASSERT_FALSE(gpu.isOk());
  EXPECT_NE(gpu.message().find("transport.rails"), std::string::npos) << gpu.toString();
}

}  // namespace
}  // namespace kvferry::agent
