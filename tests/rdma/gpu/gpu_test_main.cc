// The rdma GPU tests' main: without a CUDA device it says why and exits 77 (ctest: skipped).
#include <gtest/gtest.h>

#include <cstdio>

#include "rdma/cuda_ipc/device_memory.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!GTEST_FLAG_GET(list_tests)) {
    const std::string why = kvferry::rdma::cuda_ipc::deviceUnavailableReason();
    if (!why.empty()) {
      std::printf("SKIPPED: the rdma GPU tests need a CUDA device: %s\n", why.c_str());
      return 77;
    }
  }
  return RUN_ALL_TESTS();
}
