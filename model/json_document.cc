#include "model/json_document.h"

#include <algorithm>
#include <boost/json.hpp>

#include "common/json_kind.h"

namespace kvferry::model::internal {

namespace json = boost::json;

Result<json::value> parseJsonDocument(std::string_view text, std::string_view file) {
  json::parse_options options;
  options.max_depth = 64;
  json::stream_parser parser({}, options);
  boost::system::error_code ec;
  const size_t consumed = parser.write(text.data(), text.size(), ec);
  if (!ec) parser.finish(ec);
  if (ec) {
    const size_t at = std::min(consumed, text.size());
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<ptrdiff_t>(at), '\n');
    return invalidArgument(std::string(file) + ": invalid JSON at byte " + std::to_string(at) +
                           " (line " + std::to_string(line) + "): " + ec.message());
  }
  return parser.release();
}

std::string JsonFields::pathOf(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

Status JsonFields::error(std::string_view key, const std::string& what) const {
  return invalidArgument(std::string(file_) + ": " + pathOf(key) + " " + what);
}

Status JsonFields::wrongType(std::string_view key, const json::value& value,
                             std::string_view expected) const {
  return error(key, "is " + std::string(jsonKindName(value)) + ", not " + std::string(expected));
}

Result<std::optional<int64_t>> JsonFields::integer(std::string_view key) const {
  const json::value* value = object_.if_contains(key);
  if (value == nullptr || value->is_null()) return std::optional<int64_t>();
  boost::system::error_code ec;
  const auto number = value->to_number<int64_t>(ec);
  if (ec) return wrongType(key, *value, "an integer");
  return std::optional<int64_t>(number);
}

Result<std::optional<double>> JsonFields::number(std::string_view key) const {
  const json::value* value = object_.if_contains(key);
  if (value == nullptr || value->is_null()) return std::optional<double>();
  boost::system::error_code ec;
  const auto number = value->to_number<double>(ec);
  if (ec) return wrongType(key, *value, "a number");
  return std::optional<double>(number);
}

Result<std::optional<bool>> JsonFields::boolean(std::string_view key) const {
  const json::value* value = object_.if_contains(key);
  if (value == nullptr || value->is_null()) return std::optional<bool>();
  if (const bool* b = value->if_bool()) return std::optional<bool>(*b);
  return wrongType(key, *value, "a boolean");
}

Result<std::optional<std::string_view>> JsonFields::string(std::string_view key) const {
  const json::value* value = object_.if_contains(key);
  if (value == nullptr || value->is_null()) return std::optional<std::string_view>();
  if (const json::string* s = value->if_string()) {
    return std::optional<std::string_view>(std::string_view(*s));
  }
  return wrongType(key, *value, "a string");
}

Result<const json::object*> JsonFields::object(std::string_view key) const {
  const json::value* value = object_.if_contains(key);
  if (value == nullptr || value->is_null()) return static_cast<const json::object*>(nullptr);
  if (const json::object* o = value->if_object()) return o;
  return wrongType(key, *value, "an object");
}

}  // namespace kvferry::model::internal
