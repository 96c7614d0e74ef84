#include "model/pre_tokenizer.h"

#include <array>
#include <utility>

#include "model/unicode.h"

namespace kvferry::model {
namespace {

// Character classes the regexes use, one bit each, computed once per code point of the text.
enum : uint16_t {
  kLetter = 1 << 0,  // \p{L}
  kNumber = 1 << 1,  // \p{N}
  kMark = 1 << 2,    // \p{M}
  kSpace = 1 << 3,   // \s (White_Space)
  kCrLf = 1 << 4,    // \r or \n
  kUpper = 1 << 5,   // \p{Lu} or \p{Lt}
  kLower = 1 << 6,   // \p{Ll}
  kOther = 1 << 7,   // \p{Lm} or \p{Lo}
  kSlash = 1 << 8,   // '/'
};

uint16_t classify(char32_t cp) {
  if (cp < 0x80) {  // the common case, without a table search
    if ((cp >= 'a' && cp <= 'z')) return kLetter | kLower;
    if ((cp >= 'A' && cp <= 'Z')) return kLetter | kUpper;
    if (cp >= '0' && cp <= '9') return kNumber;
    if (cp == '\r' || cp == '\n') return kSpace | kCrLf;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return kSpace;
    return cp == '/' ? kSlash : 0;
  }
  uint16_t flags = isWhiteSpace(cp) ? kSpace : 0;
  const Category c = categoryOf(cp);
  if (isLetter(c)) {
    flags |= kLetter;
    if (c == Category::kLu || c == Category::kLt) flags |= kUpper;
    if (c == Category::kLl) flags |= kLower;
    if (c == Category::kLm || c == Category::kLo) flags |= kOther;
  } else if (isMark(c)) {
    flags |= kMark;
  } else if (isNumber(c)) {
    flags |= kNumber;
  }
  return flags;
}

// The matcher's view of the text: code points with their classes. Positions past the end have
// no class, so `is(n, …)` is false there, as a regex class fails at the end of input.
class Text {
 public:
  explicit Text(const CodePoints& cps) : cps_(cps.values), flags_(cps.values.size()) {
    for (size_t i = 0; i < cps_.size(); ++i) flags_[i] = classify(cps_[i]);
  }
  size_t size() const { return cps_.size(); }
  char32_t at(size_t i) const { return i < cps_.size() ? cps_[i] : 0; }
  bool is(size_t i, uint16_t any_of) const { return i < flags_.size() && (flags_[i] & any_of); }
  bool isNot(size_t i, uint16_t none_of) const {
    return i < flags_.size() && !(flags_[i] & none_of);
  }
  // The end of the run of characters from `i` that have a class of `any_of`.
  size_t runOf(size_t i, uint16_t any_of) const {
    while (is(i, any_of)) ++i;
    return i;
  }
  size_t runOfNot(size_t i, uint16_t none_of) const {
    while (isNot(i, none_of)) ++i;
    return i;
  }

 private:
  const std::vector<char32_t>& cps_;
  std::vector<uint16_t> flags_;
};

char32_t asciiLower(char32_t c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

// 's|'t|'re|'ve|'m|'ll|'d at `pos` (ASCII case-insensitively when `any_case`, which is what the
// (?i:…) of Llama 3 and Qwen means to Hugging Face and llama.cpp alike); its length or 0.
size_t contraction(const Text& t, size_t pos, bool any_case) {
  if (t.at(pos) != '\'') return 0;
  const auto fold = [&](size_t i) { return any_case ? asciiLower(t.at(i)) : t.at(i); };
  const char32_t a = fold(pos + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  const char32_t b = fold(pos + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// The three whitespace alternatives that end every pattern but GPT-2's:
// \s*[\r\n]+|\s+(?!\S)|\s+ (GPT-2 lacks the first). `pos` holds a \s character.
size_t matchSpaces(const Text& t, size_t pos, bool line_breaks) {
  const size_t end = t.runOf(pos, kSpace);
  if (line_breaks) {
    // \s* backtracks to the last line break of the run, and [\r\n]+ ends right after it.
    for (size_t k = end; k > pos; --k) {
      if (t.is(k - 1, kCrLf)) return k;
    }
  }
  // \s+(?!\S): the whole run at the end of the text, else all but its last character (which
  // then starts the next word, e.g. the space of " word"); a single one falls to \s+.
  if (end == t.size() || end - pos == 1) return end;
  return end - 1;
}

// ` ?X+`: an optional space, then a run of X; 0 when there is none.
size_t optionalSpaceThenRun(const Text& t, size_t pos, uint16_t none_of) {
  if (t.at(pos) == ' ' && t.isNot(pos + 1, none_of)) return t.runOfNot(pos + 1, none_of);
  if (t.isNot(pos, none_of)) return t.runOfNot(pos, none_of);
  return 0;
}

size_t matchGpt2(const Text& t, size_t pos) {
  if (size_t n = contraction(t, pos, /*any_case=*/false)) return pos + n;
  // ` ?\p{L}+`, ` ?\p{N}+`: a space and a run of one class.
  for (uint16_t cls : {kLetter, kNumber}) {
    if (t.at(pos) == ' ' && t.is(pos + 1, cls)) return t.runOf(pos + 1, cls);
    if (t.is(pos, cls)) return t.runOf(pos, cls);
  }
  if (size_t end = optionalSpaceThenRun(t, pos, kSpace | kLetter | kNumber)) return end;
  return matchSpaces(t, pos, /*line_breaks=*/false);
}

// Llama 3, Qwen2 and Qwen3.5: the same shape with a few knobs.
struct Llama3Shape {
  size_t max_digits;  // \p{N}{1,3} or \p{N}
  uint16_t body;      // \p{L}, or [\p{L}\p{M}] (Qwen3.5)
};

size_t matchLlama3(const Text& t, size_t pos, Llama3Shape shape) {
  if (size_t n = contraction(t, pos, /*any_case=*/true)) return pos + n;
  // [^\r\n\p{L}\p{N}]?BODY+
  if (t.isNot(pos, kCrLf | kLetter | kNumber) && t.is(pos + 1, shape.body)) {
    return t.runOf(pos + 1, shape.body);
  }
  if (t.is(pos, shape.body)) return t.runOf(pos, shape.body);
  // \p{N}{1,max}
  if (t.is(pos, kNumber)) {
    size_t end = pos;
    while (end - pos < shape.max_digits && t.is(end, kNumber)) ++end;
    return end;
  }
  //  ?[^\s BODY \p{N}]+[\r\n]*
  if (size_t end = optionalSpaceThenRun(t, pos, kSpace | shape.body | kNumber)) {
    return t.runOf(end, kCrLf);
  }
  return matchSpaces(t, pos, /*line_breaks=*/true);
}

// Tekken's two letter alternatives, `P?U*W+` and `P?U+W*`, with the backtracking a regex engine
// does: the optional prefix is tried taken first, U* gives characters back one at a time until W+
// can start.
constexpr uint16_t kTekkenPrefixNot = kCrLf | kLetter | kNumber;  // [^\r\n\p{L}\p{N}]
constexpr uint16_t kTekkenUpper = kUpper | kOther | kMark;        // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
constexpr uint16_t kTekkenLower = kLower | kOther | kMark;        // [\p{Ll}\p{Lm}\p{Lo}\p{M}]

size_t tekkenUpperThenLower(const Text& t, size_t start) {  // U*W+ from start; 0 if none
  const size_t upper_end = t.runOf(start, kTekkenUpper);
  for (size_t k = upper_end + 1; k-- > start;) {
    if (t.is(k, kTekkenLower)) return t.runOf(k, kTekkenLower);
  }
  return 0;
}

size_t matchTekken(const Text& t, size_t pos) {
  const bool prefix = t.isNot(pos, kTekkenPrefixNot);
  for (size_t start : {pos + 1, pos}) {
    if (start == pos + 1 && !prefix) continue;
    if (size_t end = tekkenUpperThenLower(t, start)) return end;
  }
  for (size_t start : {pos + 1, pos}) {
    if (start == pos + 1 && !prefix) continue;
    const size_t upper_end = t.runOf(start, kTekkenUpper);
    if (upper_end > start) return t.runOf(upper_end, kTekkenLower);
  }
  if (t.is(pos, kNumber)) return pos + 1;
  //  ?[^\s\p{L}\p{N}]+[\r\n/]*
  if (size_t end = optionalSpaceThenRun(t, pos, kSpace | kLetter | kNumber)) {
    return t.runOf(end, kCrLf | kSlash);
  }
  return matchSpaces(t, pos, /*line_breaks=*/true);
}

size_t matchAt(PreTokenizer kind, const Text& t, size_t pos) {
  switch (kind) {
    case PreTokenizer::kGpt2:
      return matchGpt2(t, pos);
    case PreTokenizer::kLlama3:
      return matchLlama3(t, pos, {3, kLetter});
    case PreTokenizer::kQwen2:
      return matchLlama3(t, pos, {1, kLetter});
    case PreTokenizer::kQwen35:
      return matchLlama3(t, pos, {1, kLetter | kMark});
    case PreTokenizer::kTekken:
      return matchTekken(t, pos);
  }
  return pos + 1;
}

struct Named {
  PreTokenizer kind;
  std::string_view name;
  std::string_view regex;  // exactly as tokenizer.json writes it (JSON-unescaped)
};
constexpr std::array<Named, 5> kPreTokenizers = {{
    {PreTokenizer::kGpt2, "gpt2",
     R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"},
    {PreTokenizer::kLlama3, "llama3",
     R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {PreTokenizer::kQwen2, "qwen2",
     R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {PreTokenizer::kQwen35, "qwen35",
     R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
    {PreTokenizer::kTekken, "tekken",
     R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
}};

}  // namespace

std::string_view preTokenizerName(PreTokenizer kind) {
  for (const Named& p : kPreTokenizers) {
    if (p.kind == kind) return p.name;
  }
  return "?";
}

std::optional<PreTokenizer> preTokenizerFromName(std::string_view name) {
  for (const Named& p : kPreTokenizers) {
    if (p.name == name) return p.kind;
  }
  return std::nullopt;
}

std::string_view preTokenizerRegex(PreTokenizer kind) {
  for (const Named& p : kPreTokenizers) {
    if (p.kind == kind) return p.regex;
  }
  return {};
}

std::optional<PreTokenizer> preTokenizerFromRegex(std::string_view pattern) {
  for (const Named& p : kPreTokenizers) {
    if (p.regex == pattern) return p.kind;
  }
  return std::nullopt;
}

std::optional<GgufPreTokenizer> preTokenizerFromGgufName(std::string_view pre) {
  // llama.cpp's names and the defaults it gives each (llama_vocab::impl::load).
  struct Entry {
    std::string_view name;
    GgufPreTokenizer pre;
  };
  static constexpr GgufPreTokenizer kGpt2{PreTokenizer::kGpt2, false, false};
  static constexpr GgufPreTokenizer kLlama3{PreTokenizer::kLlama3, true, true};
  static constexpr GgufPreTokenizer kQwen2{PreTokenizer::kQwen2, false, false};
  static constexpr std::array<Entry, 14> kNames = {{
      {"", kGpt2},  // none: llama.cpp warns and uses its default, GPT-2's regex
      {"default", kGpt2},
      {"gpt-2", kGpt2},
      {"phi-2", kGpt2},
      {"llama3", kLlama3},
      {"llama-v3", kLlama3},
      {"llama-bpe", kLlama3},
      {"falcon3", kLlama3},
      {"pixtral", kLlama3},
      {"qwen2", kQwen2},
      {"deepseek-r1-qwen", kQwen2},
      {"qwen35", {PreTokenizer::kQwen35, false, false}},
      {"tekken", {PreTokenizer::kTekken, true, true}},
      {"dbrx", {PreTokenizer::kLlama3, false, false}},
  }};
  for (const Entry& entry : kNames) {
    if (entry.name == pre) return entry.pre;
  }
  return std::nullopt;
}

std::vector<std::string_view> splitWords(PreTokenizer kind, std::string_view text) {
  const CodePoints cps = decodeUtf8(text);
  const Text t(cps);
  std::vector<std::string_view> words;
  for (size_t pos = 0; pos < t.size();) {
    size_t end = matchAt(kind, t, pos);
    if (end <= pos) end = pos + 1;  // every pattern matches any character; never loop
    words.push_back(text.substr(cps.offsets[pos], cps.offsets[end] - cps.offsets[pos]));
    pos = end;
  }
  return words;
}

}  // namespace kvferry::model
