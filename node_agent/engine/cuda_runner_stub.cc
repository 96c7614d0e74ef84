// The CUDA backend's factory in a build without CUDA (nvcc was not found at configure time).
#include "node_agent/engine/cuda_runner.h"

namespace kvferry::engine {
namespace {

Status notBuilt() {
  return unavailable(
      "this build of kvferry has no CUDA support (nvcc was not found when it was "
      "configured; see the README's GPU section)");
}

}  // namespace

bool cudaRuntimeBuilt() { return false; }

Result<GpuInfo> describeGpu(int /*device*/) { return notBuilt(); }

Result<std::string> gpuPciBusId(int /*device*/) { return notBuilt(); }

Result<DeviceCeilings> measureDeviceCeilings(int /*device*/) { return notBuilt(); }

Status setCudaProfiling(bool /*on*/) { return notBuilt(); }

Result<std::unique_ptr<DeviceBlockDigester>> createDeviceBlockDigester(int /*device*/) {
  return notBuilt();
}

Result<std::unique_ptr<ModelRunner>> createCudaModelRunner(const model::LlamaParams& /*params*/,
                                                           const model::LlamaTensors& /*tensors*/,
                                                           const CudaRunnerConfig& /*config*/) {
  return notBuilt();
}

}  // namespace kvferry::engine
