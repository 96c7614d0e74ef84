// GPUDirect RDMA registration of CUDA memory on one protection domain: the verbs side of
// rdma/gpu/gpu_registration.h (dma-buf via ibv_reg_dmabuf_mr, or ibv_reg_mr on the device
// pointer for nvidia-peermem). Shared by the verbs transport and kvferry-gpudirect-probe.
#pragma once

#include <cstddef>

#include "rdma/gpu/gpu_registration.h"
#include "rdma/verbs/verbs_resources.h"

namespace kvferry::rdma::verbs_backend {

class VerbsGpuRegistrar final : public GpuRegistrar {
 public:
  VerbsGpuRegistrar(ibv_pd* pd, void* base, size_t bytes, int access)
      : pd_(pd), base_(base), bytes_(bytes), access_(access) {}
  Status viaDmabuf() override;
  Status viaPeermem() override;
  // The registration the successful path made (empty before).
  verbs::MemoryRegion take() { return std::move(mr_); }

 private:
  ibv_pd* pd_;
  void* base_;
  size_t bytes_;
  int access_;
  verbs::MemoryRegion mr_;
};

// Registers [base, base + bytes) of CUDA memory per `mode`; `path` receives the path used.
Result<verbs::MemoryRegion> registerGpuRegion(ibv_pd* pd, void* base, size_t bytes, int access,
                                              config::GpuRegistration mode,
                                              GpuRegistrationPath& path);

}  // namespace kvferry::rdma::verbs_backend
