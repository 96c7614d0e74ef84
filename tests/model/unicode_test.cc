// The committed Unicode tables and the NFC normalizer (model/unicode.h) against the Unicode
// Character Database itself, from Debian's unicode-data package (scripts/install_deps.sh).
#include "model/unicode.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace kvferry::model {
namespace {

constexpr char kUcd[] = "/usr/share/unicode";

TEST(UnicodeTest, CategoriesAndWhiteSpace) {
  EXPECT_EQ(unicodeVersion(), "15.0.0");
  EXPECT_EQ(categoryOf('a'), Category::kLl);
  EXPECT_EQ(categoryOf(0x01C5), Category::kLt);  // ǅ
  EXPECT_EQ(categoryOf(0x02B0), Category::kLm);  // ʰ
  EXPECT_EQ(categoryOf(0x4E2D), Category::kLo);  // 中, inside a ranged block of UnicodeData.txt
  EXPECT_EQ(categoryOf(0x0301), Category::kMn);
  EXPECT_EQ(categoryOf(0x0663), Category::kNd);   // ٣
  EXPECT_EQ(categoryOf(0x216B), Category::kNl);   // Ⅻ
  EXPECT_EQ(categoryOf(0x1F999), Category::kSo);  // 🦙
  EXPECT_EQ(categoryOf(0x10FFFF), Category::kCn);
  EXPECT_EQ(categoryOf(0xE000), Category::kCo);
  for (char32_t c : {0x09, 0x0A, 0x0D, 0x20, 0x85, 0xA0, 0x2028, 0x3000})
    EXPECT_TRUE(isWhiteSpace(c));
  for (char32_t c : {0x200B, 0xFEFF, 0x61, 0x180E}) EXPECT_FALSE(isWhiteSpace(c));
}

TEST(UnicodeTest, ReplaceInvalidUtf8UsesMaximalSubparts) {
  EXPECT_EQ(replaceInvalidUtf8("ok \xc3\xa9"), "ok \xc3\xa9");
  EXPECT_EQ(replaceInvalidUtf8("a\xe2\x82z"), "a\xef\xbf\xbdz");  // one subpart
  EXPECT_EQ(replaceInvalidUtf8("\xed\xa0\x80"),
            "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // surrogate
  EXPECT_EQ(replaceInvalidUtf8("\xf0\x9f\x98"), "\xef\xbf\xbd");
}

// Every line of NormalizationTest.txt: NFC(c1) = NFC(c2) = NFC(c3) = c2, NFC(c4) = NFC(c5) = c4.
TEST(UnicodeTest, NfcPassesTheUnicodeConformanceTest) {
  const std::string path = std::string(kUcd) + "/NormalizationTest.txt.bz2";
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << path << " is missing: apt-get install unicode-data (scripts/install_deps.sh)";
  }
  std::unique_ptr<FILE, int (*)(FILE*)> in(::popen(("bzcat " + path).c_str(), "r"), ::pclose);
  ASSERT_NE(in, nullptr);
  const auto field = [](const std::string& hex_list) {
    std::istringstream in_field(hex_list);
    std::string out;
    for (std::string hex; in_field >> hex;) {
      appendUtf8(static_cast<char32_t>(std::stoul(hex, nullptr, 16)), out);
    }
    return out;
  };
  size_t checks = 0;
  std::string line;
  for (int c = std::fgetc(in.get()); c != EOF; c = std::fgetc(in.get())) {
    if (c != '\n') {
      line += static_cast<char>(c);
      continue;
    }
    if (!line.empty() && line[0] != '#' && line[0] != '@') {
      std::vector<std::string> f;
      std::istringstream columns(line);
      for (std::string column; f.size() < 5 && std::getline(columns, column, ';');) {
        f.push_back(field(column));
      }
      ASSERT_EQ(f.size(), 5u) << line;
      for (int i : {0, 1, 2}) EXPECT_EQ(toNfc(f[i]), f[1]) << line;
      for (int i : {3, 4}) EXPECT_EQ(toNfc(f[i]), f[3]) << line;
      checks += 5;
    }
    line.clear();
  }
  EXPECT_GT(checks, 90000u);
}

}  // namespace
}  // namespace kvferry::model
