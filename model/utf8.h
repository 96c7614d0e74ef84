// The shape of a UTF-8 character by its lead byte, as RFC 3629 restricts it: no overlong forms,
// no surrogates, nothing past U+10FFFF. The one table behind model::checkUtf8, the
// orchestrator's incremental detokenizer and the config loader's check of a file's text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace kvferry::model {

struct Utf8Lead {
  size_t length = 1;   // bytes in the character, the lead included
  uint8_t low = 0x80;  // the allowed range of the SECOND byte (later ones: 0x80..0xbf)
  uint8_t high = 0xbf;
};

// nullopt for a byte that cannot start a character (a continuation byte, 0xc0/0xc1, 0xf5..0xff).
inline std::optional<Utf8Lead> utf8Lead(uint8_t lead) {
  if (lead < 0x80) return Utf8Lead{1, 0x80, 0xbf};
  if (lead >= 0xc2 && lead <= 0xdf) return Utf8Lead{2, 0x80, 0xbf};
  if (lead >= 0xe0 && lead <= 0xef) {
    return Utf8Lead{3, static_cast<uint8_t>(lead == 0xe0 ? 0xa0 : 0x80),
                    static_cast<uint8_t>(lead == 0xed ? 0x9f : 0xbf)};
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    return Utf8Lead{4, static_cast<uint8_t>(lead == 0xf0 ? 0x90 : 0x80),
                    static_cast<uint8_t>(lead == 0xf4 ? 0x8f : 0xbf)};
  }
  return std::nullopt;
}

// Whether `byte` may be the k-th (k ≥ 1) byte of a character that `shape` starts.
inline bool utf8Continues(const Utf8Lead& shape, size_t k, uint8_t byte) {
  return k == 1 ? byte >= shape.low && byte <= shape.high : byte >= 0x80 && byte <= 0xbf;
}

}  // namespace kvferry::model
