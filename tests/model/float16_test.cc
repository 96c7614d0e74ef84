#include "model/float16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace kvferry::model {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(Float16Test, KnownHalfValues) {
  EXPECT_EQ(halfToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(halfToFloat(0x8000)));
  EXPECT_EQ(halfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(halfToFloat(0xc000), -2.0f);
  EXPECT_EQ(halfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(halfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(halfToFloat(0x0400), 0x1p-14f);            // smallest normal
  EXPECT_EQ(halfToFloat(0x0001), 0x1p-24f);            // smallest subnormal
  EXPECT_EQ(halfToFloat(0x03ff), 1023.0f * 0x1p-24f);  // largest subnormal
  EXPECT_EQ(halfToFloat(0x8001), -0x1p-24f);
  EXPECT_EQ(halfToFloat(0x7c00), kInf);
  EXPECT_EQ(halfToFloat(0xfc00), -kInf);
  EXPECT_TRUE(std::isnan(halfToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(halfToFloat(0x7c01)));  // signalling payload is still NaN
}

TEST(Float16Test, FloatToHalfRoundsToNearestEven) {
  EXPECT_EQ(floatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(floatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(floatToHalf(65519.0f), 0x7bff);  // below the halfway point to 2^16
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00);  // the halfway point rounds to even: infinity
  EXPECT_EQ(floatToHalf(1e9f), 0x7c00);
  EXPECT_EQ(floatToHalf(-kInf), 0xfc00);
  EXPECT_EQ(floatToHalf(std::nanf("")) & 0x7e00, 0x7e00);
  EXPECT_EQ(floatToHalf(1.0f + 0x1p-11f), 0x3c00);             // tie, even neighbour is 1.0
  EXPECT_EQ(floatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);         // tie, rounds up to even
  EXPECT_EQ(floatToHalf(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);  // just above the tie
  // Subnormals and underflow.
  EXPECT_EQ(floatToHalf(0x1p-24f), 0x0001);
  EXPECT_EQ(floatToHalf(0x1p-25f), 0x0000);         // tie with 0: even
  EXPECT_EQ(floatToHalf(1.5f * 0x1p-25f), 0x0001);  // above the tie
  EXPECT_EQ(floatToHalf(3 * 0x1p-25f), 0x0002);     // 1.5 units: tie, rounds to even 2
  EXPECT_EQ(floatToHalf(-1e-10f), 0x8000);
  EXPECT_EQ(floatToHalf(1023.5f * 0x1p-24f), 0x0400);  // rounds up into the smallest normal
  EXPECT_EQ(floatToHalf(0x1p-14f), 0x0400);
}

TEST(Float16Test, EveryHalfSurvivesARoundTrip) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const auto half = static_cast<uint16_t>(bits);
    const float value = halfToFloat(half);
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(value))));
    } else {
      ASSERT_EQ(floatToHalf(value), half) << std::hex << bits;
    }
  }
}

TEST(Bfloat16Test, KnownValuesAndRounding) {
  EXPECT_EQ(bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(bf16ToFloat(0xc040), -3.0f);
  EXPECT_EQ(bf16ToFloat(0x0001), 0x1p-133f);  // smallest subnormal
  EXPECT_EQ(bf16ToFloat(0x7f80), kInf);
  EXPECT_EQ(bf16ToFloat(0xff80), -kInf);
  EXPECT_TRUE(std::isnan(bf16ToFloat(0x7fc0)));
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(floatToBf16(1.0f + 0x1p-8f), 0x3f80);      // tie, even neighbour
  EXPECT_EQ(floatToBf16(1.0f + 3 * 0x1p-8f), 0x3f82);  // tie, rounds up to even
  EXPECT_EQ(floatToBf16(0x1p-133f), 0x0001);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to infinity
  EXPECT_EQ(floatToBf16(-kInf), 0xff80);
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(std::nanf("")))));
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float value = bf16ToFloat(static_cast<uint16_t>(bits));
    if (!std::isnan(value)) {
      ASSERT_EQ(floatToBf16(value), bits) << std::hex << bits;
    }
  }
}

}  // namespace
}  // namespace kvferry::model
