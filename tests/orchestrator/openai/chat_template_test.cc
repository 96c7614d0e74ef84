#include "orchestrator/openai/chat_template.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "model/gguf_writer.h"
#include "model/hf_writer.h"
#include "model/model_files.h"
#include "model/random_shapes.h"
#include "model/test_data.h"

namespace kvferry::openai {
namespace {

namespace json = boost::json;

// 2026-12-04T09:30:00Z, the goldens' strftime_now time.
const std::chrono::system_clock::time_point kNow =
    std::chrono::system_clock::from_time_t(1796376600);

std::string dataPath(const std::string& relative) {
  return std::string(KVFERRY_SOURCE_DIR) + "/tests/data/" + relative;
}

// A vocabulary whose special tokens have these texts (absent when empty).
model::Vocabulary vocabularyWith(const std::string& bos, const std::string& eos) {
  model::Vocabulary v;
  v.model = "gpt2";
  const auto add = [&](const std::string& text) {
    v.tokens.push_back(text);
    v.types.push_back(model::TokenType::kControl);
    v.scores.push_back(0);
    return static_cast<model::TokenId>(v.tokens.size() - 1);
  };
  if (!bos.empty()) v.bos_id = add(bos);
  if (!eos.empty()) v.eos_id = add(eos);
  return v;
}

ChatTemplate compile(std::string_view source, const model::Vocabulary& vocab) {
  Result<ChatTemplate> t = ChatTemplate::create(source, vocab);
  EXPECT_TRUE(t.isOk()) << t.status().toString();
  return t.isOk() ? *t : ChatTemplate();
}

const std::vector<ChatMessage> kConversation = {
    {"system", "You are terse."},
    {"user", "Hi!"},
    {"assistant", "Hello."},
    {"user", "Tell a story."},
};

TEST(ChatTemplateTest, PlainJoinsContentsSystemFirst) {
  const ChatTemplate plain;
  const auto render = [&](const std::vector<ChatMessage>& messages) {
    return *plain.apply(messages, kNow);
  };
  EXPECT_EQ(render({{"user", "Once upon a time"}}), "Once upon a time");
  EXPECT_EQ(render({{"user", "A"}, {"system", "S"}, {"assistant", ""}, {"user", "B"}}),
            "S\n\nA\n\nB");
  EXPECT_EQ(render(kConversation), "You are terse.\n\nHi!\n\nHello.\n\nTell a story.");
  EXPECT_TRUE(plain.isPlain());
  EXPECT_FALSE(plain.parseSpecial());
  model::Vocabulary vocab = vocabularyWith("<s>", "</s>");
  vocab.add_bos = true;
  EXPECT_TRUE(plain.addBos(vocab));
  EXPECT_TRUE(compile("", vocab).isPlain());  // no template: plain
}

// The goldens: real templates rendered by Hugging Face's @huggingface/jinja
// (scripts/chat_template_goldens/), each case exactly.
TEST(ChatTemplateTest, RendersRealTemplatesExactlyAsHuggingFace) {
  const json::value goldens =
      json::parse(model::testing::readFileText(dataPath("chat_templates/goldens.json")));
  std::map<std::string, ChatTemplate> templates;
  for (const json::value& t : goldens.at("templates").as_array()) {
    const std::string source_path = dataPath(std::string(t.at("source").as_string()));
    std::string source = model::testing::readFileText(source_path);
    if (source_path.ends_with(".json")) {
      source = std::string(json::parse(source).at("chat_template").as_string());
    }
    const auto text = [&](std::string_view key) {
      return t.at(key).is_null() ? std::string() : std::string(t.at(key).as_string());
    };
    const model::Vocabulary vocab = vocabularyWith(text("bos_token"), text("eos_token"));
    templates.emplace(std::string(t.at("name").as_string()), compile(source, vocab));
  }
  size_t exact = 0, cases = 0, tools = 0;
  for (const json::value& c : goldens.at("cases").as_array()) {
    const std::string label = std::string(c.at("template").as_string()) + " / " +
                              std::string(c.at("conversation").as_string());
    SCOPED_TRACE(label);
    std::vector<ChatMessage> messages;
    for (const json::value& m : c.at("messages").as_array()) {
      const json::object& o = m.as_object();
      ChatMessage message{std::string(o.at("role").as_string()),
                          std::string(o.at("content").as_string())};
      if (const json::value* calls = o.if_contains("tool_calls")) {
        message.tool_calls_json = json::serialize(*calls);
      }
      if (const json::value* id = o.if_contains("tool_call_id")) {
        message.tool_call_id = id->as_string();
      }
      if (const json::value* name = o.if_contains("name")) message.name = name->as_string();
      messages.push_back(std::move(message));
    }
    const json::object& o = c.as_object();
    const std::string tools_json = o.contains("tools") ? json::serialize(o.at("tools")) : "";
    const std::string extra_json = o.contains("extra") ? json::serialize(o.at("extra")) : "";
    ChatTemplateInput input;
    input.messages = messages;
    input.tools_json = tools_json;
    input.extra_json = extra_json;
    input.add_generation_prompt = c.at("add_generation_prompt").as_bool();
    input.now = kNow;
    const Result<std::string> rendered =
        templates.at(std::string(c.at("template").as_string())).render(input);
    ++cases;
    tools += tools_json.empty() ? 0 : 1;
    if (const json::value* error = o.if_contains("error")) {
      ASSERT_FALSE(rendered.isOk()) << *rendered;
      EXPECT_EQ(rendered.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(rendered.status().message().find(std::string(error->as_string())),
                std::string::npos)
          << rendered.status().message();
      ++exact;
      continue;
    }
    ASSERT_TRUE(rendered.isOk()) << rendered.status().toString();
    EXPECT_EQ(*rendered, std::string(c.at("output").as_string()));
    exact += *rendered == c.at("output").as_string() ? 1 : 0;
  }
  EXPECT_EQ(templates.size(), 7u);
  EXPECT_EQ(cases, 70u);
  std::printf("chat templates: %zu of %zu cases exact (%zu with tools), against %s\n", exact, cases,
              tools, std::string(goldens.at("renderer").as_string()).c_str());
}

TEST(ChatTemplateTest, BadTemplatesAndBadInputAreInvalidArgument) {
  const model::Vocabulary vocab = vocabularyWith("<s>", "</s>");
  Result<ChatTemplate> broken = ChatTemplate::create("{% for m in messages %}{{ m.role }", vocab);
  ASSERT_FALSE(broken.isOk());
  EXPECT_EQ(broken.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(broken.status().message().find("the chat template does not parse"), std::string::npos)
      << broken.status().message();

  const ChatTemplate raising = compile(
      "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}"
      "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
      vocab);
  Result<std::string> refused = raising.apply(std::vector<ChatMessage>{{"system", "s"}}, kNow);
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("first must be user"), std::string::npos);
  EXPECT_EQ(*raising.apply(std::vector<ChatMessage>{{"user", "a"}, {"assistant", "b"}}, kNow),
            "<s>ab");
  EXPECT_FALSE(raising.addBos(vocab));  // the template writes it
  EXPECT_TRUE(raising.parseSpecial());

  ChatTemplateInput input;
  const std::vector<ChatMessage> messages = {{"user", "a"}};
  input.messages = messages;
  input.tools_json = "[{";
  EXPECT_EQ(raising.render(input).status().message(), "tools is not valid JSON");
  input.tools_json = "{}";
  EXPECT_EQ(raising.render(input).status().message(), "tools is not an array");
  input.tools_json = "";
  input.extra_json = "[]";
  EXPECT_EQ(raising.render(input).status().message(), "chat template arguments are not an object");
  std::vector<ChatMessage> bad_call = {{"assistant", ""}};
  bad_call[0].tool_calls_json = "{\"a\": 1}";
  input.messages = bad_call;
  input.extra_json = "";
  EXPECT_EQ(raising.render(input).status().message(), "messages[0].tool_calls is not an array");
}

TEST(ChatTemplateTest, StrftimeNowFormatsTheTimeGivenInUtc) {
  const ChatTemplate t =
      compile("{{ strftime_now('%Y-%m-%d %H:%M') }}|{{ strftime_now('%d %b %Y') }}",
              vocabularyWith("", ""));
  EXPECT_EQ(*t.apply(std::vector<ChatMessage>{{"user", "x"}}, kNow),
            "2026-12-04 09:30|04 Dec 2026");
}

// A small SPM vocabulary with ChatML markers as control tokens.
std::unique_ptr<model::Tokenizer> chatMlTokenizer() {
  model::Vocabulary v;
  v.model = "llama";
  v.tokens = {"<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "\xe2\x96\x81", "a", "b"};
  v.scores.assign(v.tokens.size(), 0.0f);
  v.types.assign(v.tokens.size(), model::TokenType::kNormal);
  v.types[0] = model::TokenType::kUnknown;
  for (int id : {1, 2, 3, 4}) v.types[id] = model::TokenType::kControl;
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  v.add_bos = true;
  v.add_space_prefix = true;
  Result<std::unique_ptr<model::Tokenizer>> tokenizer = model::makeTokenizer(std::move(v));
  EXPECT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
  return tokenizer.isOk() ? std::move(tokenizer).value() : nullptr;
}

constexpr std::string_view kChatMl =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

TEST(ChatTemplateTest, StopTokens) {
  const std::unique_ptr<model::Tokenizer> chatml = chatMlTokenizer();
  ASSERT_NE(chatml, nullptr);
  const ChatTemplate t = compile(kChatMl, chatml->vocabulary());
  EXPECT_EQ(t.stopTokens(*chatml), (std::vector<model::TokenId>{2, 4}));
  EXPECT_EQ(t.stopTokens(*chatml, std::vector<model::TokenId>{6, 2}),
            (std::vector<model::TokenId>{2, 6, 4}));
  EXPECT_EQ(ChatTemplate().stopTokens(*chatml), (std::vector<model::TokenId>{2}));
  // A template that never writes <|im_end|>: EOS only.
  EXPECT_EQ(compile("{{ messages[0].content }}", chatml->vocabulary()).stopTokens(*chatml),
            (std::vector<model::TokenId>{2}));

  // The markers are control tokens: only parse_special turns them into single ids.
  Result<std::string> text = t.apply(std::vector<ChatMessage>{{"user", "ab"}}, kNow);
  ASSERT_TRUE(text.isOk());
  EXPECT_EQ(*text, "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n");
  model::EncodeOptions options;
  options.add_bos = t.addBos(chatml->vocabulary());
  options.parse_special = t.parseSpecial();
  Result<std::vector<model::TokenId>> ids = chatml->encode(*text, options);
  ASSERT_TRUE(ids.isOk()) << ids.status().toString();
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 3), 2);  // <|im_start|> twice
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 4), 1);  // <|im_end|> once
  EXPECT_NE(ids->front(), 1);                             // no BOS added
}

TEST(ChatTemplateTest, FromTheModelWhateverItsFormat) {
  // The demo model has no template.
  Result<model::ModelFiles> stories = model::ModelFiles::open(model::testing::storiesPath());
  ASSERT_TRUE(stories.isOk()) << stories.status().toString();
  EXPECT_TRUE(ChatTemplate::fromModel(*stories)->isPlain());

  // A GGUF and a Hugging Face directory of one model: the same template, the same rendering.
  model::RandomLlamaSpec spec = model::findRandomModelShape("test-qwen2")->spec;
  spec.chat_template = kChatMl;
  const std::string gguf = model::testing::tempPath("qwen2.gguf");
  const std::string dir = model::testing::tempPath("qwen2-hf");
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(model::writeRandomLlamaModel(gguf, spec, 1).isOk());
  ASSERT_TRUE(model::writeRandomHfModel(dir, spec, 1).isOk());
  std::vector<std::string> rendered;
  for (const std::string& path : {gguf, dir}) {
    Result<model::ModelFiles> files = model::ModelFiles::open(path);
    ASSERT_TRUE(files.isOk()) << files.status().toString();
    Result<ChatTemplate> t = ChatTemplate::fromModel(*files);
    ASSERT_TRUE(t.isOk()) << t.status().toString();
    rendered.push_back(*t->apply(kConversation, kNow));
  }
  EXPECT_EQ(rendered[0], rendered[1]);
  EXPECT_EQ(rendered[0].substr(0, 26), "<|im_start|>system\nYou are");

  // A directory's chat_template.jinja wins over tokenizer_config.json's.
  {
    std::ofstream out(dir + "/chat_template.jinja");
    out << "{{ messages | length }} messages";
  }
  Result<model::ModelFiles> files = model::ModelFiles::open(dir);
  ASSERT_TRUE(files.isOk());
  EXPECT_EQ(*ChatTemplate::fromModel(*files)->apply(kConversation, kNow), "4 messages");
}

}  // namespace
}  // namespace kvferry::openai
