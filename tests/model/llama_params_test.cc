#include "model/llama_params.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/gguf_writer.h"
#include "model/tokenizer.h"
#include "test_data.h"

namespace kvferry::model {
namespace {

using ::kvferry::model::testing::smallLlama;
using ::kvferry::model::testing::storiesPath;
using ::kvferry::model::testing::tempPath;

TEST(LlamaParamsTest, StoriesHyperParametersMatchProvenance) {
  Result<GgufFile> file = GgufFile::open(storiesPath());
  ASSERT_TRUE(file.isOk()) << file.status().toString();
  Result<LlamaParams> params = readLlamaParams(*file);
  ASSERT_TRUE(params.isOk()) << params.status().toString();
  EXPECT_EQ(params->vocab_size, 512u);
  EXPECT_EQ(params->embedding_length, 64u);
  EXPECT_EQ(params->feed_forward_length, 172u);
  EXPECT_EQ(params->block_count, 5u);
  EXPECT_EQ(params->head_count, 8u);
  EXPECT_EQ(params->head_count_kv, 4u);
  EXPECT_EQ(params->rope_dimension_count, 8u);
  EXPECT_EQ(params->rope_freq_base, 10000.0f);  // absent from the file: the default
  EXPECT_EQ(params->rms_epsilon, 1e-5f);
  EXPECT_EQ(params->context_length, 2048u);
  EXPECT_EQ(params->headDim(), 8u);
  EXPECT_EQ(params->kvDim(), 32u);
  EXPECT_EQ(params->queryGroupSize(), 2u);

  Result<LlamaTensors> tensors = findLlamaTensors(*file, *params);
  ASSERT_TRUE(tensors.isOk()) << tensors.status().toString();
  EXPECT_FALSE(tensors->tied_output);
  EXPECT_EQ(tensors->output, file->findTensor("output.weight"));
  ASSERT_EQ(tensors->layers.size(), 5u);
  EXPECT_EQ(tensors->layers[4].ffn_down->name, "blk.4.ffn_down.weight");
  EXPECT_EQ(tensors->layers[0].attn_k->rowCount(), 32u);

  // Pinned, like the block hashes: agents built from different revisions must agree.
  EXPECT_EQ(modelFingerprint(*file, *params), 0x3bbc3ff94de815eeULL);
}

RandomLlamaSpec spec(LlamaParams params, GgmlType type = GgmlType::kF32, bool tied = false) {
  return {params, type, tied};
}

// Random models of several shapes load back with the same hyper-parameters and every weight.
TEST(LlamaParamsTest, RandomModelsOfManyShapesRoundTrip) {
  std::vector<RandomLlamaSpec> specs;
  for (uint32_t kv_heads : {8u, 4u, 2u, 1u}) {  // GQA ratios 1, 2, 4, 8
    LlamaParams p = smallLlama();
    p.head_count_kv = kv_heads;
    specs.push_back(spec(p));
  }
  LlamaParams wide = smallLlama();
  wide.embedding_length = 128;
  wide.head_count = 4;
  wide.head_count_kv = 4;
  wide.rope_dimension_count = 16;  // partial rotary: 16 of 32
  wide.feed_forward_length = 96;
  wide.block_count = 3;
  wide.vocab_size = 1000;
  wide.context_length = 4096;
  wide.rope_freq_base = 500000.0f;
  wide.rms_epsilon = 1e-6f;
  specs.push_back(spec(wide, GgmlType::kQ8_0));
  specs.push_back(spec(smallLlama(), GgmlType::kF16, /*tied=*/true));
  specs.push_back(spec(smallLlama(), GgmlType::kBF16));

  for (const RandomLlamaSpec& s : specs) {
    SCOPED_TRACE("kv heads " + std::to_string(s.params.head_count_kv) + ", " +
                 ggmlTypeName(s.matrix_type) + (s.tied_output ? ", tied" : ""));
    Result<std::vector<uint8_t>> bytes = randomLlamaModel(s, 42);
    ASSERT_TRUE(bytes.isOk()) << bytes.status().toString();
    Result<GgufFile> file = GgufFile::parse(*bytes);
    ASSERT_TRUE(file.isOk()) << file.status().toString();
    Result<LlamaParams> params = readLlamaParams(*file);
    ASSERT_TRUE(params.isOk()) << params.status().toString();
    EXPECT_EQ(*params, s.params);
    Result<LlamaTensors> tensors = findLlamaTensors(*file, *params);
    ASSERT_TRUE(tensors.isOk()) << tensors.status().toString();
    EXPECT_EQ(tensors->tied_output, s.tied_output);
    EXPECT_EQ(tensors->output == tensors->token_embd, s.tied_output);
    EXPECT_EQ(tensors->layers[0].attn_q->type, s.matrix_type);
    EXPECT_EQ(tensors->layers[0].attn_norm->type, GgmlType::kF32);
    EXPECT_EQ(file->tensors().size(), 2u + (s.tied_output ? 0 : 1) + 9 * s.params.block_count);
    for (const GgufTensor& tensor : file->tensors()) {
      Result<std::vector<float>> values = tensorToFloat(tensor);
      ASSERT_TRUE(values.isOk()) << values.status().toString();
      const float bound = tensor.n_dims == 1 ? 1.11f : 1.01f / std::sqrt(float(tensor.rowLength()));
      for (float value : *values) ASSERT_LE(std::fabs(value), bound) << tensor.name;
    }
    Result<std::unique_ptr<Tokenizer>> tokenizer = makeTokenizer(*file);
    ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
    EXPECT_EQ((*tokenizer)->vocabulary().tokens.size(), s.params.vocab_size);
  }
}

TEST(LlamaParamsTest, RandomModelsAreDeterministicPerSeed) {
  const RandomLlamaSpec s = spec(smallLlama());
  const std::string path = tempPath("model.gguf");
  ASSERT_TRUE(writeRandomLlamaModel(path, s, 7).isOk());
  Result<GgufFile> from_disk = GgufFile::open(path);
  ASSERT_TRUE(from_disk.isOk());
  const std::vector<uint8_t> same = *randomLlamaModel(s, 7);
  const std::vector<uint8_t> other = *randomLlamaModel(s, 8);
  EXPECT_TRUE(std::ranges::equal(from_disk->bytes(), same));
  EXPECT_NE(same, other);
  EXPECT_EQ(same.size(), other.size());

  // The fingerprint follows the weights, not the file name or the seed's metadata.
  const LlamaParams p = s.params;
  const uint64_t a = modelFingerprint(*from_disk, p);
  EXPECT_EQ(a, modelFingerprint(*GgufFile::parse(same), p));
  EXPECT_NE(a, modelFingerprint(*GgufFile::parse(other), p));
  LlamaParams longer = p;
  longer.context_length *= 2;
  EXPECT_NE(a, modelFingerprint(*from_disk, longer));
  std::remove(path.c_str());
}

// Two agents loading one file agree; a model with another tensor table (a tensor missing, another
// type) does not, even with the same hyper-parameters.
TEST(LlamaParamsTest, FingerprintFollowsTheTensorTable) {
  Result<GgufFile> stories = GgufFile::open(storiesPath());
  Result<GgufFile> stories_again = GgufFile::open(storiesPath());
  ASSERT_TRUE(stories.isOk() && stories_again.isOk());
  Result<LlamaParams> stories_params = readLlamaParams(*stories);
  ASSERT_TRUE(stories_params.isOk());
  const uint64_t a = modelFingerprint(*stories, *stories_params);
  EXPECT_EQ(a, modelFingerprint(*stories_again, *readLlamaParams(*stories_again)));

  const LlamaParams p = smallLlama();
  const std::vector<uint8_t> untied = *randomLlamaModel(spec(p), 7);
  const std::vector<uint8_t> tied = *randomLlamaModel(spec(p, GgmlType::kF32, true), 7);
  const std::vector<uint8_t> f16 = *randomLlamaModel(spec(p, GgmlType::kF16), 7);
  std::vector<uint64_t> fingerprints = {a};
  for (const std::vector<uint8_t>* bytes : {&untied, &tied, &f16}) {
    Result<GgufFile> file = GgufFile::parse(*bytes);
    ASSERT_TRUE(file.isOk()) << file.status().toString();
    Result<LlamaParams> params = readLlamaParams(*file);
    ASSERT_TRUE(params.isOk()) << params.status().toString();
    EXPECT_EQ(*params, p);
    fingerprints.push_back(modelFingerprint(*file, *params));
  }
  std::ranges::sort(fingerprints);
  EXPECT_EQ(std::ranges::adjacent_find(fingerprints), fingerprints.end());
}

TEST(LlamaParamsTest, InvalidShapesAreRejectedWithTheReason) {
  const auto error = [](const std::function<void(LlamaParams&)>& change) {
    LlamaParams p = smallLlama();
    change(p);
    Status status = validateLlamaParams(p);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
    // The writer validates the same way before writing anything.
    EXPECT_EQ(randomLlamaModel(spec(p), 1).status(), status);
    return status.message();
  };
  EXPECT_EQ(error([](LlamaParams& p) { p.head_count = 7; }),
            "llama.attention.head_count 7 does not divide llama.embedding_length 64");
  EXPECT_EQ(error([](LlamaParams& p) { p.head_count_kv = 3; }),
            "llama.attention.head_count_kv 3 does not divide llama.attention.head_count 8");
  EXPECT_EQ(error([](LlamaParams& p) { p.block_count = 0; }), "llama.block_count must be positive");
  EXPECT_EQ(error([](LlamaParams& p) { p.rope_dimension_count = 10; }),
            "llama.rope.dimension_count 10 must be even and in 2..8");
  EXPECT_EQ(error([](LlamaParams& p) {
              p.embedding_length = 72;
              p.head_count = 8;
            }),
            "head dimension 9 is odd (RoPE rotates pairs)");
  EXPECT_EQ(error([](LlamaParams& p) { p.rms_epsilon = 0.0f; }),
            "llama.attention.layer_norm_rms_epsilon must be positive and finite");
  EXPECT_EQ(error([](LlamaParams& p) { p.rope_freq_base = INFINITY; }),
            "llama.rope.freq_base must be positive and finite");
  LlamaParams tiny = smallLlama();
  tiny.vocab_size = 259;
  EXPECT_EQ(randomLlamaModel(spec(tiny), 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(randomLlamaModel(spec(smallLlama(), GgmlType::kQ4_0), 1).status().code(),
            StatusCode::kInvalidArgument);
}

// Metadata-only files exercise readLlamaParams' key handling.
Result<LlamaParams> paramsOf(const std::function<void(GgufWriter&)>& fill) {
  GgufWriter writer;
  fill(writer);
  Result<std::vector<uint8_t>> bytes = writer.serialize();
  if (!bytes.isOk()) return bytes.status();
  Result<GgufFile> file = GgufFile::parse(*bytes);
  if (!file.isOk()) return file.status();
  return readLlamaParams(*file);  // views into `bytes` are not used after this returns
}

void addRequired(GgufWriter& w) {
  w.add("general.architecture", "llama");
  w.add("llama.context_length", 128u);
  w.add("llama.embedding_length", 64u);
  w.add("llama.feed_forward_length", 96u);
  w.add("llama.block_count", 2u);
  w.add("llama.attention.head_count", 4u);
  w.add("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  w.addArray("tokenizer.ggml.tokens", std::vector<std::string>(10, "x"));
}

TEST(LlamaParamsTest, DefaultsAndUnsupportedFeatures) {
  Result<LlamaParams> defaults = paramsOf(addRequired);
  ASSERT_TRUE(defaults.isOk()) << defaults.status().toString();
  EXPECT_EQ(defaults->head_count_kv, 4u);          // = head_count
  EXPECT_EQ(defaults->rope_dimension_count, 16u);  // = head dimension
  EXPECT_EQ(defaults->rope_freq_base, 10000.0f);
  EXPECT_EQ(defaults->vocab_size, 10u);  // from the token list

  const auto error = [](const std::function<void(GgufWriter&)>& extra) {
    Result<LlamaParams> params = paramsOf([&](GgufWriter& w) {
      addRequired(w);
      extra(w);
    });
    return params.isOk() ? std::string("ok") : params.status().toString();
  };
  EXPECT_EQ(error([](GgufWriter& w) { w.add("llama.vocab_size", 32u); }), "ok");
  EXPECT_EQ(error([](GgufWriter& w) { w.add("llama.rope.scaling.type", "yarn"); }),
            "INVALID_ARGUMENT: llama.rope.scaling.type 'yarn' is not supported yet");
  EXPECT_EQ(error([](GgufWriter& w) { w.add("llama.rope.scaling.type", "none"); }), "ok");
  EXPECT_EQ(error([](GgufWriter& w) { w.add("llama.expert_count", 8u); }),
            "INVALID_ARGUMENT: mixture-of-experts llama models are not supported yet");
  // Heads narrower or wider than embedding_length / head_count (Mistral Nemo, Qwen3).
  EXPECT_EQ(error([](GgufWriter& w) { w.add("llama.attention.key_length", 32u); }), "ok");
  EXPECT_EQ(error([](GgufWriter& w) {
              w.add("llama.attention.key_length", 32u);
              w.add("llama.attention.value_length", 16u);
            }),
            "INVALID_ARGUMENT: llama.attention.value_length 16 differs from "
            "llama.attention.key_length 32 (not supported)");
  EXPECT_EQ(error([](GgufWriter& w) { w.add("llama.attention.sliding_window", 4096u); }),
            "INVALID_ARGUMENT: llama.attention.sliding_window 4096: sliding-window attention is "
            "not implemented");
  EXPECT_EQ(error([](GgufWriter& w) { w.add("llama.attention.head_count_kv", int32_t{2}); }),
            "INVALID_ARGUMENT: metadata key 'llama.attention.head_count_kv' is int32, not uint32");

  Result<LlamaParams> missing =
      paramsOf([](GgufWriter& w) { w.add("general.architecture", "llama"); });
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  Result<LlamaParams> other =
      paramsOf([](GgufWriter& w) { w.add("general.architecture", "gemma2"); });
  EXPECT_EQ(other.status().message(),
            "general.architecture 'gemma2' is not supported (llama, qwen2 and qwen3 are)");
  // qwen2 and qwen3 read their own prefix.
  Result<LlamaParams> qwen =
      paramsOf([](GgufWriter& w) { w.add("general.architecture", "qwen2"); });
  EXPECT_EQ(qwen.status().message(), "metadata key 'qwen2.context_length' not found");

  const auto key_length = [](uint32_t length) {
    return paramsOf([&](GgufWriter& w) {
      addRequired(w);
      w.add("llama.attention.key_length", length);
    });
  };
  EXPECT_EQ(key_length(16)->head_dim, 0u);  // = embedding_length / head_count: stored as 0
  EXPECT_EQ(key_length(32)->head_dim, 32u);
  EXPECT_EQ(key_length(32)->queryDim(), 128u);
  EXPECT_EQ(key_length(32)->rope_dimension_count, 32u);
  EXPECT_FALSE(key_length(32)->rope_neox);  // llama.cpp permuted a llama's Q and K
}

// A model file with every llama tensor (zeros), where `edit` may drop (clear the name) or
// reshape one, and `extra` adds one. Owns the bytes the returned tensors point into.
struct TensorTable {
  std::vector<uint8_t> bytes;
  std::optional<GgufFile> file;
  Result<LlamaTensors> tensors = internalError("not loaded");
};

std::unique_ptr<TensorTable> tensorsOf(
    const LlamaParams& p, const std::function<void(std::string&, std::vector<uint64_t>&)>& edit,
    const std::string& extra = "") {
  GgufWriter writer;
  const auto add = [&](std::string name, std::vector<uint64_t> dims) {
    edit(name, dims);
    if (name.empty()) return;
    uint64_t count = 1;
    for (uint64_t dim : dims) count *= dim;
    writer.addTensor(name, dims, GgmlType::kF32, std::vector<float>(count));
  };
  const uint64_t d = p.embedding_length;
  add("token_embd.weight", {d, p.vocab_size});
  add("output_norm.weight", {d});
  add("output.weight", {d, p.vocab_size});
  for (uint32_t i = 0; i < p.block_count; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    add(b + "attn_norm.weight", {d});
    add(b + "attn_q.weight", {d, d});
    add(b + "attn_k.weight", {d, p.kvDim()});
    add(b + "attn_v.weight", {d, p.kvDim()});
    add(b + "attn_output.weight", {d, d});
    add(b + "ffn_norm.weight", {d});
    add(b + "ffn_gate.weight", {d, p.feed_forward_length});
    add(b + "ffn_up.weight", {d, p.feed_forward_length});
    add(b + "ffn_down.weight", {p.feed_forward_length, d});
  }
  if (!extra.empty()) writer.addTensor(extra, {d}, GgmlType::kF32, std::vector<float>(d));
  auto table = std::make_unique<TensorTable>();
  table->bytes = std::move(writer.serialize()).value();
  table->file.emplace(std::move(GgufFile::parse(table->bytes)).value());
  table->tensors = findLlamaTensors(*table->file, p);
  return table;
}

TEST(LlamaParamsTest, TensorTableIsCheckedAgainstTheShape) {
  const LlamaParams p = smallLlama();
  const auto keep = [](std::string&, std::vector<uint64_t>&) {};
  ASSERT_TRUE(tensorsOf(p, keep)->tensors.isOk());
  std::unique_ptr<TensorTable> tied = tensorsOf(p, [](std::string& name, std::vector<uint64_t>&) {
    if (name == "output.weight") name.clear();
  });
  ASSERT_TRUE(tied->tensors.isOk());
  EXPECT_TRUE(tied->tensors->tied_output);
  EXPECT_EQ(tied->tensors->output, tied->tensors->token_embd);

  EXPECT_EQ(tensorsOf(p,
                      [](std::string& name, std::vector<uint64_t>&) {
                        if (name == "blk.1.ffn_up.weight") name.clear();
                      })
                ->tensors.status()
                .message(),
            "missing tensor 'blk.1.ffn_up.weight'");
  EXPECT_EQ(tensorsOf(p,
                      [](std::string& name, std::vector<uint64_t>& dims) {
                        if (name == "blk.0.attn_k.weight") dims = {64, 64};
                      })
                ->tensors.status()
                .message(),
            "tensor 'blk.0.attn_k.weight' has shape [64, 64], expected [64, 16]");
  // A corrupt layer count is refused before anything is sized by it.
  std::unique_ptr<TensorTable> table = tensorsOf(p, keep);
  LlamaParams huge = p;
  huge.block_count = 4000000000u;
  EXPECT_EQ(findLlamaTensors(*table->file, huge).status().message(),
            "llama.block_count 4000000000 needs 36000000000 layer tensors, the file has 21 "
            "tensors in all");
  EXPECT_EQ(tensorsOf(p, keep, "blk.0.attn_q.bias")->tensors.status().message(),
            "unexpected tensor 'blk.0.attn_q.bias' (not part of the llama model this runtime "
            "computes)");
}

}  // namespace
}  // namespace kvferry::model
