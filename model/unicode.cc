#include "model/unicode.h"

#include <algorithm>
#include <optional>

#include "model/utf8.h"

namespace kvferry::model {
namespace {

using unicode_data::kCategoryRunCount;
using unicode_data::kCategoryRuns;

// Hangul syllables compose and decompose by arithmetic (Unicode §3.12), not by table.
constexpr char32_t kHangulBase = 0xAC00;
constexpr char32_t kJamoLBase = 0x1100;
constexpr char32_t kJamoVBase = 0x1161;
constexpr char32_t kJamoTBase = 0x11A7;
constexpr uint32_t kJamoVCount = 21;
constexpr uint32_t kJamoTCount = 28;
constexpr uint32_t kHangulCount = 19 * kJamoVCount * kJamoTCount;

uint8_t combiningClass(char32_t cp) {
  const auto* begin = unicode_data::kCombiningClasses;
  const auto* end = begin + unicode_data::kCombiningClassCount;
  const auto* it = std::upper_bound(
      begin, end, cp, [](char32_t value, const auto& range) { return value < range.first; });
  if (it == begin) return 0;
  --it;
  return cp <= it->last ? it->combining_class : 0;
}

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kHangulBase && cp < kHangulBase + kHangulCount) {
    const uint32_t index = cp - kHangulBase;
    out.push_back(kJamoLBase + index / (kJamoVCount * kJamoTCount));
    out.push_back(kJamoVBase + (index % (kJamoVCount * kJamoTCount)) / kJamoTCount);
    if (index % kJamoTCount != 0) out.push_back(kJamoTBase + index % kJamoTCount);
    return;
  }
  const auto* begin = unicode_data::kDecompositions;
  const auto* end = begin + unicode_data::kDecompositionCount;
  const auto* it = std::lower_bound(
      begin, end, cp, [](const auto& d, char32_t value) { return d.code_point < value; });
  if (it == end || it->code_point != cp) {
    out.push_back(cp);
    return;
  }
  decompose(it->first, out);
  if (it->second != 0) decompose(it->second, out);
}

std::optional<char32_t> compose(char32_t first, char32_t second) {
  if (first >= kJamoLBase && first < kJamoLBase + 19 && second >= kJamoVBase &&
      second < kJamoVBase + kJamoVCount) {
    return kHangulBase + ((first - kJamoLBase) * kJamoVCount + (second - kJamoVBase)) * kJamoTCount;
  }
  if (first >= kHangulBase && first < kHangulBase + kHangulCount &&
      (first - kHangulBase) % kJamoTCount == 0 && second > kJamoTBase &&
      second < kJamoTBase + kJamoTCount) {
    return first + (second - kJamoTBase);
  }
  const auto* begin = unicode_data::kCompositions;
  const auto* end = begin + unicode_data::kCompositionCount;
  const auto* it = std::lower_bound(begin, end, std::pair{first, second},
                                    [](const auto& c, const std::pair<char32_t, char32_t>& key) {
                                      return std::pair<char32_t, char32_t>{c.first, c.second} < key;
                                    });
  if (it == end || it->first != first || it->second != second) return std::nullopt;
  return it->code_point;
}

}  // namespace

std::string_view unicodeVersion() { return unicode_data::kUnicodeVersion; }

Category categoryOf(char32_t cp) {
  const auto* end = kCategoryRuns + kCategoryRunCount;
  const auto* it = std::upper_bound(
      kCategoryRuns, end, cp, [](char32_t value, const auto& run) { return value < run.start; });
  return it == kCategoryRuns ? Category::kCn : (it - 1)->category;
}

bool isWhiteSpace(char32_t cp) {
  for (size_t i = 0; i < unicode_data::kWhiteSpaceCount; ++i) {
    if (cp < unicode_data::kWhiteSpace[i].first) return false;
    if (cp <= unicode_data::kWhiteSpace[i].last) return true;
  }
  return false;
}

CodePoints decodeUtf8(std::string_view text) {
  CodePoints out;
  out.values.reserve(text.size());
  out.offsets.reserve(text.size() + 1);
  for (size_t at = 0; at < text.size();) {
    const auto lead = static_cast<uint8_t>(text[at]);
    const size_t length = utf8Lead(lead).value_or(Utf8Lead{}).length;
    char32_t cp = length == 1 ? lead : lead & (0x7F >> length);
    for (size_t k = 1; k < length && at + k < text.size(); ++k) {
      cp = (cp << 6) | (static_cast<uint8_t>(text[at + k]) & 0x3F);
    }
    out.values.push_back(cp);
    out.offsets.push_back(static_cast<uint32_t>(at));
    at += length;
  }
  out.offsets.push_back(static_cast<uint32_t>(text.size()));
  return out;
}

void appendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string replaceInvalidUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t at = 0; at < text.size();) {
    const std::optional<Utf8Lead> shape = utf8Lead(static_cast<uint8_t>(text[at]));
    size_t length = 1;
    bool valid = shape.has_value();
    if (valid) {
      // The maximal subpart: the lead and the continuation bytes that still fit its shape.
      for (; length < shape->length; ++length) {
        if (at + length >= text.size() ||
            !utf8Continues(*shape, length, static_cast<uint8_t>(text[at + length]))) {
          valid = false;
          break;
        }
      }
    }
    if (valid) {
      out.append(text.substr(at, length));
    } else {
      appendUtf8(kReplacementCharacter, out);
    }
    at += length;
  }
  return out;
}

std::string toNfc(std::string_view text) {
  // Below U+0300 nothing decomposes, combines or reorders.
  if (std::ranges::all_of(text, [](char c) { return static_cast<uint8_t>(c) < 0xCC; })) {
    return std::string(text);
  }
  const CodePoints input = decodeUtf8(text);
  std::vector<char32_t> chars;
  chars.reserve(input.values.size());
  for (char32_t cp : input.values) decompose(cp, chars);

  // Canonical ordering: each run of non-starters sorted (stably) by combining class.
  for (size_t i = 0; i < chars.size();) {
    if (combiningClass(chars[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < chars.size() && combiningClass(chars[j]) != 0) ++j;
    std::stable_sort(chars.begin() + static_cast<ptrdiff_t>(i),
                     chars.begin() + static_cast<ptrdiff_t>(j),
                     [](char32_t a, char32_t b) { return combiningClass(a) < combiningClass(b); });
    i = j;
  }

  // Canonical composition: a character joins the last starter unless something between them
  // blocks it (a starter, or a mark of the same or a higher class).
  std::vector<char32_t> composed;
  composed.reserve(chars.size());
  ptrdiff_t starter = -1;
  int last_class = -1;  // class of the last character kept after the starter; -1: none yet
  for (char32_t cp : chars) {
    const int cc = combiningClass(cp);
    if (starter >= 0 && (last_class == -1 || last_class < cc)) {
      if (std::optional<char32_t> c = compose(composed[static_cast<size_t>(starter)], cp)) {
        composed[static_cast<size_t>(starter)] = *c;
        continue;
      }
    }
    if (cc == 0) {
      starter = static_cast<ptrdiff_t>(composed.size());
      last_class = -1;
    } else {
      last_class = cc;
    }
    composed.push_back(cp);
  }
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : composed) appendUtf8(cp, out);
  return out;
}

}  // namespace kvferry::model
