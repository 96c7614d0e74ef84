#include "model/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include "model/float16.h"
#include "model/pre_tokenizer.h"
#include "model/tokenizer.h"
#include "model/tokenizer_internal.h"

namespace kvferry::model {
namespace {

template <typename T>
void appendRaw(std::vector<uint8_t>& out, T value) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

void appendString(std::vector<uint8_t>& out, std::string_view text) {
  appendRaw<uint64_t>(out, text.size());
  out.insert(out.end(), text.begin(), text.end());
}

template <GgufValue T>
void appendValue(std::vector<uint8_t>& out, const T& value) {
  if constexpr (std::same_as<T, std::string_view>) {
    appendString(out, value);
  } else if constexpr (std::same_as<T, bool>) {
    appendRaw<uint8_t>(out, value ? 1 : 0);
  } else {
    appendRaw(out, value);
  }
}

void padTo(std::vector<uint8_t>& out, uint64_t alignment) {
  out.resize((out.size() + alignment - 1) / alignment * alignment, 0);
}

// splitmix64 (Steele, Lea & Flood 2014): tiny, fully specified, so weights are identical on every
// platform (std::*_distribution is not).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * 0x1p-23f - 1.0f; }  // [-1, 1)
  // What the (index + 1)-th uniform() of SplitMix64(seed) returns, without producing the ones
  // before.
  static float uniformAt(uint64_t seed, uint64_t index) {
    SplitMix64 at(seed + index * 0x9e3779b97f4a7c15ULL);
    return at.uniform();
  }

 private:
  uint64_t state_;
};

// Elements converted per chunk when a generated tensor is written: a multiple of every block.
constexpr uint64_t kFillChunk = uint64_t{1} << 24;

// The synthetic SentencePiece vocabulary writeRandomLlamaModel documents.
Vocabulary syntheticVocabulary(uint32_t size) {
  Vocabulary v;
  v.model = "llama";
  const auto push = [&](std::string text, TokenType type, float score) {
    v.tokens.push_back(std::move(text));
    v.types.push_back(type);
    v.scores.push_back(score);
  };
  push("<unk>", TokenType::kUnknown, 0);
  push("<s>", TokenType::kControl, 0);
  push("</s>", TokenType::kControl, 0);
  constexpr char kHex[] = "0123456789ABCDEF";
  for (int byte = 0; byte < 256; ++byte) {
    push(std::string("<0x") + kHex[byte >> 4] + kHex[byte & 15] + ">", TokenType::kByte, 0);
  }
  const std::string space = "\xe2\x96\x81";  // U+2581, SentencePiece's space
  std::vector<std::string> pieces = {space};
  std::set<std::string, std::less<>> seen(pieces.begin(), pieces.end());
  const auto addPiece = [&](std::string piece) {
    if (seen.insert(piece).second) pieces.push_back(std::move(piece));
  };
  for (char c = 0x21; c < 0x7f; ++c) addPiece(std::string(1, c));
  // Every prefix of a word is a token too, so each word is reachable by pairwise merges.
  const auto addWord = [&](const std::string& word, size_t first_length) {
    for (size_t length = first_length; length <= word.size(); ++length) {
      addPiece(word.substr(0, length));
    }
  };
  for (const char* word :
       {"the",  "and",  "was",   "to",     "she",  "he",    "it",   "of",   "in",   "Once",
        "upon", "time", "there", "little", "girl", "named", "Lily", "play", "with", "said"}) {
    addWord(space + word, space.size() + 1);
  }
  for (const char* suffix : {"ing", "ed", "er"}) addWord(suffix, 2);
  for (size_t i = 0; v.tokens.size() + pieces.size() < size; ++i) {
    for (char c : std::string_view("etaoinshrdlu")) addPiece(pieces[i] + c);
  }
  for (size_t i = 0; v.tokens.size() < size; ++i) {
    push(pieces[i], TokenType::kNormal, -static_cast<float>(i));
  }
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  v.add_bos = true;
  v.add_space_prefix = true;
  return v;
}

// The synthetic byte-level BPE vocabulary RandomLlamaSpec::bpe_vocabulary documents.
Vocabulary syntheticBpeVocabulary(uint32_t size) {
  Vocabulary v;
  v.model = "gpt2";
  v.pre = std::string(preTokenizerName(PreTokenizer::kQwen2));
  v.normalizer = "nfc";
  const std::vector<std::string> specials = {"<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>",
                                             "<|im_end|>"};
  const size_t normal_tokens = size - specials.size();
  std::set<std::string, std::less<>> seen;
  const auto push = [&](std::string text) {
    seen.insert(text);
    v.tokens.push_back(std::move(text));
  };
  for (int byte = 0; byte < 256; ++byte) {
    push(internal::byteLevelText(std::string(1, static_cast<char>(byte))));
  }
  // A merge of two tokens into a new one, ranked in the order made.
  const auto merge = [&](const std::string& left, const std::string& right) {
    if (v.tokens.size() >= normal_tokens || seen.contains(left + right)) return;
    v.merges.push_back(left + " " + right);
    push(left + right);
  };
  // Every prefix of a word is a token, so each word is reachable by pairwise merges.
  const auto addWord = [&](std::string_view word) {
    std::string prefix = internal::byteLevelText(word.substr(0, 1));
    for (size_t i = 1; i < word.size(); ++i) {
      const std::string next = internal::byteLevelText(word.substr(i, 1));
      merge(prefix, next);
      prefix += next;
    }
  };
  for (const char* word :
       {" the",  " and",  " was",  " to",    " she",    " he",   " it",    " of",   " in",
        "Once",  " upon", " time", " there", " little", " girl", " named", " Lily", " play",
        " with", " said", "ing",   "ed",     "er",      "Hello", " world"}) {
    addWord(word);
  }
  for (size_t i = 256; v.tokens.size() < normal_tokens; ++i) {
    for (char c : std::string_view("etaoinshrdlu")) {
      merge(v.tokens[i], std::string(1, c));
    }
  }
  v.types.assign(v.tokens.size(), TokenType::kNormal);
  v.bos_id = static_cast<TokenId>(v.tokens.size());
  v.eos_id = v.bos_id + 1;
  for (const std::string& special : specials) {
    v.tokens.push_back(special);
    v.types.push_back(TokenType::kControl);
  }
  v.scores.assign(v.tokens.size(), 0.0f);
  return v;
}

}  // namespace

Status fromFloat(GgmlType type, std::span<const float> in, std::span<uint8_t> out) {
  ASSIGN_OR_RETURN(uint64_t bytes, ggmlByteSize(type, in.size()));
  if (bytes != out.size()) {
    return invalidArgument(std::to_string(in.size()) + " " + ggmlTypeName(type) +
                           " elements take " + std::to_string(bytes) + " bytes, not " +
                           std::to_string(out.size()));
  }
  const auto store16 = [&](size_t at, uint16_t value) { std::memcpy(&out[at], &value, 2); };
  switch (type) {
    case GgmlType::kF32:
      if (!in.empty()) std::memcpy(out.data(), in.data(), out.size());
      return Status::ok();
    case GgmlType::kF16:
      for (size_t i = 0; i < in.size(); ++i) store16(2 * i, floatToHalf(in[i]));
      return Status::ok();
    case GgmlType::kBF16:
      for (size_t i = 0; i < in.size(); ++i) store16(2 * i, floatToBf16(in[i]));
      return Status::ok();
    case GgmlType::kQ8_0:
      for (size_t block = 0; block < in.size() / 32; ++block) {
        const std::span<const float> x = in.subspan(32 * block, 32);
        float max_abs = 0.0f;
        for (float value : x) max_abs = std::max(max_abs, std::fabs(value));
        const float scale = max_abs / 127.0f;
        const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
        store16(34 * block, floatToHalf(scale));
        for (size_t j = 0; j < 32; ++j) {
          out[34 * block + 2 + j] =
              static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * inverse)));
        }
      }
      return Status::ok();
    default:
      return invalidArgument("converting float to " + ggmlTypeName(type) +
                             " is not supported (F32, F16, BF16 and Q8_0 are)");
  }
}

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || !std::has_single_bit(alignment)) {
    fail(invalidArgument("alignment " + std::to_string(alignment) + " is not a power of two"));
    alignment_ = kGgufDefaultAlignment;
  } else if (alignment != kGgufDefaultAlignment) {
    add("general.alignment", alignment);
  }
}

void GgufWriter::fail(Status status) {
  if (error_.isOk()) error_ = std::move(status);
}

bool GgufWriter::beginEntry(std::string_view key, GgufType type) {
  if (!keys_.emplace(key).second) {
    fail(invalidArgument("duplicate metadata key '" + std::string(key) + "'"));
    return false;
  }
  appendString(metadata_, key);
  appendRaw(metadata_, static_cast<uint32_t>(type));
  ++metadata_count_;
  return true;
}

template <GgufValue T>
void GgufWriter::add(std::string_view key, T value) {
  if (beginEntry(key, ggufTypeOf<T>())) appendValue(metadata_, value);
}

template <GgufValue T>
void GgufWriter::addArray(std::string_view key, const std::vector<T>& values) {
  if (!beginEntry(key, GgufType::kArray)) return;
  appendRaw(metadata_, static_cast<uint32_t>(ggufTypeOf<T>()));
  appendRaw<uint64_t>(metadata_, values.size());
  for (const T& value : values) appendValue<T>(metadata_, value);
}

void GgufWriter::addArray(std::string_view key, const std::vector<std::string>& values) {
  if (!beginEntry(key, GgufType::kArray)) return;
  appendRaw(metadata_, static_cast<uint32_t>(GgufType::kString));
  appendRaw<uint64_t>(metadata_, values.size());
  for (const std::string& value : values) appendString(metadata_, value);
}

// T is a template argument, which cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define KVF_INSTANTIATE_GGUF_WRITERS_(T)                           \
  template void GgufWriter::add<T>(std::string_view key, T value); \
  template void GgufWriter::addArray<T>(std::string_view key, const std::vector<T>& values);
KVF_INSTANTIATE_GGUF_WRITERS_(uint8_t)
KVF_INSTANTIATE_GGUF_WRITERS_(int8_t)
KVF_INSTANTIATE_GGUF_WRITERS_(uint16_t)
KVF_INSTANTIATE_GGUF_WRITERS_(int16_t)
KVF_INSTANTIATE_GGUF_WRITERS_(uint32_t)
KVF_INSTANTIATE_GGUF_WRITERS_(int32_t)
KVF_INSTANTIATE_GGUF_WRITERS_(float)
KVF_INSTANTIATE_GGUF_WRITERS_(bool)
KVF_INSTANTIATE_GGUF_WRITERS_(std::string_view)
KVF_INSTANTIATE_GGUF_WRITERS_(uint64_t)
KVF_INSTANTIATE_GGUF_WRITERS_(int64_t)
KVF_INSTANTIATE_GGUF_WRITERS_(double)
#undef KVF_INSTANTIATE_GGUF_WRITERS_
// NOLINTEND(bugprone-macro-parentheses)

Result<uint64_t> GgufWriter::checkTensor(std::string_view name, const std::vector<uint64_t>& dims,
                                         GgmlType type, uint64_t elements) {
  if (!tensor_names_.emplace(name).second) return invalidArgument("duplicate tensor name");
  const GgmlTypeInfo* info = ggmlTypeInfo(type);
  if (info == nullptr) return invalidArgument("unknown " + ggmlTypeName(type));
  if (dims.size() > kGgufMaxDims) {
    return invalidArgument(std::to_string(dims.size()) + " dimensions (at most 4)");
  }
  if (!dims.empty() && dims[0] % info->block_elements != 0) {
    return invalidArgument("row length " + std::to_string(dims[0]) + " is not a multiple of the " +
                           ggmlTypeName(type) + " block");
  }
  uint64_t count = 1;
  for (uint64_t dim : dims) {
    if (dim != 0 && count > std::numeric_limits<int64_t>::max() / dim) {
      return invalidArgument("element count overflows");
    }
    count *= dim;
  }
  if (count != elements) {
    return invalidArgument("the shape holds " + std::to_string(count) + " elements, " +
                           std::to_string(elements) + " given");
  }
  return ggmlByteSize(type, count);
}

void GgufWriter::addTensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type,
                           std::span<const float> values) {
  const std::string what = "tensor '" + std::string(name) + "'";
  Result<uint64_t> bytes = checkTensor(name, dims, type, values.size());
  if (!bytes.isOk()) return fail(bytes.status().withContext(what));
  Tensor tensor{std::string(name), std::move(dims), type, std::vector<uint8_t>(*bytes), *bytes,
                values.size(),     nullptr};
  Status status = fromFloat(type, values, tensor.data);
  if (!status.isOk()) return fail(status.withContext(what));
  tensors_.push_back(std::move(tensor));
}

void GgufWriter::addGeneratedTensor(std::string_view name, std::vector<uint64_t> dims,
                                    GgmlType type, TensorFill fill) {
  const std::string what = "tensor '" + std::string(name) + "'";
  uint64_t elements = 1;
  for (uint64_t dim : dims) elements *= dim;  // overflow is caught by checkTensor's own product
  Result<uint64_t> bytes = checkTensor(name, dims, type, elements);
  if (!bytes.isOk()) return fail(bytes.status().withContext(what));
  tensors_.push_back(
      {std::string(name), std::move(dims), type, {}, *bytes, elements, std::move(fill)});
}

void GgufWriter::addRawTensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type,
                              std::span<const uint8_t> bytes) {
  const std::string what = "tensor '" + std::string(name) + "'";
  uint64_t elements = 1;
  for (uint64_t dim : dims) elements *= dim;  // overflow is caught by checkTensor's own product
  Result<uint64_t> size = checkTensor(name, dims, type, elements);
  if (!size.isOk()) return fail(size.status().withContext(what));
  if (*size != bytes.size()) {
    return fail(invalidArgument(what + ": " + std::to_string(bytes.size()) + " bytes given for " +
                                std::to_string(*size)));
  }
  tensors_.push_back({std::string(name),
                      std::move(dims),
                      type,
                      {bytes.begin(), bytes.end()},
                      *size,
                      elements,
                      {}});
}

std::vector<uint8_t> GgufWriter::header() const {
  std::vector<uint8_t> out;
  appendRaw<uint32_t>(out, 0x46554747);  // "GGUF"
  appendRaw<uint32_t>(out, 3);
  appendRaw<uint64_t>(out, tensors_.size());
  appendRaw<uint64_t>(out, metadata_count_);
  out.insert(out.end(), metadata_.begin(), metadata_.end());
  uint64_t offset = 0;
  for (const Tensor& tensor : tensors_) {
    appendString(out, tensor.name);
    appendRaw<uint32_t>(out, static_cast<uint32_t>(tensor.dims.size()));
    for (uint64_t dim : tensor.dims) appendRaw(out, dim);
    appendRaw(out, static_cast<uint32_t>(tensor.type));
    appendRaw(out, offset);
    offset = (offset + tensor.bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  padTo(out, alignment_);
  return out;
}

Status GgufWriter::emitTensor(const Tensor& tensor, const ByteSink& sink) const {
  std::vector<uint8_t> padding((alignment_ - tensor.bytes % alignment_) % alignment_, 0);
  if (!tensor.fill) {
    RETURN_IF_ERROR(sink(tensor.data));
  } else {
    RETURN_IF_ERROR(emitGeneratedTensor(tensor.type, tensor.elements, tensor.fill, sink)
                        .withContext("tensor '" + tensor.name + "'"));
  }
  return sink(padding);
}

Status emitGeneratedTensor(GgmlType type, uint64_t elements, const GgufWriter::TensorFill& fill,
                           const ByteSink& sink) {
  // Chunks of kFillChunk elements; for the plain types each chunk is filled and converted by
  // several threads in slices (fill is a pure function of the element index).
  const uint64_t chunk = std::min(kFillChunk, elements);
  const unsigned threads = std::clamp(std::thread::hardware_concurrency(), 1u, 16u);
  std::vector<float> values(chunk);
  std::vector<uint8_t> bytes;
  for (uint64_t first = 0; first < elements; first += chunk) {
    const uint64_t count = std::min(chunk, elements - first);
    ASSIGN_OR_RETURN(uint64_t size, ggmlByteSize(type, count));
    bytes.resize(size);
    const uint64_t element_bytes = size / count;  // 0 or inexact for block types: serial
    const uint64_t slice = (count + threads - 1) / threads;
    std::vector<Status> statuses(threads);
    const auto work = [&](unsigned part) {
      const uint64_t begin = std::min<uint64_t>(count, part * slice);
      const uint64_t end = std::min<uint64_t>(count, begin + slice);
      if (begin >= end) return;
      std::span<float> out(values.data() + begin, end - begin);
      fill(first + begin, out);
      statuses[part] = fromFloat(
          type, out,
          std::span<uint8_t>(bytes).subspan(begin * element_bytes, (end - begin) * element_bytes));
    };
    if (threads == 1 || count < kFillChunk / 4 || element_bytes * count != size) {
      std::span<float> out(values.data(), count);
      fill(first, out);
      statuses[0] = fromFloat(type, out, bytes);
    } else {
      std::vector<std::thread> pool;
      for (unsigned part = 1; part < threads; ++part) pool.emplace_back(work, part);
      work(0);
      for (std::thread& thread : pool) thread.join();
    }
    for (const Status& status : statuses) RETURN_IF_ERROR(status);
    RETURN_IF_ERROR(sink(bytes));
  }
  return Status::ok();
}

Result<std::vector<uint8_t>> GgufWriter::serialize() const {
  if (!error_.isOk()) return error_;
  std::vector<uint8_t> out = header();
  for (const Tensor& tensor : tensors_) {
    RETURN_IF_ERROR(emitTensor(tensor, [&](std::span<const uint8_t> bytes) {
      out.insert(out.end(), bytes.begin(), bytes.end());
      return Status::ok();
    }));
  }
  return out;
}

Status GgufWriter::writeFile(const std::string& path) const {
  if (!error_.isOk()) return error_;
  return writeFileStreamed(path, [&](const ByteSink& sink) -> Status {
    RETURN_IF_ERROR(sink(header()));
    for (const Tensor& tensor : tensors_) RETURN_IF_ERROR(emitTensor(tensor, sink));
    return Status::ok();
  });
}

Status writeFileStreamed(const std::string& path,
                         const std::function<Status(const ByteSink&)>& produce) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ioError("open " + path, errno);
  const ByteSink sink = [&](std::span<const uint8_t> bytes) -> Status {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ioError("write " + path, errno);
      done += static_cast<size_t>(n);
    }
    return Status::ok();
  };
  Status status = produce(sink);
  if (::close(fd) != 0 && status.isOk()) status = ioError("close " + path, errno);
  return status;
}

Status checkRandomLlamaSpec(const RandomLlamaSpec& spec) {
  const LlamaParams& p = spec.params;
  RETURN_IF_ERROR(validateLlamaParams(p));
  if (p.vocab_size < 260) {
    return invalidArgument("vocab_size " + std::to_string(p.vocab_size) +
                           " < 260 (3 special + 256 byte tokens + \"\xe2\x96\x81\")");
  }
  // What a file of this architecture says about its RoPE pairs (readLlamaParams).
  if (p.rope_neox != (p.architecture != Architecture::kLlama)) {
    return invalidArgument(std::string("rope_neox must be ") +
                           (p.architecture == Architecture::kLlama ? "false" : "true") +
                           " for a GGUF " + std::string(architectureName(p.architecture)) +
                           " model");
  }
  return Status::ok();
}

Vocabulary randomLlamaVocabulary(const RandomLlamaSpec& spec) {
  return spec.bpe_vocabulary ? syntheticBpeVocabulary(spec.params.vocab_size)
                             : syntheticVocabulary(spec.params.vocab_size);
}

std::vector<RandomTensor> randomLlamaTensors(const RandomLlamaSpec& spec, uint64_t seed) {
  const LlamaParams& p = spec.params;
  std::vector<RandomTensor> tensors;
  // Element i of the whole stream (every tensor in order) is uniformAt(seed, i): the same numbers
  // one SplitMix64(seed) produces in sequence.
  uint64_t stream = 0;
  // `count` values center + spread × uniform, from the stream.
  const auto generated = [&](std::string name, std::vector<uint64_t> dims, GgmlType type,
                             float center, float spread) {
    uint64_t count = 1;
    for (uint64_t dim : dims) count *= dim;
    tensors.push_back({std::move(name), std::move(dims), type,
                       [seed, center, spread, base = stream](uint64_t first, std::span<float> out) {
                         for (uint64_t i = 0; i < out.size(); ++i) {
                           out[i] = center + spread * SplitMix64::uniformAt(seed, base + first + i);
                         }
                       }});
    stream += count;
  };
  // Matrices uniform in ±1/sqrt(row length); norms 1 ± 0.1; biases ±0.5.
  const auto matrix = [&](std::string name, uint64_t row_length, uint64_t rows) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(row_length));
    // 0 + scale × u is scale × u exactly, as the generator has always computed it.
    generated(std::move(name), {row_length, rows}, spec.matrix_type, 0.0f, scale);
  };
  const auto vector = [&](std::string name, uint64_t length, float center, float spread) {
    generated(std::move(name), {length}, GgmlType::kF32, center, spread);
  };
  const uint64_t dim = p.embedding_length;
  const uint64_t q_dim = p.queryDim();
  matrix("token_embd.weight", dim, p.vocab_size);
  vector("output_norm.weight", dim, 1.0f, 0.1f);
  if (!spec.tied_output) matrix("output.weight", dim, p.vocab_size);
  if (!p.rope_freq_factors.empty()) {
    tensors.push_back({"rope_freqs.weight",
                       {p.rope_freq_factors.size()},
                       GgmlType::kF32,
                       [factors = p.rope_freq_factors](uint64_t first, std::span<float> out) {
                         std::copy_n(factors.begin() + static_cast<ptrdiff_t>(first), out.size(),
                                     out.begin());
                       }});
  }
  for (uint32_t i = 0; i < p.block_count; ++i) {
    const std::string prefix = "blk." + std::to_string(i) + ".";
    vector(prefix + "attn_norm.weight", dim, 1.0f, 0.1f);
    matrix(prefix + "attn_q.weight", dim, q_dim);
    matrix(prefix + "attn_k.weight", dim, p.kvDim());
    matrix(prefix + "attn_v.weight", dim, p.kvDim());
    if (p.hasQkvBias()) {
      vector(prefix + "attn_q.bias", q_dim, 0.0f, 0.5f);
      vector(prefix + "attn_k.bias", p.kvDim(), 0.0f, 0.5f);
      vector(prefix + "attn_v.bias", p.kvDim(), 0.0f, 0.5f);
    }
    if (p.hasQkNorm()) {
      vector(prefix + "attn_q_norm.weight", p.headDim(), 1.0f, 0.1f);
      vector(prefix + "attn_k_norm.weight", p.headDim(), 1.0f, 0.1f);
    }
    matrix(prefix + "attn_output.weight", q_dim, dim);
    vector(prefix + "ffn_norm.weight", dim, 1.0f, 0.1f);
    matrix(prefix + "ffn_gate.weight", dim, p.feed_forward_length);
    matrix(prefix + "ffn_down.weight", p.feed_forward_length, dim);
    matrix(prefix + "ffn_up.weight", dim, p.feed_forward_length);
  }
  return tensors;
}

Result<GgufWriter> randomLlamaWriter(const RandomLlamaSpec& spec, uint64_t seed) {
  RETURN_IF_ERROR(checkRandomLlamaSpec(spec));
  const LlamaParams& p = spec.params;
  GgufWriter writer;
  const std::string arch(architectureName(p.architecture));
  const auto key = [&](const char* suffix) { return arch + "." + suffix; };
  writer.add("general.architecture", std::string_view(arch));
  writer.add("general.name", "kvferry-random-llama");
  writer.add(key("vocab_size"), p.vocab_size);
  writer.add(key("context_length"), p.context_length);
  writer.add(key("embedding_length"), p.embedding_length);
  writer.add(key("feed_forward_length"), p.feed_forward_length);
  writer.add(key("block_count"), p.block_count);
  writer.add(key("attention.head_count"), p.head_count);
  writer.add(key("attention.head_count_kv"), p.head_count_kv);
  if (p.head_dim != 0) {
    writer.add(key("attention.key_length"), p.head_dim);
    writer.add(key("attention.value_length"), p.head_dim);
  }
  writer.add(key("rope.dimension_count"), p.rope_dimension_count);
  writer.add(key("rope.freq_base"), p.rope_freq_base);
  writer.add(key("attention.layer_norm_rms_epsilon"), p.rms_epsilon);

  const Vocabulary vocab = randomLlamaVocabulary(spec);
  std::vector<int32_t> types;
  for (TokenType type : vocab.types) types.push_back(static_cast<int32_t>(type));
  writer.add("tokenizer.ggml.model", std::string_view(vocab.model));
  if (spec.bpe_vocabulary) writer.add("tokenizer.ggml.pre", std::string_view(vocab.pre));
  writer.addArray("tokenizer.ggml.tokens", vocab.tokens);
  if (!spec.bpe_vocabulary) writer.addArray("tokenizer.ggml.scores", vocab.scores);
  writer.addArray("tokenizer.ggml.token_type", types);
  if (spec.bpe_vocabulary) writer.addArray("tokenizer.ggml.merges", vocab.merges);
  writer.add("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(vocab.bos_id));
  writer.add("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(vocab.eos_id));
  if (vocab.unk_id != kNoToken) {
    writer.add("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(vocab.unk_id));
  }
  writer.add("tokenizer.ggml.add_bos_token", vocab.add_bos);
  writer.add("tokenizer.ggml.add_eos_token", false);
  if (!spec.chat_template.empty()) {
    writer.add("tokenizer.chat_template", std::string_view(spec.chat_template));
  }

  for (RandomTensor& tensor : randomLlamaTensors(spec, seed)) {
    writer.addGeneratedTensor(tensor.name, std::move(tensor.dims), tensor.type,
                              std::move(tensor.fill));
  }
  return writer;
}

Result<std::vector<uint8_t>> randomLlamaModel(const RandomLlamaSpec& spec, uint64_t seed) {
  ASSIGN_OR_RETURN(GgufWriter writer, randomLlamaWriter(spec, seed));
  return writer.serialize();
}

Status writeRandomLlamaModel(const std::string& path, const RandomLlamaSpec& spec, uint64_t seed) {
  ASSIGN_OR_RETURN(GgufWriter writer, randomLlamaWriter(spec, seed));
  return writer.writeFile(path);
}

}  // namespace kvferry::model
