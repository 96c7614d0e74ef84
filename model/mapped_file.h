// A read-only memory mapping of a whole file: the RAII owner of the mapping, move-only. Model
// weights are read straight out of it, so opening a multi-GB model costs no copy and pages load on
// first touch. Any thread may read bytes() concurrently; the owner unmaps on destruction. The
// file must not be truncated while mapped (reading a vanished page raises SIGBUS).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/status.h"

namespace kvferry::model {

class MappedFile {
 public:
  // Maps `path` (a regular file) read-only. An empty file gives an empty, unmapped view.
  // IO_ERROR with the failing call and errno text when it cannot be opened or mapped.
  static Result<MappedFile> open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // Valid while this object (or the one it was moved into) lives; moving keeps the address.
  std::span<const uint8_t> bytes() const { return {static_cast<const uint8_t*>(data_), size_}; }

 private:
  MappedFile(void* data, size_t size) : data_(data), size_(size) {}
  void reset();

  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace kvferry::model
