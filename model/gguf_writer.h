// GGUF v3 writer, for tests and tools: builds a file in memory from metadata and tensors, and
// generates random llama models so engine tests can run any shape without downloading one.
#pragma once

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/gguf.h"
#include "model/llama_params.h"

namespace kvferry::model {

// Converts floats to `type`'s storage: F32, F16 and BF16 (round to nearest even) and Q8_0 (as
// llama.cpp's reference quantizer: per block of 32, d = max|x| / 127, q = round(x / d)).
// out.size() must be exactly the bytes in.size() elements take.
Status fromFloat(GgmlType type, std::span<const float> in, std::span<uint8_t> out);

// Entries are written in the order they were added. Misuse (a duplicate key or tensor name, a
// shape that does not fit the type or the data) is remembered, and the first one is returned by
// serialize() / writeFile(), so building needs no error handling per call. Not thread-safe.
class GgufWriter {
 public:
  // An alignment other than 32 is also written as `general.alignment`.
  explicit GgufWriter(uint32_t alignment = kGgufDefaultAlignment);

  template <GgufValue T>
  void add(std::string_view key, T value);
  void add(std::string_view key, const char* value) { add(key, std::string_view(value)); }
  template <GgufValue T>
  void addArray(std::string_view key, const std::vector<T>& values);
  void addArray(std::string_view key, const std::vector<std::string>& values);

  // A tensor of shape `dims` (ggml order: dims[0] is the row length) from row-major floats,
  // stored as `type` (F32, F16, BF16 or Q8_0).
  void addTensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type,
                 std::span<const float> values);
  // A tensor whose bytes are already in `type`'s layout (any type ggmlTypeInfo knows).
  void addRawTensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type,
                    std::span<const uint8_t> bytes);

  Result<std::vector<uint8_t>> serialize() const;
  Status writeFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    GgmlType type;
    std::vector<uint8_t> data;
  };

  // Starts a metadata entry: checks the key is new, writes key and type tag.
  bool beginEntry(std::string_view key, GgufType type);
  // Checks a new tensor's name, shape and type; its byte size when `elements` elements fit.
  Result<uint64_t> checkTensor(std::string_view name, const std::vector<uint64_t>& dims,
                               GgmlType type, uint64_t elements);
  void fail(Status status);

  uint32_t alignment_;
  std::vector<uint8_t> metadata_;  // the encoded key/value entries
  uint64_t metadata_count_ = 0;
  std::set<std::string, std::less<>> keys_;
  std::vector<Tensor> tensors_;
  std::set<std::string, std::less<>> tensor_names_;
  Status error_;  // the first misuse
};

// A random llama model (DESIGN.md §5: tests generate their own models).
struct RandomLlamaSpec {
  LlamaParams params;                     // validated like a loaded file's; vocab_size >= 260
  GgmlType matrix_type = GgmlType::kF32;  // 2-D weights (F32, F16, BF16, Q8_0); norms stay F32
  bool tied_output = false;               // omit output.weight: logits use token_embd
};

// Writes a GGUF v3 llama model: the spec's hyper-parameters, weights drawn from a splitmix64
// stream seeded by `seed` (matrices uniform in ±1/sqrt(row length), norms 1 ± 0.1), so one
// (spec, seed) always gives byte-identical files on any platform; and a synthetic SentencePiece
// vocabulary of params.vocab_size tokens: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>,
// "▁", printable ASCII characters, then merges (prefixes of common English words, then
// word + letter pairs), scores descending in that order.
Status writeRandomLlamaModel(const std::string& path, const RandomLlamaSpec& spec, uint64_t seed);
// The same file's bytes.
Result<std::vector<uint8_t>> randomLlamaModel(const RandomLlamaSpec& spec, uint64_t seed);

}  // namespace kvferry::model
