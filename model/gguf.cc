#include "model/gguf.h"

#include <bit>
#include <cstring>
#include <limits>

#include "model/float16.h"

namespace kvferry::model {

// GGUF is little-endian and so is every host we build for (x86-64, aarch64); numbers are read
// with memcpy, and tensor data is used in place.
static_assert(std::endian::native == std::endian::little, "kvferry assumes a little-endian host");

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kMaxInt64 = std::numeric_limits<int64_t>::max();
// The smallest possible encodings bound the entry counts before anything is reserved.
constexpr uint64_t kMinKeyValueBytes = 8 + 4 + 1;        // empty key, type, one-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // empty name, n_dims = 0, type, offset
// Far above any real model (tens of metadata entries, at most thousands of tensors), and low
// enough that the tables reserved for a count that fits in a huge file stay small.
constexpr uint64_t kMaxEntries = uint64_t{1} << 20;

constexpr std::array<GgmlTypeInfo, 41> kGgmlTypes = [] {
  std::array<GgmlTypeInfo, 41> t{};
  t[0] = {"F32", 1, 4};
  t[1] = {"F16", 1, 2};
  t[2] = {"Q4_0", 32, 18};
  t[3] = {"Q4_1", 32, 20};
  t[6] = {"Q5_0", 32, 22};
  t[7] = {"Q5_1", 32, 24};
  t[8] = {"Q8_0", 32, 34};
  t[9] = {"Q8_1", 32, 36};
  t[10] = {"Q2_K", 256, 84};
  t[11] = {"Q3_K", 256, 110};
  t[12] = {"Q4_K", 256, 144};
  t[13] = {"Q5_K", 256, 176};
  t[14] = {"Q6_K", 256, 210};
  t[15] = {"Q8_K", 256, 292};
  t[16] = {"IQ2_XXS", 256, 66};
  t[17] = {"IQ2_XS", 256, 74};
  t[18] = {"IQ3_XXS", 256, 98};
  t[19] = {"IQ1_S", 256, 50};
  t[20] = {"IQ4_NL", 32, 18};
  t[21] = {"IQ3_S", 256, 110};
  t[22] = {"IQ2_S", 256, 82};
  t[23] = {"IQ4_XS", 256, 136};
  t[24] = {"I8", 1, 1};
  t[25] = {"I16", 1, 2};
  t[26] = {"I32", 1, 4};
  t[27] = {"I64", 1, 8};
  t[28] = {"F64", 1, 8};
  t[29] = {"IQ1_M", 256, 56};
  t[30] = {"BF16", 1, 2};
  t[34] = {"TQ1_0", 256, 54};
  t[35] = {"TQ2_0", 256, 66};
  t[39] = {"MXFP4", 32, 17};
  t[40] = {"NVFP4", 64, 36};
  return t;
}();

// Byte size of one scalar metadata value; 0 for string, array and unknown types.
uint64_t scalarBytes(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

bool isKnownType(uint32_t type) { return type <= static_cast<uint32_t>(GgufType::kFloat64); }

std::string typeDescription(GgufType type, GgufType array_type) {
  std::string out(ggufTypeName(type));
  if (type == GgufType::kArray) out += " of " + std::string(ggufTypeName(array_type));
  return out;
}

// The one bounds-checked reader all GGUF parsing goes through: every read first checks that the
// bytes exist, and failures name what was being read and the byte offset where it starts.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, uint64_t pos) : bytes_(bytes), pos_(pos) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  template <typename T>
  Result<T> read(std::string_view what) {
    RETURN_IF_ERROR(need(sizeof(T), what));
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  Result<std::span<const uint8_t>> take(uint64_t n, std::string_view what) {
    RETURN_IF_ERROR(need(n, what));
    std::span<const uint8_t> out = bytes_.subspan(pos_, n);
    pos_ += n;
    return out;
  }

  Result<std::string_view> readString(std::string_view what) {
    const uint64_t start = pos_;
    ASSIGN_OR_RETURN(uint64_t length, read<uint64_t>(what));
    if (length > remaining()) {
      return invalidArgument(std::string(what) + " at byte offset " + std::to_string(start) +
                             ": length " + std::to_string(length) + " exceeds the " +
                             std::to_string(remaining()) + " bytes left in the file");
    }
    ASSIGN_OR_RETURN(std::span<const uint8_t> text, take(length, what));
    return std::string_view(reinterpret_cast<const char*>(text.data()), text.size());
  }

  // `count` items of at least `item_bytes` bytes each must fit in what is left.
  Status needItems(uint64_t count, uint64_t item_bytes, std::string_view what) const {
    if (count > remaining() / item_bytes) {
      return invalidArgument(std::string(what) + " at byte offset " + std::to_string(pos_) + ": " +
                             std::to_string(count) + " items cannot fit in the " +
                             std::to_string(remaining()) + " bytes left in the file");
    }
    return Status::ok();
  }

  Status error(uint64_t at, const std::string& message) const {
    return invalidArgument(message + " at byte offset " + std::to_string(at));
  }

 private:
  Status need(uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      return invalidArgument("truncated file: " + std::string(what) + " at byte offset " +
                             std::to_string(pos_) + " needs " + std::to_string(n) +
                             " bytes, the file ends at byte " + std::to_string(bytes_.size()));
    }
    return Status::ok();
  }

  std::span<const uint8_t> bytes_;
  uint64_t pos_;
};

Status checkCount(uint64_t count, uint64_t at, std::string_view what) {
  if (count > kMaxEntries) {
    return invalidArgument(std::to_string(count) + " " + std::string(what) + " at byte offset " +
                           std::to_string(at) + " exceed the limit of " +
                           std::to_string(kMaxEntries));
  }
  return Status::ok();
}

// Walks `count` values of `type` (not arrays), checking that they exist and are well formed.
Status skipValues(Cursor& cursor, GgufType type, uint64_t count) {
  if (type == GgufType::kString) {
    RETURN_IF_ERROR(cursor.needItems(count, 8, "string array"));
    for (uint64_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(std::string_view ignored, cursor.readString("string"));
      (void)ignored;
    }
    return Status::ok();
  }
  const uint64_t size = scalarBytes(type);
  RETURN_IF_ERROR(cursor.needItems(count, size, "values"));
  const uint64_t start = cursor.pos();
  ASSIGN_OR_RETURN(std::span<const uint8_t> values, cursor.take(count * size, "values"));
  if (type == GgufType::kBool) {
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i] > 1) {
        return cursor.error(start + i,
                            "bool value " + std::to_string(values[i]) + " (must be 0 or 1)");
      }
    }
  }
  return Status::ok();
}

// A metadata value (after its key): type tag, then the value or the array header and elements.
Status readValue(Cursor& cursor, GgufKeyValue& kv) {
  const uint64_t type_at = cursor.pos();
  ASSIGN_OR_RETURN(uint32_t type, cursor.read<uint32_t>("value type"));
  if (!isKnownType(type)) {
    return cursor.error(type_at, "unknown value type " + std::to_string(type));
  }
  kv.type = static_cast<GgufType>(type);
  if (kv.type != GgufType::kArray) {
    kv.value_offset = cursor.pos();
    return skipValues(cursor, kv.type, 1);
  }
  const uint64_t element_type_at = cursor.pos();
  ASSIGN_OR_RETURN(uint32_t element_type, cursor.read<uint32_t>("array element type"));
  if (!isKnownType(element_type) || element_type == static_cast<uint32_t>(GgufType::kArray)) {
    return cursor.error(element_type_at,
                        "unsupported array element type " + std::to_string(element_type));
  }
  kv.array_type = static_cast<GgufType>(element_type);
  ASSIGN_OR_RETURN(kv.array_size, cursor.read<uint64_t>("array length"));
  kv.value_offset = cursor.pos();
  return skipValues(cursor, kv.array_type, kv.array_size);
}

// A tensor-table entry (after its name): shape, type and data offset. The data's bounds are
// checked once the data section's start is known.
Status readTensorInfo(Cursor& cursor, GgufTensor& tensor) {
  const uint64_t dims_at = cursor.pos();
  ASSIGN_OR_RETURN(tensor.n_dims, cursor.read<uint32_t>("dimension count"));
  if (tensor.n_dims > kGgufMaxDims) {
    return cursor.error(dims_at, std::to_string(tensor.n_dims) + " dimensions (at most " +
                                     std::to_string(kGgufMaxDims) + ")");
  }
  tensor.element_count = 1;
  for (uint32_t d = 0; d < tensor.n_dims; ++d) {
    const uint64_t dim_at = cursor.pos();
    ASSIGN_OR_RETURN(uint64_t dim, cursor.read<uint64_t>("dimension"));
    if (dim > kMaxInt64 || (dim != 0 && tensor.element_count > kMaxInt64 / dim)) {
      return cursor.error(
          dim_at, "dimension " + std::to_string(dim) + " makes the element count overflow int64");
    }
    tensor.dims[d] = dim;
    tensor.element_count *= dim;
  }
  const uint64_t type_at = cursor.pos();
  ASSIGN_OR_RETURN(uint32_t type, cursor.read<uint32_t>("tensor type"));
  tensor.type = static_cast<GgmlType>(type);
  const GgmlTypeInfo* info = ggmlTypeInfo(tensor.type);
  if (info == nullptr) return cursor.error(type_at, "unknown tensor type " + std::to_string(type));
  if (tensor.dims[0] % info->block_elements != 0) {
    return cursor.error(dims_at, "row length " + std::to_string(tensor.dims[0]) +
                                     " is not a multiple of the " + std::string(info->name) +
                                     " block size " + std::to_string(info->block_elements));
  }
  ASSIGN_OR_RETURN(tensor.offset, cursor.read<uint64_t>("tensor data offset"));
  return Status::ok();
}

uint64_t alignUp(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

std::string_view ggufTypeName(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
      return "uint8";
    case GgufType::kInt8:
      return "int8";
    case GgufType::kUint16:
      return "uint16";
    case GgufType::kInt16:
      return "int16";
    case GgufType::kUint32:
      return "uint32";
    case GgufType::kInt32:
      return "int32";
    case GgufType::kFloat32:
      return "float32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "uint64";
    case GgufType::kInt64:
      return "int64";
    case GgufType::kFloat64:
      return "float64";
  }
  return "unknown";
}

const GgmlTypeInfo* ggmlTypeInfo(GgmlType type) {
  const auto index = static_cast<uint32_t>(type);
  if (index >= kGgmlTypes.size() || kGgmlTypes[index].block_bytes == 0) return nullptr;
  return &kGgmlTypes[index];
}

std::string ggmlTypeName(GgmlType type) {
  const GgmlTypeInfo* info = ggmlTypeInfo(type);
  return info != nullptr ? std::string(info->name)
                         : "type " + std::to_string(static_cast<uint32_t>(type));
}

Result<uint64_t> ggmlByteSize(GgmlType type, uint64_t elements) {
  const GgmlTypeInfo* info = ggmlTypeInfo(type);
  if (info == nullptr) return invalidArgument("unknown tensor " + ggmlTypeName(type));
  if (elements % info->block_elements != 0) {
    return invalidArgument(std::to_string(elements) + " elements are not a whole number of " +
                           std::string(info->name) + " blocks of " +
                           std::to_string(info->block_elements));
  }
  const uint64_t blocks = elements / info->block_elements;
  if (blocks > kMaxInt64 / info->block_bytes) {
    return invalidArgument(std::to_string(elements) + " " + std::string(info->name) +
                           " elements overflow int64 bytes");
  }
  return blocks * info->block_bytes;
}

std::string printable(std::string_view text) {
  constexpr size_t kMaxBytes = 64;
  std::string out;
  for (size_t i = 0; i < text.size() && i < kMaxBytes; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (text.size() > kMaxBytes) out += "...";
  return out;
}

Result<GgufFile> GgufFile::open(const std::string& path) {
  Result<MappedFile> mapping = MappedFile::open(path);
  if (!mapping.isOk()) return mapping.status();
  GgufFile file;
  file.mapping_ = std::move(mapping).value();
  file.bytes_ = file.mapping_.bytes();
  Status status = file.parseAll();
  if (!status.isOk()) return status.withContext(path);
  return file;
}

Result<GgufFile> GgufFile::parse(std::span<const uint8_t> bytes) {
  GgufFile file;
  file.bytes_ = bytes;
  RETURN_IF_ERROR(file.parseAll());
  return file;
}

Status GgufFile::parseAll() {
  Cursor cursor(bytes_, 0);
  ASSIGN_OR_RETURN(uint32_t magic, cursor.read<uint32_t>("magic"));
  if (magic != kGgufMagic) return cursor.error(0, "not a GGUF file: no \"GGUF\" magic");
  ASSIGN_OR_RETURN(version_, cursor.read<uint32_t>("version"));
  if (version_ != 2 && version_ != 3) {
    const bool byte_swapped = version_ == 0x02000000 || version_ == 0x03000000;
    return cursor.error(4, "unsupported GGUF version " + std::to_string(version_) +
                               (byte_swapped ? " (a big-endian file)" : " (2 and 3 are)"));
  }
  ASSIGN_OR_RETURN(uint64_t tensor_count, cursor.read<uint64_t>("tensor count"));
  ASSIGN_OR_RETURN(uint64_t kv_count, cursor.read<uint64_t>("metadata count"));

  RETURN_IF_ERROR(checkCount(kv_count, 16, "metadata entries"));
  RETURN_IF_ERROR(cursor.needItems(kv_count, kMinKeyValueBytes, "metadata entries"));
  metadata_.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    const uint64_t entry_start = cursor.pos();
    const std::string entry = "metadata entry " + std::to_string(i);
    Result<std::string_view> key = cursor.readString("metadata key");
    if (!key.isOk()) return key.status().withContext(entry);
    GgufKeyValue kv{.key = *key};
    Status status = readValue(cursor, kv);
    if (!status.isOk()) return status.withContext(entry + " '" + printable(kv.key) + "'");
    if (!key_index_.emplace(kv.key, metadata_.size()).second) {
      return cursor.error(entry_start, "duplicate metadata key '" + printable(kv.key) + "'");
    }
    metadata_.push_back(kv);
  }

  if (const GgufKeyValue* kv = findKey("general.alignment"); kv != nullptr) {
    ASSIGN_OR_RETURN(alignment_, get<uint32_t>("general.alignment"));
    if (alignment_ == 0 || !std::has_single_bit(alignment_)) {
      return cursor.error(kv->value_offset, "general.alignment " + std::to_string(alignment_) +
                                                " is not a power of two");
    }
  }

  RETURN_IF_ERROR(checkCount(tensor_count, 8, "tensors"));
  RETURN_IF_ERROR(cursor.needItems(tensor_count, kMinTensorInfoBytes, "tensor table"));
  tensors_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    const uint64_t entry_start = cursor.pos();
    const std::string entry = "tensor " + std::to_string(i);
    Result<std::string_view> name = cursor.readString("tensor name");
    if (!name.isOk()) return name.status().withContext(entry);
    GgufTensor tensor{.name = *name};
    Status status = readTensorInfo(cursor, tensor);
    if (!status.isOk()) return status.withContext(entry + " '" + printable(tensor.name) + "'");
    if (!tensor_index_.emplace(tensor.name, tensors_.size()).second) {
      return cursor.error(entry_start, "duplicate tensor name '" + printable(tensor.name) + "'");
    }
    tensors_.push_back(tensor);
  }

  data_offset_ = alignUp(cursor.pos(), alignment_);
  if (!tensors_.empty() && data_offset_ > bytes_.size()) {
    return invalidArgument("truncated file: the data section starts at byte offset " +
                           std::to_string(data_offset_) + ", the file ends at byte " +
                           std::to_string(bytes_.size()));
  }
  const uint64_t data_bytes = tensors_.empty() ? 0 : bytes_.size() - data_offset_;
  for (GgufTensor& tensor : tensors_) {
    const std::string what = "tensor '" + printable(tensor.name) + "'";
    Result<uint64_t> size = ggmlByteSize(tensor.type, tensor.element_count);
    if (!size.isOk()) return size.status().withContext(what);
    if (tensor.offset % alignment_ != 0) {
      return invalidArgument(what + ": data offset " + std::to_string(tensor.offset) +
                             " is not a multiple of the alignment " + std::to_string(alignment_));
    }
    if (tensor.offset > data_bytes || *size > data_bytes - tensor.offset) {
      return invalidArgument(
          what + ": " + std::to_string(*size) + " bytes of data at byte offset " +
          std::to_string(data_offset_) + " + " + std::to_string(tensor.offset) +
          " run past the end of the file (" + std::to_string(bytes_.size()) + " bytes)");
    }
    tensor.data = bytes_.subspan(data_offset_ + tensor.offset, *size);
  }
  return Status::ok();
}

const GgufKeyValue* GgufFile::findKey(std::string_view key) const {
  auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &metadata_[it->second];
}

const GgufTensor* GgufFile::findTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Result<const GgufKeyValue*> GgufFile::typedEntry(std::string_view key, GgufType type,
                                                 GgufType array_type) const {
  const GgufKeyValue* kv = findKey(key);
  if (kv == nullptr) return notFound("metadata key '" + std::string(key) + "' not found");
  if (kv->type != type || (type == GgufType::kArray && kv->array_type != array_type)) {
    return invalidArgument("metadata key '" + std::string(key) + "' is " +
                           typeDescription(kv->type, kv->array_type) + ", not " +
                           typeDescription(type, array_type));
  }
  return kv;
}

template <GgufValue T>
Result<T> GgufFile::get(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufKeyValue* kv, typedEntry(key, ggufTypeOf<T>(), GgufType::kUint8));
  Cursor cursor(bytes_, kv->value_offset);
  if constexpr (std::same_as<T, std::string_view>) {
    return cursor.readString("string");
  } else if constexpr (std::same_as<T, bool>) {
    ASSIGN_OR_RETURN(uint8_t byte, cursor.read<uint8_t>("bool"));
    return byte != 0;
  } else {
    return cursor.read<T>("value");
  }
}

template <GgufValue T>
Result<std::vector<T>> GgufFile::getArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufKeyValue* kv, typedEntry(key, GgufType::kArray, ggufTypeOf<T>()));
  Cursor cursor(bytes_, kv->value_offset);
  std::vector<T> values;
  values.reserve(kv->array_size);  // bounded by the file size at parse time
  for (uint64_t i = 0; i < kv->array_size; ++i) {
    if constexpr (std::same_as<T, std::string_view>) {
      ASSIGN_OR_RETURN(values.emplace_back(), cursor.readString("string"));
    } else if constexpr (std::same_as<T, bool>) {
      ASSIGN_OR_RETURN(uint8_t byte, cursor.read<uint8_t>("bool"));
      values.push_back(byte != 0);
    } else {
      ASSIGN_OR_RETURN(values.emplace_back(), cursor.read<T>("value"));
    }
  }
  return values;
}

// T is a template argument, which cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define KVF_INSTANTIATE_GGUF_GETTERS_(T)                           \
  template Result<T> GgufFile::get<T>(std::string_view key) const; \
  template Result<std::vector<T>> GgufFile::getArray<T>(std::string_view key) const;
KVF_INSTANTIATE_GGUF_GETTERS_(uint8_t)
KVF_INSTANTIATE_GGUF_GETTERS_(int8_t)
KVF_INSTANTIATE_GGUF_GETTERS_(uint16_t)
KVF_INSTANTIATE_GGUF_GETTERS_(int16_t)
KVF_INSTANTIATE_GGUF_GETTERS_(uint32_t)
KVF_INSTANTIATE_GGUF_GETTERS_(int32_t)
KVF_INSTANTIATE_GGUF_GETTERS_(float)
KVF_INSTANTIATE_GGUF_GETTERS_(bool)
KVF_INSTANTIATE_GGUF_GETTERS_(std::string_view)
KVF_INSTANTIATE_GGUF_GETTERS_(uint64_t)
KVF_INSTANTIATE_GGUF_GETTERS_(int64_t)
KVF_INSTANTIATE_GGUF_GETTERS_(double)
#undef KVF_INSTANTIATE_GGUF_GETTERS_
// NOLINTEND(bugprone-macro-parentheses)

Status toFloat(GgmlType type, std::span<const uint8_t> src, std::span<float> out) {
  ASSIGN_OR_RETURN(uint64_t bytes, ggmlByteSize(type, out.size()));
  if (bytes != src.size()) {
    return invalidArgument(std::to_string(out.size()) + " " + ggmlTypeName(type) +
                           " elements take " + std::to_string(bytes) + " bytes, not " +
                           std::to_string(src.size()));
  }
  const auto load16 = [&](size_t byte_offset) {
    uint16_t value;
    std::memcpy(&value, src.data() + byte_offset, sizeof(value));
    return value;
  };
  switch (type) {
    case GgmlType::kF32:
      if (!out.empty()) std::memcpy(out.data(), src.data(), src.size());
      return Status::ok();
    case GgmlType::kF16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = halfToFloat(load16(2 * i));
      return Status::ok();
    case GgmlType::kBF16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = bf16ToFloat(load16(2 * i));
      return Status::ok();
    case GgmlType::kQ8_0:
      // Block of 32: an F16 scale d, then 32 int8 quants q; x = d × q.
      for (size_t block = 0; block < out.size() / 32; ++block) {
        const float scale = halfToFloat(load16(34 * block));
        for (size_t j = 0; j < 32; ++j) {
          out[32 * block + j] =
              scale * static_cast<float>(static_cast<int8_t>(src[34 * block + 2 + j]));
        }
      }
      return Status::ok();
    default:
      return invalidArgument("converting " + ggmlTypeName(type) +
                             " to float is not supported (F32, F16, BF16 and Q8_0 are)");
  }
}

Status tensorRowToFloat(const GgufTensor& tensor, uint64_t row, std::span<float> out) {
  if (row >= tensor.rowCount()) {
    return outOfRange("row " + std::to_string(row) + " of tensor '" + printable(tensor.name) +
                      "', which has " + std::to_string(tensor.rowCount()));
  }
  if (out.size() != tensor.rowLength()) {
    return invalidArgument("output of " + std::to_string(out.size()) + " floats for rows of " +
                           std::to_string(tensor.rowLength()));
  }
  const uint64_t row_bytes = tensor.data.size() / tensor.rowCount();
  return toFloat(tensor.type, tensor.data.subspan(row * row_bytes, row_bytes), out);
}

Result<std::vector<float>> tensorToFloat(const GgufTensor& tensor) {
  // Refuse unsupported types before allocating (element_count is bounded by the file size).
  RETURN_IF_ERROR(toFloat(tensor.type, {}, {}));
  std::vector<float> out(tensor.element_count);
  RETURN_IF_ERROR(toFloat(tensor.type, tensor.data, out));
  return out;
}

}  // namespace kvferry::model
