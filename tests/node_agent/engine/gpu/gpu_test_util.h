// Helpers of the GPU tests (ctest label gpu): device buffers from host vectors and back, and
// bfloat16 on the host.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "model/float16.h"
#include "node_agent/engine/cuda/cuda_util.h"
#include "node_agent/engine/cuda/kernels.h"

namespace kvferry::engine::cuda::testing {

inline float roundBf16(float x) { return model::bf16ToFloat(model::floatToBf16(x)); }

template <typename T>
DeviceBuffer upload(const std::vector<T>& host) {
  Result<DeviceBuffer> buffer = DeviceBuffer::allocate(host.size() * sizeof(T));
  EXPECT_TRUE(buffer.isOk()) << buffer.status().toString();
  if (!buffer.isOk()) return {};
  EXPECT_EQ(
      cudaMemcpy(buffer->data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
      cudaSuccess);
  return std::move(buffer).value();
}

// bfloat16 bits of each float, uploaded.
inline DeviceBuffer uploadBf16(const std::vector<float>& host) {
  std::vector<uint16_t> bits;
  bits.reserve(host.size());
  for (float v : host) bits.push_back(model::floatToBf16(v));
  return upload(bits);
}

template <typename T>
std::vector<T> download(const DeviceBuffer& buffer, size_t count) {
  std::vector<T> host(count);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(host.data(), buffer.data(), count * sizeof(T), cudaMemcpyDeviceToHost),
            cudaSuccess);
  return host;
}

inline std::vector<float> downloadBf16(const DeviceBuffer& buffer, size_t count) {
  std::vector<float> out;
  for (uint16_t bits : download<uint16_t>(buffer, count)) out.push_back(model::bf16ToFloat(bits));
  return out;
}

// Deterministic values uniform in [-scale, scale), already bfloat16-exact.
inline std::vector<float> randomValues(size_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<float> out(n);
  uint64_t state = seed * 0x9e3779b97f4a7c15ULL + 7;
  for (float& v : out) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    const float unit = static_cast<float>(state >> 40) * 0x1p-24f;  // [0, 1)
    v = roundBf16(scale * (2.0f * unit - 1.0f));
  }
  return out;
}

}  // namespace kvferry::engine::cuda::testing
