// The OpenAI API's keys (`Authorization: Bearer <key>`), from the file `auth.api_keys_file` names
// and from the environment variable KVFERRY_API_KEYS. No key configured: the API is open.
//
// File format: one key per line (or several, separated by commas); blank lines and lines starting
// with '#' are skipped; spaces around a key are trimmed. A key is 16..256 printable ASCII
// characters without spaces. Keys never reach logs, metrics or error messages; a check takes the
// same time whatever the bytes presented have in common with a key.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvferry::orchestrator {

class ApiKeys {
 public:
  ApiKeys() = default;  // open: every request is let in

  // `path` empty: no file. `env_value` (null or empty: none) separates keys with commas or
  // newlines. INVALID_ARGUMENT naming the file and line (never the key) for a malformed key or an
  // unreadable file.
  static Result<ApiKeys> load(const std::string& path, const char* env_value);
  static Result<ApiKeys> parse(std::string_view text, std::string_view source);

  bool open() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }
  // True when open, or when `authorization` is "Bearer <one of the keys>".
  bool accepts(std::string_view authorization) const { return open() || match(authorization); }
  // Which key `authorization` presents (its index, 0..size()-1); none when it presents none.
  std::optional<size_t> match(std::string_view authorization) const;

 private:
  Status add(std::string_view key, std::string_view source, size_t line);

  std::vector<std::string> keys_;
};

}  // namespace kvferry::orchestrator
