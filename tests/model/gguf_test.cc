#include "model/gguf.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "model/float16.h"
#include "model/gguf_writer.h"
#include "model/llama_params.h"
#include "model/tokenizer.h"
#include "test_data.h"

namespace kvferry::model {
namespace {

using ::kvferry::model::testing::storiesPath;
using ::kvferry::model::testing::tempPath;

std::vector<uint8_t> readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void writeAll(const std::string& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// Everything a consumer does with a file that parsed: none of it may crash on a corrupt one.
void exerciseConsumers(const GgufFile& file) {
  for (const GgufTensor& tensor : file.tensors()) {
    Result<std::vector<float>> values = tensorToFloat(tensor);
    (void)values;
  }
  Result<LlamaParams> params = readLlamaParams(file);
  if (params.isOk()) {
    (void)findLlamaTensors(file, *params);
    (void)modelFingerprint(file, *params);
  }
  Result<std::unique_ptr<Tokenizer>> tokenizer = makeTokenizer(file);
  if (tokenizer.isOk()) {
    Result<std::vector<TokenId>> ids = (*tokenizer)->encode("Once upon a time <s> Zoo", {});
    if (ids.isOk()) (void)(*tokenizer)->decode(*ids);
  }
}

TEST(GgufStoriesTest, HeaderTableAndTensorsMatchProvenance) {
  Result<GgufFile> file = GgufFile::open(storiesPath());
  ASSERT_TRUE(file.isOk()) << file.status().toString();
  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(file->tensors().size(), 48u);
  EXPECT_EQ(file->metadata().size(), 19u);
  EXPECT_EQ(file->dataOffset(), 14176u);
  EXPECT_EQ(file->alignment(), 32u);
  EXPECT_EQ(file->bytes().size(), 1185376u);

  EXPECT_EQ(*file->getString("general.architecture"), "llama");
  EXPECT_EQ(*file->getString("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(*file->getU32("llama.block_count"), 5u);
  EXPECT_EQ(*file->getF32("llama.attention.layer_norm_rms_epsilon"), 1e-5f);
  EXPECT_EQ(file->getStringArray("tokenizer.ggml.tokens")->at(3), "<0x00>");
  EXPECT_EQ(file->getF32Array("tokenizer.ggml.scores")->size(), 512u);
  EXPECT_EQ(file->getI32Array("tokenizer.ggml.token_type")->at(1), 3);
  const GgufKeyValue* tokens = file->findKey("tokenizer.ggml.tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->type, GgufType::kArray);
  EXPECT_EQ(tokens->array_type, GgufType::kString);
  EXPECT_EQ(tokens->array_size, 512u);

  const GgufTensor* embd = file->findTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->n_dims, 2u);
  EXPECT_EQ(embd->rowLength(), 64u);
  EXPECT_EQ(embd->rowCount(), 512u);
  EXPECT_EQ(embd->type, GgmlType::kF32);
  EXPECT_EQ(embd->offset, 0u);
  EXPECT_EQ(embd->data.size(), 64u * 512 * 4);
  EXPECT_EQ(embd->data.data(), file->bytes().data() + 14176);
  const GgufTensor* up = file->findTensor("blk.4.ffn_up.weight");
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(up->offset, 1126912u);
  EXPECT_EQ(up->dims[1], 172u);
  // PROVENANCE.md: output.weight is an exact copy of token_embd.weight.
  const GgufTensor* output = file->findTensor("output.weight");
  ASSERT_NE(output, nullptr);
  EXPECT_EQ(*tensorToFloat(*output), *tensorToFloat(*embd));
  std::vector<float> row(64);
  ASSERT_TRUE(tensorRowToFloat(*embd, 511, row).isOk());
  EXPECT_TRUE(std::equal(row.begin(), row.end(), tensorToFloat(*embd)->end() - 64));
  EXPECT_EQ(tensorRowToFloat(*embd, 512, row).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(tensorRowToFloat(*embd, 0, std::span(row).first(63)).code(),
            StatusCode::kInvalidArgument);
}

TEST(GgufStoriesTest, TypedAccessorsReportMissingKeysAndWrongTypes) {
  GgufFile file = std::move(GgufFile::open(storiesPath())).value();
  EXPECT_EQ(file.getU32("llama.no_such_key").status().code(), StatusCode::kNotFound);
  Result<float> wrong = file.getF32("llama.block_count");
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("is uint32, not float32"), std::string::npos);
  EXPECT_EQ(file.get<int32_t>("llama.block_count").status().code(), StatusCode::kInvalidArgument);
  Result<std::vector<int32_t>> not_int = file.getI32Array("tokenizer.ggml.scores");
  EXPECT_EQ(not_int.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(not_int.status().message().find("array of float32, not array of int32"),
            std::string::npos);
  EXPECT_EQ(file.getStringArray("general.name").status().code(), StatusCode::kInvalidArgument);
  uint32_t value = 7;
  EXPECT_TRUE(file.getIfPresent("llama.absent", value).isOk());
  EXPECT_EQ(value, 7u);
  EXPECT_TRUE(file.getIfPresent("llama.block_count", value).isOk());
  EXPECT_EQ(value, 5u);
  EXPECT_FALSE(file.getIfPresent("general.name", value).isOk());
}

TEST(GgufStoriesTest, VersionTwoHasTheSameLayout) {
  std::vector<uint8_t> bytes = readAll(storiesPath());
  bytes[4] = 2;  // v3 only added big-endian files; the little-endian layout is v2's
  Result<GgufFile> file = GgufFile::parse(bytes);
  ASSERT_TRUE(file.isOk()) << file.status().toString();
  EXPECT_EQ(file->version(), 2u);
  EXPECT_EQ(file->tensors().size(), 48u);
}

TEST(GgufOpenTest, MissingFileAndDirectoryAreErrors) {
  EXPECT_EQ(GgufFile::open("/nonexistent/model.gguf").status().code(), StatusCode::kIoError);
  EXPECT_EQ(GgufFile::open(::testing::TempDir()).status().code(), StatusCode::kInvalidArgument);
}

// Every truncation of the file is refused with INVALID_ARGUMENT naming a byte offset: every
// length through the header, metadata and tensor table, then a stride through the data.
TEST(GgufRobustnessTest, EveryTruncationIsRejected) {
  const std::vector<uint8_t> whole = readAll(storiesPath());
  ASSERT_EQ(whole.size(), 1185376u);
  std::vector<size_t> lengths;
  for (size_t length = 0; length <= 14176 + 64; ++length) lengths.push_back(length);
  for (size_t length = 14176 + 64; length < whole.size(); length += 4099) lengths.push_back(length);
  lengths.push_back(whole.size() - 1);
  for (size_t length : lengths) {
    // A buffer of exactly `length` bytes, so AddressSanitizer sees any read past it.
    const std::vector<uint8_t> prefix(whole.begin(), whole.begin() + static_cast<long>(length));
    Result<GgufFile> file = GgufFile::parse(prefix);
    ASSERT_FALSE(file.isOk()) << "length " << length;
    ASSERT_EQ(file.status().code(), StatusCode::kInvalidArgument) << length;
    ASSERT_NE(file.status().message().find("byte"), std::string::npos) << file.status().toString();
  }
  // The mapped-file path too, including the empty file that cannot be mapped.
  for (size_t length : {0, 3, 23, 5000, 14160}) {
    const std::string path = tempPath(std::to_string(length) + ".gguf");
    writeAll(path, std::span(whole).first(length));
    Result<GgufFile> file = GgufFile::open(path);
    ASSERT_FALSE(file.isOk()) << length;
    EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(file.status().message().find(path), std::string::npos);
    std::remove(path.c_str());
  }
}

TEST(GgufRobustnessTest, RandomByteCorruptionsOfTheHeaderNeverCrash) {
  const std::vector<uint8_t> whole = readAll(storiesPath());
  constexpr size_t kTableEnd = 14152;  // header + metadata + tensor table
  std::mt19937_64 random(20261121);
  int rejected = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<uint8_t> corrupt = whole;
    const size_t at = random() % kTableEnd;
    corrupt[at] = static_cast<uint8_t>(corrupt[at] ^ (1 + random() % 255));
    Result<GgufFile> file = GgufFile::parse(corrupt);
    if (!file.isOk()) {
      ++rejected;
      EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument) << file.status().toString();
      continue;
    }
    exerciseConsumers(*file);
  }
  // Most single-byte changes land in token text or scores and still parse.
  EXPECT_GT(rejected, 0);
  RecordProperty("rejected", rejected);
}

// Hand-assembled files for the failures a writer cannot produce.
class RawGguf {
 public:
  RawGguf& u32(uint32_t value) { return raw(value); }
  RawGguf& u64(uint64_t value) { return raw(value); }
  RawGguf& str(std::string_view text) {
    u64(text.size());
    bytes.insert(bytes.end(), text.begin(), text.end());
    return *this;
  }
  RawGguf& header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    return u32(0x46554747).u32(version).u64(tensors).u64(kvs);
  }
  std::string error() const {
    Result<GgufFile> file = GgufFile::parse(bytes);
    if (file.isOk()) return "parsed";
    EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument);
    return file.status().message();
  }
  std::vector<uint8_t> bytes;

 private:
  template <typename T>
  RawGguf& raw(T value) {
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    bytes.insert(bytes.end(), p, p + sizeof(T));
    return *this;
  }
};

void expectError(const RawGguf& file, const std::string& fragment) {
  const std::string error = file.error();
  EXPECT_NE(error.find(fragment), std::string::npos)
      << "error: " << error << "\nwanted: " << fragment;
}

TEST(GgufRobustnessTest, MalformedStructuresHaveClearErrors) {
  expectError(RawGguf().u32(0x46554746).u32(3).u64(0).u64(0), "no \"GGUF\" magic at byte offset 0");
  expectError(RawGguf().header(0, 0, 1),
              "unsupported GGUF version 1 (2 and 3 are) at byte offset 4");
  expectError(RawGguf().header(0, 0, 0x03000000), "(a big-endian file)");
  expectError(RawGguf().header(0, uint64_t{1} << 60),
              "1152921504606846976 metadata entries at byte offset 16 exceed the limit");
  expectError(RawGguf().header(0, 1000),
              "metadata entries at byte offset 24: 1000 items cannot fit");
  expectError(RawGguf().header((uint64_t{1} << 20) + 1, 0), "1048577 tensors at byte offset 8");
  expectError(RawGguf().header(1000, 0), "tensor table at byte offset 24");
  expectError(RawGguf().header(0, 1).u64(uint64_t{1} << 40).u64(0), "length 1099511627776 exceeds");
  expectError(RawGguf().header(0, 1).str("k").u32(13).u32(0),
              "unknown value type 13 at byte offset 33");
  expectError(RawGguf().header(0, 1).str("k").u32(7).u32(2),
              "metadata entry 0 'k': bool value 2 (must be 0 or 1) at byte offset 37");
  expectError(RawGguf().header(0, 1).str("k").u32(9).u32(9).u64(0),
              "unsupported array element type 9");
  expectError(RawGguf().header(0, 1).str("k").u32(9).u32(4).u64(uint64_t{1} << 61), "cannot fit");
  expectError(RawGguf().header(0, 1).str("k").u32(9).u32(8).u64(2).str("a").u64(99),
              "length 99 exceeds");
  expectError(RawGguf().header(0, 2).str("k").u32(4).u32(1).str("k").u32(4).u32(2),
              "duplicate metadata key 'k' at byte offset 41");
  expectError(RawGguf().header(0, 1).str("general.alignment").u32(4).u32(48), "not a power of two");
  expectError(RawGguf().header(0, 1).str("general.alignment").u32(5).u32(64),
              "'general.alignment' is int32, not uint32");
  expectError(RawGguf().header(0, 1).str("bad\x01key").u32(4), "'bad\\x01key'");

  const auto tensor = [](uint32_t n_dims, const std::vector<uint64_t>& dims, uint32_t type,
                         uint64_t offset) {
    RawGguf file;
    file.header(1, 0).str("t").u32(n_dims);
    for (uint64_t dim : dims) file.u64(dim);
    file.u32(type).u64(offset);
    file.bytes.resize(64 + 256, 0);  // data section at 64 (aligned to 32), 256 bytes
    return file;
  };
  EXPECT_EQ(tensor(1, {64}, 0, 0).error(), "parsed");
  expectError(tensor(5, {1, 1, 1, 1, 1}, 0, 0), "5 dimensions (at most 4) at byte offset 33");
  expectError(tensor(2, {uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0), "overflow int64");
  expectError(tensor(1, {uint64_t{1} << 63}, 0, 0), "overflow int64");
  expectError(tensor(1, {64}, 4, 0), "unknown tensor type 4 at byte offset");
  expectError(tensor(1, {33}, 8, 0), "row length 33 is not a multiple of the Q8_0 block size 32");
  expectError(tensor(1, {8}, 0, 16), "not a multiple of the alignment 32");
  expectError(tensor(1, {65}, 0, 0), "run past the end of the file");
  expectError(tensor(1, {8}, 0, uint64_t{1} << 63), "run past the end of the file");
  expectError(tensor(1, {uint64_t{1} << 61}, 0, 0), "overflow");
  RawGguf duplicate;
  duplicate.header(2, 0).str("t").u32(1).u64(8).u32(0).u64(0).str("t").u32(1).u64(8).u32(0).u64(32);
  duplicate.bytes.resize(128, 0);
  expectError(duplicate, "duplicate tensor name 't'");
  RawGguf short_data;
  short_data.header(1, 0).str("t").u32(1).u64(8).u32(0).u64(0);
  expectError(short_data, "the data section starts at byte offset 64, the file ends at byte 57");
}

TEST(GgufWriterTest, MetadataOfEveryTypeRoundTrips) {
  GgufWriter writer(64);
  writer.add("u8", uint8_t{200});
  writer.add("i8", int8_t{-100});
  writer.add("u16", uint16_t{60000});
  writer.add("i16", int16_t{-30000});
  writer.add("u32", uint32_t{4000000000u});
  writer.add("i32", int32_t{-2000000000});
  writer.add("f32", 1.5f);
  writer.add("bool", true);
  writer.add("string", "h\xc3\xa9llo");
  writer.add("empty", "");
  writer.add("u64", uint64_t{1} << 60);
  writer.add("i64", -(int64_t{1} << 60));
  writer.add("f64", 0.1);
  writer.addArray("a.u8", std::vector<uint8_t>{1, 2, 255});
  writer.addArray("a.i8", std::vector<int8_t>{-1, 2});
  writer.addArray("a.u16", std::vector<uint16_t>{65535});
  writer.addArray("a.i16", std::vector<int16_t>{-5, 5});
  writer.addArray("a.u32", std::vector<uint32_t>{7, 8, 9});
  writer.addArray("a.i32", std::vector<int32_t>{-7});
  writer.addArray("a.f32", std::vector<float>{0.25f, -8.0f});
  writer.addArray("a.bool", std::vector<bool>{true, false, true});
  writer.addArray("a.string", std::vector<std::string>{"a", "", "\xe2\x96\x81x"});
  writer.addArray("a.u64", std::vector<uint64_t>{~uint64_t{0}});
  writer.addArray("a.i64", std::vector<int64_t>{-1, 0});
  writer.addArray("a.f64", std::vector<double>{1e300});
  writer.addArray("a.empty", std::vector<float>{});
  Result<std::vector<uint8_t>> bytes = writer.serialize();
  ASSERT_TRUE(bytes.isOk()) << bytes.status().toString();
  Result<GgufFile> file = GgufFile::parse(*bytes);
  ASSERT_TRUE(file.isOk()) << file.status().toString();

  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(file->alignment(), 64u);
  EXPECT_EQ(file->metadata().size(), 27u);   // 26 + general.alignment
  EXPECT_EQ(file->metadata()[1].key, "u8");  // order kept
  EXPECT_EQ(*file->get<uint8_t>("u8"), 200);
  EXPECT_EQ(*file->get<int8_t>("i8"), -100);
  EXPECT_EQ(*file->get<uint16_t>("u16"), 60000);
  EXPECT_EQ(*file->get<int16_t>("i16"), -30000);
  EXPECT_EQ(*file->getU32("u32"), 4000000000u);
  EXPECT_EQ(*file->get<int32_t>("i32"), -2000000000);
  EXPECT_EQ(*file->getF32("f32"), 1.5f);
  EXPECT_TRUE(*file->getBool("bool"));
  EXPECT_EQ(*file->getString("string"), "h\xc3\xa9llo");
  EXPECT_EQ(*file->getString("empty"), "");
  EXPECT_EQ(*file->get<uint64_t>("u64"), uint64_t{1} << 60);
  EXPECT_EQ(*file->get<int64_t>("i64"), -(int64_t{1} << 60));
  EXPECT_EQ(*file->get<double>("f64"), 0.1);
  EXPECT_EQ(*file->getArray<uint8_t>("a.u8"), (std::vector<uint8_t>{1, 2, 255}));
  EXPECT_EQ(*file->getArray<int8_t>("a.i8"), (std::vector<int8_t>{-1, 2}));
  EXPECT_EQ(*file->getArray<uint16_t>("a.u16"), (std::vector<uint16_t>{65535}));
  EXPECT_EQ(*file->getArray<int16_t>("a.i16"), (std::vector<int16_t>{-5, 5}));
  EXPECT_EQ(*file->getArray<uint32_t>("a.u32"), (std::vector<uint32_t>{7, 8, 9}));
  EXPECT_EQ(*file->getI32Array("a.i32"), (std::vector<int32_t>{-7}));
  EXPECT_EQ(*file->getF32Array("a.f32"), (std::vector<float>{0.25f, -8.0f}));
  EXPECT_EQ(*file->getArray<bool>("a.bool"), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(*file->getStringArray("a.string"),
            (std::vector<std::string_view>{"a", "", "\xe2\x96\x81x"}));
  EXPECT_EQ(*file->getArray<uint64_t>("a.u64"), (std::vector<uint64_t>{~uint64_t{0}}));
  EXPECT_EQ(*file->getArray<int64_t>("a.i64"), (std::vector<int64_t>{-1, 0}));
  EXPECT_EQ(*file->getArray<double>("a.f64"), (std::vector<double>{1e300}));
  EXPECT_TRUE(file->getF32Array("a.empty")->empty());
  EXPECT_TRUE(file->tensors().empty());
}

TEST(GgufWriterTest, TensorsOfEveryTypeRoundTrip) {
  std::mt19937 random(7);
  std::uniform_real_distribution<float> uniform(-3.0f, 3.0f);
  std::vector<float> values(size_t{4} * 64);
  for (float& value : values) value = uniform(random);
  values[5] = 0.0f;
  std::fill(values.begin() + 64, values.begin() + 96, 0.0f);  // an all-zero Q8_0 block
  const std::vector<int8_t> raw = {1, -2, 3, -4, 5, -6};

  GgufWriter writer(64);
  writer.add("general.architecture", "test");
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0}) {
    writer.addTensor("t." + ggmlTypeName(type), {64, 4}, type, values);
  }
  writer.addRawTensor("raw.i8", {3, 1, 2}, GgmlType::kI8,
                      {reinterpret_cast<const uint8_t*>(raw.data()), raw.size()});
  const std::string path = tempPath("tensors.gguf");
  ASSERT_TRUE(writer.writeFile(path).isOk());
  Result<GgufFile> file = GgufFile::open(path);
  ASSERT_TRUE(file.isOk()) << file.status().toString();
  ASSERT_EQ(file->tensors().size(), 5u);
  EXPECT_EQ(file->alignment(), 64u);
  EXPECT_EQ(file->dataOffset() % 64, 0u);
  for (const GgufTensor& tensor : file->tensors()) EXPECT_EQ(tensor.offset % 64, 0u);

  EXPECT_EQ(*tensorToFloat(*file->findTensor("t.F32")), values);
  const std::vector<float> f16 = *tensorToFloat(*file->findTensor("t.F16"));
  const std::vector<float> bf16 = *tensorToFloat(*file->findTensor("t.BF16"));
  const std::vector<float> q8 = *tensorToFloat(*file->findTensor("t.Q8_0"));
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(f16[i], halfToFloat(floatToHalf(values[i]))) << i;
    EXPECT_EQ(bf16[i], bf16ToFloat(floatToBf16(values[i]))) << i;
    // Q8_0: per block, half a quantization step (max|x| / 254) plus the F16 rounding of the scale.
    float max_abs = 0.0f;
    for (size_t j = i / 32 * 32; j < i / 32 * 32 + 32; ++j)
      max_abs = std::max(max_abs, std::fabs(values[j]));
    EXPECT_NEAR(q8[i], values[i], max_abs * (1.0f / 254 + 1.0f / 1024)) << i;
  }
  EXPECT_EQ(q8[5], 0.0f);
  for (size_t i = 64; i < 96; ++i) EXPECT_EQ(q8[i], 0.0f);
  const GgufTensor* q8_tensor = file->findTensor("t.Q8_0");
  EXPECT_EQ(q8_tensor->data.size(), 4u * 2 * 34);
  std::vector<float> row(64);
  ASSERT_TRUE(tensorRowToFloat(*q8_tensor, 2, row).isOk());
  EXPECT_TRUE(std::equal(row.begin(), row.end(), q8.begin() + 128));

  const GgufTensor* raw_tensor = file->findTensor("raw.i8");
  EXPECT_EQ(raw_tensor->n_dims, 3u);
  EXPECT_EQ(raw_tensor->element_count, 6u);
  EXPECT_EQ(raw_tensor->rowCount(), 2u);
  EXPECT_TRUE(
      std::equal(raw.begin(), raw.end(), reinterpret_cast<const int8_t*>(raw_tensor->data.data())));
  Result<std::vector<float>> unsupported = tensorToFloat(*raw_tensor);
  EXPECT_EQ(unsupported.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unsupported.status().message().find("I8"), std::string::npos);
  std::remove(path.c_str());
}

TEST(GgufWriterTest, MisuseIsReportedBySerialize) {
  const auto error = [](const GgufWriter& writer) {
    Result<std::vector<uint8_t>> bytes = writer.serialize();
    return bytes.isOk() ? std::string("ok") : bytes.status().message();
  };
  const std::vector<float> values(64, 1.0f);
  {
    GgufWriter writer;
    writer.add("k", 1);
    writer.add("k", 2);
    EXPECT_NE(error(writer).find("duplicate metadata key 'k'"), std::string::npos);
  }
  {
    GgufWriter writer;
    writer.addTensor("t", {32, 3}, GgmlType::kF32, values);
    EXPECT_NE(error(writer).find("tensor 't': the shape holds 96 elements, 64 given"),
              std::string::npos);
  }
  {
    GgufWriter writer;
    writer.addTensor("t", {16, 4}, GgmlType::kQ8_0, values);
    EXPECT_NE(error(writer).find("row length 16 is not a multiple of the Q8_0 block"),
              std::string::npos);
  }
  {
    GgufWriter writer;
    writer.addTensor("t", {64}, GgmlType::kF32, values);
    writer.addTensor("t", {64}, GgmlType::kF32, values);
    EXPECT_NE(error(writer).find("duplicate tensor name"), std::string::npos);
  }
  {
    GgufWriter writer;
    writer.addTensor("t", {64}, GgmlType::kQ4_0, values);
    EXPECT_NE(error(writer).find("not supported"), std::string::npos);
  }
  EXPECT_NE(error(GgufWriter(48)).find("not a power of two"), std::string::npos);
}

}  // namespace
}  // namespace kvferry::model
