#include "common/status.h"

#include <gtest/gtest.h>

#include "common/logging.h"

namespace kvferry {
namespace {

Result<int> half(int x) {
  if (x % 2 != 0) return invalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Result<int> quarter(int x) {
  ASSIGN_OR_RETURN(int h, half(x));
  ASSIGN_OR_RETURN(int q, half(h));
  return q;
}

Status checkEven(int x) {
  RETURN_IF_ERROR(half(x).status());
  return Status::ok();
}

TEST(StatusTest, OkAndErrorsCarryCodeAndMessage) {
  EXPECT_TRUE(Status::ok().isOk());
  Status s = outOfRange("offset 10 past end");
  EXPECT_FALSE(s.isOk());
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s.toString(), "OUT_OF_RANGE: offset 10 past end");
  EXPECT_EQ(s.withContext("write").toString(), "OUT_OF_RANGE: write: offset 10 past end");
  EXPECT_TRUE(Status::ok().withContext("x").isOk());
  EXPECT_EQ(ioError("connect", ECONNREFUSED).toString(), "IO_ERROR: connect: Connection refused");
}

TEST(StatusTest, MacrosPropagateTheFirstError) {
  EXPECT_EQ(*quarter(8), 2);
  Result<int> r = quarter(6);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().message(), "odd: 3");
  EXPECT_TRUE(checkEven(4).isOk());
  EXPECT_EQ(checkEven(5).code(), StatusCode::kInvalidArgument);
}

TEST(LoggingTest, ParsesEveryLevelNameAndRejectsOthers) {
  for (const char* name : {"trace", "debug", "info", "warn", "error", "off"}) {
    Result<LogLevel> level = parseLogLevel(name);
    ASSERT_TRUE(level.isOk()) << name;
    EXPECT_EQ(logLevelName(*level), name);
  }
  Result<LogLevel> bad = parseLogLevel("verbose");
  ASSERT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("verbose"), std::string::npos);
}

}  // namespace
}  // namespace kvferry
