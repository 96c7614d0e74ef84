// The GPU tests' main: without a usable CUDA device it says why and exits 77, which ctest reports
// as skipped (SKIP_RETURN_CODE); listing the tests works anywhere.
#include <gtest/gtest.h>

#include <cstdio>

#include "node_agent/engine/cuda_runner.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!GTEST_FLAG_GET(list_tests)) {
    kvferry::Result<kvferry::engine::GpuInfo> gpu = kvferry::engine::describeGpu(0);
    if (!gpu.isOk()) {
      std::printf("SKIPPED: the GPU tests need a CUDA device: %s\n",
                  gpu.status().toString().c_str());
      return 77;
    }
    std::printf("GPU 0: %s, %.1f GiB (%.1f GiB free)\n", gpu->name.c_str(),
                static_cast<double>(gpu->total_bytes) / (1u << 30),
                static_cast<double>(gpu->free_bytes) / (1u << 30));
  }
  return RUN_ALL_TESTS();
}
