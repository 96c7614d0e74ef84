#include "orchestrator/openai/detokenizer.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "orchestrator/openai/stories_tokenizer_test.h"
#include "model/gguf.h"
#include "model/test_data.h"
#include "model/tokenizer.h"
#include "model/tokenizer_files.h"

namespace kvferry::openai {
namespace {

using model::TokenId;

constexpr std::string_view kReplacement = "\xef\xbf\xbd";

class DetokenizerTest : public testing::StoriesTokenizerTest {
 protected:
  static std::string decode(const std::vector<TokenId>& ids) {
    Result<std::string> text = tok().decode(ids);
    EXPECT_TRUE(text.isOk()) << text.status().toString();
    return text.isOk() ? *text : "";
  }
  static TokenId byteToken(uint8_t byte) {
    const auto& tokens = tok().vocabulary().tokens;
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", byte);
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] == name) return static_cast<TokenId>(i);
    }
    ADD_FAILURE() << "no token " << name;
    return 0;
  }

  // Everything the detokenizer returns for `generated` after `prompt`, flush included; every
  // returned piece must be valid UTF-8.
  static std::string streamed(const std::vector<TokenId>& prompt,
                              const std::vector<TokenId>& generated) {
    IncrementalDetokenizer detok(tok(), prompt);
    std::string out;
    for (TokenId id : generated) {
      Result<std::string> piece = detok.feed(id);
      EXPECT_TRUE(piece.isOk()) << piece.status().toString();
      if (!piece.isOk()) continue;
      EXPECT_TRUE(model::checkUtf8(*piece).isOk()) << "piece for id " << id;
      out += *piece;
    }
    const std::string tail = detok.flush();
    EXPECT_TRUE(model::checkUtf8(tail).isOk());
    return out + tail;
  }

  // decode(prompt + generated) minus decode(prompt).
  static std::string addedText(const std::vector<TokenId>& prompt,
                               const std::vector<TokenId>& generated) {
    std::vector<TokenId> all = prompt;
    all.insert(all.end(), generated.begin(), generated.end());
    const std::string before = decode(prompt);
    const std::string after = decode(all);
    EXPECT_EQ(after.substr(0, before.size()), before);
    return after.substr(before.size());
  }
};
TEST(SanitizeUtf8Test, ReplacesMaximalSubparts) {
  EXPECT_EQ(sanitizeUtf8("plain ascii"), "plain ascii");
  EXPECT_EQ(sanitizeUtf8("caf\xc3\xa9 \xf0\x9f\x99\x82"), "caf\xc3\xa9 \xf0\x9f\x99\x82");
  EXPECT_EQ(sanitizeUtf8("a\xc3"), "a" + std::string(kReplacement));  // cut off at the end
  EXPECT_EQ(sanitizeUtf8("\xe2\x82"
                         "a"),
            std::string(kReplacement) + "a");  // one U+FFFD for two
  EXPECT_EQ(sanitizeUtf8("\xf0\x9f\x99"), std::string(kReplacement));
  EXPECT_EQ(sanitizeUtf8("\xff"), std::string(kReplacement));
  EXPECT_EQ(sanitizeUtf8("\x80\x80"), std::string(kReplacement) + std::string(kReplacement));
  // Overlong, surrogate: the lead alone is the maximal subpart, then each stray continuation.
  EXPECT_EQ(sanitizeUtf8("\xc0\xaf"), std::string(kReplacement) + std::string(kReplacement));
  std::string three;
  for (int i = 0; i < 3; ++i) three += kReplacement;
  EXPECT_EQ(sanitizeUtf8("\xed\xa0\x80"), three);
}

TEST_F(DetokenizerTest, FirstGeneratedTokenKeepsItsSpaceAfterATextPrompt) {
  const std::vector<TokenId>& golden = model::testing::kOnceGolden;
  const std::vector<TokenId> prompt(golden.begin(), golden.begin() + 5);  // BOS + 4 prompt ids
  const std::vector<TokenId> generated(golden.begin() + 5, golden.end());
  EXPECT_EQ(decode(prompt), "Once upon a time");
  const std::string text = streamed(prompt, generated);
  EXPECT_EQ(text, addedText(prompt, generated));
  EXPECT_EQ(text.rfind(", there was a little girl named Lily.", 0), 0u) << text;
  EXPECT_EQ(decode(golden), "Once upon a time" + text);

  // A word token right after the prompt keeps its "▁" as a space.
  const std::vector<TokenId> word = encode("Once", /*add_bos=*/false);
  ASSERT_EQ(word.size(), 1u);
  EXPECT_EQ(streamed(prompt, word), " Once");
}

TEST_F(DetokenizerTest, SpaceIsDroppedWhenThePromptHasNoText) {
  const std::vector<TokenId> bos = {tok().vocabulary().bos_id};
  const std::vector<TokenId> text = encode("Once upon a time", /*add_bos=*/false);
  EXPECT_EQ(streamed(bos, text), "Once upon a time");
  EXPECT_EQ(streamed({}, text), "Once upon a time");
  // Control tokens in the prompt carry no text either.
  EXPECT_EQ(streamed({bos[0], tok().vocabulary().eos_id}, text), "Once upon a time");
  // ... and only the first text-bearing generated token loses its space.
  std::vector<TokenId> generated = {tok().vocabulary().eos_id};
  generated.insert(generated.end(), text.begin(), text.end());
  EXPECT_EQ(streamed(bos, generated), "Once upon a time");
}

TEST_F(DetokenizerTest, HoldsBackSplitCharacters) {
  const std::vector<TokenId> prompt = encode("Hi", /*add_bos=*/true);
  IncrementalDetokenizer detok(tok(), prompt);
  // U+1F642 "🙂" = F0 9F 99 82, one byte token each.
  const std::string smile = "\xf0\x9f\x99\x82";
  for (size_t i = 0; i + 1 < smile.size(); ++i) {
    Result<std::string> piece = detok.feed(byteToken(static_cast<uint8_t>(smile[i])));
    ASSERT_TRUE(piece.isOk());
    EXPECT_EQ(*piece, "");
    EXPECT_EQ(detok.pendingBytes(), i + 1);
  }
  Result<std::string> last = detok.feed(byteToken(static_cast<uint8_t>(smile.back())));
  ASSERT_TRUE(last.isOk());
  EXPECT_EQ(*last, smile);
  EXPECT_EQ(detok.pendingBytes(), 0u);

  // A character cut off by the end becomes U+FFFD at flush.
  ASSERT_TRUE(detok.feed(byteToken(0xc3)).isOk());
  EXPECT_EQ(detok.flush(), kReplacement);
  EXPECT_EQ(detok.flush(), "");

  // A byte that cannot continue the pending character: U+FFFD at once, then the text.
  ASSERT_TRUE(detok.feed(byteToken(0xe2)).isOk());
  const TokenId word = encode("a", /*add_bos=*/false).back();
  Result<std::string> broken = detok.feed(word);
  ASSERT_TRUE(broken.isOk());
  EXPECT_EQ(*broken, std::string(kReplacement) + *tok().piece(word));
}

TEST_F(DetokenizerTest, RejectsIdsOutsideTheVocabularyWithoutLosingState) {
  IncrementalDetokenizer detok(tok(), encode("Hi", true));
  ASSERT_TRUE(detok.feed(byteToken(0xc3)).isOk());
  EXPECT_FALSE(detok.feed(512).isOk());
  EXPECT_FALSE(detok.feed(-1).isOk());
  EXPECT_EQ(detok.pendingBytes(), 1u);
  Result<std::string> rest = detok.feed(byteToken(0xa9));
  ASSERT_TRUE(rest.isOk());
  EXPECT_EQ(*rest, "\xc3\xa9");
}

TEST_F(DetokenizerTest, ControlTokensAddNothing) {
  IncrementalDetokenizer detok(tok(), encode("Hi", true));
  for (TokenId id :
       {tok().vocabulary().bos_id, tok().vocabulary().eos_id, tok().vocabulary().unk_id}) {
    Result<std::string> piece = detok.feed(id);
    ASSERT_TRUE(piece.isOk());
    EXPECT_EQ(*piece, "");
  }
}

// Text with multi-byte characters the 512-token vocabulary lacks, so they encode as byte tokens.
TEST_F(DetokenizerTest, ValidTextRoundTripsThroughByteTokens) {
  const std::vector<std::string> pieces = {
      "the", " cat", " ",     "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x99\x82",
      ".",   "\n",   " Lily", "\xce\xbb", "  ",           "ball"};
  std::mt19937_64 rng(7);
  const std::vector<TokenId> text_prompt = encode("Once upon a time", true);
  const std::vector<TokenId> bos_prompt = {tok().vocabulary().bos_id};
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    const size_t count = 1 + rng() % 12;
    for (size_t i = 0; i < count; ++i) text += pieces[rng() % pieces.size()];
    const std::vector<TokenId> ids = encode(text, /*add_bos=*/false);
    ASSERT_TRUE(model::checkUtf8(text).isOk());
    // After a text prompt the dummy-prefix space is part of the generated text.
    EXPECT_EQ(streamed(text_prompt, ids), " " + text) << "trial " << trial;
    EXPECT_EQ(streamed(text_prompt, ids), addedText(text_prompt, ids));
    EXPECT_EQ(streamed(bos_prompt, ids), text) << "trial " << trial;
    EXPECT_EQ(streamed(bos_prompt, ids), addedText(bos_prompt, ids));
  }
}

// Random ids, byte tokens of every kind included: the stream equals the decoded text, with
// ill-formed bytes replaced exactly as sanitizeUtf8 replaces them in the whole text.
TEST_F(DetokenizerTest, RandomSequencesMatchDecode) {
  std::mt19937_64 rng(20240611);
  const auto vocab_size = static_cast<TokenId>(tok().vocabulary().tokens.size());
  const std::vector<std::vector<TokenId>> prompts = {
      {}, {tok().vocabulary().bos_id}, encode("Once upon a time", true), encode("Zoo", true)};
  int valid_cases = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    const std::vector<TokenId>& prompt = prompts[trial % prompts.size()];
    std::vector<TokenId> generated(1 + rng() % 40);
    for (TokenId& id : generated) {
      switch (rng() % 4) {
        case 0:  // any token
          id = static_cast<TokenId>(rng() % vocab_size);
          break;
        case 1:  // a lead or continuation byte
          id = byteToken(static_cast<uint8_t>(0x80 + rng() % 0x78));
          break;
        case 2:  // ASCII byte
          id = byteToken(static_cast<uint8_t>(rng() % 0x80));
          break;
        default:  // an ordinary piece of text
          id = static_cast<TokenId>(259 + rng() % (vocab_size - 259));
          break;
      }
    }
    const std::string expected = addedText(prompt, generated);
    if (model::checkUtf8(expected).isOk()) ++valid_cases;
    ASSERT_EQ(streamed(prompt, generated), sanitizeUtf8(expected)) << "trial " << trial;
  }
  EXPECT_GT(valid_cases, 100);  // both kinds of case were exercised
}

// Byte-level BPE (the Llama 3 tokenizer.json): tokens carry raw bytes, so CJK and emoji split
// across tokens mid-character; the stream holds them back and releases exactly the text.
TEST(BpeDetokenizerTest, StreamsTextSplitAcrossTokensExactly) {
  Result<std::unique_ptr<model::Tokenizer>> tokenizer =
      model::loadTokenizer(model::testing::tokenizerDataPath("llama3"));
  ASSERT_TRUE(tokenizer.isOk()) << tokenizer.status().toString();
  const model::Tokenizer& tok = **tokenizer;
  const std::string text = " Hello 🦙 世界! 👨‍👩‍👧 naïve ԱԲԳ ꯍꯤ 𝐀𝐁";
  Result<std::vector<TokenId>> prompt = tok.encode("Say:", {.add_bos = false});
  Result<std::vector<TokenId>> ids = tok.encode(text, {.add_bos = false});
  ASSERT_TRUE(prompt.isOk() && ids.isOk());
  IncrementalDetokenizer detok(tok, *prompt);
  std::string streamed;
  bool held = false;
  for (TokenId id : *ids) {
    Result<std::string> piece = detok.feed(id);
    ASSERT_TRUE(piece.isOk()) << piece.status().toString();
    EXPECT_TRUE(model::checkUtf8(*piece).isOk()) << "a chunk of invalid UTF-8 after id " << id;
    held |= detok.pendingBytes() > 0;
    streamed += *piece;
  }
  streamed += detok.flush();
  EXPECT_TRUE(held) << "no character was split across tokens: the test proves nothing";
  EXPECT_EQ(streamed, text);  // BPE has no dummy-prefix space: the leading space stays
  // Control tokens (<|eot_id|>) add nothing.
  Result<std::string> eot = detok.feed(128009);
  ASSERT_TRUE(eot.isOk());
  EXPECT_EQ(*eot, "");
}

TEST(StopMatcherTest, NoStopsPassesTextThrough) {
  StopMatcher matcher({});
  EXPECT_EQ(matcher.feed("abc").text, "abc");
  EXPECT_FALSE(matcher.feed("").stopped);
  EXPECT_EQ(matcher.flush(), "");
  StopMatcher empty_only({"", ""});
  EXPECT_EQ(empty_only.feed("abc").text, "abc");
}

TEST(StopMatcherTest, StopInsideOneChunk) {
  StopMatcher matcher({"wor"});
  const StopMatcher::Output out = matcher.feed("Hello world");
  EXPECT_EQ(out.text, "Hello ");
  EXPECT_TRUE(out.stopped);
  EXPECT_TRUE(matcher.stopped());
  // Everything later is swallowed.
  EXPECT_EQ(matcher.feed("more").text, "");
  EXPECT_TRUE(matcher.feed("more").stopped);
  EXPECT_EQ(matcher.flush(), "");
}

TEST(StopMatcherTest, StopAcrossTokenBoundaries) {
  StopMatcher matcher({"wor"});
  EXPECT_EQ(matcher.feed("Hel").text, "Hel");
  StopMatcher::Output out = matcher.feed("lo w");
  EXPECT_EQ(out.text, "lo ");
  EXPECT_EQ(matcher.heldBytes(), 1u);
  out = matcher.feed("o");
  EXPECT_EQ(out.text, "");
  EXPECT_EQ(matcher.heldBytes(), 2u);
  out = matcher.feed("rld");
  EXPECT_EQ(out.text, "");
  EXPECT_TRUE(out.stopped);
}

TEST(StopMatcherTest, HeldTextIsReleasedWhenRuledOut) {
  StopMatcher matcher({"abc"});
  EXPECT_EQ(matcher.feed("xab").text, "x");
  EXPECT_EQ(matcher.feed("d").text, "abd");
  EXPECT_EQ(matcher.feed("ab").text, "");
  EXPECT_EQ(matcher.flush(), "ab");  // the end of generation releases the held prefix
}

TEST(StopMatcherTest, OverlappingPrefixes) {
  StopMatcher matcher({"aab"});
  std::string out;
  for (char c : std::string("aaab")) {
    const StopMatcher::Output o = matcher.feed(std::string(1, c));
    out += o.text;
    if (o.stopped) break;
  }
  EXPECT_EQ(out, "a");
  EXPECT_TRUE(matcher.stopped());
}

TEST(StopMatcherTest, MultipleStopsFirstToAppearWins) {
  StopMatcher matcher({"END", "\n\n"});
  const StopMatcher::Output out = matcher.feed("foo\nbar\n\nEND");
  EXPECT_EQ(out.text, "foo\nbar");
  EXPECT_TRUE(out.stopped);

  // "bc" is complete before "abcd" could be: generation stops at "bc".
  StopMatcher nested({"abcd", "bc"});
  EXPECT_EQ(nested.feed("xabcd").text, "xa");
  // Both end at the same byte: the longer (earlier-starting) one is cut.
  StopMatcher same_end({"c", "abc"});
  EXPECT_EQ(same_end.feed("xabc").text, "x");
}

TEST(StopMatcherTest, MultiByteStopStrings) {
  StopMatcher matcher({"\xc3\xa9t\xc3\xa9"});  // "été"
  std::string out;
  for (std::string_view piece : {"l'\xc3", "\xa9", "t\xc3\xa9 "}) {
    // Pieces here are bytes as a tokenizer could cut them; held text never splits output.
    out += matcher.feed(piece).text;
  }
  EXPECT_EQ(out, "l'");
  EXPECT_TRUE(matcher.stopped());
}

// Whatever the chunking, the matcher releases the text up to the first place any stop string
// ends: the same as a reference search over the whole text.
TEST(StopMatcherTest, ChunkingDoesNotChangeTheResult) {
  std::mt19937_64 rng(99);
  const std::string alphabet = "ab\n";
  const auto randomString = [&](size_t max_length) {
    std::string s(1 + rng() % max_length, ' ');
    for (char& c : s) c = alphabet[rng() % alphabet.size()];
    return s;
  };
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stops;
    for (size_t i = 0, n = 1 + rng() % 4; i < n; ++i) stops.push_back(randomString(4));
    const std::string text = randomString(30);

    // Reference: the first end position at which some stop string is a suffix.
    std::string expected = text;
    bool expect_stop = false;
    for (size_t end = 1; end <= text.size() && !expect_stop; ++end) {
      size_t longest = 0;
      for (const std::string& stop : stops) {
        if (stop.size() <= end && text.compare(end - stop.size(), stop.size(), stop) == 0) {
          longest = std::max(longest, stop.size());
        }
      }
      if (longest > 0) {
        expected = text.substr(0, end - longest);
        expect_stop = true;
      }
    }

    StopMatcher matcher(stops);
    std::string out;
    bool stopped = false;
    for (size_t at = 0; at < text.size() && !stopped;) {
      const size_t length = std::min<size_t>(1 + rng() % 6, text.size() - at);
      const StopMatcher::Output o = matcher.feed(std::string_view(text).substr(at, length));
      out += o.text;
      stopped = o.stopped;
      at += length;
    }
    if (!stopped) out += matcher.flush();
    ASSERT_EQ(stopped, expect_stop) << "trial " << trial;
    ASSERT_EQ(out, expected) << "trial " << trial;
  }
}

}  // namespace
}  // namespace kvferry::openai
