#include "common/status.h"

#include <cstring>

namespace kvferry {

std::string_view statusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kCancelled:
      return "CANCELLED";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case StatusCode::kInternal:
      return "INTERNAL";
    case StatusCode::kIoError:
      return "IO_ERROR";
    case StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    case StatusCode::kDataLoss:
      return "DATA_LOSS";
  }
  return "UNKNOWN";
}

std::string Status::toString() const {
  if (isOk()) return "OK";
  std::string out(statusCodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status Status::withContext(std::string_view context) const {
  if (isOk()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return {code_, std::move(msg)};
}

Status invalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
Status notFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
Status alreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
Status outOfRange(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
Status unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
Status deadlineExceeded(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
Status resourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
Status failedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
Status cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
Status internalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
Status unauthenticated(std::string m) { return {StatusCode::kUnauthenticated, std::move(m)}; }
Status dataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }

Status ioError(std::string_view call, int errno_value) {
  std::string msg(call);
  msg += ": ";
  msg += std::strerror(errno_value);
  return {StatusCode::kIoError, std::move(msg)};
}

}  // namespace kvferry
