#include "common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <array>
#include <string>
#include <utility>

namespace kvferry {
namespace {

constexpr std::array<std::pair<std::string_view, LogLevel>, 6> kLevels{{
    {"trace", LogLevel::kTrace},
    {"debug", LogLevel::kDebug},
    {"info", LogLevel::kInfo},
    {"warn", LogLevel::kWarn},
    {"error", LogLevel::kError},
    {"off", LogLevel::kOff},
}};

spdlog::level::level_enum toSpdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace:
      return spdlog::level::trace;
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
    case LogLevel::kOff:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

}  // namespace

Result<LogLevel> parseLogLevel(std::string_view name) {
  for (const auto& [text, level] : kLevels) {
    if (text == name) return level;
  }
  return invalidArgument("unknown log level '" + std::string(name) +
                         "' (expected trace, debug, info, warn, error or off)");
}

std::string_view logLevelName(LogLevel level) {
  for (const auto& [text, l] : kLevels) {
    if (l == level) return text;
  }
  return "info";
}

void setupLogging(std::string_view component, LogLevel level) {
  auto logger = spdlog::stderr_color_mt(std::string(component));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%f %^%l%$ [%n %t] %v");
  logger->set_level(toSpdlog(level));
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace kvferry
