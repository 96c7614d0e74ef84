// The KV sender between two engines on one loopback fabric, the test thread playing both engine
// threads: the KV lands in the decode side's blocks; connects happen off the engine thread (a
// hanging connect holds no one, a failed one answers 502 and the next prefill connects again);
// posts the transport refuses as full are retried, never waited for; cancels and stop flags.
#include "node_agent/kv_transfer/kv_sender.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <boost/asio/executor_work_guard.hpp>
#include <future>

#include "node_agent/kv_transfer/kv_receiver.h"
#include "node_agent/kv_transfer/kv_regions.h"
#include "rdma/loopback/loopback_transport.h"
#include "tests/mocks/mock_transport.h"
#include "tests/node_agent/agent_test_util.h"

namespace kvferry::agent::kv_transfer {
namespace {

using namespace agent::testing;
using kvferry::testing::MockTransport;
using ::testing::_;
using ::testing::DoDefault;
using ::testing::NiceMock;
using ::testing::Return;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kLayers = 2;
constexpr uint32_t kBlockTokens = 4;
constexpr uint32_t kDecodeNode = 2;

config::TransportConfig loopbackConfig() {
  config::TransportConfig config;
  config.kind = config::TransportKind::kLoopback;
  return config;
}

// One side: a fake engine whose pools are registered with a loopback transport.
struct Side {
  explicit Side(std::shared_ptr<rdma::LoopbackFabric> fabric)
      : engine(
            makeFakeEngine(fakeEngineConfig(kBlockTokens, 64), FakeShape{.layers = kLayers}, {})),
        loopback(loopbackConfig(), std::move(fabric)) {}
  std::unique_ptr<engine::Engine> engine;
  rdma::LoopbackTransport loopback;
};

class KvSenderTest : public ::testing::Test {
 protected:
  KvSenderTest() {
    transport_.delegateTo(prefill_side_.loopback);
    auto pools = registerKvPools(*prefill_side_.engine, transport_);
    EXPECT_TRUE(pools.isOk());
    prefill_pools_ = pools->pools;
    auto decode_pools = registerKvPools(*decode_side_.engine, decode_side_.loopback);
    EXPECT_TRUE(decode_pools.isOk());
    auto blob = decode_side_.loopback.localBlob();
    EXPECT_TRUE(blob.isOk());
    decode_blob_ = wire::base64Encode(*blob);
    prefills_ = std::make_unique<PrefillRunner>(*prefill_side_.engine, metrics_.metrics);
    connector_ = std::make_unique<PeerConnector>(transport_);
    makeSender(false);
    receiver_ = std::make_unique<KvReceiver>(
        *decode_side_.engine, decode_pools->ids, 2s, metrics_.metrics,
        [this](KvReceiver::Landed landed) { landed_.push_back(std::move(landed)); });
  }
  void makeSender(bool kv_checksum) {
    sender_ = std::make_unique<KvSender>(*prefill_side_.engine, *prefills_, transport_, *connector_,
                                         engine_io_.get_executor(), prefill_pools_,
                                         metrics_.metrics, op_timeout_, kv_checksum);
  }
  ~KvSenderTest() override {
    gate_.set_value();  // a connect held in a test goes on, so the connector can stop
    connector_->stop();
  }

  // What both agents' engine and transfer threads would do, once.
  void pump() {
    engine_io_.poll();
    std::array<rdma::Completion, 16> completions;
    size_t n = transport_.pollCompletions(completions, {});
    for (size_t i = 0; i < n; ++i) sender_->onCompletion(completions[i]);
    std::array<rdma::ImmediateEvent, 16> immediates;
    size_t m = decode_side_.loopback.pollImmediates(immediates, {});
    for (size_t i = 0; i < m; ++i) receiver_->onImmediate(immediates[i]);
    sender_->retryRefused(Clock::now());
  }
  // Pumps until `reply` has its Reply (or 5 s).
  std::optional<Reply> await(ReplyChannel& reply) {
    const auto deadline = Clock::now() + 5s;
    while (Clock::now() < deadline) {
      pump();
      if (auto r = takeReply(reply)) return r;
      std::this_thread::sleep_for(1ms);
    }
    return std::nullopt;
  }

  std::vector<int32_t> prompt(size_t tokens) {
    std::vector<int32_t> out;
    for (size_t i = 0; i < tokens; ++i) out.push_back(static_cast<int32_t>(3 + i));
    return out;
  }
  wire::ReserveResponse reserve(uint64_t request_id, const std::vector<int32_t>& tokens) {
    wire::ReserveRequest request{request_id, tokens, 60000};
    Reply reply = receiver_->reserve(request);
    EXPECT_EQ(reply.status, 200u) << reply.body;
    auto lease = wire::decode<wire::ReserveResponse>(reply.body);
    return lease.isOk() ? *lease : wire::ReserveResponse{};
  }
  wire::PrefillRequest prefillFor(uint64_t request_id, const std::vector<int32_t>& tokens,
                                  const wire::ReserveResponse& lease) {
    wire::PrefillRequest request;
    request.request_id = request_id;
    request.tokens = tokens;
    request.target.node_id = kDecodeNode;
    request.target.transport_blob = decode_blob_;
    request.target.slot = lease.slot;
    request.target.block_ids = lease.block_ids;
    request.target.cached_blocks = lease.cached_blocks;
    request.target.regions = lease.regions;
    return request;
  }
  // Starts a prefill; its reply channel.
  std::shared_ptr<ReplyChannel> prefill(wire::PrefillRequest request,
                                        std::shared_ptr<StopFlag> stop = nullptr) {
    auto reply = newReplyChannel(io_);
    sender_->prefill(std::move(request), reply, std::move(stop));
    return reply;
  }
  // A connect that waits for gate_ (then connects for real).
  auto heldConnect() {
    return [this](const rdma::EndpointBlob& blob) {
      gate_future_.wait();
      return prefill_side_.loopback.connect(blob);
    };
  }

  // The decode side's K (kv 0) or V (kv 1) of `position`, as the lease's blocks hold it.
  float landedValue(const wire::ReserveResponse& lease, uint32_t layer, uint32_t kv,
                    uint32_t position, uint64_t d) {
    engine::Engine& engine = *decode_side_.engine;
    engine::KvPoolRegion pool = kv == 0 ? engine.keyPool(layer) : engine.valuePool(layer);
    const uint64_t token_floats = engine.kvGeometry().tokenElements();
    const uint64_t slot =
        uint64_t{lease.block_ids[position / kBlockTokens]} * kBlockTokens + position % kBlockTokens;
    return static_cast<const float*>(pool.base)[slot * token_floats + d];
  }

  const std::chrono::milliseconds op_timeout_{300};
  std::shared_ptr<rdma::LoopbackFabric> fabric_ = std::make_shared<rdma::LoopbackFabric>();
  Side prefill_side_{fabric_};
  Side decode_side_{fabric_};
  NiceMock<MockTransport> transport_;  // the prefill side's, over its loopback
  std::string decode_blob_;
  std::vector<rdma::KvPool> prefill_pools_;
  boost::asio::io_context io_;
  boost::asio::io_context engine_io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      engine_io_.get_executor()};
  TestMetrics metrics_;
  std::promise<void> gate_;
  std::shared_future<void> gate_future_ = gate_.get_future().share();
  std::unique_ptr<PrefillRunner> prefills_;
  std::unique_ptr<PeerConnector> connector_;
  std::unique_ptr<KvSender> sender_;
  std::unique_ptr<KvReceiver> receiver_;
  std::vector<KvReceiver::Landed> landed_;
};

TEST_F(KvSenderTest, EveryLayerLandsInTheReservedBlocksBeforeTheAnswer) {
  const std::vector<int32_t> tokens = prompt(10);
  const wire::ReserveResponse lease = reserve(1, tokens);
  auto reply = prefill(prefillFor(1, tokens, lease));
  std::optional<Reply> answer = await(*reply);
  ASSERT_TRUE(answer);
  ASSERT_EQ(answer->status, 200u) << answer->body;
  auto response = wire::decode<wire::PrefillResponse>(answer->body);
  ASSERT_TRUE(response.isOk());
  EXPECT_EQ(response->first_token, 13);  // the fake model counts up from the last token
  EXPECT_EQ(response->cached_tokens, 0u);
  const uint64_t block_bytes = decode_side_.engine->kvGeometry().blockBytes();
  EXPECT_EQ(response->transfer_bytes, 3 * block_bytes * 2 * kLayers);
  for (uint32_t layer = 0; layer < kLayers; ++layer) {
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t position = 0; position < 10; ++position) {
        EXPECT_EQ(landedValue(lease, layer, kv, position, 1),
                  FakeModelRunner::kvValue(layer, kv, tokens[position], position, 1))
            << "layer " << layer << " kv " << kv << " position " << position;
      }
    }
  }
  // Every layer's immediate counted: the lease is handed on as soon as its decode comes.
  wire::DecodeRequest decode;
  decode.request_id = 1;
  decode.lease_id = lease.lease_id;
  receiver_->decode(decode, newStream(io_, 1));
  EXPECT_EQ(landed_.size(), 1u);
  EXPECT_TRUE(sender_->idle());
  EXPECT_EQ(prefill_side_.engine->sequenceCount(), 0u);  // the sent sequence was released
}

TEST_F(KvSenderTest, ConnectsOnceAndOffTheCallingThread) {
  EXPECT_CALL(transport_, connect(_)).WillOnce(heldConnect());
  const std::vector<int32_t> tokens = prompt(6);
  const wire::ReserveResponse a = reserve(1, tokens);
  const wire::ReserveResponse b = reserve(2, tokens);
  const auto start = Clock::now();
  auto reply_a = prefill(prefillFor(1, tokens, a));
  auto reply_b = prefill(prefillFor(2, tokens, b));
  EXPECT_LT(Clock::now() - start, 1s);  // the connect is held: prefill() did not wait for it
  for (int i = 0; i < 20; ++i) pump();
  EXPECT_FALSE(takeReply(*reply_a));
  EXPECT_FALSE(sender_->idle());
  gate_.set_value();
  gate_ = std::promise<void>();  // the destructor's set_value needs a fresh one
  auto answer_a = await(*reply_a);
  auto answer_b = await(*reply_b);
  ASSERT_TRUE(answer_a && answer_b);
  EXPECT_EQ(answer_a->status, 200u) << answer_a->body;
  EXPECT_EQ(answer_b->status, 200u) << answer_b->body;
}

TEST_F(KvSenderTest, AFailedConnectIs502AndTheNextPrefillConnectsAgain) {
  EXPECT_CALL(transport_, connect(_))
      .WillOnce(Return(Result<rdma::PeerId>(unavailable("no route to host"))))
      .WillOnce(DoDefault());
  const std::vector<int32_t> tokens = prompt(6);
  const wire::ReserveResponse lease = reserve(1, tokens);
  auto first = await(*prefill(prefillFor(1, tokens, lease)));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 502u);
  EXPECT_THAT(first->body, ::testing::HasSubstr("transfer to node 2 failed"));
  EXPECT_THAT(first->body, ::testing::HasSubstr("no route to host"));
  auto second = await(*prefill(prefillFor(1, tokens, lease)));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 200u) << second->body;
}

TEST_F(KvSenderTest, ACancelAnswersAPrefillWaitingForItsConnectAtOnce) {
  EXPECT_CALL(transport_, connect(_)).WillOnce(heldConnect());
  const std::vector<int32_t> tokens = prompt(6);
  const wire::ReserveResponse lease = reserve(1, tokens);
  auto reply = prefill(prefillFor(1, tokens, lease));
  pump();
  EXPECT_FALSE(sender_->cancel(99));
  EXPECT_TRUE(sender_->cancel(1));
  auto answer = takeReply(*reply);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 409u);
  EXPECT_TRUE(sender_->idle());
  gate_.set_value();  // the connect ends later; nothing waits for it any more
  gate_ = std::promise<void>();
  for (int i = 0; i < 50; ++i) {
    pump();
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(sender_->idle());
  EXPECT_EQ(prefill_side_.engine->sequenceCount(), 0u);  // it never computed
}

TEST_F(KvSenderTest, ARaisedStopFlagStopsTheComputeWith409) {
  const std::vector<int32_t> tokens = prompt(6);
  const wire::ReserveResponse lease = reserve(1, tokens);
  auto answer = await(*prefill(prefillFor(1, tokens, lease), std::make_shared<StopFlag>(true)));
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 409u) << answer->body;
  EXPECT_EQ(prefill_side_.engine->sequenceCount(), 0u);
}

TEST_F(KvSenderTest, RefusedPostsAreRetriedWhenTheQueueDrains) {
  EXPECT_CALL(transport_, postWrite(_, _, _, _))
      .WillOnce(Return(resourceExhausted("queue full")))
      .WillOnce(Return(resourceExhausted("queue full")))
      .WillRepeatedly(DoDefault());
  const std::vector<int32_t> tokens = prompt(10);
  const wire::ReserveResponse lease = reserve(1, tokens);
  auto answer = await(*prefill(prefillFor(1, tokens, lease)));
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 200u) << answer->body;
  for (uint32_t layer = 0; layer < kLayers; ++layer) {
    EXPECT_EQ(landedValue(lease, layer, 1, 9, 0),
              FakeModelRunner::kvValue(layer, 1, tokens[9], 9, 0));
  }
}

TEST_F(KvSenderTest, APostStillRefusedAfterTheOpTimeoutIs503AndNothingWaitedForIt) {
  ON_CALL(transport_, postWrite(_, _, _, _)).WillByDefault(Return(resourceExhausted("queue full")));
  const std::vector<int32_t> tokens = prompt(10);
  const wire::ReserveResponse lease = reserve(1, tokens);
  const auto start = Clock::now();
  auto reply = prefill(prefillFor(1, tokens, lease));
  // Until the connect result is in and the prefill has computed (its sequence is held while
  // its writes wait): the posts were refused, and no call waited for the queue.
  while (prefill_side_.engine->sequenceCount() == 0 && Clock::now() - start < 2s) pump();
  EXPECT_EQ(prefill_side_.engine->sequenceCount(), 1u);
  EXPECT_LT(Clock::now() - start, op_timeout_);
  auto answer = await(*reply);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 503u) << answer->body;
  EXPECT_GE(Clock::now() - start, op_timeout_);
  EXPECT_EQ(prefill_side_.engine->sequenceCount(), 0u);
}

TEST_F(KvSenderTest, APeerThatFailsIsDisconnectedAndConnectedAgainNextTime) {
  EXPECT_CALL(transport_, connect(_)).Times(2);
  EXPECT_CALL(transport_, disconnect(_)).Times(1);
  EXPECT_CALL(transport_, postWrite(_, _, _, _))
      .WillOnce(Return(unavailable("peer gone")))
      .WillRepeatedly(DoDefault());
  const std::vector<int32_t> tokens = prompt(6);
  const wire::ReserveResponse lease = reserve(1, tokens);
  auto first = await(*prefill(prefillFor(1, tokens, lease)));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 502u) << first->body;
  auto second = await(*prefill(prefillFor(2, tokens, lease)));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 200u) << second->body;
}

TEST_F(KvSenderTest, ATargetThatCachesEveryBlockNeedsNoConnection) {
  EXPECT_CALL(transport_, connect(_)).Times(0);
  EXPECT_CALL(transport_, postWrite(_, _, _, _)).Times(0);
  wire::PrefillRequest request = prefillFor(1, prompt(8), wire::ReserveResponse{});
  request.target.block_ids = {0, 1};
  request.target.cached_blocks = 2;
  request.target.regions.assign(2 * kLayers, 0);
  auto answer = await(*prefill(request));
  ASSERT_TRUE(answer);
  ASSERT_EQ(answer->status, 200u) << answer->body;
  auto response = wire::decode<wire::PrefillResponse>(answer->body);
  EXPECT_EQ(response->transfer_bytes, 0u);
  EXPECT_EQ(response->transfer_ms, 0);
}

// agent.kv_checksum: the answer carries one checksum per layer; the decode side checks the
// landed KV against them, hands on KV that matches and refuses KV changed on the way.
TEST_F(KvSenderTest, ChecksummedKvIsHandedOnIntactAndRefusedWhenChangedOnTheWay) {
  makeSender(true);
  // Prefills a prompt of 10 tokens from `first` to a fresh lease; the lease and the answer.
  const auto send = [this](uint64_t request_id, int32_t first) {
    std::vector<int32_t> tokens = prompt(10);
    for (int32_t& t : tokens) t += first;
    const wire::ReserveResponse lease = reserve(request_id, tokens);
    std::optional<Reply> answer = await(*prefill(prefillFor(request_id, tokens, lease)));
    EXPECT_TRUE(answer && answer->status == 200u);
    auto response = wire::decode<wire::PrefillResponse>(answer ? answer->body : "");
    EXPECT_TRUE(response.isOk());
    return std::pair{lease, response.isOk() ? *response : wire::PrefillResponse{}};
  };
  const auto decode = [this](uint64_t request_id, const wire::ReserveResponse& lease,
                             std::vector<uint64_t> checksums) {
    wire::DecodeRequest request;
    request.request_id = request_id;
    request.lease_id = lease.lease_id;
    request.max_new_tokens = 2;
    request.kv_checksums = std::move(checksums);
    auto stream = newStream(io_, request_id);
    receiver_->decode(request, stream);
    return stream;
  };

  const auto [intact, intact_answer] = send(1, 0);
  ASSERT_EQ(intact_answer.kv_checksums.size(), kLayers);
  EXPECT_NE(intact_answer.kv_checksums[0], intact_answer.kv_checksums[1]);
  decode(1, intact, intact_answer.kv_checksums);
  ASSERT_EQ(landed_.size(), 1u);

  const auto [changed, changed_answer] = send(2, 20);
  ASSERT_EQ(changed_answer.kv_checksums.size(), kLayers);
  // One byte of layer 1's V in the lease's last block changes after it landed.
  engine::KvPoolRegion pool = decode_side_.engine->valuePool(1);
  const uint64_t block_bytes = decode_side_.engine->kvGeometry().blockBytes();
  static_cast<uint8_t*>(pool.base)[changed.block_ids[2] * block_bytes + 5] ^= 0x40;
  const uint32_t used_before = decode_side_.engine->blocks().usedBlocks();
  auto refused = decode(2, changed, changed_answer.kv_checksums);
  std::vector<wire::StreamLine> lines = readStream(*refused, 1s);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].finish, "error");
  EXPECT_EQ(lines[0].code, wire::error_code::kKvCorrupt);
  EXPECT_THAT(lines[0].message, ::testing::HasSubstr("layer 1 arrived corrupt"));
  EXPECT_EQ(landed_.size(), 1u);  // never handed on to decode
  EXPECT_EQ(receiver_->leaseCount(), 0u);
  EXPECT_EQ(decode_side_.engine->blocks().usedBlocks(), used_before - 3);  // its blocks are free
  EXPECT_EQ(metrics_.metrics.kv_checksum_failures.Value(), 1);
}

TEST_F(KvSenderTest, WithoutChecksumsTheAnswerCarriesNone) {
  const std::vector<int32_t> tokens = prompt(10);
  const wire::ReserveResponse lease = reserve(1, tokens);
  std::optional<Reply> answer = await(*prefill(prefillFor(1, tokens, lease)));
  ASSERT_TRUE(answer);
  ASSERT_EQ(answer->status, 200u) << answer->body;
  EXPECT_EQ(answer->body.find("kv_checksums"), std::string::npos);
}

TEST_F(KvSenderTest, ABadTargetOrSamplingIs400) {
  const std::vector<int32_t> tokens = prompt(10);
  const wire::ReserveResponse lease = reserve(1, tokens);
  wire::PrefillRequest short_target = prefillFor(1, tokens, lease);
  short_target.target.block_ids.pop_back();
  auto answer = await(*prefill(short_target));
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 400u);
  wire::PrefillRequest bad_sampling = prefillFor(1, tokens, lease);
  bad_sampling.sampling.top_p = 0;
  answer = await(*prefill(bad_sampling));
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 400u);
  wire::PrefillRequest bad_draws = prefillFor(1, tokens, lease);
  bad_draws.rng_draws = 1u << 30;
  answer = await(*prefill(bad_draws));
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 400u);
  EXPECT_TRUE(sender_->idle());
}

}  // namespace
}  // namespace kvferry::agent::kv_transfer
