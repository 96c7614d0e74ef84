// Status and Result<T>: kvferry's error currency. No exceptions cross the data plane or request
// handling; every fallible call returns one of these, with a message saying what failed and where.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kvferry {

// Codes follow the gRPC/Abseil canon so they map cleanly onto HTTP statuses later.
enum class StatusCode : int {
  kOk = 0,
  kCancelled,
  kInvalidArgument,   // the caller's input is wrong (bad config, malformed blob, …)
  kDeadlineExceeded,  // an operation ran out of time
  kNotFound,          // an id that names nothing (region, peer, …)
  kAlreadyExists,
  kResourceExhausted,   // a bounded queue or pool is full: retry after polling
  kFailedPrecondition,  // the object is not in a state that allows the call
  kOutOfRange,          // an offset/length outside a registered region
  kUnavailable,         // the peer is gone or unreachable
  kInternal,            // a bug or an unexpected system failure
  kIoError,             // a system call failed (errno is in the message)
  kUnauthenticated,     // the caller did not prove who it is (a control call without a valid MAC)
  kDataLoss,            // bytes arrived changed (a KV checksum mismatch)
  // Keep kDataLoss last, or move rdma/tcp/tcp_wire.h's statusCodeOf() bound with the new last.
};

std::string_view statusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }

  bool isOk() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "OUT_OF_RANGE: write of 4096 bytes at offset 1048576 exceeds region 3 (1048576 bytes)".
  std::string toString() const;

  // Prefixes context ("connect to 10.0.0.2:7000: ") to a non-OK status; OK stays OK.
  Status withContext(std::string_view context) const;

  // Marks a status as deliberately dropped (e.g. best-effort cleanup).
  void ignoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Short constructors, one per code that callers produce.
Status invalidArgument(std::string message);
Status notFound(std::string message);
Status alreadyExists(std::string message);
Status outOfRange(std::string message);
Status unavailable(std::string message);
Status deadlineExceeded(std::string message);
Status resourceExhausted(std::string message);
Status failedPrecondition(std::string message);
Status cancelled(std::string message);
Status internalError(std::string message);
Status unauthenticated(std::string message);
Status dataLoss(std::string message);
// errno → IO_ERROR with "call: strerror(errno)".
Status ioError(std::string_view call, int errno_value);

// Result<T>: a value or a non-OK Status (std::expected is C++23; this is its C++20 stand-in).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : storage_(std::in_place_index<0>, std::move(value)) {}        // NOLINT: implicit
  Result(Status status) : storage_(std::in_place_index<1>, std::move(status)) {  // NOLINT
    assert(!std::get<1>(storage_).isOk() && "Result built from an OK status has no value");
  }

  bool isOk() const { return storage_.index() == 0; }
  explicit operator bool() const { return isOk(); }

  const Status& status() const {
    static const Status kOkStatus;
    return isOk() ? kOkStatus : std::get<1>(storage_);
  }
  T& value() & { return std::get<0>(storage_); }
  const T& value() const& { return std::get<0>(storage_); }
  T&& value() && { return std::get<0>(std::move(storage_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> storage_;
};

}  // namespace kvferry

#define KVF_CONCAT_INNER_(a, b) a##b
#define KVF_CONCAT_(a, b) KVF_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::kvferry::Status kvf_status_ = (expr);      \
    if (!kvf_status_.isOk()) return kvf_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, makeX());` binds the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(KVF_CONCAT_(kvf_result_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.isOk()) return tmp.status();        \
  lhs = std::move(tmp).value()
