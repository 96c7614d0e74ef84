// Logging set-up: one call in main() after the config is read. Everything else logs through
// spdlog's default logger (spdlog::info(...)), which is thread-safe.
#pragma once

#include <string_view>

#include "common/status.h"

namespace kvferry {

enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError, kOff };

// "trace" | "debug" | "info" | "warn" | "error" | "off" → LogLevel.
Result<LogLevel> parseLogLevel(std::string_view name);
std::string_view logLevelName(LogLevel level);

// Installs a colour stderr logger named after the process ("orchestrator", "node_agent", …) at
// `level`, with a pattern that carries time (µs), level, thread id and the component name.
void setupLogging(std::string_view component, LogLevel level);

}  // namespace kvferry
