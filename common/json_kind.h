// How error messages name the kind of a JSON value ("a string", "an array", …): one wording for
// every parser of JSON that users send or bring (the OpenAI API, tokenizer.json, tool input).
#pragma once

#include <boost/json/value.hpp>
#include <string_view>

namespace kvferry {

inline std::string_view jsonKindName(const boost::json::value& value) {
  switch (value.kind()) {
    case boost::json::kind::null:
      return "null";
    case boost::json::kind::bool_:
      return "a boolean";
    case boost::json::kind::int64:
    case boost::json::kind::uint64:
      return "an integer";
    case boost::json::kind::double_:
      return "a decimal";
    case boost::json::kind::string:
      return "a string";
    case boost::json::kind::array:
      return "an array";
    case boost::json::kind::object:
      return "an object";
  }
  return "a value";
}

}  // namespace kvferry
