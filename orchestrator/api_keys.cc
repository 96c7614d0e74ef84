#include "orchestrator/api_keys.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/format.h"

namespace kvferry::orchestrator {
namespace {

constexpr size_t kMinKeyBytes = 16;
constexpr size_t kMaxKeyBytes = 256;

// Equal when same length and bytes; the time depends only on the lengths (and the loop runs over
// the longer one), not on where the first difference is.
bool sameBytes(std::string_view a, std::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

}  // namespace

Status ApiKeys::add(std::string_view key, std::string_view source, size_t line) {
  const std::string where = std::string(source) + ":" + std::to_string(line);
  if (key.size() < kMinKeyBytes || key.size() > kMaxKeyBytes) {
    return invalidArgument(where + ": an API key must be " + std::to_string(kMinKeyBytes) + ".." +
                           std::to_string(kMaxKeyBytes) + " characters, this one has " +
                           std::to_string(key.size()));
  }
  for (char c : key) {
    if (c <= ' ' || c > '~') {
      return invalidArgument(where + ": an API key may hold only printable ASCII without spaces");
    }
  }
  keys_.emplace_back(key);
  return Status::ok();
}

Result<ApiKeys> ApiKeys::parse(std::string_view text, std::string_view source) {
  ApiKeys keys;
  for (size_t line = 1; !text.empty(); ++line) {
    const size_t end = text.find('\n');
    std::string_view entries = trimmed(text.substr(0, end));
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (entries.empty() || entries.front() == '#') continue;
    while (!entries.empty()) {  // a line may hold several keys, separated by commas
      const size_t comma = entries.find(',');
      const std::string_view key = trimmed(entries.substr(0, comma));
      entries.remove_prefix(comma == std::string_view::npos ? entries.size() : comma + 1);
      if (!key.empty()) RETURN_IF_ERROR(keys.add(key, source, line));
    }
  }
  return keys;
}

Result<ApiKeys> ApiKeys::load(const std::string& path, const char* env_value) {
  ApiKeys keys;
  if (!path.empty()) {
    std::ifstream file(path);
    if (!file) return invalidArgument("auth.api_keys_file: cannot read '" + path + "'");
    std::ostringstream text;
    text << file.rdbuf();
    ASSIGN_OR_RETURN(keys, parse(text.str(), path));
    if (keys.open()) return invalidArgument("auth.api_keys_file: '" + path + "' lists no key");
  }
  if (env_value != nullptr && *env_value != '\0') {
    ASSIGN_OR_RETURN(ApiKeys more, parse(env_value, "KVFERRY_API_KEYS"));
    for (std::string& key : more.keys_) keys.keys_.push_back(std::move(key));
  }
  return keys;
}

std::optional<size_t> ApiKeys::match(std::string_view authorization) const {
  const std::string_view presented = bearerToken(authorization);
  if (presented.empty()) return std::nullopt;
  std::optional<size_t> found;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (sameBytes(presented, keys_[i])) found = i;  // every key compared: no early exit
  }
  return found;
}

}  // namespace kvferry::orchestrator
