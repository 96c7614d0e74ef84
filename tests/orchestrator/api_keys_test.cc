// The OpenAI API's keys: the file and environment formats, the errors (which name the place and
// never the key), and the Authorization header check.
#include "orchestrator/api_keys.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace kvferry::orchestrator {
namespace {

constexpr char kKeyA[] = "sk-kvferry-aaaaaaaaaaaaaaaa";
constexpr char kKeyB[] = "sk-kvferry-bbbbbbbbbbbbbbbb";

TEST(ApiKeysTest, NoKeyLeavesTheApiOpen) {
  auto keys = ApiKeys::load("", nullptr);
  ASSERT_TRUE(keys.isOk());
  EXPECT_TRUE(keys->open());
  EXPECT_TRUE(keys->accepts(""));
  EXPECT_TRUE(ApiKeys::load("", "")->open());
}

TEST(ApiKeysTest, LinesCommentsAndCommas) {
  auto keys = ApiKeys::parse(std::string("# the team's keys, one per line\n\n  ") + kKeyA +
                                 "  \r\n" + kKeyB + ",sk-kvferry-cccccccccccccccc\n",
                             "keys.txt");
  ASSERT_TRUE(keys.isOk()) << keys.status().toString();
  EXPECT_EQ(keys->size(), 3u);
  EXPECT_TRUE(keys->accepts(std::string("Bearer ") + kKeyA));
  EXPECT_TRUE(keys->accepts(std::string("Bearer ") + kKeyB));
  EXPECT_TRUE(keys->accepts("Bearer sk-kvferry-cccccccccccccccc"));
}

TEST(ApiKeysTest, OnlyABearerHeaderWithAWholeKeyIsAccepted) {
  auto keys = ApiKeys::parse(kKeyA, "env");
  ASSERT_TRUE(keys.isOk());
  EXPECT_FALSE(keys->open());
  for (std::string header :
       {std::string(""), std::string("Bearer "), std::string(kKeyA), std::string("Basic ") + kKeyA,
        std::string("bearer") + kKeyA, std::string("Bearer ") + kKeyB,
        std::string("Bearer ") + std::string(kKeyA).substr(0, 20),
        std::string("Bearer ") + kKeyA + "x"}) {
    EXPECT_FALSE(keys->accepts(header)) << header;
  }
}

TEST(ApiKeysTest, AMalformedKeyIsNamedByPlaceNeverByValue) {
  auto short_key = ApiKeys::parse(std::string(kKeyA) + "\n# fine\nsk-short\n", "keys.txt");
  ASSERT_FALSE(short_key.isOk());
  const std::string message = short_key.status().toString();
  EXPECT_NE(message.find("keys.txt:3"), std::string::npos) << message;
  EXPECT_NE(message.find("16..256"), std::string::npos) << message;
  EXPECT_EQ(message.find("sk-short"), std::string::npos) << message;
  auto spaced = ApiKeys::parse("sk-kvferry-aaaa aaaaaaaaaaaaa", "KVFERRY_API_KEYS");
  ASSERT_FALSE(spaced.isOk());
  EXPECT_NE(spaced.status().toString().find("KVFERRY_API_KEYS:1"), std::string::npos);
}

TEST(ApiKeysTest, TheFileAndTheEnvironmentAddUp) {
  const std::string path = ::testing::TempDir() + "api_keys_test.txt";
  std::ofstream(path) << kKeyA << "\n";
  auto keys = ApiKeys::load(path, kKeyB);
  ASSERT_TRUE(keys.isOk()) << keys.status().toString();
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_TRUE(keys->accepts(std::string("Bearer ") + kKeyB));
  std::ofstream(path) << "# nothing yet\n";
  auto empty = ApiKeys::load(path, nullptr);
  ASSERT_FALSE(empty.isOk());
  EXPECT_NE(empty.status().toString().find("lists no key"), std::string::npos);
  std::remove(path.c_str());
  auto missing = ApiKeys::load(path, nullptr);
  ASSERT_FALSE(missing.isOk());
  EXPECT_NE(missing.status().toString().find("cannot read"), std::string::npos);
}

}  // namespace
}  // namespace kvferry::orchestrator
