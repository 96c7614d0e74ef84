// GGUF v3 writer, for tests and tools: builds a file in memory from metadata and tensors, and
// generates random llama models so engine tests can run any shape without downloading one.
#pragma once

#include <cstdint>
#include <functional>
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
  // Fills out.size() consecutive elements of a generated tensor, starting at element `first`.
  using TensorFill = std::function<void(uint64_t first, std::span<float> out)>;
  // A tensor whose values `fill` produces when the file is written, in chunks, so writeFile()
  // of a model larger than memory never holds more than a chunk of it.
  void addGeneratedTensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type,
                          TensorFill fill);
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
    std::vector<uint8_t> data;  // empty for a generated tensor
    uint64_t bytes = 0;
    uint64_t elements = 0;
    TensorFill fill;  // set for a generated tensor
  };
  // The header, metadata and tensor table, padded to the alignment.
  std::vector<uint8_t> header() const;
  // Calls sink(bytes) with the tensor's bytes, in chunks for a generated one.
  Status emitTensor(const Tensor& tensor,
                    const std::function<Status(std::span<const uint8_t>)>& sink) const;

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

// The GgufWriter of a random llama model, its tensors generated when written (see
// writeRandomLlamaModel); shared by the in-memory and the streaming paths so both give the same
// bytes.
Result<GgufWriter> randomLlamaWriter(const RandomLlamaSpec& spec, uint64_t seed);

// Writes a GGUF v3 llama model: the spec's hyper-parameters, weights drawn from a splitmix64
// stream seeded by `seed` (matrices uniform in ±1/sqrt(row length), norms 1 ± 0.1; element i of
// the whole stream is a function of seed and i alone, so tensors are generated in parallel), so one
// (spec, seed) always gives byte-identical files on any platform; and a synthetic SentencePiece
// vocabulary of params.vocab_size tokens: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>,
// "▁", printable ASCII characters, then merges (prefixes of common English words, then
// word + letter pairs), scores descending in that order. params.rope_freq_factors, when set, are
// written as rope_freqs.weight. The file is written tensor by tensor (a model of any size).
Status writeRandomLlamaModel(const std::string& path, const RandomLlamaSpec& spec, uint64_t seed);
// The same file's bytes.
Result<std::vector<uint8_t>> randomLlamaModel(const RandomLlamaSpec& spec, uint64_t seed);

}  // namespace kvferry::model
