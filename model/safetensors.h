// Safetensors reader: Hugging Face's weight file format. The file is memory-mapped; its header is
// validated once at open and tensor data is read in place, as with GGUF (model/gguf.h).
//
// Layout: u64 little-endian N, then N bytes of JSON — an object mapping each tensor name to
// {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]} (plus an optional
// "__metadata__" object of strings) — then the data section; offsets are relative to its start,
// shapes outermost-first (PyTorch order), elements row-major, little-endian.
//
// Validation, each failure INVALID_ARGUMENT naming the file and what is wrong, never a crash: a
// file shorter than the 8-byte length, a header length past the end of the file (or above
// 100 MB, the reference implementation's limit), a header that is not a JSON object, an entry
// without a known dtype, a shape of non-negative integers and two data offsets, an element count
// that overflows, offsets whose span is not the bytes the shape takes, data past the end of the
// file, and two tensors whose byte ranges overlap.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "model/gguf.h"
#include "model/mapped_file.h"

namespace kvferry::model {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;            // as the file writes it: "F32", "F16", "BF16", "I64", …
  std::vector<uint64_t> shape;  // outermost first
  uint64_t element_count = 0;
  uint64_t data_begin = 0;        // data_offsets, from the start of the data section
  std::span<const uint8_t> data;  // the tensor's bytes in the file
};

// The ggml type of a dtype the engines read (F32, F16, BF16); nullopt for any other.
std::optional<GgmlType> ggmlTypeOfDtype(std::string_view dtype);

// A parsed safetensors file. Move-only; immutable after open, so any thread may read it.
class SafetensorsFile {
 public:
  // Maps and parses `path`; errors start with the path.
  static Result<SafetensorsFile> open(const std::string& path);
  // Parses bytes the caller keeps alive and unchanged; errors start with `name`.
  static Result<SafetensorsFile> parse(std::span<const uint8_t> bytes, std::string name);

  const std::string& name() const { return name_; }     // the path, or parse()'s name
  uint64_t dataOffset() const { return data_offset_; }  // 8 + header length
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }  // in name order
  const SafetensorsTensor* find(std::string_view tensor_name) const;          // nullptr when absent

 private:
  SafetensorsFile() = default;
  Status parseAll();

  MappedFile mapping_;  // empty when parse() borrowed the bytes
  std::span<const uint8_t> bytes_;
  std::string name_;
  uint64_t data_offset_ = 0;
  std::vector<SafetensorsTensor> tensors_;
};

}  // namespace kvferry::model
