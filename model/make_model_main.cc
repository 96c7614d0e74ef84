// kvferry-make-model: writes a random-weight model at the shape of a public checkpoint (or a small
// test shape), as a GGUF file plus the Hugging Face config.json of the same model, and/or as a
// Hugging Face directory (safetensors, tokenizer.json), so the engine and independent
// implementations (transformers, llama.cpp) can run identical weights. Nothing is downloaded: the
// weights come from a seed (model/gguf_writer.h, model/hf_writer.h, model/random_shapes.h).
#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>

#include "model/gguf_writer.h"
#include "model/hf_writer.h"
#include "model/random_shapes.h"

namespace kvferry::model {
namespace {

constexpr char kUsage[] = R"(usage: kvferry-make-model --shape NAME --out DIR [options]

Writes a random-weight model of shape NAME into DIR (created if missing):
  --format gguf  DIR/model.gguf and DIR/config.json (the same model's Hugging Face config, for
                 transformers reading the GGUF's tensors); the default
  --format hf    a Hugging Face directory: config.json, model.safetensors (or shards and
                 model.safetensors.index.json), tokenizer.json, tokenizer_config.json
  --format both  both in DIR, with the same byte-level BPE vocabulary

  --shape NAME   see the list below
  --out DIR
  --seed N       (default 1)
  --type T       bf16 (default), f16 or f32: the matrices' storage; norms stay f32
  --layers N     override the layer count (a shorter model of the same width)
  --shard-mb N   hf: shards of about N MiB with an index (default: one file)
  -h, --help     this text

Shapes:
)";

int fail(const std::string& message) {
  std::fprintf(stderr, "kvferry-make-model: %s\n", message.c_str());
  return 2;
}

Status writeText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) return ioError("write " + path, errno);
  return Status::ok();
}

int run(int argc, char** argv) {
  std::string shape_name;
  std::string out;
  std::string format = "gguf";
  uint64_t seed = 1;
  uint32_t layers = 0;
  uint64_t shard_mb = 0;
  GgmlType type = GgmlType::kBF16;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      for (const RandomModelShape& s : randomModelShapes()) {
        std::printf("  %-16s %s\n", s.name.data(), s.description.data());
      }
      return 0;
    }
    if (i + 1 >= argc) return fail(std::string(flag) + ": missing value (see --help)");
    const std::string_view value = argv[++i];
    const auto number = [&](auto& target) {
      const auto [ptr, error] = std::from_chars(value.data(), value.data() + value.size(), target);
      return error == std::errc() && ptr == value.data() + value.size();
    };
    if (flag == "--shape") {
      shape_name = value;
    } else if (flag == "--out") {
      out = value;
    } else if (flag == "--format") {
      format = value;
      if (format != "gguf" && format != "hf" && format != "both") {
        return fail("--format: '" + format + "' is not gguf, hf or both");
      }
    } else if (flag == "--seed") {
      if (!number(seed)) return fail("--seed: '" + std::string(value) + "' is not a number");
    } else if (flag == "--layers") {
      if (!number(layers) || layers == 0) return fail("--layers: a positive number");
    } else if (flag == "--shard-mb") {
      if (!number(shard_mb) || shard_mb == 0) return fail("--shard-mb: a positive number");
    } else if (flag == "--type") {
      if (value == "bf16") {
        type = GgmlType::kBF16;
      } else if (value == "f16") {
        type = GgmlType::kF16;
      } else if (value == "f32") {
        type = GgmlType::kF32;
      } else {
        return fail("--type: '" + std::string(value) + "' is not bf16, f16 or f32");
      }
    } else {
      return fail("unknown option '" + std::string(flag) + "' (see --help)");
    }
  }
  if (shape_name.empty() || out.empty()) return fail("--shape and --out are required (see --help)");
  const RandomModelShape* shape = findRandomModelShape(shape_name);
  if (shape == nullptr) return fail("unknown shape '" + shape_name + "' (see --help)");
  RandomLlamaSpec spec = shape->spec;
  spec.matrix_type = type;
  if (layers != 0) spec.params.block_count = layers;
  if (format != "gguf") spec.bpe_vocabulary = true;  // tokenizer.json holds byte-level BPE
  if (::mkdir(out.c_str(), 0755) != 0 && errno != EEXIST) {
    return fail("mkdir " + out + ": " + std::strerror(errno));
  }
  if (format != "hf") {
    const Status written = writeRandomLlamaModel(out + "/model.gguf", spec, seed);
    if (!written.isOk()) return fail(written.toString());
  }
  if (format == "gguf") {
    const Status written =
        writeText(out + "/config.json", hfConfigJson(spec, shape->llama3_scaling));
    if (!written.isOk()) return fail(written.toString());
  } else {
    HfDirectoryOptions options;
    options.shard_bytes = shard_mb << 20;
    options.llama3_scaling = shape->llama3_scaling;
    const Status written = writeRandomHfModel(out, spec, seed, options);
    if (!written.isOk()) return fail(written.toString());
  }
  std::printf("kvferry-make-model: %s (%u layers, seed %llu, %s) -> %s\n", shape->name.data(),
              spec.params.block_count, static_cast<unsigned long long>(seed), format.c_str(),
              out.c_str());
  return 0;
}

}  // namespace
}  // namespace kvferry::model

int main(int argc, char** argv) { return kvferry::model::run(argc, argv); }
