#include "orchestrator/openai/chat_template.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "model/gguf_writer.h"
#include "model/test_data.h"

namespace kvferry::openai {
namespace {

using Family = ChatTemplate::Family;

ChatTemplate byName(std::string_view name) {
  Result<ChatTemplate> t = ChatTemplate::named(name);
  EXPECT_TRUE(t.isOk()) << t.status().toString();
  return t.isOk() ? *t : ChatTemplate();
}

std::string render(std::string_view name, const std::vector<ChatMessage>& messages) {
  Result<std::string> text = byName(name).apply(messages);
  EXPECT_TRUE(text.isOk()) << text.status().toString();
  return text.isOk() ? *text : "";
}

const std::vector<ChatMessage> kConversation = {
    {"system", "You are terse."},
    {"user", "Hi!"},
    {"assistant", "Hello."},
    {"user", "Tell a story."},
};

TEST(ChatTemplateTest, PlainJoinsContentsSystemFirst) {
  EXPECT_EQ(render("plain", {{"user", "Once upon a time"}}), "Once upon a time");
  EXPECT_EQ(render("plain", {{"user", "A"}, {"system", "S"}, {"assistant", ""}, {"user", "B"}}),
            "S\n\nA\n\nB");
  EXPECT_EQ(render("plain", kConversation), "You are terse.\n\nHi!\n\nHello.\n\nTell a story.");
  EXPECT_FALSE(ChatTemplate().parseSpecial());
  EXPECT_EQ(ChatTemplate().name(), "plain");
}

TEST(ChatTemplateTest, ChatMl) {
  EXPECT_EQ(render("chatml", kConversation),
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nHi!<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n"
            "<|im_start|>user\nTell a story.<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, Llama3TrimsContentAndLeavesBosToTheTokenizer) {
  EXPECT_EQ(render("llama3", {{"system", " be nice \n"}, {"user", "Hi"}}),
            "<|start_header_id|>system<|end_header_id|>\n\nbe nice<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, Llama2) {
  EXPECT_EQ(render("llama2", kConversation),
            "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST] Hello. </s>"
            "<s>[INST] Tell a story. [/INST]");
  EXPECT_EQ(render("llama2", {{"user", "  Hi  "}}), "[INST] Hi [/INST]");
  EXPECT_EQ(render("llama2", {{"user", "a"}, {"assistant", " b "}, {"user", "c"}}),
            "[INST] a [/INST] b </s><s>[INST] c [/INST]");
}

TEST(ChatTemplateTest, Mistral) {
  EXPECT_EQ(render("mistral", {{"user", "a"}, {"assistant", "b"}, {"user", "c"}}),
            "[INST] a [/INST]b</s>[INST] c [/INST]");
  EXPECT_EQ(render("mistral", {{"system", "S"}, {"user", "a"}}), "[INST] S\n\na [/INST]");
}

TEST(ChatTemplateTest, AlternationIsEnforcedWhereTheReferenceRaises) {
  for (std::string_view name : {"llama2", "mistral"}) {
    for (const std::vector<ChatMessage>& bad : std::vector<std::vector<ChatMessage>>{
             {{"assistant", "a"}},
             {{"user", "a"}, {"user", "b"}},
             {{"system", "s"}, {"assistant", "a"}},
             {{"user", "a"}, {"system", "s"}},
         }) {
      Result<std::string> text = byName(name).apply(bad);
      ASSERT_FALSE(text.isOk()) << name;
      EXPECT_EQ(text.status().code(), StatusCode::kInvalidArgument);
    }
  }
  // Other families render any order.
  EXPECT_TRUE(byName("chatml")
                  .apply(std::vector<ChatMessage>{{"assistant", "a"}, {"assistant", "b"}})
                  .isOk());
}

TEST(ChatTemplateTest, ZephyrAndPhi3) {
  EXPECT_EQ(render("zephyr", {{"system", "S"}, {"user", "Hi"}}),
            "<|system|>\nS</s>\n<|user|>\nHi</s>\n<|assistant|>\n");
  EXPECT_EQ(render("phi3", {{"user", "Hi"}, {"assistant", "Yo"}, {"user", "Go"}}),
            "<|user|>\nHi<|end|>\n<|assistant|>\nYo<|end|>\n<|user|>\nGo<|end|>\n<|assistant|>\n");
}

TEST(ChatTemplateTest, UnknownRoleIsAnError) {
  Result<std::string> text = byName("chatml").apply(std::vector<ChatMessage>{{"tool", "x"}});
  ASSERT_FALSE(text.isOk());
  EXPECT_NE(text.status().message().find("messages[0].role 'tool'"), std::string::npos);
}

TEST(ChatTemplateTest, DetectsFamiliesFromJinjaSources) {
  // Abridged from the templates the families ship with.
  const std::vector<std::pair<std::string, Family>> cases = {
      {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
       "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
       "{{ '<|im_start|>assistant\\n' }}{% endif %}",
       Family::kChatMl},
      {"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
       "message['content'] | trim + '<|eot_id|>' %}",
       Family::kLlama3},
      {"{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + "
       "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% endif %}"
       "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}",
       Family::kLlama2},
      {"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
       "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% endfor %}",
       Family::kMistral},
      {"{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + eos_token }}"
       "\n{% endif %}",
       Family::kZephyr},
      {"{{'<|user|>' + '\\n' + message['content'] + '<|end|>' + '\\n'}}", Family::kPhi3},
      {"{{ messages[0]['content'] }}", Family::kPlain},
      {"", Family::kPlain},
  };
  for (const auto& [source, family] : cases) {
    const ChatTemplate t = ChatTemplate::detect(source);
    EXPECT_EQ(t.family(), family) << source;
    EXPECT_EQ(t.parseSpecial(), family != Family::kPlain) << source;
  }
}

TEST(ChatTemplateTest, NamedRoundTripsAndRefusesUnknownNames) {
  for (std::string_view name :
       {"plain", "chatml", "llama3", "llama2", "mistral", "zephyr", "phi3"}) {
    EXPECT_EQ(byName(name).name(), name);
  }
  Result<ChatTemplate> unknown = ChatTemplate::named("jinja");
  ASSERT_FALSE(unknown.isOk());
  EXPECT_NE(unknown.status().message().find("known: plain, chatml"), std::string::npos)
      << unknown.status().message();
}

TEST(ChatTemplateTest, FromGguf) {
  // The demo model has no template.
  Result<model::GgufFile> stories = model::GgufFile::open(model::testing::storiesPath());
  ASSERT_TRUE(stories.isOk()) << stories.status().toString();
  EXPECT_EQ(ChatTemplate::fromGguf(*stories).family(), Family::kPlain);

  model::GgufWriter writer;
  writer.add("general.architecture", "llama");
  writer.add("tokenizer.chat_template",
             "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n'}}{% endfor %}");
  Result<std::vector<uint8_t>> bytes = writer.serialize();
  ASSERT_TRUE(bytes.isOk()) << bytes.status().toString();
  Result<model::GgufFile> file = model::GgufFile::parse(*bytes);
  ASSERT_TRUE(file.isOk()) << file.status().toString();
  EXPECT_EQ(ChatTemplate::fromGguf(*file).family(), Family::kChatMl);

  model::GgufWriter wrong_type;
  wrong_type.add("tokenizer.chat_template", uint32_t{7});
  Result<std::vector<uint8_t>> wrong_bytes = wrong_type.serialize();
  ASSERT_TRUE(wrong_bytes.isOk());
  Result<model::GgufFile> wrong_file = model::GgufFile::parse(*wrong_bytes);
  ASSERT_TRUE(wrong_file.isOk());
  EXPECT_EQ(ChatTemplate::fromGguf(*wrong_file).family(), Family::kPlain);
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

TEST(ChatTemplateTest, StopTokens) {
  const std::unique_ptr<model::Tokenizer> chatml = chatMlTokenizer();
  ASSERT_NE(chatml, nullptr);
  EXPECT_EQ(byName("chatml").stopTokens(*chatml), (std::vector<model::TokenId>{2, 4}));
  EXPECT_EQ(byName("plain").stopTokens(*chatml), (std::vector<model::TokenId>{2}));
  // The vocabulary lacks <|eot_id|>: EOS only.
  EXPECT_EQ(byName("llama3").stopTokens(*chatml), (std::vector<model::TokenId>{2}));

  // The markers are control tokens: only parse_special turns them into single ids.
  Result<std::string> text = byName("chatml").apply(std::vector<ChatMessage>{{"user", "ab"}});
  ASSERT_TRUE(text.isOk());
  model::EncodeOptions options;
  options.add_bos = chatml->vocabulary().add_bos;
  options.parse_special = true;
  Result<std::vector<model::TokenId>> ids = chatml->encode(*text, options);
  ASSERT_TRUE(ids.isOk()) << ids.status().toString();
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 3), 2);  // <|im_start|> twice
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 4), 1);  // <|im_end|> once
  EXPECT_EQ(ids->front(), 1);
}

}  // namespace
}  // namespace kvferry::openai
