// GGUF reader: llama.cpp's model file format, versions 2 and 3, little-endian (the only byte order
// real files use). The file is memory-mapped; the header, the metadata and the tensor table are
// validated once at open, and tensor data is read in place.
//
// Validation: every length, count, offset and dimension product is checked against the bytes
// that remain and against overflow before it is used, so a truncated or malformed file yields
// INVALID_ARGUMENT saying what was wrong and at which byte offset, never a crash, and no
// allocation is sized by a count that was not first bounded by the file size (and by 2^20
// metadata entries and tensors, far above any real model). Also refused: duplicate keys or
// tensor names, nested arrays, bool bytes other than 0/1, more than 4 dimensions, unknown tensor
// types, a row length that is not a multiple of the type's block, a `general.alignment` that is
// not a power-of-two uint32, and tensor data that is misaligned or runs past the end of the file.
//
// Layout (all integers little-endian):
//   "GGUF" u32 version, u64 tensor_count, u64 kv_count,
//   kv_count × (string key, u32 type, value), tensor_count × (string name, u32 n_dims,
//   n_dims × u64 dim, u32 ggml type, u64 offset), padding to `general.alignment` (default 32),
//   then the data section; each tensor's offset is relative to it and aligned.
//   string = u64 length + bytes; array value = u32 element type, u64 count, elements.
#pragma once

#include <array>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "model/mapped_file.h"

namespace kvferry::model {

// Metadata value types, numbered as in the GGUF specification.
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
std::string_view ggufTypeName(GgufType type);  // "uint32", …; "type 99" style names never occur

// The C++ types metadata values read into (strings as views into the file's bytes).
template <typename T>
concept GgufValue =
    std::same_as<T, uint8_t> || std::same_as<T, int8_t> || std::same_as<T, uint16_t> ||
    std::same_as<T, int16_t> || std::same_as<T, uint32_t> || std::same_as<T, int32_t> ||
    std::same_as<T, float> || std::same_as<T, bool> || std::same_as<T, std::string_view> ||
    std::same_as<T, uint64_t> || std::same_as<T, int64_t> || std::same_as<T, double>;

template <GgufValue T>
constexpr GgufType ggufTypeOf() {
  if constexpr (std::same_as<T, uint8_t>) return GgufType::kUint8;
  if constexpr (std::same_as<T, int8_t>) return GgufType::kInt8;
  if constexpr (std::same_as<T, uint16_t>) return GgufType::kUint16;
  if constexpr (std::same_as<T, int16_t>) return GgufType::kInt16;
  if constexpr (std::same_as<T, uint32_t>) return GgufType::kUint32;
  if constexpr (std::same_as<T, int32_t>) return GgufType::kInt32;
  if constexpr (std::same_as<T, float>) return GgufType::kFloat32;
  if constexpr (std::same_as<T, bool>) return GgufType::kBool;
  if constexpr (std::same_as<T, std::string_view>) return GgufType::kString;
  if constexpr (std::same_as<T, uint64_t>) return GgufType::kUint64;
  if constexpr (std::same_as<T, int64_t>) return GgufType::kInt64;
  if constexpr (std::same_as<T, double>) return GgufType::kFloat64;
}

// Tensor element types, numbered as ggml's `enum ggml_type` (the gaps are types ggml removed).
// Enumerators copy ggml's names (GGML_TYPE_Q4_K -> kQ4_K) so they grep against ggml.h.
// NOLINTBEGIN(readability-identifier-naming)
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
};
// NOLINTEND(readability-identifier-naming)

// Storage geometry of a tensor type: `block_bytes` bytes hold `block_elements` consecutive
// elements of a row (1 and sizeof(element) for the plain types).
struct GgmlTypeInfo {
  std::string_view name;  // ggml's type name in capitals: "F32", "Q8_0", …
  uint32_t block_elements = 0;
  uint32_t block_bytes = 0;
};
// nullptr for a number that names no type this reader knows.
const GgmlTypeInfo* ggmlTypeInfo(GgmlType type);
std::string ggmlTypeName(GgmlType type);  // "Q8_0", or "type 99" when unknown

// Bytes that `elements` elements of `type` occupy. INVALID_ARGUMENT for an unknown type, a
// count that is not a whole number of blocks, or a size that overflows int64.
Result<uint64_t> ggmlByteSize(GgmlType type, uint64_t elements);

inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr uint32_t kGgufMaxDims = 4;  // ggml's GGML_MAX_DIMS

// One metadata entry. Views point into the file's bytes.
struct GgufKeyValue {
  std::string_view key{};
  GgufType type = GgufType::kUint8;
  GgufType array_type = GgufType::kUint8;  // element type when type == kArray
  uint64_t array_size = 0;                 // element count when type == kArray
  uint64_t value_offset = 0;  // file offset of the value (of the first element for arrays)
};

// One tensor-table entry, validated: its data lies inside the file.
struct GgufTensor {
  std::string_view name{};
  uint32_t n_dims = 0;
  // ggml order: dims[0] is the contiguous (row) dimension; unused dimensions are 1. A llama
  // weight W of shape [out][in] in PyTorch is dims {in, out} here: one row per output.
  std::array<uint64_t, kGgufMaxDims> dims{1, 1, 1, 1};
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;  // from the start of the data section; a multiple of the alignment
  uint64_t element_count = 0;
  std::span<const uint8_t> data{};  // the tensor's bytes in the file

  uint64_t rowLength() const { return dims[0]; }
  uint64_t rowCount() const { return dims[0] == 0 ? 0 : element_count / dims[0]; }
};

// A parsed GGUF file. Move-only; immutable after open, so any thread may read it concurrently.
// Every view it hands out (keys, names, strings, tensor data) lives as long as the GgufFile.
class GgufFile {
 public:
  // Maps and parses `path`. Errors carry the path as context.
  static Result<GgufFile> open(const std::string& path);
  // Parses bytes owned by the caller, who keeps them alive and unchanged while this object or
  // any view from it is in use (tests, and files already in memory).
  static Result<GgufFile> parse(std::span<const uint8_t> bytes);

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t dataOffset() const { return data_offset_; }  // file offset of the data section
  std::span<const uint8_t> bytes() const { return bytes_; }

  const std::vector<GgufKeyValue>& metadata() const { return metadata_; }
  const GgufKeyValue* findKey(std::string_view key) const;  // nullptr when absent
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* findTensor(std::string_view name) const;  // nullptr when absent

  // Typed reads. NOT_FOUND when the key is absent; INVALID_ARGUMENT when it holds another type
  // (no conversions: a uint32 key is not readable as int32, as in llama.cpp).
  template <GgufValue T>
  Result<T> get(std::string_view key) const;
  template <GgufValue T>
  Result<std::vector<T>> getArray(std::string_view key) const;
  // An optional key: sets `value` when present, leaves it (the default) when absent.
  template <GgufValue T>
  Status getIfPresent(std::string_view key, T& value) const {
    if (findKey(key) == nullptr) return Status::ok();
    ASSIGN_OR_RETURN(value, get<T>(key));
    return Status::ok();
  }

  Result<uint32_t> getU32(std::string_view key) const { return get<uint32_t>(key); }
  Result<float> getF32(std::string_view key) const { return get<float>(key); }
  Result<bool> getBool(std::string_view key) const { return get<bool>(key); }
  Result<std::string_view> getString(std::string_view key) const {
    return get<std::string_view>(key);
  }
  Result<std::vector<std::string_view>> getStringArray(std::string_view key) const {
    return getArray<std::string_view>(key);
  }
  Result<std::vector<float>> getF32Array(std::string_view key) const {
    return getArray<float>(key);
  }
  Result<std::vector<int32_t>> getI32Array(std::string_view key) const {
    return getArray<int32_t>(key);
  }

 private:
  GgufFile() = default;
  Status parseAll();
  Result<const GgufKeyValue*> typedEntry(std::string_view key, GgufType type,
                                         GgufType array_type) const;

  MappedFile mapping_;  // empty when parse() borrowed the bytes
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<GgufKeyValue> metadata_;
  std::vector<GgufTensor> tensors_;
  std::unordered_map<std::string_view, size_t> key_index_;
  std::unordered_map<std::string_view, size_t> tensor_index_;
};

// Converts out.size() elements stored as `type` in `src` (exactly the bytes they occupy) to
// float. Supported: F32, F16, BF16, Q8_0; INVALID_ARGUMENT for other types or a size mismatch.
Status toFloat(GgmlType type, std::span<const uint8_t> src, std::span<float> out);
// Row `row` (0 ≤ row < rowCount()) of a tensor; out.size() must equal rowLength().
Status tensorRowToFloat(const GgufTensor& tensor, uint64_t row, std::span<float> out);
// The whole tensor, rows in order.
Result<std::vector<float>> tensorToFloat(const GgufTensor& tensor);

// For error messages: at most 64 bytes of `text`, non-printable bytes as \xNN.
std::string printable(std::string_view text);

}  // namespace kvferry::model
