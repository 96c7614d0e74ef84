// gpuPciBusId (cuda_runner.h), what transport.rails: [auto] measures PCIe distance from: CUDA's
// form of the address, and sysfs knows the device by it (lowercased).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <string>

#include "node_agent/engine/cuda_runner.h"

namespace kvferry::engine {
namespace {

TEST(GpuPciBusIdTest, IsADomainBusDeviceFunctionThatSysfsKnows) {
  Result<std::string> id = gpuPciBusId(0);
  ASSERT_TRUE(id.isOk()) << id.status().toString();
  std::string lower = *id;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // dddd:bb:dd.f (CUDA may give a longer domain; the last 12 characters are bus:dev.fn).
  ASSERT_GE(lower.size(), 12u) << lower;
  EXPECT_EQ(lower[lower.size() - 8], ':') << lower;
  EXPECT_EQ(lower[lower.size() - 5], ':') << lower;
  EXPECT_EQ(lower[lower.size() - 2], '.') << lower;
  const std::string sysfs_id = lower.substr(lower.size() - 12);  // a 4-digit domain
  EXPECT_TRUE(std::filesystem::exists("/sys/bus/pci/devices/" + sysfs_id))
      << "CUDA says " << *id << "; sysfs has no /sys/bus/pci/devices/" << sysfs_id;
}

}  // namespace
}  // namespace kvferry::engine
