#include "bench/mooncake_trace.h"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cerrno>
#include <fstream>
#include <string_view>

namespace kvferry::bench {
namespace {

bool readUnsigned(const boost::json::object& object, std::string_view key, uint64_t& out) {
  const boost::json::value* value = object.if_contains(key);
  if (value == nullptr) return false;
  if (value->is_uint64()) {
    out = value->get_uint64();
    return true;
  }
  if (value->is_int64() && value->get_int64() >= 0) {
    out = static_cast<uint64_t>(value->get_int64());
    return true;
  }
  return false;
}

}  // namespace

Result<std::vector<TraceRecord>> readMooncakeTrace(const std::string& path, uint64_t max_records) {
  std::ifstream in(path);
  if (!in) return ioError("open " + path, errno);
  std::vector<TraceRecord> out;
  std::string line;
  for (uint64_t number = 1; out.size() < max_records && std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto bad = [&](std::string_view why) {
      return invalidArgument(path + ":" + std::to_string(number) + ": " + std::string(why));
    };
    boost::system::error_code ec;
    boost::json::value value = boost::json::parse(line, ec);
    if (ec || !value.is_object()) return bad("not a JSON object");
    const boost::json::object& object = value.get_object();
    TraceRecord record;
    uint64_t input = 0;
    uint64_t output = 0;
    if (!readUnsigned(object, "timestamp", record.timestamp_ms)) {
      return bad("\"timestamp\" is missing or not a non-negative integer");
    }
    if (!readUnsigned(object, "input_length", input) || input == 0 || input > UINT32_MAX) {
      return bad("\"input_length\" is missing or not an integer in 1..2^32-1");
    }
    if (!readUnsigned(object, "output_length", output) || output > UINT32_MAX) {
      return bad("\"output_length\" is missing or not an integer in 0..2^32-1");
    }
    record.input_length = static_cast<uint32_t>(input);
    record.output_length = static_cast<uint32_t>(output);
    const boost::json::value* ids = object.if_contains("hash_ids");
    if (ids == nullptr || !ids->is_array()) return bad("\"hash_ids\" is not an array");
    for (const boost::json::value& id : ids->get_array()) {
      if (id.is_uint64()) {
        record.hash_ids.push_back(id.get_uint64());
      } else if (id.is_int64() && id.get_int64() >= 0) {
        record.hash_ids.push_back(static_cast<uint64_t>(id.get_int64()));
      } else {
        return bad("\"hash_ids\" holds something other than a non-negative integer");
      }
    }
    if (!out.empty() && record.timestamp_ms < out.back().timestamp_ms) {
      return bad("timestamps must not decrease");
    }
    out.push_back(std::move(record));
  }
  if (in.bad()) return ioError("read " + path, errno);
  if (out.empty()) return invalidArgument(path + ": no requests");
  return out;
}

}  // namespace kvferry::bench
