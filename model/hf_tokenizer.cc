#include "model/hf_tokenizer.h"

#include <algorithm>
#include <boost/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/json_kind.h"
#include "model/gguf.h"
#include "model/json_document.h"
#include "model/pre_tokenizer.h"
#include "model/tokenizer_internal.h"

namespace kvferry::model {
namespace {

namespace json = boost::json;
using internal::quoted;

constexpr int64_t kMaxTokens = int64_t{1} << 24;  // as readVocabulary: far above real vocabularies
// Ids are dense in real files; this much slack above the number of tokens named keeps a file with
// one huge id from allocating a vocabulary of millions of empty slots.
constexpr int64_t kIdSlack = 1 << 16;

Status fail(std::string_view file, const std::string& what) {
  return invalidArgument(std::string(file) + ": " + what);
}

std::string typeName(const json::value& v) { return std::string(jsonKindName(v)); }

// Typed access with errors that name the file and the JSON path.
class Reader {
 public:
  explicit Reader(std::string_view file, int64_t id_limit = kMaxTokens)
      : file_(file), id_limit_(std::min(id_limit, kMaxTokens)) {}

  Status wrongType(const std::string& path, const json::value& v, std::string_view expected) const {
    return fail(file_, path + " is " + typeName(v) + ", not " + std::string(expected));
  }
  Status error(const std::string& what) const { return fail(file_, what); }

  Result<const json::object*> object(const json::value& v, const std::string& path) const {
    if (const json::object* o = v.if_object()) return o;
    return wrongType(path, v, "an object");
  }
  Result<const json::array*> array(const json::value& v, const std::string& path) const {
    if (const json::array* a = v.if_array()) return a;
    return wrongType(path, v, "an array");
  }
  Result<std::string_view> string(const json::value& v, const std::string& path) const {
    if (const json::string* s = v.if_string()) return std::string_view(*s);
    return wrongType(path, v, "a string");
  }
  // A boolean member; `fallback` when absent or null.
  Result<bool> boolean(const json::object& o, std::string_view key, const std::string& path,
                       bool fallback) const {
    const json::value* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return fallback;
    if (const bool* b = v->if_bool()) return *b;
    return wrongType(path.empty() ? std::string(key) : path + "." + std::string(key), *v,
                     "a boolean");
  }
  // A string member; nullopt when absent or null.
  Result<std::optional<std::string_view>> optionalString(const json::object& o,
                                                         std::string_view key,
                                                         const std::string& path) const {
    const json::value* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return std::optional<std::string_view>();
    ASSIGN_OR_RETURN(std::string_view s, string(*v, path + "." + std::string(key)));
    return std::optional<std::string_view>(s);
  }
  Result<int64_t> tokenId(const json::value& v, const std::string& path) const {
    boost::system::error_code ec;
    const auto id = v.to_number<int64_t>(ec);
    if (ec || id < 0 || id >= id_limit_) {
      return error(path + " is " + (v.is_number() ? json::serialize(v) : typeName(v)) +
                   ", not a token id (0.." + std::to_string(id_limit_ - 1) + ")");
    }
    return id;
  }

 private:
  std::string_view file_;
  int64_t id_limit_;
};

constexpr std::string_view kTokenizerJson = "tokenizer.json";
constexpr std::string_view kConfigJson = "tokenizer_config.json";

struct AddedToken {
  int64_t id;
  std::string content;
  bool special;
};

// model: vocab, merges, unk_token, ignore_merges; and the settings this tokenizer refuses.
Status readModel(const Reader& r, const json::object& root, std::vector<std::string>& by_id,
                 Vocabulary& v, std::optional<std::string>& unk) {
  const json::value* model_value = root.if_contains("model");
  if (model_value == nullptr) return r.error("no 'model'");
  ASSIGN_OR_RETURN(const json::object* model, r.object(*model_value, "model"));
  ASSIGN_OR_RETURN(std::optional<std::string_view> type, r.optionalString(*model, "type", "model"));
  if (!type && !(model->contains("vocab") && model->contains("merges"))) {
    return r.error("model has no 'type' and is not a BPE model (no vocab and merges)");
  }
  if (type && *type != "BPE") {
    return r.error(
        "model.type is '" + quoted(*type) +
        "'; only 'BPE' (byte-level, as Llama 3, Qwen and Mistral-Nemo use) is supported");
  }
  ASSIGN_OR_RETURN(bool byte_fallback, r.boolean(*model, "byte_fallback", "model", false));
  if (byte_fallback) {
    return r.error(
        "model.byte_fallback is true: SentencePiece-style BPE is not supported "
        "(use the model's GGUF, whose 'llama' tokenizer is)");
  }
  for (std::string_view key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    ASSIGN_OR_RETURN(std::optional<std::string_view> affix, r.optionalString(*model, key, "model"));
    if (affix && !affix->empty()) {
      return r.error("model." + std::string(key) + " '" + quoted(*affix) +
                     "' is not supported (byte-level BPE has none)");
    }
  }
  if (const json::value* dropout = model->if_contains("dropout");
      dropout != nullptr && !dropout->is_null()) {
    boost::system::error_code ec;
    if (dropout->to_number<double>(ec) != 0.0 || ec) {
      return r.error("model.dropout is " + json::serialize(*dropout) +
                     ": BPE dropout (random merges, for training) is not supported");
    }
  }
  ASSIGN_OR_RETURN(v.ignore_merges, r.boolean(*model, "ignore_merges", "model", false));
  ASSIGN_OR_RETURN(std::optional<std::string_view> unk_token,
                   r.optionalString(*model, "unk_token", "model"));
  if (unk_token) unk = std::string(*unk_token);

  const json::value* vocab_value = model->if_contains("vocab");
  if (vocab_value == nullptr) return r.error("model has no 'vocab'");
  ASSIGN_OR_RETURN(const json::object* vocab, r.object(*vocab_value, "model.vocab"));
  if (vocab->empty()) return r.error("model.vocab is empty");
  for (const json::key_value_pair& entry : *vocab) {
    const std::string path = "model.vocab['" + quoted(entry.key()) + "']";
    ASSIGN_OR_RETURN(int64_t id, r.tokenId(entry.value(), path));
    if (by_id.size() <= static_cast<size_t>(id)) by_id.resize(static_cast<size_t>(id) + 1);
    if (!by_id[id].empty()) {
      return r.error("model.vocab gives id " + std::to_string(id) + " to both '" +
                     quoted(by_id[id]) + "' and '" + quoted(entry.key()) + "'");
    }
    if (entry.key().empty()) return r.error("model.vocab has an empty token");
    by_id[id] = std::string(entry.key());
  }

  const json::value* merges_value = model->if_contains("merges");
  if (merges_value == nullptr) return r.error("model has no 'merges'");
  ASSIGN_OR_RETURN(const json::array* merges, r.array(*merges_value, "model.merges"));
  v.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const std::string path = "model.merges[" + std::to_string(i) + "]";
    const json::value& merge = (*merges)[i];
    if (const json::string* text = merge.if_string()) {  // "a b"
      v.merges.emplace_back(*text);
      continue;
    }
    const json::array* pair = merge.if_array();
    if (pair == nullptr || pair->size() != 2 || !(*pair)[0].is_string() ||
        !(*pair)[1].is_string()) {
      return r.error(path + " is " + typeName(merge) +
                     ", not a string \"a b\" or a pair of strings [\"a\", \"b\"]");
    }
    const std::string_view left = (*pair)[0].get_string();
    const std::string_view right = (*pair)[1].get_string();
    if (left.find(' ') != std::string_view::npos || right.find(' ') != std::string_view::npos) {
      return r.error(path + " has a token with a space in it, which byte-level BPE never has");
    }
    v.merges.push_back(std::string(left) + " " + std::string(right));
  }
  return Status::ok();
}

Result<std::vector<AddedToken>> readAddedTokens(const Reader& r, const json::object& root) {
  std::vector<AddedToken> added;
  const json::value* value = root.if_contains("added_tokens");
  if (value == nullptr || value->is_null()) return added;
  ASSIGN_OR_RETURN(const json::array* tokens, r.array(*value, "added_tokens"));
  for (size_t i = 0; i < tokens->size(); ++i) {
    const std::string path = "added_tokens[" + std::to_string(i) + "]";
    ASSIGN_OR_RETURN(const json::object* token, r.object((*tokens)[i], path));
    const json::value* id = token->if_contains("id");
    const json::value* content = token->if_contains("content");
    if (id == nullptr || content == nullptr) return r.error(path + " needs an id and a content");
    AddedToken t;
    ASSIGN_OR_RETURN(t.id, r.tokenId(*id, path + ".id"));
    ASSIGN_OR_RETURN(std::string_view text, r.string(*content, path + ".content"));
    if (text.empty()) return r.error(path + ".content is empty");
    t.content = std::string(text);
    ASSIGN_OR_RETURN(t.special, r.boolean(*token, "special", path, false));
    for (std::string_view flag : {"lstrip", "rstrip", "single_word"}) {
      ASSIGN_OR_RETURN(bool set, r.boolean(*token, flag, path, false));
      if (set) {
        return r.error(path + " ('" + quoted(text) + "') has " + std::string(flag) +
                       ": true, which is not supported");
      }
    }
    added.push_back(std::move(t));
  }
  return added;
}

Status readNormalizer(const Reader& r, const json::object& root, Vocabulary& v) {
  const json::value* value = root.if_contains("normalizer");
  if (value == nullptr || value->is_null()) return Status::ok();
  ASSIGN_OR_RETURN(const json::object* normalizer, r.object(*value, "normalizer"));
  ASSIGN_OR_RETURN(std::optional<std::string_view> type,
                   r.optionalString(*normalizer, "type", "normalizer"));
  if (type == "NFC") {
    v.normalizer = "nfc";
    return Status::ok();
  }
  if (type == "Sequence") {  // an empty one is no normalizer
    const json::value* list = normalizer->if_contains("normalizers");
    const json::array* items = list != nullptr ? list->if_array() : nullptr;
    if (items != nullptr && items->empty()) return Status::ok();
  }
  return r.error("normalizer " + json::serialize(*value).substr(0, 200) +
                 " is not supported (only none or NFC)");
}

Status checkByteLevel(const Reader& r, const json::object& byte_level, const std::string& path) {
  ASSIGN_OR_RETURN(bool prefix, r.boolean(byte_level, "add_prefix_space", path, true));
  if (prefix) {
    return r.error(path +
                   ".add_prefix_space is true (or missing, which means true): "
                   "not supported");
  }
  return Status::ok();
}

Status readPreTokenizer(const Reader& r, const json::object& root, Vocabulary& v) {
  const json::value* value = root.if_contains("pre_tokenizer");
  if (value == nullptr || value->is_null()) {
    return r.error("no pre_tokenizer: byte-level BPE needs a ByteLevel one");
  }
  ASSIGN_OR_RETURN(const json::object* pre, r.object(*value, "pre_tokenizer"));
  ASSIGN_OR_RETURN(std::optional<std::string_view> type,
                   r.optionalString(*pre, "type", "pre_tokenizer"));
  const std::string unsupported =
      "pre_tokenizer " + json::serialize(*value).substr(0, 300) +
      " is not supported: byte-level BPE with the regex of Llama 3, Qwen2, Qwen3.5, Tekken or "
      "GPT-2 is";
  if (type == "ByteLevel") {
    RETURN_IF_ERROR(checkByteLevel(r, *pre, "pre_tokenizer"));
    ASSIGN_OR_RETURN(bool use_regex, r.boolean(*pre, "use_regex", "pre_tokenizer", true));
    if (!use_regex) return r.error(unsupported);
    v.pre = preTokenizerName(PreTokenizer::kGpt2);
    return Status::ok();
  }
  if (type != "Sequence") return r.error(unsupported);
  const json::value* list = pre->if_contains("pretokenizers");
  const json::array* items = list != nullptr ? list->if_array() : nullptr;
  if (items == nullptr || items->size() != 2 || !(*items)[0].is_object() ||
      !(*items)[1].is_object()) {
    return r.error(unsupported);
  }
  const json::object& split = (*items)[0].get_object();
  const json::object& byte_level = (*items)[1].get_object();
  const json::value* pattern = split.if_contains("pattern");
  const json::object* pattern_object = pattern != nullptr ? pattern->if_object() : nullptr;
  const json::value* regex =
      pattern_object != nullptr ? pattern_object->if_contains("Regex") : nullptr;
  const json::value* behavior = split.if_contains("behavior");
  ASSIGN_OR_RETURN(bool invert,
                   r.boolean(split, "invert", "pre_tokenizer.pretokenizers[0]", false));
  const json::value* split_type = split.if_contains("type");
  const json::value* byte_level_type = byte_level.if_contains("type");
  if (split_type == nullptr || *split_type != "Split" || regex == nullptr || !regex->is_string() ||
      behavior == nullptr || *behavior != "Isolated" || invert || byte_level_type == nullptr ||
      *byte_level_type != "ByteLevel") {
    return r.error(unsupported);
  }
  RETURN_IF_ERROR(checkByteLevel(r, byte_level, "pre_tokenizer.pretokenizers[1]"));
  ASSIGN_OR_RETURN(bool use_regex,
                   r.boolean(byte_level, "use_regex", "pre_tokenizer.pretokenizers[1]", true));
  const std::optional<PreTokenizer> kind = preTokenizerFromRegex(regex->get_string());
  if (!kind || use_regex) {
    return r.error("pre_tokenizer Split regex '" + quoted(regex->get_string()) +
                   "' is not one kvferry implements (Llama 3, Qwen2, Qwen3.5, Tekken, GPT-2)");
  }
  v.pre = preTokenizerName(*kind);
  return Status::ok();
}

Status readDecoder(const Reader& r, const json::object& root) {
  const json::value* value = root.if_contains("decoder");
  if (value == nullptr || value->is_null()) return Status::ok();
  const json::object* decoder = value->if_object();
  const json::value* type = decoder != nullptr ? decoder->if_contains("type") : nullptr;
  if (type == nullptr || *type != "ByteLevel") {
    return r.error("decoder " + json::serialize(*value).substr(0, 200) +
                   " is not supported (only ByteLevel)");
  }
  return Status::ok();
}

// The special tokens a post_processor puts before and after a single text (their ids).
struct Template {
  std::vector<TokenId> before;
  std::vector<TokenId> after;
};

Status readTemplate(const Reader& r, const json::object& processor, const std::string& path,
                    Template& out) {
  ASSIGN_OR_RETURN(std::optional<std::string_view> type, r.optionalString(processor, "type", path));
  if (type == "Sequence") {
    const json::value* list = processor.if_contains("processors");
    if (list == nullptr) return r.error(path + " has no 'processors'");
    ASSIGN_OR_RETURN(const json::array* items, r.array(*list, path + ".processors"));
    for (size_t i = 0; i < items->size(); ++i) {
      const std::string item_path = path + ".processors[" + std::to_string(i) + "]";
      ASSIGN_OR_RETURN(const json::object* item, r.object((*items)[i], item_path));
      RETURN_IF_ERROR(readTemplate(r, *item, item_path, out));
    }
    return Status::ok();
  }
  if (type == "ByteLevel") return Status::ok();  // offsets only
  if (type != "TemplateProcessing") {
    return r.error(path + ".type '" + quoted(type.value_or("")) +
                   "' is not supported (ByteLevel, TemplateProcessing or a Sequence of them)");
  }
  const json::value* single = processor.if_contains("single");
  if (single == nullptr) return r.error(path + " has no 'single'");
  ASSIGN_OR_RETURN(const json::array* pieces, r.array(*single, path + ".single"));
  const json::value* specials_value = processor.if_contains("special_tokens");
  const json::object* specials = specials_value != nullptr ? specials_value->if_object() : nullptr;
  bool seen_text = false;
  for (size_t i = 0; i < pieces->size(); ++i) {
    const std::string piece_path = path + ".single[" + std::to_string(i) + "]";
    ASSIGN_OR_RETURN(const json::object* piece, r.object((*pieces)[i], piece_path));
    if (piece->contains("Sequence")) {
      seen_text = true;
      continue;
    }
    const json::value* special = piece->if_contains("SpecialToken");
    const json::object* special_object = special != nullptr ? special->if_object() : nullptr;
    const json::value* name =
        special_object != nullptr ? special_object->if_contains("id") : nullptr;
    if (name == nullptr || !name->is_string()) {
      return r.error(piece_path + " is neither a Sequence nor a SpecialToken with an id");
    }
    const json::value* entry =
        specials != nullptr ? specials->if_contains(name->get_string()) : nullptr;
    const json::object* entry_object = entry != nullptr ? entry->if_object() : nullptr;
    const json::value* ids = entry_object != nullptr ? entry_object->if_contains("ids") : nullptr;
    const json::array* id_list = ids != nullptr ? ids->if_array() : nullptr;
    if (id_list == nullptr) {
      return r.error(path + ".special_tokens has no ids for '" + quoted(name->get_string()) + "'");
    }
    for (size_t k = 0; k < id_list->size(); ++k) {
      ASSIGN_OR_RETURN(int64_t id,
                       r.tokenId((*id_list)[k], path + ".special_tokens['" +
                                                    quoted(name->get_string()) + "'].ids"));
      (seen_text ? out.after : out.before).push_back(static_cast<TokenId>(id));
    }
  }
  return Status::ok();
}

// tokenizer_config.json's name for a special token: a string, or an object with its content.
Result<std::optional<std::string>> configToken(const Reader& r, const json::object& config,
                                               std::string_view key) {
  const json::value* value = config.if_contains(key);
  if (value == nullptr || value->is_null()) return std::optional<std::string>();
  if (const json::string* s = value->if_string()) return std::optional<std::string>(*s);
  if (const json::object* o = value->if_object()) {
    const json::value* content = o->if_contains("content");
    if (content != nullptr && content->is_string()) {
      return std::optional<std::string>(std::string(content->get_string()));
    }
  }
  return r.wrongType(std::string(key), *value, "a string or an object with a content");
}

}  // namespace

Result<Vocabulary> parseHfTokenizer(std::string_view tokenizer_json, std::string_view config_json) {
  ASSIGN_OR_RETURN(json::value document,
                   internal::parseJsonDocument(tokenizer_json, kTokenizerJson));
  ASSIGN_OR_RETURN(const json::object* root,
                   Reader(kTokenizerJson).object(document, "the document"));
  // Token ids may not run far past the number of tokens the file names.
  int64_t named = kIdSlack;
  if (const json::value* model = root->if_contains("model"); model && model->is_object()) {
    const json::value* vocab = model->get_object().if_contains("vocab");
    if (vocab != nullptr && vocab->is_object())
      named += static_cast<int64_t>(vocab->get_object().size());
  }
  if (const json::value* added = root->if_contains("added_tokens"); added && added->is_array()) {
    named += static_cast<int64_t>(added->get_array().size());
  }
  const Reader r(kTokenizerJson, named);

  Vocabulary v;
  v.model = "gpt2";
  std::vector<std::string> by_id;
  std::optional<std::string> unk;
  RETURN_IF_ERROR(readModel(r, *root, by_id, v, unk));
  ASSIGN_OR_RETURN(std::vector<AddedToken> added, readAddedTokens(r, *root));
  RETURN_IF_ERROR(readNormalizer(r, *root, v));
  RETURN_IF_ERROR(readPreTokenizer(r, *root, v));
  RETURN_IF_ERROR(readDecoder(r, *root));

  // The vocabulary: model.vocab, then the added tokens at their ids; ids nobody names are
  // unused, textless tokens.
  const size_t model_tokens = by_id.size();
  for (const AddedToken& t : added) {
    if (by_id.size() <= static_cast<size_t>(t.id)) by_id.resize(static_cast<size_t>(t.id) + 1);
  }
  const size_t n = by_id.size();
  v.tokens = by_id;
  v.scores.assign(n, 0.0f);
  v.types.assign(n, TokenType::kNormal);
  for (size_t i = 0; i < model_tokens; ++i) {
    if (by_id[i].empty()) v.types[i] = TokenType::kUnused;
  }
  for (size_t i = model_tokens; i < n; ++i) v.types[i] = TokenType::kUnused;
  for (const AddedToken& t : added) {
    std::string& slot = v.tokens[t.id];
    if (!slot.empty() && slot != t.content) {
      return r.error("added token '" + quoted(t.content) + "' has id " + std::to_string(t.id) +
                     ", which model.vocab gives to '" + quoted(slot) + "'");
    }
    slot = t.content;
    v.types[t.id] = t.special ? TokenType::kControl : TokenType::kUserDefined;
  }
  const auto idOf = [&](const std::string& text) -> TokenId {
    // The last token with that text, as the tokenizers resolve duplicates.
    for (size_t i = n; i-- > 0;) {
      if (v.tokens[i] == text) return static_cast<TokenId>(i);
    }
    return kNoToken;
  };
  if (unk) {
    v.unk_id = idOf(*unk);
    if (v.unk_id == kNoToken) {
      return r.error("model.unk_token '" + quoted(*unk) + "' is not in the vocabulary");
    }
  }

  Template added_by_template;
  if (const json::value* post = root->if_contains("post_processor");
      post != nullptr && !post->is_null()) {
    ASSIGN_OR_RETURN(const json::object* processor, r.object(*post, "post_processor"));
    RETURN_IF_ERROR(readTemplate(r, *processor, "post_processor", added_by_template));
  }
  for (const auto& [ids, what] : {std::pair{&added_by_template.before, "before"},
                                  std::pair{&added_by_template.after, "after"}}) {
    if (ids->size() > 1) {
      return r.error("post_processor adds " + std::to_string(ids->size()) + " tokens " + what +
                     " the text; at most one (BOS / EOS) is supported");
    }
    for (TokenId id : *ids) {
      if (static_cast<size_t>(id) >= n) {
        return r.error("post_processor adds token id " + std::to_string(id) +
                       ", which is outside the vocabulary of " + std::to_string(n));
      }
    }
  }
  v.add_bos = !added_by_template.before.empty();
  v.add_eos = !added_by_template.after.empty();

  if (!config_json.empty()) {
    const Reader c(kConfigJson);
    ASSIGN_OR_RETURN(json::value config_document,
                     internal::parseJsonDocument(config_json, kConfigJson));
    ASSIGN_OR_RETURN(const json::object* config, c.object(config_document, "the document"));
    for (auto [key, id] : {std::pair{"bos_token", &v.bos_id}, std::pair{"eos_token", &v.eos_id},
                           std::pair{"pad_token", &v.pad_id}}) {
      ASSIGN_OR_RETURN(std::optional<std::string> name, configToken(c, *config, key));
      if (!name) continue;
      *id = idOf(*name);
      if (*id == kNoToken) {
        return c.error(std::string(key) + " '" + quoted(*name) +
                       "' is not a token of tokenizer.json");
      }
    }
    ASSIGN_OR_RETURN(v.add_bos, c.boolean(*config, "add_bos_token", "", v.add_bos));
    ASSIGN_OR_RETURN(v.add_eos, c.boolean(*config, "add_eos_token", "", v.add_eos));
  }
  // The post-processor's tokens are the ones added, whatever the config calls BOS and EOS.
  if (!added_by_template.before.empty()) v.bos_id = added_by_template.before.front();
  if (!added_by_template.after.empty()) v.eos_id = added_by_template.after.front();
  if (v.add_bos && v.bos_id == kNoToken) {
    return invalidArgument("BOS is to be added, but neither file names a BOS token");
  }
  if (v.add_eos && v.eos_id == kNoToken) {
    return invalidArgument("EOS is to be added, but neither file names an EOS token");
  }
  return v;
}

}  // namespace kvferry::model
