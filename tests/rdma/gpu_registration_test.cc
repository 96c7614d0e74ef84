// The GPUDirect registration path choice (rdma/gpu/gpu_registration.h) with fake registrars: no
// GPU, no RDMA device.
#include "rdma/gpu/gpu_registration.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvferry::rdma {
namespace {

class FakeRegistrar : public GpuRegistrar {
 public:
  FakeRegistrar(Status dmabuf, Status peermem)
      : dmabuf_(std::move(dmabuf)), peermem_(std::move(peermem)) {}
  Status viaDmabuf() override {
    tried.push_back("dmabuf");
    return dmabuf_;
  }
  Status viaPeermem() override {
    tried.push_back("peermem");
    return peermem_;
  }
  std::vector<std::string> tried;

 private:
  Status dmabuf_, peermem_;
};

using config::GpuRegistration;
using Tried = std::vector<std::string>;

const Status kNoDmabuf = failedPrecondition("cuMemGetHandleForAddressRange: CUresult 801");
const Status kNoPeermem = ioError("ibv_reg_mr(device pointer, 4096 bytes)", EFAULT);

TEST(GpuRegistrationTest, AutoPrefersDmabuf) {
  FakeRegistrar r(Status::ok(), Status::ok());
  Result<GpuRegistrationPath> path = registerGpuMemory(r, GpuRegistration::kAuto);
  ASSERT_TRUE(path.isOk());
  EXPECT_EQ(*path, GpuRegistrationPath::kDmabuf);
  EXPECT_EQ(r.tried, Tried{"dmabuf"});
}

TEST(GpuRegistrationTest, AutoFallsBackToPeermemWhenDmabufFails) {
  FakeRegistrar r(kNoDmabuf, Status::ok());
  Result<GpuRegistrationPath> path = registerGpuMemory(r, GpuRegistration::kAuto);
  ASSERT_TRUE(path.isOk()) << path.status().toString();
  EXPECT_EQ(*path, GpuRegistrationPath::kPeermem);
  EXPECT_EQ(r.tried, (Tried{"dmabuf", "peermem"}));
  EXPECT_EQ(gpuRegistrationPathName(*path), "peermem");
}

TEST(GpuRegistrationTest, WhenBothFailTheErrorNamesBothCauses) {
  FakeRegistrar r(kNoDmabuf, kNoPeermem);
  Result<GpuRegistrationPath> path = registerGpuMemory(r, GpuRegistration::kAuto);
  ASSERT_FALSE(path.isOk());
  EXPECT_EQ(path.status().code(), StatusCode::kFailedPrecondition);
  const std::string& m = path.status().message();
  EXPECT_NE(m.find("gpu_registration: auto"), std::string::npos) << m;
  EXPECT_NE(m.find("dma-buf: "), std::string::npos) << m;
  EXPECT_NE(m.find("CUresult 801"), std::string::npos) << m;
  EXPECT_NE(m.find("peermem (ibv_reg_mr on the device pointer): "), std::string::npos) << m;
  EXPECT_NE(m.find("Bad address"), std::string::npos) << m;
  EXPECT_NE(m.find("modprobe nvidia-peermem"), std::string::npos) << m;
}

TEST(GpuRegistrationTest, DmabufModeNeverTriesPeermem) {
  FakeRegistrar r(kNoDmabuf, Status::ok());
  Result<GpuRegistrationPath> path = registerGpuMemory(r, GpuRegistration::kDmabuf);
  ASSERT_FALSE(path.isOk());
  EXPECT_EQ(r.tried, Tried{"dmabuf"});
  EXPECT_NE(path.status().message().find("CUresult 801"), std::string::npos);
  EXPECT_EQ(path.status().message().find("peermem ("), std::string::npos);
}

TEST(GpuRegistrationTest, PeermemModeNeverTriesDmabuf) {
  FakeRegistrar ok(Status::ok(), Status::ok());
  EXPECT_EQ(*registerGpuMemory(ok, GpuRegistration::kPeermem), GpuRegistrationPath::kPeermem);
  EXPECT_EQ(ok.tried, Tried{"peermem"});
  FakeRegistrar bad(Status::ok(), kNoPeermem);
  Result<GpuRegistrationPath> path = registerGpuMemory(bad, GpuRegistration::kPeermem);
  ASSERT_FALSE(path.isOk());
  EXPECT_EQ(bad.tried, Tried{"peermem"});
  EXPECT_EQ(path.status().message().find("dma-buf: "), std::string::npos);
}

}  // namespace
}  // namespace kvferry::rdma
