// Control-plane messages survive encode → decode, and a malformed body names the bad field.
#include "common/control_wire.h"

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <limits>
#include <optional>

namespace kvferry::wire {
namespace {

TEST(ControlWire, RoundTripsEveryField) {
  HeartbeatRequest hb;
  hb.node_id = 7;
  hb.node_token = 0xfedcba9876543210ULL;
  hb.load.queued_prefill_tokens = 123;
  hb.load.free_kv_blocks = 9;
  hb.load.kv_sequence = 0x123456789ULL;
  hb.kv_events.push_back({3, {1, 0xffffffffffffffffULL}, {5}});
  hb.kv_snapshot = KvEventBatchWire{4, {8, 9}, {}};
  hb.draining = true;
  auto back = decode<HeartbeatRequest>(encode(hb));
  ASSERT_TRUE(back.isOk()) << back.status().toString();
  EXPECT_EQ(back->node_id, 7u);
  EXPECT_EQ(back->node_token, 0xfedcba9876543210ULL);
  EXPECT_EQ(back->load.queued_prefill_tokens, 123u);
  EXPECT_EQ(back->load.kv_sequence, 0x123456789ULL);
  ASSERT_EQ(back->kv_events.size(), 1u);
  EXPECT_EQ(back->kv_events[0].stored[1], 0xffffffffffffffffULL);
  EXPECT_EQ(back->kv_events[0].evicted, std::vector<uint64_t>{5});
  ASSERT_TRUE(back->kv_snapshot.has_value());
  EXPECT_EQ(back->kv_snapshot->stored, (std::vector<uint64_t>{8, 9}));
  EXPECT_TRUE(back->draining);

  ReserveResponse r;
  r.lease_id = 3;
  r.block_ids = {4, 5};
  r.kv_sequence = 17;
  auto r2 = decode<ReserveResponse>(encode(r));
  ASSERT_TRUE(r2.isOk()) << r2.status().toString();
  EXPECT_EQ(r2->block_ids, r.block_ids);
  EXPECT_EQ(r2->kv_sequence, 17u);
  // kv_sequence is optional on the wire (an agent that does not number its reservations).
  r2 = decode<ReserveResponse>(
      R"({"lease_id":1,"slot":0,"block_ids":[1],"cached_blocks":0,"regions":[1]})");
  ASSERT_TRUE(r2.isOk()) << r2.status().toString();
  EXPECT_EQ(r2->kv_sequence, 0u);

  PrefillRequest p;
  p.request_id = 42;
  p.tokens = {1, 2, 3};
  p.sampling.temperature = 0.5f;
  p.sampling.top_p = 0.9f;
  p.sampling.seed = 77;
  p.target = {2, "QUJD", 5, {10, 11}, 1, {1, 2, 3, 4}};
  auto p2 = decode<PrefillRequest>(encode(p));
  ASSERT_TRUE(p2.isOk()) << p2.status().toString();
  EXPECT_EQ(p2->tokens, p.tokens);
  EXPECT_FLOAT_EQ(p2->sampling.top_p, 0.9f);
  EXPECT_EQ(p2->target.block_ids, p.target.block_ids);
  EXPECT_EQ(p2->target.regions, p.target.regions);
  EXPECT_EQ(p2->rng_draws, 0u);
  p.rng_draws = 12;  // a resumed answer's
  p2 = decode<PrefillRequest>(encode(p));
  ASSERT_TRUE(p2.isOk()) << p2.status().toString();
  EXPECT_EQ(p2->rng_draws, 12u);

  GenerateRequest g;
  g.tokens = {1, 2};
  g.max_new_tokens = 9;
  g.rng_draws = 3;
  auto g2 = decode<GenerateRequest>(encode(g));
  ASSERT_TRUE(g2.isOk()) << g2.status().toString();
  EXPECT_EQ(g2->rng_draws, 3u);
  // rng_draws is optional on the wire: a sender that never resumes may leave it out.
  g2 = decode<GenerateRequest>(
      R"({"request_id":1,"tokens":[1],"sampling":{"temperature":0,"top_p":1,"seed":0},)"
      R"("max_new_tokens":4,"stop_tokens":[2]})");
  ASSERT_TRUE(g2.isOk()) << g2.status().toString();
  EXPECT_EQ(g2->rng_draws, 0u);

  StreamLine line;
  line.token = 5;
  line.cached_tokens = 16;
  auto l2 = decode<StreamLine>(encode(line));
  ASSERT_TRUE(l2.isOk());
  EXPECT_EQ(l2->token, 5);
  EXPECT_EQ(l2->cached_tokens, 16u);
  auto end = decode<StreamLine>(R"({"finish":"error","message":"boom"})");
  ASSERT_TRUE(end.isOk());
  EXPECT_FALSE(end->token.has_value());
  EXPECT_EQ(end->message, "boom");
}

TEST(ControlWire, KvChecksumsTravelFromPrefillToDecodeOnlyWhenThereAreSome) {
  PrefillResponse first;
  first.kv_checksums = {0, 1, UINT64_MAX, 0x8000000000000001u};  // full 64 bits, exactly
  auto first2 = decode<PrefillResponse>(encode(first));
  ASSERT_TRUE(first2.isOk()) << first2.status().toString();
  EXPECT_EQ(first2->kv_checksums, first.kv_checksums);
  DecodeRequest decode_request;
  decode_request.kv_checksums = first2->kv_checksums;
  auto d2 = decode<DecodeRequest>(encode(decode_request));
  ASSERT_TRUE(d2.isOk()) << d2.status().toString();
  EXPECT_EQ(d2->kv_checksums, first.kv_checksums);
  // None: the field is left out, and a body without it decodes to none.
  EXPECT_EQ(encode(PrefillResponse{}).find("kv_checksums"), std::string::npos);
  EXPECT_EQ(encode(DecodeRequest{}).find("kv_checksums"), std::string::npos);
  EXPECT_TRUE(decode<DecodeRequest>(encode(DecodeRequest{}))->kv_checksums.empty());
  auto negative = decode<DecodeRequest>(
      R"({"request_id":1,"lease_id":2,"first_token":3,"sampling":{"temperature":0,"top_p":1,)"
      R"("seed":0},"rng_draws":0,"max_new_tokens":4,"stop_tokens":[],"kv_checksums":[-1]})");
  EXPECT_FALSE(negative.isOk());
}

TEST(ControlWire, LogitProcessorsLogprobsAndErrorsRoundTrip) {
  GenerateRequest g;
  g.sampling.temperature = 0.7f;
  g.sampling.repetition_penalty = 1.25f;
  g.sampling.presence_penalty = -0.5f;
  g.sampling.frequency_penalty = 1.5f;
  g.sampling.logit_bias = {{3, -100.0f}, {9, 2.5f}};
  g.sampling.min_tokens = 4;
  g.sampling.answer_tokens = 2;
  g.sampling.logprobs = 3;
  auto g2 = decode<GenerateRequest>(encode(g));
  ASSERT_TRUE(g2.isOk()) << g2.status().toString();
  EXPECT_FLOAT_EQ(g2->sampling.repetition_penalty, 1.25f);
  EXPECT_FLOAT_EQ(g2->sampling.presence_penalty, -0.5f);
  EXPECT_FLOAT_EQ(g2->sampling.frequency_penalty, 1.5f);
  EXPECT_EQ(g2->sampling.logit_bias, g.sampling.logit_bias);
  EXPECT_EQ(g2->sampling.min_tokens, 4u);
  EXPECT_EQ(g2->sampling.answer_tokens, 2u);
  EXPECT_EQ(g2->sampling.logprobs, 3u);
  // Defaults do not travel, so an older agent sees the body it always saw.
  EXPECT_EQ(boost::json::serialize(toJson(DecodeRequest{}).at("sampling")),
            R"({"temperature":0E0,"top_p":1E0,"seed":0})");

  PrefillRequest p;
  p.stop_tokens = {2, 7};
  auto p2 = decode<PrefillRequest>(encode(p));
  ASSERT_TRUE(p2.isOk()) << p2.status().toString();
  EXPECT_EQ(p2->stop_tokens, p.stop_tokens);

  PrefillResponse first;
  first.logprobs = TokenLogprobs{-0.25f, {{5, -0.25f}, {8, -2.0f}}};
  auto first2 = decode<PrefillResponse>(encode(first));
  ASSERT_TRUE(first2.isOk()) << first2.status().toString();
  EXPECT_EQ(first2->logprobs, first.logprobs);
  EXPECT_FALSE(decode<PrefillResponse>(encode(PrefillResponse{}))->logprobs.has_value());

  StreamLine line;
  line.token = 5;
  line.logprobs = TokenLogprobs{-1.0f, {}};
  auto l2 = decode<StreamLine>(encode(line));
  ASSERT_TRUE(l2.isOk());
  EXPECT_EQ(l2->logprobs, line.logprobs);
  auto full = decode<StreamLine>(R"({"finish":"error","message":"no room","code":"kv_capacity"})");
  ASSERT_TRUE(full.isOk());
  EXPECT_EQ(full->code, error_code::kKvCapacity);

  AgentError error{"reserve: no room", error_code::kKvCapacity, true};
  const std::string body = encode(error);
  EXPECT_EQ(
      body,
      R"({"error":{"message":"reserve: no room","code":"kv_capacity","writes_settled":true}})");
  auto error2 = decode<AgentError>(body);
  ASSERT_TRUE(error2.isOk());
  EXPECT_EQ(error2->code, error_code::kKvCapacity);
  EXPECT_TRUE(error2->writes_settled);
  // The plain error body every agent sends is an AgentError without a code.
  auto plain = decode<AgentError>(R"({"error":{"message":"bad"}})");
  ASSERT_TRUE(plain.isOk());
  EXPECT_EQ(plain->message, "bad");
  EXPECT_TRUE(plain->code.empty());
  EXPECT_FALSE(plain->writes_settled);

  auto release = decode<ReleaseRequest>(encode(ReleaseRequest{9, true}));
  ASSERT_TRUE(release.isOk());
  EXPECT_EQ(release->id, 9u);
  EXPECT_TRUE(release->writer_done);
  EXPECT_FALSE(decode<ReleaseRequest>(R"({"id":9})")->writer_done);
}

TEST(ControlWire, NamesTheBadField) {
  auto r = decode<ReserveRequest>(R"({"request_id":1,"tokens":[1,"x"],"lease_ms":5})");
  ASSERT_FALSE(r.isOk());
  EXPECT_NE(r.status().message().find("tokens must be an integer"), std::string::npos);
  r = decode<ReserveRequest>(R"({"request_id":1,"tokens":[1]})");
  ASSERT_FALSE(r.isOk());
  EXPECT_NE(r.status().message().find("lease_ms is missing"), std::string::npos);
  auto reg = decode<RegisterRequest>(R"({"name":"a","role":"both","kv_layout":{"layers":"x"}})");
  ASSERT_FALSE(reg.isOk());
  EXPECT_NE(reg.status().message().find("control_address is missing"), std::string::npos);
  EXPECT_FALSE(decode<IdRequest>("[1]").isOk());
  EXPECT_FALSE(decode<IdRequest>("{").isOk());
  EXPECT_FALSE(decode<IdRequest>(R"({"id":-1})").isOk());
  // A number past a float field's range (it would turn into infinity, which JSON cannot carry
  // back): found by fuzz/fuzz_control_wire.
  auto line = decode<StreamLine>(R"({"token":7,"logprobs":{"logprob":-2.1,"top":[[7,-5e105]]}})");
  ASSERT_FALSE(line.isOk());
  EXPECT_NE(line.status().message().find("must be a finite number in range"), std::string::npos)
      << line.status().message();
  EXPECT_TRUE(
      decode<StreamLine>(R"({"token":7,"logprobs":{"logprob":-2.1,"top":[[7,-3e38]]}})").isOk());
}

// Token lines skip the JSON tree both ways: what they write is what Boost.JSON writes, and what
// they read is what the general decoder reads (or refuses).
TEST(ControlWire, TokenLinesAreTheBytesAndValuesOfTheGeneralPath) {
  for (int32_t token : {0, 7, 31999, -3, std::numeric_limits<int32_t>::max()}) {
    for (std::optional<uint32_t> cached : {std::optional<uint32_t>{}, std::optional<uint32_t>{0},
                                           std::optional<uint32_t>{4294967295u}}) {
      StreamLine line;
      line.token = token;
      line.cached_tokens = cached;
      const std::string text = encode(line);
      EXPECT_EQ(text, boost::json::serialize(toJson(line)));
      Result<StreamLine> back = decode<StreamLine>(text);
      ASSERT_TRUE(back.isOk()) << text;
      EXPECT_EQ(back->token, token);
      EXPECT_EQ(back->cached_tokens, cached);
    }
  }
  // Other shapes go through Boost.JSON: spaces, other keys, leading zeros, out of range.
  EXPECT_EQ(decode<StreamLine>(R"({ "token" : 5 })")->token, 5);
  EXPECT_EQ(decode<StreamLine>(R"({"cached_tokens":2,"token":5})")->cached_tokens, 2u);
  EXPECT_EQ(decode<StreamLine>(R"({"token":5,"finish":"length"})")->finish, "length");
  EXPECT_FALSE(decode<StreamLine>(R"({"token":05})").isOk());
  EXPECT_FALSE(decode<StreamLine>(R"({"token":2147483648})").isOk());
  EXPECT_FALSE(decode<StreamLine>(R"({"token":5)").isOk());
  EXPECT_FALSE(decode<StreamLine>(R"({"token":5,"cached_tokens":4294967296})").isOk());
}

TEST(ControlWire, Base64) {
  for (std::string s : {"", "a", "ab", "abc", "abcd", "hello world!"}) {
    std::vector<uint8_t> bytes(s.begin(), s.end());
    auto back = base64Decode(base64Encode(bytes));
    ASSERT_TRUE(back.isOk());
    EXPECT_EQ(*back, bytes);
  }
  EXPECT_EQ(base64Encode(std::vector<uint8_t>{'M', 'a'}), "TWE=");
  EXPECT_FALSE(base64Decode("TW=E").isOk());
  EXPECT_FALSE(base64Decode("T!E=").isOk());
  EXPECT_FALSE(base64Decode("TWE").isOk());
}

}  // namespace
}  // namespace kvferry::wire
