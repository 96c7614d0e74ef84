// Launching the runtime's kernels with programmatic dependent launch (Hopper): a kernel may be
// scheduled while the one before it in the stream drains, and waits in waitForPrerequisites()
// until that one has finished and its writes are visible. Decode steps are chains of short
// kernels, so this hides a launch gap per kernel. Every kernel launched this way calls
// waitForPrerequisites() before it reads or writes memory; on older GPUs both are plain launches.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace kvferry::engine::cuda {

__device__ __forceinline__ void waitForPrerequisites() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

template <typename... Params, typename... Args>
cudaError_t launchDependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                            cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace kvferry::engine::cuda
