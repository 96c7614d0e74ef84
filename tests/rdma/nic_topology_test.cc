// rdmaDevicesNearest over a fake sysfs tree: the PCIe shapes of a multi-NIC GPU host, built in a
// temporary directory so the test needs no hardware.
#include "rdma/nic_topology.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

namespace kvferry::rdma {
namespace {

namespace fs = std::filesystem;

using Names = std::vector<std::string>;

class NicTopologyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::path(::testing::TempDir()) /
            ("nic_topology_" + std::string(info->name()) + "_" + std::to_string(getpid()));
    fs::remove_all(root_);
    ASSERT_TRUE(fs::create_directories(root_));
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // Two root complexes; under the first a PCIe switch (upstream port 01:00.0, downstream ports
  // 02:00.0 and 02:01.0) with the GPU (03:00.0) and mlx5_1 (04:00.0) below it; mlx5_0 (81:00.0)
  // under the second root complex; mlx5_2 a software device with no `device` link.
  void buildHost() {
    const fs::path devices = root_ / "devices";
    const fs::path sw = devices / "pci0000:00" / "0000:00:01.0" / "0000:01:00.0";
    const fs::path gpu = sw / "0000:02:00.0" / "0000:03:00.0";
    const fs::path nic1 = sw / "0000:02:01.0" / "0000:04:00.0";
    const fs::path nic0 = devices / "pci0000:80" / "0000:80:01.0" / "0000:81:00.0";
    for (const fs::path& p : {gpu, nic1, nic0}) fs::create_directories(p);
    const fs::path bus = root_ / "bus" / "pci" / "devices";
    fs::create_directories(bus);
    fs::create_directory_symlink(gpu, bus / "0000:03:00.0");
    fs::create_directory_symlink(nic0, bus / "0000:81:00.0");

    const fs::path ib = root_ / "class" / "infiniband";
    fs::create_directories(ib);
    // As the kernel lays it out: the class entry a link to the device's directory under its PCI
    // function, whose `device` link points back up (relative).
    fs::create_directories(nic1 / "infiniband" / "mlx5_1");
    fs::create_directory_symlink("../../../0000:04:00.0",
                                 nic1 / "infiniband" / "mlx5_1" / "device");
    fs::create_directory_symlink(nic1 / "infiniband" / "mlx5_1", ib / "mlx5_1");
    // A plain directory with an absolute `device` link.
    fs::create_directories(ib / "mlx5_0");
    fs::create_directory_symlink(nic0, ib / "mlx5_0" / "device");
    // No PCI parent.
    fs::create_directories(ib / "mlx5_2");
  }

  fs::path root_;
};

TEST_F(NicTopologyTest, NearestTheGpuFirstAndSoftwareDevicesLast) {
  buildHost();
  // CUDA's form (cudaDeviceGetPCIBusId), nvidia-smi's, and one without a domain.
  for (const char* id : {"0000:03:00.0", "00000000:03:00.0", "03:00.0"}) {
    Result<Names> order = rdmaDevicesNearest(id, root_);
    ASSERT_TRUE(order.isOk()) << id << ": " << order.status().toString();
    EXPECT_EQ(*order, (Names{"mlx5_1", "mlx5_0", "mlx5_2"})) << id;
  }
}

TEST_F(NicTopologyTest, AGpuOnTheOtherRootComplexPrefersTheNicThere) {
  buildHost();
  // 81:00.0 is mlx5_0's own function: distance 0, then mlx5_1 across the root complexes.
  Result<Names> order = rdmaDevicesNearest("0000:81:00.0", root_);
  ASSERT_TRUE(order.isOk()) << order.status().toString();
  EXPECT_EQ(*order, (Names{"mlx5_0", "mlx5_1", "mlx5_2"}));
}

TEST_F(NicTopologyTest, WithoutAGpuByName) {
  buildHost();
  Result<Names> order = rdmaDevicesNearest("", root_);
  ASSERT_TRUE(order.isOk()) << order.status().toString();
  EXPECT_EQ(*order, (Names{"mlx5_0", "mlx5_1", "mlx5_2"}));
}

TEST_F(NicTopologyTest, NamesOrderNumbersAsNumbers) {
  const fs::path ib = root_ / "class" / "infiniband";
  for (const char* name : {"mlx5_10", "mlx5_2", "mlx5_1"}) fs::create_directories(ib / name);
  Result<Names> order = rdmaDevicesNearest("", root_);
  ASSERT_TRUE(order.isOk()) << order.status().toString();
  EXPECT_EQ(*order, (Names{"mlx5_1", "mlx5_2", "mlx5_10"}));
}

TEST_F(NicTopologyTest, AGpuMissingFromSysfsIsNotFound) {
  buildHost();
  Result<Names> order = rdmaDevicesNearest("0000:41:00.0", root_);
  ASSERT_FALSE(order.isOk());
  EXPECT_EQ(order.status().code(), StatusCode::kNotFound);
  EXPECT_NE(order.status().message().find((root_ / "bus/pci/devices/0000:41:00.0").string()),
            std::string::npos)
      << order.status().toString();
}

TEST_F(NicTopologyTest, NoRdmaDeviceIsNotFound) {
  // No class/infiniband at all, and an empty one.
  Result<Names> none = rdmaDevicesNearest("", root_);
  ASSERT_FALSE(none.isOk());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("no RDMA device"), std::string::npos)
      << none.status().toString();
  fs::create_directories(root_ / "class" / "infiniband");
  Result<Names> empty = rdmaDevicesNearest("", root_);
  ASSERT_FALSE(empty.isOk());
  EXPECT_EQ(empty.status().code(), StatusCode::kNotFound);
}

TEST_F(NicTopologyTest, AMalformedBusIdIsInvalid) {
  buildHost();
  for (const char* id : {"gpu0", "0000:03:00", "0000-03:00.0", ":03:00.0"}) {
    Result<Names> order = rdmaDevicesNearest(id, root_);
    ASSERT_FALSE(order.isOk()) << id;
    EXPECT_EQ(order.status().code(), StatusCode::kInvalidArgument) << id;
  }
}

TEST(NicTopologyBusIdTest, NormalizedAsSysfsNamesIt) {
  EXPECT_EQ(normalizePciBusId("0000:41:00.0").value(), "0000:41:00.0");
  EXPECT_EQ(normalizePciBusId("00000000:41:00.0").value(), "0000:41:00.0");
  EXPECT_EQ(normalizePciBusId("00000000:C1:00.0").value(), "0000:c1:00.0");
  EXPECT_EQ(normalizePciBusId("41:00.0").value(), "0000:41:00.0");
  EXPECT_EQ(normalizePciBusId("1:41:00.0").value(), "0001:41:00.0");
  EXPECT_EQ(normalizePciBusId("00010000:41:00.0").value(), "10000:41:00.0");  // VMD domain
}

}  // namespace
}  // namespace kvferry::rdma
