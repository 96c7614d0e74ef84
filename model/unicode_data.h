// The Unicode Character Database tables behind model/unicode.h, generated into unicode_data.cc by
// scripts/gen_unicode_tables.py (see there for the source and why the tables are committed).
// Every table is sorted by its first field.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvferry::model {

// Unicode general categories (UAX #44 §5.7.1).
// clang-format off
enum class Category : uint8_t {
  kLu, kLl, kLt, kLm, kLo,            // letters
  kMn, kMc, kMe,                      // marks
  kNd, kNl, kNo,                      // numbers
  kPc, kPd, kPs, kPe, kPi, kPf, kPo,  // punctuation
  kSm, kSc, kSk, kSo,                 // symbols
  kZs, kZl, kZp,                      // separators
  kCc, kCf, kCs, kCo, kCn,            // other (kCn: unassigned)
};
// clang-format on

namespace unicode_data {

struct CategoryRun {
  uint32_t start;  // the run lasts until the next run's start (the last one to U+10FFFF)
  Category category;
};
struct CodePointRange {
  uint32_t first;
  uint32_t last;
};
struct CombiningClassRange {
  uint32_t first;
  uint32_t last;
  uint8_t combining_class;  // non-zero; code points in no range have class 0
};
struct Decomposition {  // canonical, one level: the mapping may itself decompose further
  uint32_t code_point;
  uint32_t first;
  uint32_t second;  // 0 for a singleton decomposition
};
struct Composition {  // a primary composite: first + second recompose to code_point
  uint32_t first;
  uint32_t second;
  uint32_t code_point;
};

extern const char kUnicodeVersion[];
extern const CategoryRun kCategoryRuns[];
extern const size_t kCategoryRunCount;
extern const CodePointRange kWhiteSpace[];
extern const size_t kWhiteSpaceCount;
extern const CombiningClassRange kCombiningClasses[];
extern const size_t kCombiningClassCount;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionCount;
extern const Composition kCompositions[];
extern const size_t kCompositionCount;

}  // namespace unicode_data
}  // namespace kvferry::model
