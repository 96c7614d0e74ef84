#include "node_agent/engine/cpu/cpu_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace kvferry::engine::cpu {
namespace {

std::vector<float> randomFloats(size_t n, uint64_t seed) {
  std::vector<float> out(n);
  uint64_t state = seed;
  for (float& v : out) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    v = static_cast<float>(static_cast<int64_t>(state >> 40) - (1 << 23)) * 0x1p-23f;
  }
  return out;
}

std::vector<Isa> supportedIsas() {
  std::vector<Isa> out = {Isa::kBaseline};
  if (detectIsa() != Isa::kBaseline) out.push_back(detectIsa());
  return out;
}

TEST(CpuKernelsTest, MatmulMatchesADoublePrecisionProduct) {
  for (Isa isa : supportedIsas()) {
    for (size_t in : {1u, 7u, 8u, 9u, 37u, 64u}) {
      for (size_t tokens : {1u, 3u, 4u, 9u}) {
        const size_t rows = 11;
        const std::vector<float> x = randomFloats(tokens * in, in);
        const std::vector<float> w = randomFloats(rows * in, in + 100);
        std::vector<float> y(tokens * rows);
        matmulRows(isa, x.data(), tokens, in, w.data(), 0, rows, y.data(), rows);
        for (size_t t = 0; t < tokens; ++t) {
          for (size_t r = 0; r < rows; ++r) {
            double expected = 0;
            for (size_t i = 0; i < in; ++i) expected += double{x[t * in + i]} * w[r * in + i];
            EXPECT_NEAR(y[t * rows + r], expected, 1e-5 * static_cast<double>(in))
                << isaName(isa) << " in " << in << " tokens " << tokens;
          }
        }
      }
    }
  }
}

// Each output is the same sum whatever the ISA, the batch it was computed in and the rows a
// thread was given: the property disaggregation and batching invariance rest on.
TEST(CpuKernelsTest, EveryOutputIsBitIdenticalAcrossIsasBatchesAndRowSplits) {
  const size_t in = 45, rows = 23, tokens = 14;  // AVX2 tiles: 8 + 4 + 1 + 1 tokens
  const std::vector<float> x = randomFloats(tokens * in, 1);
  const std::vector<float> w = randomFloats(rows * in, 2);
  std::vector<float> reference(tokens * rows);
  matmulRows(Isa::kBaseline, x.data(), tokens, in, w.data(), 0, rows, reference.data(), rows);
  for (Isa isa : supportedIsas()) {
    // One token at a time, and rows in uneven slices.
    std::vector<float> y(tokens * rows);
    for (size_t t = 0; t < tokens; ++t) {
      for (size_t begin = 0; begin < rows; begin += 5) {
        matmulRows(isa, x.data() + t * in, 1, in, w.data(), begin, std::min(rows, begin + 5),
                   y.data() + t * rows, rows);
      }
    }
    EXPECT_EQ(std::memcmp(y.data(), reference.data(), y.size() * sizeof(float)), 0) << isaName(isa);
    // Tokens in groups of 3 and 11.
    matmulRows(isa, x.data(), 3, in, w.data(), 0, rows, y.data(), rows);
    matmulRows(isa, x.data() + 3 * in, 11, in, w.data(), 0, rows, y.data() + 3 * rows, rows);
    EXPECT_EQ(std::memcmp(y.data(), reference.data(), y.size() * sizeof(float)), 0) << isaName(isa);
  }
  for (size_t t = 0; t < tokens; ++t) {
    for (size_t r = 0; r < rows; ++r) {
      const float d = dot(w.data() + r * in, x.data() + t * in, in);
      EXPECT_EQ(std::memcmp(&d, &reference[t * rows + r], sizeof d), 0);
    }
  }
}

TEST(CpuKernelsTest, RmsNormSoftmaxAndSwiGlu) {
  const std::vector<float> x = {1.0f, -2.0f, 3.0f, -4.0f};
  const std::vector<float> weight = {1.0f, 2.0f, 1.0f, 0.5f};
  std::vector<float> out(4);
  rmsNorm(x.data(), weight.data(), 4, 0.0f, out.data());
  const float rms = std::sqrt(30.0f / 4.0f);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(out[i], weight[i] * x[i] / rms, 1e-6);

  std::vector<float> logits = {1.0f, 2.0f, 3.0f, 1000.0f};
  softmax(logits.data(), 3);
  EXPECT_NEAR(logits[0] + logits[1] + logits[2], 1.0f, 1e-6);
  EXPECT_NEAR(logits[2] / logits[1], std::exp(1.0f), 1e-5);
  EXPECT_EQ(logits[3], 1000.0f);  // past n: untouched

  const float gate[] = {0.0f, 1.0f, -3.0f};
  const float up[] = {5.0f, 2.0f, 1.0f};
  float hidden[3];
  siluMul(gate, up, 3, hidden);
  EXPECT_EQ(hidden[0], 0.0f);
  EXPECT_NEAR(hidden[1], 2.0f / (1.0f + std::exp(-1.0f)), 1e-6);
  EXPECT_NEAR(hidden[2], -3.0f / (1.0f + std::exp(3.0f)), 1e-6);
}

// "Normal" mode: adjacent pairs within each head, only the first rope_dims elements.
TEST(CpuKernelsTest, RopeRotatesAdjacentPairsOfTheFirstRopeDims) {
  std::vector<float> v = randomFloats(12, 5);  // 2 heads of 6, rope over 4
  const std::vector<float> before = v;
  const float angles[] = {0.3f, -1.2f};
  const float cos[] = {std::cos(angles[0]), std::cos(angles[1])};
  const float sin[] = {std::sin(angles[0]), std::sin(angles[1])};
  rope(v.data(), 2, 6, 4, cos, sin);
  for (size_t head = 0; head < 2; ++head) {
    const float* b = before.data() + head * 6;
    const float* a = v.data() + head * 6;
    for (size_t k = 0; k < 2; ++k) {
      EXPECT_NEAR(a[2 * k], b[2 * k] * cos[k] - b[2 * k + 1] * sin[k], 1e-6);
      EXPECT_NEAR(a[2 * k + 1], b[2 * k] * sin[k] + b[2 * k + 1] * cos[k], 1e-6);
    }
    EXPECT_EQ(a[4], b[4]);
    EXPECT_EQ(a[5], b[5]);
  }
}

}  // namespace
}  // namespace kvferry::engine::cpu
