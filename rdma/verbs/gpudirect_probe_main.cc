// kvferry-gpudirect-probe: which GPUDirect RDMA registration path works on this host. Allocates
// a little GPU memory and tries each path (dma-buf, peermem) on each RDMA device, exactly as the
// verbs transport registers a CUDA region (rdma/verbs/gpu_mr.h). scripts/verify_gpudirect.sh
// runs it.
//
//   kvferry-gpudirect-probe [--gpu N] [--device DEV] [--bytes N]
//
// One line per device and path: "device DEV: dmabuf OK" or "device DEV: peermem FAIL (why)",
// then a summary. Exit: 0 when some path works on some device, 1 when none does, 2 for bad
// arguments, 3 when there is no GPU (or no CUDA in this build), 4 when there is no RDMA device.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "rdma/verbs/gpu_mr.h"
#if KVFERRY_HAVE_CUDA
#include "rdma/cuda_ipc/device_memory.h"
#endif

namespace kvferry::rdma::verbs_backend {
namespace {

constexpr int kAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;

struct Args {
  int gpu = 0;
  std::string device;
  size_t bytes = 2 << 20;
};

bool parse(int argc, char** argv, Args& args) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") return false;
    if (i + 1 >= argc) return false;
    const std::string v = argv[++i];
    char* end = nullptr;
    if (a == "--gpu") {
      args.gpu = static_cast<int>(std::strtol(v.c_str(), &end, 10));
      if (*end != '\0' || args.gpu < 0) return false;
    } else if (a == "--bytes") {
      args.bytes = std::strtoull(v.c_str(), &end, 10);
      if (*end != '\0' || args.bytes == 0) return false;
    } else if (a == "--device") {
      args.device = v;
    } else {
      return false;
    }
  }
  return true;
}

#if KVFERRY_HAVE_CUDA
// Tries both paths on one device; returns which worked ("" for none).
std::string probeDevice(ibv_device* dev, void* gpu_mem, size_t bytes) {
  const std::string name = ibv_get_device_name(dev);
  verbs::Context ctx(ibv_open_device(dev));
  verbs::ProtectionDomain pd(ctx ? ibv_alloc_pd(ctx.get()) : nullptr);
  if (!pd) {
    std::printf("device %s: FAIL (cannot open it or allocate a protection domain)\n", name.c_str());
    return "";
  }
  std::string works;
  for (GpuRegistrationPath path : {GpuRegistrationPath::kDmabuf, GpuRegistrationPath::kPeermem}) {
    VerbsGpuRegistrar registrar(pd.get(), gpu_mem, bytes, kAccess);
    Status s =
        path == GpuRegistrationPath::kDmabuf ? registrar.viaDmabuf() : registrar.viaPeermem();
    const char* label = path == GpuRegistrationPath::kDmabuf ? "dmabuf" : "peermem";
    if (s.isOk()) {
      std::printf("device %s: %s OK\n", name.c_str(), label);
      works += std::string(works.empty() ? "" : "+") + label;
    } else {
      std::printf("device %s: %s FAIL (%s)\n", name.c_str(), label, s.toString().c_str());
    }
    registrar.take();  // deregisters before the PD goes
  }
  return works;
}

#endif

int run(const Args& args) {
#if KVFERRY_HAVE_CUDA
  const std::string no_gpu = cuda_ipc::deviceUnavailableReason();
  if (!no_gpu.empty()) {
    std::printf("no GPU: %s\n", no_gpu.c_str());
    return 3;
  }
#else
  std::printf("no GPU: this build has no CUDA (configure with nvcc to probe GPU memory)\n");
  return 3;
#endif
  int count = 0;
  verbs::DeviceList list(ibv_get_device_list(&count));
  if (!list || count == 0) {
    std::printf(
        "no RDMA device: ibv_get_device_list is empty (no HCA, its driver not loaded, "
        "or no Soft-RoCE link)\n");
    return 4;
  }
#if KVFERRY_HAVE_CUDA
  Result<cuda_ipc::DeviceMemory> mem = cuda_ipc::DeviceMemory::allocate(args.gpu, args.bytes);
  if (!mem.isOk()) {
    std::printf("no GPU: cannot allocate %zu bytes on GPU %d: %s\n", args.bytes, args.gpu,
                mem.status().toString().c_str());
    return 3;
  }
  std::printf("GPU %d: %zu bytes at %p\n", args.gpu, args.bytes, mem->data());
  int probed = 0;
  std::string summary;
  for (int i = 0; i < count; ++i) {
    ibv_device* dev = list.get()[i];
    if (!args.device.empty() && args.device != ibv_get_device_name(dev)) continue;
    ++probed;
    const std::string works = probeDevice(dev, mem->data(), args.bytes);
    if (!works.empty()) {
      summary += std::string(summary.empty() ? "" : ", ") + ibv_get_device_name(dev) + " " + works;
    }
  }
  if (probed == 0) {
    std::printf("no RDMA device: %s is not present\n", args.device.c_str());
    return 4;
  }
  std::printf("summary: %s\n", summary.empty() ? "no registration path works on any device"
                                               : ("works: " + summary).c_str());
  return summary.empty() ? 1 : 0;
#else
  (void)args;
  return 3;
#endif
}

}  // namespace
}  // namespace kvferry::rdma::verbs_backend

int main(int argc, char** argv) {
  kvferry::rdma::verbs_backend::Args args;
  if (!kvferry::rdma::verbs_backend::parse(argc, argv, args)) {
    std::fprintf(stderr, "usage: kvferry-gpudirect-probe [--gpu N] [--device DEV] [--bytes N]\n");
    return 2;
  }
  return kvferry::rdma::verbs_backend::run(args);
}
