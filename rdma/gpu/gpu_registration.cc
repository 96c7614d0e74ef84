#include "rdma/gpu/gpu_registration.h"

#include <string>

namespace kvferry::rdma {
namespace {

constexpr std::string_view kHint =
    "GPUDirect RDMA needs the open NVIDIA kernel modules with a dma-buf capable kernel and "
    "rdma-core (dma-buf), or the nvidia-peermem module (modprobe nvidia-peermem); "
    "scripts/verify_gpudirect.sh reports what this host has";

}  // namespace

std::string_view gpuRegistrationPathName(GpuRegistrationPath path) {
  return path == GpuRegistrationPath::kDmabuf ? "dma-buf" : "peermem";
}

Result<GpuRegistrationPath> registerGpuMemory(GpuRegistrar& registrar,
                                              config::GpuRegistration mode) {
  std::string causes;
  if (mode != config::GpuRegistration::kPeermem) {
    Status dmabuf = registrar.viaDmabuf();
    if (dmabuf.isOk()) return GpuRegistrationPath::kDmabuf;
    causes = "dma-buf: " + dmabuf.toString();
  }
  if (mode != config::GpuRegistration::kDmabuf) {
    Status peermem = registrar.viaPeermem();
    if (peermem.isOk()) return GpuRegistrationPath::kPeermem;
    causes += std::string(causes.empty() ? "" : "; ") +
              "peermem (ibv_reg_mr on the device pointer): " + peermem.toString();
  }
  return failedPrecondition("cannot register GPU memory for RDMA (gpu_registration: " +
                            std::string(config::gpuRegistrationName(mode)) + "): " + causes + ". " +
                            std::string(kHint));
}

}  // namespace kvferry::rdma
