#include "model/safetensors.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cstring>
#include <limits>

#include "common/json_kind.h"
#include "model/json_document.h"

namespace kvferry::model {
namespace {

namespace json = boost::json;

// The reference implementation (huggingface/safetensors) refuses larger headers.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

struct Dtype {
  std::string_view name;
  uint64_t bytes;
};
// Every dtype of the format, so that offsets are checked whatever the tensor holds.
constexpr Dtype kDtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
    {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8},
};

std::optional<uint64_t> dtypeBytes(std::string_view dtype) {
  for (const Dtype& d : kDtypes) {
    if (d.name == dtype) return d.bytes;
  }
  return std::nullopt;
}

std::string shapeText(const std::vector<uint64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// A JSON array of non-negative integers.
Result<std::vector<uint64_t>> unsignedArray(const json::value& value, const std::string& what) {
  const json::array* array = value.if_array();
  if (array == nullptr) {
    return invalidArgument(what + " is " + std::string(jsonKindName(value)) + ", not an array");
  }
  std::vector<uint64_t> out;
  for (const json::value& item : *array) {
    boost::system::error_code ec;
    const auto number = item.to_number<uint64_t>(ec);
    if (ec) {
      return invalidArgument(
          what + " holds " +
          (item.is_number() ? json::serialize(item) : std::string(jsonKindName(item))) +
          ", not a non-negative integer");
    }
    out.push_back(number);
  }
  return out;
}

Result<SafetensorsTensor> readEntry(std::string_view name, const json::value& value,
                                    uint64_t data_bytes) {
  const std::string what = "tensor '" + printable(name) + "'";
  const json::object* entry = value.if_object();
  if (entry == nullptr) {
    return invalidArgument(what + " is " + std::string(jsonKindName(value)) + ", not an object");
  }
  SafetensorsTensor tensor;
  tensor.name = name;
  const json::value* dtype = entry->if_contains("dtype");
  if (dtype == nullptr || !dtype->is_string())
    return invalidArgument(what + " has no dtype string");
  tensor.dtype = dtype->get_string();
  const std::optional<uint64_t> element_bytes = dtypeBytes(tensor.dtype);
  if (!element_bytes) {
    return invalidArgument(what + " has unknown dtype '" + printable(tensor.dtype) + "'");
  }
  const json::value* shape = entry->if_contains("shape");
  if (shape == nullptr) return invalidArgument(what + " has no shape");
  ASSIGN_OR_RETURN(tensor.shape, unsignedArray(*shape, what + ": shape"));
  const json::value* offsets_value = entry->if_contains("data_offsets");
  if (offsets_value == nullptr) return invalidArgument(what + " has no data_offsets");
  ASSIGN_OR_RETURN(std::vector<uint64_t> offsets,
                   unsignedArray(*offsets_value, what + ": data_offsets"));
  if (offsets.size() != 2 || offsets[0] > offsets[1]) {
    return invalidArgument(what + ": data_offsets must be [begin, end] with begin <= end");
  }
  uint64_t count = 1;
  constexpr uint64_t kMax = std::numeric_limits<int64_t>::max();
  for (uint64_t dim : tensor.shape) {
    if (dim != 0 && count > kMax / dim / *element_bytes) {
      return invalidArgument(what + ": shape " + shapeText(tensor.shape) + " overflows");
    }
    count *= dim;
  }
  tensor.element_count = count;
  const uint64_t bytes = count * *element_bytes;
  if (offsets[1] - offsets[0] != bytes) {
    return invalidArgument(
        what + ": data_offsets [" + std::to_string(offsets[0]) + ", " + std::to_string(offsets[1]) +
        "] span " + std::to_string(offsets[1] - offsets[0]) + " bytes, but shape " +
        shapeText(tensor.shape) + " of " + tensor.dtype + " takes " + std::to_string(bytes));
  }
  if (offsets[1] > data_bytes) {
    return invalidArgument(what + ": data_offsets end " + std::to_string(offsets[1]) +
                           " is past the end of the data (" + std::to_string(data_bytes) +
                           " bytes: the file is truncated)");
  }
  tensor.data_begin = offsets[0];
  return tensor;
}

}  // namespace

std::optional<GgmlType> ggmlTypeOfDtype(std::string_view dtype) {
  if (dtype == "F32") return GgmlType::kF32;
  if (dtype == "F16") return GgmlType::kF16;
  if (dtype == "BF16") return GgmlType::kBF16;
  return std::nullopt;
}

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  Result<MappedFile> mapping = MappedFile::open(path);
  if (!mapping.isOk()) return mapping.status();
  SafetensorsFile file;
  file.mapping_ = std::move(mapping).value();
  file.bytes_ = file.mapping_.bytes();
  file.name_ = path;
  RETURN_IF_ERROR(file.parseAll().withContext(path));
  return file;
}

Result<SafetensorsFile> SafetensorsFile::parse(std::span<const uint8_t> bytes, std::string name) {
  SafetensorsFile file;
  file.bytes_ = bytes;
  file.name_ = std::move(name);
  RETURN_IF_ERROR(file.parseAll().withContext(file.name_));
  return file;
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view tensor_name) const {
  const auto it = std::ranges::lower_bound(tensors_, tensor_name, {}, &SafetensorsTensor::name);
  return it != tensors_.end() && it->name == tensor_name ? &*it : nullptr;
}

Status SafetensorsFile::parseAll() {
  if (bytes_.size() < 8) {
    return invalidArgument("truncated file: " + std::to_string(bytes_.size()) +
                           " bytes, a safetensors file starts with an 8-byte header length");
  }
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes_.data(), 8);
  if (header_bytes > bytes_.size() - 8) {
    return invalidArgument("header length " + std::to_string(header_bytes) +
                           " runs past the end of the file (" + std::to_string(bytes_.size()) +
                           " bytes): truncated, or not a safetensors file");
  }
  if (header_bytes > kMaxHeaderBytes) {
    return invalidArgument("header length " + std::to_string(header_bytes) + " exceeds " +
                           std::to_string(kMaxHeaderBytes) + " bytes");
  }
  data_offset_ = 8 + header_bytes;
  const std::string_view header(reinterpret_cast<const char*>(bytes_.data()) + 8, header_bytes);
  ASSIGN_OR_RETURN(json::value document, internal::parseJsonDocument(header, "header"));
  const json::object* root = document.if_object();
  if (root == nullptr) {
    return invalidArgument("header is " + std::string(jsonKindName(document)) +
                           ", not a JSON object");
  }
  const uint64_t data_bytes = bytes_.size() - data_offset_;
  tensors_.reserve(root->size());
  for (const auto& [key, value] : *root) {
    if (key == "__metadata__") {
      if (!value.is_object()) return invalidArgument("header: __metadata__ is not an object");
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsTensor tensor, readEntry(key, value, data_bytes));
    tensor.data = bytes_.subspan(data_offset_ + tensor.data_begin,
                                 tensor.element_count * *dtypeBytes(tensor.dtype));
    tensors_.push_back(std::move(tensor));
  }
  // No two tensors may share bytes: in data order, each starts at or after the last one's end.
  std::vector<const SafetensorsTensor*> by_offset;
  for (const SafetensorsTensor& tensor : tensors_) by_offset.push_back(&tensor);
  std::ranges::sort(by_offset, {}, [](const SafetensorsTensor* t) {
    return std::pair(t->data_begin, t->data_begin + t->data.size());
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsTensor& before = *by_offset[i - 1];
    const SafetensorsTensor& after = *by_offset[i];
    const uint64_t before_end = before.data_begin + before.data.size();
    if (after.data_begin < before_end && !after.data.empty()) {
      return invalidArgument("tensors '" + printable(before.name) + "' (bytes " +
                             std::to_string(before.data_begin) + ".." + std::to_string(before_end) +
                             ") and '" + printable(after.name) + "' (bytes " +
                             std::to_string(after.data_begin) + ".." +
                             std::to_string(after.data_begin + after.data.size()) + ") overlap");
    }
  }
  std::ranges::sort(tensors_, {}, &SafetensorsTensor::name);
  return Status::ok();
}

}  // namespace kvferry::model
