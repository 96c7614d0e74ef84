// measureDeviceCeilings (cuda_runner.h): a large device-to-device copy and a large bfloat16 GEMM,
// timed with CUDA events.
#include <cublas_v2.h>
#include <cuda_profiler_api.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

#include "model/float16.h"
#include "node_agent/engine/cuda/cuda_util.h"
#include "node_agent/engine/cuda_runner.h"

namespace kvferry::engine {
namespace {

// Milliseconds between two events recorded around what `enqueue` puts on `stream`.
Result<float> timeOnStream(cudaStream_t stream, const std::function<Status()>& enqueue) {
  ASSIGN_OR_RETURN(cuda::Event start, cuda::Event::create(true));
  ASSIGN_OR_RETURN(cuda::Event stop, cuda::Event::create(true));
  CUDA_CHECK(cudaEventRecord(start.get(), stream));
  RETURN_IF_ERROR(enqueue());
  CUDA_CHECK(cudaEventRecord(stop.get(), stream));
  CUDA_CHECK(cudaEventSynchronize(stop.get()));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
  return ms;
}

}  // namespace

Result<DeviceCeilings> measureDeviceCeilings(int device) {
  ASSIGN_OR_RETURN(cuda::DeviceInfo info, cuda::selectDevice(device));
  (void)info;
  ASSIGN_OR_RETURN(cuda::Stream stream, cuda::Stream::create());
  DeviceCeilings ceilings;
  {
    constexpr uint64_t kBytes = uint64_t{4} << 30;
    ASSIGN_OR_RETURN(cuda::DeviceBuffer from, cuda::DeviceBuffer::allocate(kBytes));
    ASSIGN_OR_RETURN(cuda::DeviceBuffer to, cuda::DeviceBuffer::allocate(kBytes));
    CUDA_CHECK(cudaMemsetAsync(from.data(), 1, kBytes, stream.get()));
    float best = 1e30f;
    for (int run = 0; run < 6; ++run) {  // the first warms up
      ASSIGN_OR_RETURN(const float ms, timeOnStream(stream.get(), [&] {
                         return cuda::cudaStatus(
                             cudaMemcpyAsync(to.data(), from.data(), kBytes,
                                             cudaMemcpyDeviceToDevice, stream.get()),
                             "cudaMemcpyAsync");
                       }));
      if (run > 0) best = std::min(best, ms);
    }
    ceilings.copy_bytes_per_s = 2.0 * kBytes / (best / 1e3);
  }
  {
    constexpr int kN = 8192;
    constexpr uint64_t kElements = uint64_t{kN} * kN;
    std::vector<uint16_t> host(kElements);
    uint64_t state = 12345;
    for (uint16_t& v : host) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      v = model::floatToBf16(static_cast<float>(state >> 40) * 0x1p-24f - 0.5f);
    }
    ASSIGN_OR_RETURN(cuda::DeviceBuffer a, cuda::DeviceBuffer::allocate(kElements * 2));
    ASSIGN_OR_RETURN(cuda::DeviceBuffer b, cuda::DeviceBuffer::allocate(kElements * 2));
    ASSIGN_OR_RETURN(cuda::DeviceBuffer c, cuda::DeviceBuffer::allocate(kElements * 2));
    CUDA_CHECK(cudaMemcpy(a.data(), host.data(), kElements * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(b.data(), host.data(), kElements * 2, cudaMemcpyHostToDevice));
    cublasHandle_t raw = nullptr;
    CUBLAS_CHECK(cublasCreate(&raw));
    std::unique_ptr<cublasContext, cublasStatus_t (*)(cublasHandle_t)> handle(raw, &cublasDestroy);
    CUBLAS_CHECK(cublasSetStream(raw, stream.get()));
    const float one = 1.0f;
    const float zero = 0.0f;
    const auto gemm = [&]() -> Status {
      for (int i = 0; i < 10; ++i) {
        CUBLAS_CHECK(cublasGemmEx(raw, CUBLAS_OP_T, CUBLAS_OP_N, kN, kN, kN, &one, a.data(),
                                  CUDA_R_16BF, kN, b.data(), CUDA_R_16BF, kN, &zero, c.data(),
                                  CUDA_R_16BF, kN, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      }
      return Status::ok();
    };
    float best = 1e30f;
    for (int run = 0; run < 4; ++run) {
      ASSIGN_OR_RETURN(const float ms, timeOnStream(stream.get(), gemm));
      if (run > 0) best = std::min(best, ms);
    }
    ceilings.bf16_gemm_flops = 10 * 2.0 * kN * double{kN} * kN / (best / 1e3);
  }
  return ceilings;
}

Status setCudaProfiling(bool on) {
  CUDA_CHECK(on ? cudaProfilerStart() : cudaProfilerStop());
  return Status::ok();
}

}  // namespace kvferry::engine
