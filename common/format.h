// Small shared helpers: numbers in messages, trimming and Bearer tokens, random ids.
#pragma once

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>

namespace kvferry {

// A number as printf's %g writes it: "0.5", "2", "1e+09" (not "5E-1").
inline std::string shortNumber(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

// `text` without leading and trailing spaces, tabs, CRs and LFs.
inline std::string_view trimmed(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

// The token of an "Authorization: Bearer <token>" value (trimmed); empty when it is not one.
inline std::string_view bearerToken(std::string_view authorization) {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.substr(0, kBearer.size()) != kBearer) return {};
  return trimmed(authorization.substr(kBearer.size()));
}

// 64 random bits from the OS, never 0 (0 means "none" wherever such an id is kept): endpoint
// ids, registration tokens, socket names.
inline uint64_t randomNonZeroId() {
  std::random_device device;
  uint64_t id = 0;
  while (id == 0) id = (uint64_t{device()} << 32) ^ device();
  return id;
}

}  // namespace kvferry
