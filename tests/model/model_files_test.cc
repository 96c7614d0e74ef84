// model::ModelFiles: a GGUF file and a Hugging Face directory of the same random model read into
// the same parameters, tensors and vocabulary; config.json, safetensors and index files are
// checked with errors naming the file, the tensor and what is wrong; hostile safetensors files are
// refused without a crash (fuzz-style, as the GGUF robustness tests).
#include "model/model_files.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "model/gguf_writer.h"
#include "model/hf_config.h"
#include "model/hf_writer.h"
#include "model/random_shapes.h"
#include "model/safetensors.h"
#include "test_data.h"

namespace kvferry::model {
namespace {

namespace fs = std::filesystem;
using ::kvferry::model::testing::tempPath;

constexpr std::string_view kChatMl =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

const std::vector<std::string_view> kTestShapes = {"test-llama", "test-llama3", "test-mistral",
                                                   "test-qwen2", "test-qwen3"};

struct WrittenModel {
  std::string gguf;
  std::string dir;
};

// The shape's model as a GGUF file and as a Hugging Face directory, both in the test's temp dir.
WrittenModel writeBoth(std::string_view shape_name, uint64_t seed, HfDirectoryOptions options = {},
                       const std::string& suffix = "") {
  const RandomModelShape* shape = findRandomModelShape(shape_name);
  EXPECT_NE(shape, nullptr) << shape_name;
  RandomLlamaSpec spec = shape->spec;
  spec.chat_template = kChatMl;
  WrittenModel model{tempPath(std::string(shape_name) + suffix + ".gguf"),
                     tempPath(std::string(shape_name) + suffix + "-hf")};
  fs::remove_all(model.dir);
  EXPECT_TRUE(writeRandomLlamaModel(model.gguf, spec, seed).isOk());
  options.llama3_scaling = shape->llama3_scaling;
  const Status written = writeRandomHfModel(model.dir, spec, seed, options);
  EXPECT_TRUE(written.isOk()) << written.toString();
  return model;
}

ModelFiles openOk(const std::string& path) {
  Result<ModelFiles> files = ModelFiles::open(path);
  EXPECT_TRUE(files.isOk()) << files.status().toString();
  return std::move(files).value();
}

// The tensor named `name` (engine name) of a tensor table, as floats.
std::vector<float> valuesOf(const GgufTensor* tensor) {
  Result<std::vector<float>> values = tensorToFloat(*tensor);
  EXPECT_TRUE(values.isOk()) << values.status().toString();
  return values.isOk() ? *values : std::vector<float>();
}

// Every weight of the two models, pairwise: same shape and type, and the same values — in
// Hugging Face's row order for a llama's Q and K (llama.cpp's converter permuted them for GGUF).
void expectSameWeights(const ModelFiles& gguf, const ModelFiles& hf) {
  const LlamaParams& p = gguf.params();
  const LlamaTensors& a = gguf.tensors();
  const LlamaTensors& b = hf.tensors();
  const auto same = [&](const GgufTensor* x, const GgufTensor* y, bool permuted) {
    ASSERT_EQ(x == nullptr, y == nullptr);
    if (x == nullptr) return;
    SCOPED_TRACE(std::string(x->name));
    EXPECT_EQ(x->name, y->name);
    EXPECT_EQ(x->dims, y->dims);
    EXPECT_EQ(x->type, y->type);
    const std::vector<float> u = valuesOf(x);
    const std::vector<float> v = valuesOf(y);
    ASSERT_EQ(u.size(), v.size());
    if (!permuted) {
      EXPECT_EQ(u, v);
      return;
    }
    const uint64_t cols = x->rowLength();
    const uint64_t hd = p.headDim();
    for (uint64_t hf_row = 0; hf_row < x->rowCount(); ++hf_row) {
      const uint64_t gguf_row =
          hf_row / hd * hd + 2 * (hf_row % hd % (hd / 2)) + hf_row % hd / (hd / 2);
      ASSERT_TRUE(std::equal(v.begin() + hf_row * cols, v.begin() + (hf_row + 1) * cols,
                             u.begin() + gguf_row * cols))
          << "row " << hf_row;
    }
  };
  const bool llama = p.architecture == Architecture::kLlama;
  same(a.token_embd, b.token_embd, false);
  same(a.output_norm, b.output_norm, false);
  same(a.output, b.output, false);
  EXPECT_EQ(a.tied_output, b.tied_output);
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const LlamaLayerTensors& x = a.layers[i];
    const LlamaLayerTensors& y = b.layers[i];
    same(x.attn_norm, y.attn_norm, false);
    same(x.attn_q, y.attn_q, llama);
    same(x.attn_k, y.attn_k, llama);
    same(x.attn_v, y.attn_v, false);
    same(x.attn_output, y.attn_output, false);
    same(x.ffn_norm, y.ffn_norm, false);
    same(x.ffn_gate, y.ffn_gate, false);
    same(x.ffn_up, y.ffn_up, false);
    same(x.ffn_down, y.ffn_down, false);
    same(x.attn_q_bias, y.attn_q_bias, false);
    same(x.attn_k_bias, y.attn_k_bias, false);
    same(x.attn_v_bias, y.attn_v_bias, false);
    same(x.attn_q_norm, y.attn_q_norm, false);
    same(x.attn_k_norm, y.attn_k_norm, false);
  }
}

TEST(ModelFilesTest, GgufAndHuggingFaceDirectoryReadIntoTheSameModel) {
  for (std::string_view shape : kTestShapes) {
    SCOPED_TRACE(std::string(shape));
    const WrittenModel written = writeBoth(shape, 11);
    const ModelFiles gguf = openOk(written.gguf);
    const ModelFiles hf = openOk(written.dir);
    EXPECT_EQ(gguf.format(), ModelFormat::kGguf);
    EXPECT_EQ(hf.format(), ModelFormat::kSafetensors);
    EXPECT_NE(gguf.gguf(), nullptr);
    EXPECT_EQ(hf.gguf(), nullptr);

    // The same parameters, but for the RoPE pairing a GGUF llama implies.
    const LlamaParams& p = findRandomModelShape(shape)->spec.params;
    EXPECT_EQ(gguf.params(), p);
    LlamaParams neox = p;
    neox.rope_neox = true;
    EXPECT_EQ(hf.params(), neox);
    EXPECT_EQ(hf.params().hasQkvBias(), shape == "test-qwen2");
    EXPECT_EQ(hf.params().hasQkNorm(), shape == "test-qwen3");
    expectSameWeights(gguf, hf);

    // One tokenizer and template whichever the format; two fingerprints.
    EXPECT_EQ(vocabularyHash(gguf.vocabulary()), vocabularyHash(hf.vocabulary()));
    EXPECT_EQ(gguf.chatTemplate(), kChatMl);
    EXPECT_EQ(hf.chatTemplate(), kChatMl);
    EXPECT_NE(gguf.fingerprint(), hf.fingerprint());
    EXPECT_EQ(gguf.fingerprint(), modelFingerprint(*gguf.gguf(), gguf.params()));
    EXPECT_EQ(hf.fingerprint(), openOk(written.dir).fingerprint());

    // Moving keeps every view valid.
    ModelFiles moved = std::move(const_cast<ModelFiles&>(hf));
    EXPECT_EQ(moved.tensors().layers[0].attn_norm->name, "blk.0.attn_norm.weight");
  }
}

TEST(ModelFilesTest, ShardsWithAnIndexAreTheSameModel) {
  const WrittenModel one = writeBoth("test-qwen3", 5);
  HfDirectoryOptions options;
  options.shard_bytes = 40000;
  const WrittenModel sharded = writeBoth("test-qwen3", 5, options, "-sharded");
  ASSERT_TRUE(fs::exists(sharded.dir + "/model.safetensors.index.json"));
  size_t shard_files = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(sharded.dir)) {
    shard_files += entry.path().extension() == ".safetensors" ? 1 : 0;
  }
  EXPECT_GT(shard_files, 2u);
  const ModelFiles a = openOk(one.dir);
  const ModelFiles b = openOk(sharded.dir);
  EXPECT_EQ(a.fingerprint(), b.fingerprint());  // the layout in files is not the model
  EXPECT_EQ(valuesOf(a.tensors().layers[1].ffn_down), valuesOf(b.tensors().layers[1].ffn_down));
}

TEST(ModelFilesTest, DifferentWeightsDifferentFingerprints) {
  const WrittenModel a = writeBoth("test-qwen2", 1);
  const WrittenModel b = writeBoth("test-qwen2", 2, {}, "-other");
  EXPECT_NE(openOk(a.dir).fingerprint(), openOk(b.dir).fingerprint());
  EXPECT_NE(openOk(a.gguf).fingerprint(), openOk(b.gguf).fingerprint());
}

void writeText(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string readText(const std::string& path) { return testing::readFileText(path); }

// The error of opening `dir` after `edit` changed it.
std::string errorAfter(const std::string& dir, const std::function<void()>& edit) {
  edit();
  Result<ModelFiles> files = ModelFiles::open(dir);
  return files.isOk() ? std::string("ok") : files.status().toString();
}

std::string replaced(std::string text, std::string_view from, std::string_view to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

TEST(ModelFilesTest, ConfigAndTensorsThatDisagreeNameTheFileAndTheTensor) {
  const WrittenModel written = writeBoth("test-llama", 3);
  const std::string dir = written.dir;
  const std::string config = readText(dir + "/config.json");
  // intermediate_size 96 in config.json, 160 in the weights: PyTorch order, file and tensor named.
  EXPECT_EQ(errorAfter(dir,
                       [&] {
                         writeText(dir + "/config.json",
                                   replaced(config, "\"intermediate_size\":160",
                                            "\"intermediate_size\":96"));
                       }),
            "INVALID_ARGUMENT: " + dir +
                ": tensor 'model.layers.0.mlp.gate_proj.weight' (model.safetensors) has shape "
                "[160, 64], expected [96, 64]");
  EXPECT_EQ(errorAfter(dir,
                       [&] {
                         writeText(dir + "/config.json",
                                   replaced(config, "\"model_type\":\"llama\"",
                                            "\"model_type\":\"gemma2\""));
                       }),
            "INVALID_ARGUMENT: " + dir +
                ": config.json: model_type 'gemma2' is not supported (llama, mistral, qwen2 and "
                "qwen3 are)");
  // Tied in config.json but the file has lm_head.weight: ignored, as transformers ties it.
  EXPECT_EQ(errorAfter(dir,
                       [&] {
                         writeText(dir + "/config.json",
                                   replaced(config, "\"tie_word_embeddings\":false",
                                            "\"tie_word_embeddings\":true"));
                       }),
            "ok");
  writeText(dir + "/config.json", config);
  EXPECT_EQ(errorAfter(dir, [] {}), "ok");

  // A tensor that is not part of the model, and one that is missing.
  const std::vector<uint8_t> original = [&] {
    std::ifstream in(dir + "/model.safetensors", std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
  }();
  const auto rewrite =
      [&](const std::function<void(SafetensorsWriter&, const SafetensorsFile&)>& change) {
        Result<SafetensorsFile> file = SafetensorsFile::parse(original, "model.safetensors");
        EXPECT_TRUE(file.isOk());
        SafetensorsWriter writer;
        change(writer, *file);
        const std::string path = tempPath("rewritten.safetensors");
        EXPECT_TRUE(writer.writeFile(path).isOk());
        fs::copy_file(path, dir + "/model.safetensors", fs::copy_options::overwrite_existing);
      };
  const auto copy = [](SafetensorsWriter& writer, const SafetensorsTensor& t) {
    std::vector<float> values(t.element_count);
    EXPECT_TRUE(toFloat(*ggmlTypeOfDtype(t.dtype), t.data, values).isOk());
    writer.addTensor(
        t.name, t.shape, GgmlType::kF32, [values](uint64_t first, std::span<float> out) {
          std::copy_n(values.begin() + static_cast<ptrdiff_t>(first), out.size(), out.begin());
        });
  };
  EXPECT_EQ(errorAfter(dir,
                       [&] {
                         rewrite([&](SafetensorsWriter& w, const SafetensorsFile& f) {
                           for (const SafetensorsTensor& t : f.tensors()) copy(w, t);
                           w.addTensor("model.layers.0.self_attn.o_proj.bias", {64}, GgmlType::kF32,
                                       [](uint64_t, std::span<float>) {});
                         });
                       }),
            "INVALID_ARGUMENT: " + dir +
                ": model.safetensors: tensor 'model.layers.0.self_attn.o_proj.bias' is not part "
                "of a llama model this runtime computes");
  EXPECT_EQ(errorAfter(dir,
                       [&] {
                         rewrite([&](SafetensorsWriter& w, const SafetensorsFile& f) {
                           for (const SafetensorsTensor& t : f.tensors()) {
                             if (t.name != "model.layers.1.mlp.up_proj.weight") copy(w, t);
                           }
                         });
                       }),
            "INVALID_ARGUMENT: " + dir + ": missing tensor 'model.layers.1.mlp.up_proj.weight'");
  EXPECT_EQ(errorAfter(dir,
                       [&] {
                         rewrite([&](SafetensorsWriter& w, const SafetensorsFile& f) {
                           for (const SafetensorsTensor& t : f.tensors()) {
                             if (t.name != "lm_head.weight") copy(w, t);
                           }
                         });
                       }),
            "INVALID_ARGUMENT: " + dir +
                ": missing tensor 'lm_head.weight' (config.json: tie_word_embeddings is false)");
  writeText(dir + "/model.safetensors",
            std::string_view(reinterpret_cast<const char*>(original.data()), original.size()));
  EXPECT_EQ(errorAfter(dir, [] {}), "ok");

  // Directories without weights, or with shards and no index.
  EXPECT_EQ(
      errorAfter(dir, [&] { fs::rename(dir + "/model.safetensors", dir + "/a.safetensors"); }),
      "NOT_FOUND: " + dir +
          ": 1 .safetensors files but no model.safetensors.index.json naming which tensor "
          "is in which");
  EXPECT_NE(errorAfter(dir, [&] { fs::remove(dir + "/a.safetensors"); })
                .find("no model.safetensors or model.safetensors.index.json"),
            std::string::npos);
  EXPECT_EQ(ModelFiles::open(dir + "/nope").status().code(), StatusCode::kNotFound);
}

TEST(ModelFilesTest, IndexEntriesAreChecked) {
  HfDirectoryOptions options;
  options.shard_bytes = 40000;
  const WrittenModel written = writeBoth("test-qwen2", 4, options);
  const std::string dir = written.dir;
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string index = readText(index_path);
  EXPECT_NE(errorAfter(dir,
                       [&] {
                         writeText(index_path, replaced(index, "\"model.norm.weight\":\"model-0000",
                                                        "\"model.norm.weight\":\"../model-0000"));
                       })
                .find(": model.safetensors.index.json: weight_map.model.norm.weight names "
                      "'../model-0000"),
            std::string::npos);
  EXPECT_NE(errorAfter(dir, [] {}).find("not a .safetensors file in the model's directory"),
            std::string::npos);
  EXPECT_NE(errorAfter(dir,
                       [&] {
                         writeText(index_path, replaced(index, "\"model.norm.weight\"",
                                                        "\"model.norm.weight.x\""));
                       })
                .find("tensor 'model.norm.weight' is not listed in model.safetensors.index.json"),
            std::string::npos);
  writeText(index_path, index);
  EXPECT_EQ(errorAfter(dir, [] {}), "ok");
}

TEST(HfConfigTest, SupportedArchitecturesAndTheirDefaults) {
  Result<HfModelConfig> mistral = parseHfConfig(R"({
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 131072,
    "hidden_size": 5120, "intermediate_size": 14336, "num_hidden_layers": 40,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "max_position_embeddings": 1024000, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
    "sliding_window": null, "tie_word_embeddings": false, "hidden_act": "silu"})");
  ASSERT_TRUE(mistral.isOk()) << mistral.status().toString();
  EXPECT_EQ(mistral->params.architecture, Architecture::kLlama);
  EXPECT_EQ(mistral->params.headDim(), 128u);  // narrower than 5120 / 32
  EXPECT_EQ(mistral->params.queryDim(), 4096u);
  EXPECT_TRUE(mistral->params.rope_neox);
  EXPECT_EQ(mistral->params.rms_epsilon, 1e-5f);

  Result<HfModelConfig> llama = parseHfConfig(R"({"model_type": "llama", "vocab_size": 128256,
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
    "rope_theta": 500000.0, "tie_word_embeddings": true, "rope_scaling": {"factor": 32.0,
    "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
    "rope_type": "llama3"}})");
  ASSERT_TRUE(llama.isOk()) << llama.status().toString();
  EXPECT_EQ(llama->params.head_dim, 0u);
  EXPECT_EQ(llama->params.rms_epsilon, 1e-6f);  // transformers' default
  EXPECT_EQ(llama->params.rope_freq_factors, llama3RopeFactors(500000.0f, 64, 32, 1, 4, 8192));
  EXPECT_TRUE(llama->tie_word_embeddings);
  // transformers 5 writes rope_parameters.
  Result<HfModelConfig> v5 = parseHfConfig(R"({"model_type": "qwen3", "vocab_size": 1000,
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "head_dim": 32, "max_position_embeddings": 256,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}})");
  ASSERT_TRUE(v5.isOk()) << v5.status().toString();
  EXPECT_EQ(v5->params.rope_freq_base, 1e6f);
  EXPECT_EQ(v5->params.head_count_kv, 4u);
  EXPECT_EQ(v5->params.queryDim(), 128u);
}

TEST(HfConfigTest, WhatIsNotImplementedIsRefusedNamingKeyAndValue) {
  const std::string base = R"("vocab_size": 1000, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 8192)";
  const auto error = [&](const std::string& extra) {
    Result<HfModelConfig> config = parseHfConfig("{" + base + ", " + extra + "}");
    return config.isOk() ? std::string("ok") : config.status().message();
  };
  EXPECT_EQ(error(R"("model_type": "llama")"), "ok");
  EXPECT_EQ(error(R"("model_type": "phi3")"),
            "config.json: model_type 'phi3' is not supported (llama, mistral, qwen2 and qwen3 "
            "are)");
  EXPECT_EQ(error(R"("model_type": "llama", "architectures": ["LlamaForSequenceClassification"])"),
            "config.json: architectures [\"LlamaForSequenceClassification\"] is not "
            "[\"LlamaForCausalLM\"]");
  EXPECT_EQ(error(R"("model_type": "mistral", "sliding_window": 4096)"),
            "config.json: sliding_window 4096 (below max_position_embeddings 8192): "
            "sliding-window attention is not implemented");
  EXPECT_EQ(error(R"("model_type": "mistral", "sliding_window": 8192)"), "ok");  // never acts
  EXPECT_EQ(error(R"("model_type": "qwen2", "use_sliding_window": true, "sliding_window": 4096)"),
            "config.json: use_sliding_window true: sliding-window attention is not implemented");
  EXPECT_EQ(error(R"("model_type": "qwen2", "use_sliding_window": false, "sliding_window": 4096)"),
            "ok");
  EXPECT_EQ(error(R"("model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4})"),
            "config.json: rope_scaling.rope_type 'yarn' is not supported (default and llama3 are)");
  EXPECT_EQ(error(R"("model_type": "llama", "rope_scaling": {"type": "linear", "factor": 4})"),
            "config.json: rope_scaling.type 'linear' is not supported (default and llama3 are)");
  EXPECT_EQ(error(R"("model_type": "llama", "attention_bias": true)"),
            "config.json: attention_bias true is not supported (biases on the q, k, v and o "
            "projections)");
  EXPECT_EQ(error(R"("model_type": "llama", "mlp_bias": true)"),
            "config.json: mlp_bias true is not supported (biases on the MLP projections)");
  EXPECT_EQ(error(R"("model_type": "llama", "hidden_act": "gelu")"),
            "config.json: hidden_act 'gelu' is not supported (silu is)");
  EXPECT_EQ(error(R"("model_type": "llama", "partial_rotary_factor": 0.5)"),
            "config.json: partial_rotary_factor 0.500000 is not supported (RoPE over whole "
            "heads)");
  EXPECT_EQ(
      error(R"("model_type": "qwen3", "layer_types": ["full_attention", "sliding_attention"])"),
      "config.json: layer_types holds 'sliding_attention': only full_attention layers are "
      "implemented");
  EXPECT_EQ(error(R"("model_type": "llama", "num_key_value_heads": 3)"),
            "config.json: llama.attention.head_count_kv 3 does not divide "
            "llama.attention.head_count 4");
  EXPECT_EQ(error(R"("model_type": "llama", "rms_norm_eps": "small")"),
            "config.json: rms_norm_eps is a string, not a number");
  EXPECT_EQ(parseHfConfig("{").status().message().substr(0, 30), "config.json: invalid JSON at b");
}

// Hand-assembled safetensors files: an 8-byte length, a header, data.
std::vector<uint8_t> safetensorsBytes(std::string_view header, size_t data_bytes,
                                      std::optional<uint64_t> length = std::nullopt) {
  std::vector<uint8_t> bytes(8 + header.size() + data_bytes, 0);
  const uint64_t n = length.value_or(header.size());
  std::memcpy(bytes.data(), &n, 8);
  std::copy(header.begin(), header.end(), bytes.begin() + 8);
  return bytes;
}

std::string parseError(const std::vector<uint8_t>& bytes) {
  Result<SafetensorsFile> file = SafetensorsFile::parse(bytes, "bad.safetensors");
  if (file.isOk()) return "ok";
  EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument);
  return file.status().message();
}

TEST(SafetensorsRobustnessTest, MalformedFilesHaveClearErrors) {
  const std::string two = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                          R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}})";
  EXPECT_EQ(parseError(safetensorsBytes(two, 24)), "ok");
  // The issue's three: a truncated header, a header length past the file, overlapping ranges.
  EXPECT_EQ(parseError(safetensorsBytes(two.substr(0, 40), 0)),
            "bad.safetensors: header: invalid JSON at byte 40 (line 1): incomplete JSON");
  EXPECT_EQ(parseError(safetensorsBytes(two, 24, uint64_t{1} << 40)),
            "bad.safetensors: header length 1099511627776 runs past the end of the file (145 "
            "bytes): truncated, or not a safetensors file");
  EXPECT_EQ(parseError(safetensorsBytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                        16)),
            "bad.safetensors: tensors 'a' (bytes 0..16) and 'b' (bytes 8..16) overlap");
  EXPECT_EQ(parseError({1, 2, 3}),
            "bad.safetensors: truncated file: 3 bytes, a safetensors file starts with an 8-byte "
            "header length");
  EXPECT_EQ(parseError(safetensorsBytes(two, 20)),
            "bad.safetensors: tensor 'b': data_offsets end 24 is past the end of the data (20 "
            "bytes: the file is truncated)");
  EXPECT_EQ(parseError(safetensorsBytes(R"([1,2])", 0)),
            "bad.safetensors: header is an array, not a JSON object");
  EXPECT_EQ(
      parseError(safetensorsBytes(R"({"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4)),
      "bad.safetensors: tensor 'a' has unknown dtype 'F33'");
  EXPECT_EQ(
      parseError(safetensorsBytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
      "bad.safetensors: tensor 'a': data_offsets [0, 8] span 8 bytes, but shape [3] of F32 "
      "takes 12");
  EXPECT_EQ(
      parseError(safetensorsBytes(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)),
      "bad.safetensors: tensor 'a': shape holds -1, not a non-negative integer");
  EXPECT_EQ(
      parseError(safetensorsBytes(
          R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4)),
      "bad.safetensors: tensor 'a': shape [4294967296, 4294967296] overflows");
  EXPECT_EQ(
      parseError(safetensorsBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4)),
      "bad.safetensors: tensor 'a': data_offsets must be [begin, end] with begin <= end");
  EXPECT_EQ(parseError(safetensorsBytes(R"({"__metadata__":{"format":"pt"}})", 0)), "ok");
  // The mapped-file path names the file.
  const std::string path = tempPath("short.safetensors");
  writeText(path, "12345");
  EXPECT_NE(SafetensorsFile::open(path).status().message().find(path + ": truncated file"),
            std::string::npos);
}

// A real file (the random model's) cut at every length and with random bytes flipped: always an
// error or a file whose tensors lie inside it, never a crash (AddressSanitizer runs this too).
TEST(SafetensorsRobustnessTest, TruncationsAndCorruptionsNeverCrash) {
  SafetensorsWriter writer;
  writer.addTensor("model.norm.weight", {64}, GgmlType::kF32,
                   [](uint64_t first, std::span<float> out) {
                     for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(first + i);
                   });
  writer.addTensor("lm_head.weight", {8, 64}, GgmlType::kBF16,
                   [](uint64_t, std::span<float> out) { std::fill(out.begin(), out.end(), 1.0f); });
  Result<std::vector<uint8_t>> whole = writer.serialize();
  ASSERT_TRUE(whole.isOk());
  ASSERT_EQ(parseError(*whole), "ok");
  for (size_t length = 0; length < whole->size(); ++length) {
    const std::vector<uint8_t> prefix(whole->begin(), whole->begin() + static_cast<long>(length));
    ASSERT_NE(parseError(prefix), "ok") << length;
  }
  std::mt19937_64 random(20261204);
  int rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<uint8_t> corrupt = *whole;
    for (int flips = 1 + static_cast<int>(random() % 3); flips > 0; --flips) {
      const size_t at = random() % (corrupt.size() < 400 ? corrupt.size() : 400);
      corrupt[at] = static_cast<uint8_t>(corrupt[at] ^ (1 + random() % 255));
    }
    Result<SafetensorsFile> file = SafetensorsFile::parse(corrupt, "x");
    if (!file.isOk()) {
      ++rejected;
      continue;
    }
    for (const SafetensorsTensor& t : file->tensors()) {
      ASSERT_GE(t.data.data(), corrupt.data());
      ASSERT_LE(t.data.data() + t.data.size(), corrupt.data() + corrupt.size());
    }
  }
  EXPECT_GT(rejected, 0);
}

// config.json with random bytes flipped: an error naming config.json, or params that validate.
TEST(HfConfigTest, RandomByteCorruptionsNeverCrash) {
  const std::string config = hfConfigJson(findRandomModelShape("test-qwen3")->spec, std::nullopt);
  ASSERT_TRUE(parseHfConfig(config).isOk());
  std::mt19937_64 random(20261205);
  int rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string corrupt = config;
    for (int flips = 1 + static_cast<int>(random() % 3); flips > 0; --flips) {
      const size_t at = random() % corrupt.size();
      corrupt[at] = static_cast<char>(corrupt[at] ^ (1 + random() % 255));
    }
    Result<HfModelConfig> parsed = parseHfConfig(corrupt);
    if (!parsed.isOk()) {
      ++rejected;
      ASSERT_EQ(parsed.status().message().rfind("config.json: ", 0), 0u)
          << parsed.status().message();
      continue;
    }
    ASSERT_TRUE(validateLlamaParams(parsed->params).isOk());
  }
  EXPECT_GT(rejected, 0);
}

// A model directory whose safetensors file was cut short: the error names the directory, the
// file and what is wrong.
TEST(ModelFilesTest, ATruncatedShardIsAClearError) {
  const WrittenModel written = writeBoth("test-qwen2", 9);
  const std::string file = written.dir + "/model.safetensors";
  const uintmax_t size = fs::file_size(file);
  for (uintmax_t length : {uintmax_t{0}, uintmax_t{5}, uintmax_t{100}, size / 2, size - 1}) {
    fs::resize_file(file, length);
    Result<ModelFiles> files = ModelFiles::open(written.dir);
    ASSERT_FALSE(files.isOk()) << length;
    EXPECT_EQ(files.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(files.status().message().find(file + ": "), std::string::npos)
        << files.status().message();
  }
}

}  // namespace
}  // namespace kvferry::model
