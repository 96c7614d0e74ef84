// Reading the JSON files a model directory holds (config.json, tokenizer.json, safetensors
// headers, …): one parser set-up and one error wording for all of them. Not a public header.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kvferry::model::internal {

// The whole document, or INVALID_ARGUMENT "FILE: invalid JSON at byte N (line L): why". Nesting
// deeper than 64 is refused, so a hostile file cannot exhaust the stack. Never throws.
Result<boost::json::value> parseJsonDocument(std::string_view text, std::string_view file);

// Members of a JSON object, typed, with errors "FILE: KEY is a string, not an integer". A member
// that is absent or null gives nullopt.
class JsonFields {
 public:
  JsonFields(const boost::json::object& object, std::string_view file, std::string path = {})
      : object_(object), file_(file), path_(std::move(path)) {}

  Status error(std::string_view key, const std::string& what) const;
  Result<std::optional<int64_t>> integer(std::string_view key) const;  // a whole number
  Result<std::optional<double>> number(std::string_view key) const;    // any number
  Result<std::optional<bool>> boolean(std::string_view key) const;
  Result<std::optional<std::string_view>> string(std::string_view key) const;
  Result<const boost::json::object*> object(std::string_view key) const;  // nullptr when absent
  // The full path of a member for messages ("rope_scaling.factor").
  std::string pathOf(std::string_view key) const;

 private:
  Status wrongType(std::string_view key, const boost::json::value& value,
                   std::string_view expected) const;

  const boost::json::object& object_;
  std::string_view file_;
  std::string path_;
};

}  // namespace kvferry::model::internal
