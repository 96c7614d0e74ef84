#include "rdma/verbs/gpu_mr.h"

#include <cerrno>
#include <string>

#include "rdma/gpu/dmabuf_export.h"

namespace kvferry::rdma::verbs_backend {

Status VerbsGpuRegistrar::viaDmabuf() {
  ASSIGN_OR_RETURN(gpu::DmabufRange range, gpu::exportDmabuf(base_, bytes_));
  // iova = the device pointer, so remote addresses are base + offset like any other region.
  mr_.reset(ibv_reg_dmabuf_mr(pd_, range.offset(), bytes_, reinterpret_cast<uint64_t>(base_),
                              range.fd(), access_));
  if (!mr_) return ioError("ibv_reg_dmabuf_mr(" + std::to_string(bytes_) + " bytes)", errno);
  return Status::ok();  // the MR holds its own reference to the dma-buf: the fd may close
}

Status VerbsGpuRegistrar::viaPeermem() {
  mr_.reset(ibv_reg_mr(pd_, base_, bytes_, access_));
  if (!mr_) {
    const int err = errno;
    // EFAULT is what the kernel says when no peer-memory client claims the address.
    return ioError(std::string("ibv_reg_mr(device pointer, ") + std::to_string(bytes_) + " bytes)" +
                       (err == EFAULT ? " [nvidia-peermem not loaded?]" : ""),
                   err);
  }
  return Status::ok();
}

Result<verbs::MemoryRegion> registerGpuRegion(ibv_pd* pd, void* base, size_t bytes, int access,
                                              config::GpuRegistration mode,
                                              GpuRegistrationPath& path) {
  VerbsGpuRegistrar registrar(pd, base, bytes, access);
  ASSIGN_OR_RETURN(path, registerGpuMemory(registrar, mode));
  return registrar.take();
}

}  // namespace kvferry::rdma::verbs_backend
