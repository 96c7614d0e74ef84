#include "node_agent/engine/cuda/cuda_util.h"

#include <cublas_v2.h>

#include "node_agent/engine/cuda_runner.h"

namespace kvferry::engine::cuda {

Status cudaStatus(cudaError_t error, const char* call) {
  if (error == cudaSuccess) return Status::ok();
  const std::string message =
      std::string(call) + ": " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")";
  if (error == cudaErrorMemoryAllocation) return resourceExhausted(message);
  return internalError(message);
}

Status cublasStatus(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return Status::ok();
  const std::string message = std::string(call) + ": " + cublasGetStatusName(status) + " (" +
                              cublasGetStatusString(status) + ")";
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return resourceExhausted(message);
  return internalError(message);
}

Result<Stream> Stream::create() {
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return Stream(stream);
}

Stream::~Stream() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

Result<Event> Event::create(bool timing) {
  cudaEvent_t event = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&event, timing ? cudaEventDefault : cudaEventDisableTiming));
  return Event(event);
}

Event::~Event() {
  if (event_ != nullptr) cudaEventDestroy(event_);
}

Result<GraphExec> GraphExec::endCapture(cudaStream_t stream) {
  cudaGraph_t graph = nullptr;
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_CHECK(instantiated);
  return GraphExec(exec);
}

GraphExec::~GraphExec() {
  if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
}

Result<DeviceInfo> selectDevice(int device) {
  int count = 0;
  const cudaError_t counted = cudaGetDeviceCount(&count);
  if (counted == cudaErrorNoDevice || counted == cudaErrorInsufficientDriver ||
      (counted == cudaSuccess && count == 0)) {
    return unavailable(std::string("no CUDA device on this host (") +
                       (counted == cudaSuccess ? "none found" : cudaGetErrorString(counted)) + ")");
  }
  CUDA_CHECK(counted);
  if (device < 0 || device >= count) {
    return notFound("GPU " + std::to_string(device) + " does not exist: this host has " +
                    std::to_string(count) + " (0.." + std::to_string(count - 1) + ")");
  }
  CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp properties{};
  CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
  DeviceInfo info;
  info.index = device;
  info.name = properties.name;
  info.major = properties.major;
  info.minor = properties.minor;
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  info.free_bytes = free_bytes;
  info.total_bytes = total_bytes;
  return info;
}

}  // namespace kvferry::engine::cuda

namespace kvferry::engine {

Result<std::string> gpuPciBusId(int device) {
  // selectDevice checks the index against the devices present, with the errors describeGpu gives.
  ASSIGN_OR_RETURN(cuda::DeviceInfo info, cuda::selectDevice(device));
  // "dddd:bb:dd.f" and its terminator; CUDA documents 13 bytes as enough, more costs nothing.
  char bus_id[64] = {};
  CUDA_CHECK(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), info.index));
  return std::string(bus_id);
}

}  // namespace kvferry::engine
