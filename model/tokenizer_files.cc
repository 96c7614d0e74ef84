#include "model/tokenizer_files.h"

#include <filesystem>
#include <string_view>
#include <system_error>

#include "model/gguf.h"
#include "model/hf_tokenizer.h"
#include "model/mapped_file.h"

namespace kvferry::model {
namespace {

namespace fs = std::filesystem;

Result<Vocabulary> loadHuggingFace(const fs::path& tokenizer_json) {
  const fs::path directory = tokenizer_json.parent_path();
  ASSIGN_OR_RETURN(MappedFile tokenizer, MappedFile::open(tokenizer_json.string()));
  const fs::path config_path = directory / "tokenizer_config.json";
  MappedFile config;
  std::error_code ec;
  if (fs::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(config, MappedFile::open(config_path.string()));
  }
  const auto text = [](const MappedFile& file) {
    return std::string_view(reinterpret_cast<const char*>(file.bytes().data()),
                            file.bytes().size());
  };
  Result<Vocabulary> vocab = parseHfTokenizer(text(tokenizer), text(config));
  // The parser names the file ("tokenizer.json: …"); add where it is.
  if (!vocab.isOk()) {
    return vocab.status().withContext((directory.empty() ? fs::path(".") : directory).string());
  }
  return vocab;
}

}  // namespace

Result<Vocabulary> loadVocabulary(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    return notFound(path +
                    ": no such file or directory (expected a GGUF file, a Hugging Face "
                    "model directory, or a directory holding tokenizer.json)");
  }
  if (fs::is_directory(status)) {
    const fs::path tokenizer_json = fs::path(path) / "tokenizer.json";
    if (!fs::exists(tokenizer_json, ec)) {
      return notFound(path +
                      ": directory has no tokenizer.json (expected a Hugging Face model "
                      "directory, or one holding tokenizer.json and tokenizer_config.json)");
    }
    return loadHuggingFace(tokenizer_json);
  }
  if (fs::path(path).extension() == ".json") return loadHuggingFace(fs::path(path));
  ASSIGN_OR_RETURN(GgufFile file, GgufFile::open(path));
  Result<Vocabulary> vocab = readVocabulary(file);
  if (!vocab.isOk()) return vocab.status().withContext(path);
  return vocab;
}

Result<std::unique_ptr<Tokenizer>> loadTokenizer(const std::string& path) {
  ASSIGN_OR_RETURN(Vocabulary vocab, loadVocabulary(path));
  Result<std::unique_ptr<Tokenizer>> tokenizer = makeTokenizer(std::move(vocab));
  if (!tokenizer.isOk()) return tokenizer.status().withContext(path);
  return tokenizer;
}

}  // namespace kvferry::model
