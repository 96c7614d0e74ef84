// Arrival schedules: rates and gap shapes over many samples with a fixed seed (deterministic, no
// clocks), and the edge cases.
#include "bench/benchmark_client/arrivals.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace kvferry::bench {
namespace {

struct GapStats {
  double mean = 0;
  double cv = 0;  // standard deviation / mean
};

GapStats gaps(const std::vector<double>& times) {
  const size_t n = times.size() - 1;
  double sum = 0;
  for (size_t i = 1; i < times.size(); ++i) sum += times[i] - times[i - 1];
  const double mean = sum / static_cast<double>(n);
  double squares = 0;
  for (size_t i = 1; i < times.size(); ++i) {
    const double d = times[i] - times[i - 1] - mean;
    squares += d * d;
  }
  return {mean, std::sqrt(squares / static_cast<double>(n)) / mean};
}

TEST(ArrivalsTest, PoissonHasTheRequestedRateAndExponentialGaps) {
  Rng rng(42);
  auto times = arrivalTimes(200001, 8.0, 1.0, rng);
  ASSERT_TRUE(times.isOk()) << times.status().toString();
  EXPECT_EQ(times->front(), 0.0);
  const GapStats s = gaps(*times);
  EXPECT_NEAR(s.mean, 1.0 / 8.0, 0.01 / 8.0);  // 200k gaps: the mean is within 1%
  EXPECT_NEAR(s.cv, 1.0, 0.02);                // exponential: CV 1
  EXPECT_NEAR(static_cast<double>(times->size() - 1) / times->back(), 8.0, 0.08);
}

TEST(ArrivalsTest, GammaKeepsTheMeanAndScalesTheSpreadWithBurstiness) {
  for (double burstiness : {0.25, 0.5, 2.0, 8.0}) {
    Rng rng(7);
    auto times = arrivalTimes(200001, 20.0, burstiness, rng);
    ASSERT_TRUE(times.isOk());
    const GapStats s = gaps(*times);
    EXPECT_NEAR(s.mean, 1.0 / 20.0, 0.015 / 20.0) << "burstiness " << burstiness;
    // Gamma(k, θ): CV = 1/√k, so lower burstiness is burstier.
    EXPECT_NEAR(s.cv, 1.0 / std::sqrt(burstiness), 0.03 / std::sqrt(burstiness))
        << "burstiness " << burstiness;
  }
}

TEST(ArrivalsTest, SameSeedSameSchedule) {
  Rng a(3), b(3), c(4);
  auto x = arrivalTimes(1000, 5.0, 0.7, a);
  auto y = arrivalTimes(1000, 5.0, 0.7, b);
  auto z = arrivalTimes(1000, 5.0, 0.7, c);
  ASSERT_TRUE(x.isOk() && y.isOk() && z.isOk());
  EXPECT_EQ(*x, *y);
  EXPECT_NE(*x, *z);
  for (size_t i = 1; i < x->size(); ++i) EXPECT_GE((*x)[i], (*x)[i - 1]);
}

TEST(ArrivalsTest, InfiniteRateSendsEverythingAtOnce) {
  Rng rng(1);
  auto times = arrivalTimes(50, std::numeric_limits<double>::infinity(), 1.0, rng);
  ASSERT_TRUE(times.isOk());
  EXPECT_EQ(*times, std::vector<double>(50, 0.0));
}

TEST(ArrivalsTest, RejectsBadParameters) {
  Rng rng(1);
  EXPECT_FALSE(arrivalTimes(10, 0.0, 1.0, rng).isOk());
  EXPECT_FALSE(arrivalTimes(10, -1.0, 1.0, rng).isOk());
  EXPECT_FALSE(arrivalTimes(10, std::nan(""), 1.0, rng).isOk());
  EXPECT_FALSE(arrivalTimes(10, 1.0, 0.0, rng).isOk());
  EXPECT_FALSE(arrivalTimes(10, 1.0, std::numeric_limits<double>::infinity(), rng).isOk());
  auto empty = arrivalTimes(0, 1.0, 1.0, rng);
  ASSERT_TRUE(empty.isOk());
  EXPECT_TRUE(empty->empty());
}

TEST(RngTest, BelowIsUniformAndInRange) {
  Rng rng(9);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) ++counts[rng.below(7)];
  for (int c : counts) EXPECT_NEAR(c, 10000, 400);
  for (int i = 0; i < 1000; ++i) {
    const uint64_t v = rng.between(5, 9);
    EXPECT_GE(v, 5u);
    EXPECT_LE(v, 9u);
  }
}

}  // namespace
}  // namespace kvferry::bench
