// kvferry-tokenize: token ids of texts under a model's tokenizer, for scripts and checks. Reads
// one JSON array of strings on stdin, writes one JSON array of id arrays on stdout. Exit 0, 1 for
// bad input or a bad model (one line on stderr), 2 for a bad command line.
#include <boost/json.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer_files.h"

namespace kvferry::model {
namespace {

namespace json = boost::json;

constexpr char kUsage[] =
    "usage: kvferry-tokenize --model PATH [--parse-special] [--add-special] < texts.json\n"
    "\n"
    "Reads one JSON array of strings on stdin and prints one JSON array with the token ids of\n"
    "each string under the model's tokenizer, as the orchestrator and the agents compute them:\n"
    "\n"
    "  $ echo '[\"Hello world\", \"你好\"]' | kvferry-tokenize --model Meta-Llama-3-8B/\n"
    "  [[9906,1917],[57668,53901]]\n"
    "\n"
    "  --model PATH      where the tokenizer is: a GGUF file, a Hugging Face model directory, a\n"
    "                    directory holding only tokenizer.json and tokenizer_config.json, or a\n"
    "                    tokenizer.json file\n"
    "  --parse-special   text of special tokens (\"<|im_start|>\", \"<s>\") becomes those tokens,\n"
    "                    as Hugging Face tokenizers always do; by default it is plain text\n"
    "  --add-special     add the BOS / EOS tokens the model's files ask for; by default none\n"
    "  -h, --help        this text\n"
    "\n"
    "Supported tokenizers: SentencePiece (GGUF tokenizer.ggml.model = llama) and byte-level BPE\n"
    "(GGUF gpt2 with tokenizer.ggml.pre llama-bpe, qwen2, qwen35, tekken or gpt-2; tokenizer.json\n"
    "of type BPE with the Llama 3, Qwen2, Qwen3.5, Tekken or GPT-2 pre-tokenizer).\n";

struct Options {
  std::string model;
  bool parse_special = false;
  bool add_special = false;
};

// nullopt for --help.
Result<std::optional<Options>> parseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") return std::optional<Options>();
    if (flag == "--parse-special") {
      options.parse_special = true;
    } else if (flag == "--add-special") {
      options.add_special = true;
    } else if (flag == "--model") {
      if (i + 1 >= argc) return invalidArgument("--model: missing value");
      options.model = argv[++i];
    } else {
      return invalidArgument("unknown option '" + std::string(flag) + "' (see --help)");
    }
  }
  if (options.model.empty()) return invalidArgument("--model PATH is required (see --help)");
  return std::optional<Options>(std::move(options));
}

Result<std::vector<std::string>> readTexts(std::string_view input) {
  boost::system::error_code ec;
  json::stream_parser parser;
  const size_t consumed = parser.write(input.data(), input.size(), ec);
  if (!ec) parser.finish(ec);
  if (ec) {
    return invalidArgument("stdin: invalid JSON at byte " +
                           std::to_string(std::min(consumed, input.size())) + ": " + ec.message() +
                           " (expected one JSON array of strings)");
  }
  const json::value document = parser.release();
  const json::array* array = document.if_array();
  if (array == nullptr) return invalidArgument("stdin: expected a JSON array of strings");
  std::vector<std::string> texts;
  texts.reserve(array->size());
  for (size_t i = 0; i < array->size(); ++i) {
    const json::string* text = (*array)[i].if_string();
    if (text == nullptr) {
      return invalidArgument("stdin: element " + std::to_string(i) + " is " +
                             json::serialize((*array)[i]).substr(0, 40) + ", not a string");
    }
    texts.emplace_back(*text);
  }
  return texts;
}

Status run(const Options& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, loadTokenizer(options.model));
  const std::string input{std::istreambuf_iterator<char>(std::cin),
                          std::istreambuf_iterator<char>()};
  ASSIGN_OR_RETURN(std::vector<std::string> texts, readTexts(input));
  const Vocabulary& vocab = tokenizer->vocabulary();
  const EncodeOptions encode{.add_bos = options.add_special && vocab.add_bos,
                             .add_eos = options.add_special && vocab.add_eos,
                             .parse_special = options.parse_special};
  std::string out = "[";
  for (size_t i = 0; i < texts.size(); ++i) {
    Result<std::vector<TokenId>> ids = tokenizer->encode(texts[i], encode);
    if (!ids.isOk()) return ids.status().withContext("stdin: element " + std::to_string(i));
    out += i == 0 ? "[" : ",[";
    for (size_t k = 0; k < ids->size(); ++k) {
      if (k > 0) out += ',';
      out += std::to_string((*ids)[k]);
    }
    out += ']';
  }
  out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return Status::ok();
}

}  // namespace
}  // namespace kvferry::model

int main(int argc, char** argv) {
  using namespace kvferry;
  Result<std::optional<model::Options>> options = model::parseOptions(argc, argv);
  if (!options.isOk()) {
    std::fprintf(stderr, "kvferry-tokenize: %s\n", options.status().message().c_str());
    return 2;
  }
  if (!*options) {
    std::fwrite(model::kUsage, 1, sizeof(model::kUsage) - 1, stdout);
    return 0;
  }
  if (Status status = model::run(**options); !status.isOk()) {
    std::fprintf(stderr, "kvferry-tokenize: %s\n", status.message().c_str());
    return 1;
  }
  return 0;
}
