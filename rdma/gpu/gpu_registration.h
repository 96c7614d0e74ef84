// Which GPUDirect RDMA registration path a CUDA region takes, apart from verbs and CUDA so the
// choice is testable without either: dma-buf first (the CUDA driver exports the range as a
// dma-buf, ibv_reg_dmabuf_mr registers it), then ibv_reg_mr on the device pointer (works when
// the nvidia-peermem kernel module is loaded). Config: transport.verbs.gpu_registration.
#pragma once

#include <string_view>

#include "common/status.h"
#include "config/config.h"

namespace kvferry::rdma {

// The two ways to register one GPU range; an implementation keeps the registration it made.
// Used on the registering thread only.
class GpuRegistrar {
 public:
  virtual ~GpuRegistrar() = default;
  virtual Status viaDmabuf() = 0;
  virtual Status viaPeermem() = 0;
};

enum class GpuRegistrationPath { kDmabuf, kPeermem };
std::string_view gpuRegistrationPathName(GpuRegistrationPath path);

// Tries the paths `mode` allows, in order. When every allowed path fails the error names each
// cause (auto: both), with FAILED_PRECONDITION: the host lacks what GPUDirect needs.
Result<GpuRegistrationPath> registerGpuMemory(GpuRegistrar& registrar,
                                              config::GpuRegistration mode);

}  // namespace kvferry::rdma
