#include "node_agent/agent.h"

#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/control_wire.h"
#include "common/http.h"
#include "model/cluster_identity.h"
#include "model/gguf.h"
#include "model/llama_params.h"
#include "model/tokenizer.h"
#include "node_agent/engine/engine.h"
#include "node_agent/engine/logit_processor.h"
#include "node_agent/engine/sampler.h"
#include "node_agent/metrics.h"
#include "rdma/factory.h"
#include "rdma/kv_layout.h"

namespace kvferry::agent {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using http::HttpStatus;
using http::Task;
using model::TokenId;
using std::chrono::milliseconds;

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

// Immediates carry slot << kLayerBits | layer (docs/control_plane.md).
constexpr uint32_t kLayerBits = 12;
constexpr uint32_t kSlotCount = 1u << 20;

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// A reply from the engine thread to the handler waiting for it.
struct Reply {
  unsigned status = 200;
  std::string body;
};
using ReplyChannel = asio::experimental::concurrent_channel<void(boost::system::error_code, Reply)>;

Reply jsonReply(unsigned status, std::string body) { return {status, std::move(body)}; }
Reply errorReply(unsigned status, std::string_view message) {
  return {status, http::errorBody(message)};
}
// An error the orchestrator acts on: its kind (wire::error_code) and, for a prefill, whether any
// write it posted may still land.
Reply errorReply(unsigned status, std::string message, std::string code, bool writes_settled) {
  return {status,
          wire::encode(wire::AgentError{std::move(message), std::move(code), writes_settled})};
}
// KV room is a condition the orchestrator waits out, not a fault of this node.
std::string capacityCode(const Status& status) {
  return status.code() == StatusCode::kResourceExhausted ? wire::error_code::kKvCapacity : "";
}

// The lines of one decode/generate stream, from the engine thread to the handler writing them.
// `last` marks the finish line.
struct Stream {
  Stream(asio::any_io_executor executor, size_t capacity, uint64_t id)
      : lines(std::move(executor), capacity), request_id(id) {}
  asio::experimental::concurrent_channel<void(boost::system::error_code, std::string, bool)> lines;
  const uint64_t request_id;
  std::atomic<bool> cancelled{false};
};

std::optional<wire::TokenLogprobs> wireLogprobs(const std::optional<engine::TokenLogprobs>& lp) {
  if (!lp) return std::nullopt;
  return wire::TokenLogprobs{lp->logprob, {lp->top.begin(), lp->top.end()}};
}
std::string tokenLine(const engine::LogitProcessor::PickedToken& picked,
                      std::optional<uint32_t> cached = std::nullopt) {
  wire::StreamLine line;
  line.token = picked.token;
  line.cached_tokens = cached;
  line.logprobs = wireLogprobs(picked.logprobs);
  return wire::encode(line);
}
std::string finishLine(std::string_view reason, std::string_view message = {},
                       std::string_view code = {}) {
  wire::StreamLine line;
  line.finish = reason;
  line.message = message;
  line.code = code;
  return wire::encode(line);
}

engine::SamplingParams samplingOf(const wire::Sampling& s) {
  engine::SamplingParams params;
  params.temperature = s.temperature;
  params.top_p = s.top_p;
  params.seed = s.seed;
  return params;
}

// The request's logit processors (engine/logit_processor.h); `stop_tokens` are what min_tokens
// masks.
engine::LogitParams logitParamsOf(const wire::Sampling& s,
                                  const std::vector<int32_t>& stop_tokens) {
  engine::LogitParams params;
  params.repetition_penalty = s.repetition_penalty;
  params.presence_penalty = s.presence_penalty;
  params.frequency_penalty = s.frequency_penalty;
  for (const wire::LogitBias& b : s.logit_bias) params.logit_bias.emplace_back(b.token, b.bias);
  params.min_tokens = s.min_tokens;
  params.stop_tokens.assign(stop_tokens.begin(), stop_tokens.end());
  params.logprobs = s.logprobs;
  return params;
}

std::vector<TokenId> tokensOf(const std::vector<int32_t>& ids) {
  return std::vector<TokenId>(ids.begin(), ids.end());
}

class NodeAgentImpl final : public NodeAgent {
 public:
  NodeAgentImpl(const config::NodeAgentConfig& config, asio::io_context& io)
      : config_(config),
        io_(io),
        metrics_(metrics_registry_, config::nodeRoleName(config.role)),
        server_(io, http::ServerOptions{}),
        client_(io) {}

  ~NodeAgentImpl() override { stopThreads(); }

  Status init();
  void start() override;
  void shutdown(std::function<void()> done) override;
  uint16_t controlPort() const override { return server_.port(); }
  void onFatal(std::function<void(const Status&)> handler) override {
    on_fatal_ = std::move(handler);
  }

 private:
  // ---- state owned by the engine thread ----
  struct Lease {
    uint64_t id = 0;
    uint64_t request_id = 0;
    uint32_t slot = 0;
    engine::SequenceId seq = 0;
    uint32_t blocks = 0;
    Clock::time_point deadline;
    uint32_t expected_layers = 0;
    std::vector<bool> landed;
    uint32_t landed_count = 0;
    std::shared_ptr<Stream> stream;  // set once /agent/decode arrived
    wire::DecodeRequest decode;
    // Ended (released, cancelled, expired) while writes may still be landing in its blocks: the
    // blocks stay held until the missing immediates arrive or the writer's op timeout has passed,
    // so no later sequence receives a late write.
    bool quarantined = false;
  };
  struct Active {
    uint64_t request_id = 0;
    engine::SequenceId seq = 0;
    std::shared_ptr<Stream> stream;
    engine::SamplingParams sampling;
    engine::SamplingRng rng{0};
    engine::LogitProcessor logits;  // penalties, logit_bias, min_tokens, logprobs
    TokenId next = 0;
    uint32_t remaining = 0;
    std::vector<TokenId> stop;
  };
  struct PendingPrefill {
    uint64_t request_id = 0;
    uint32_t target_node = 0;
    std::string blob;
    std::optional<engine::SequenceId> seq;
    bool computed = false;  // prefill returned; the first token is known
    uint32_t outstanding = 0;
    Status error;
    Clock::time_point first_post;
    bool posted = false;
    bool write_failed = false;  // a posted batch failed: its bytes may still land on the target
    wire::PrefillResponse response;
    std::shared_ptr<ReplyChannel> reply;
    AgentMetrics::Peer metrics;  // the target's transfer counters
  };
  struct Collected {
    wire::Load load;
    wire::PrefillModel prefill_model;
    std::vector<uint64_t> stored;
    std::vector<uint64_t> evicted;
    bool overflowed = false;
    std::optional<std::vector<uint64_t>> snapshot;
  };

  // Control API handlers (io thread).
  void routes();
  Task<void> handleReserve(const http::Request& request, http::ResponseWriter& writer);
  Task<void> handlePrefill(const http::Request& request, http::ResponseWriter& writer);
  Task<void> handleDecode(const http::Request& request, http::ResponseWriter& writer);
  Task<void> handleGenerate(const http::Request& request, http::ResponseWriter& writer);
  Task<void> handleRelease(const http::Request& request, http::ResponseWriter& writer);
  Task<void> handleCancel(const http::Request& request, http::ResponseWriter& writer);
  Task<void> handleMetrics(const http::Request& request, http::ResponseWriter& writer);
  Task<void> writeStream(std::shared_ptr<Stream> stream, http::ResponseWriter& writer,
                         AgentMetrics::Kind kind);
  // Answers for a control call that must not run here: 503 while draining (when `drain_refuses`:
  // decode lets running work finish), 400 on an agent of `wrong_role`, saying `why`. Counted
  // under `kind`. True when it answered.
  Task<bool> refuse(http::ResponseWriter& writer, AgentMetrics::Kind kind, bool drain_refuses,
                    config::NodeRole wrong_role, std::string why);
  // Runs fn(channel) on the engine thread; fn (or what it starts) sends exactly one Reply.
  template <typename Fn>
  Task<Reply> onEngine(Fn fn);
  void cancelStream(const std::shared_ptr<Stream>& stream);

  // Registration and heartbeats (io thread).
  Task<void> heartbeatLoop();
  Task<Status> registerOnce();
  wire::RegisterRequest registration() const;

  // Engine thread.
  void engineLoop();
  Reply reserve(const wire::ReserveRequest& request);
  void prefill(const wire::PrefillRequest& request, std::shared_ptr<ReplyChannel> reply);
  void finishPrefill(uint64_t key);
  void decode(const wire::DecodeRequest& request, std::shared_ptr<Stream> stream);
  void generate(const wire::GenerateRequest& request, std::shared_ptr<Stream> stream);
  // engine_->prefill for `request_id`, stopped between chunks by a cancel of that request or
  // by `also_stop`.
  Result<engine::PrefillResult> runPrefill(uint64_t request_id, std::span<const TokenId> tokens,
                                           const engine::LayerDoneCallback& on_layer,
                                           const std::atomic<bool>* also_stop = nullptr);
  void activateLease(Lease& lease);
  // `writer_done`: no write into the lease's blocks can land any more, so they are free at once
  // even with layers missing (else they are held until the writer's op timeout).
  void endLease(uint64_t lease_id, std::string_view why, bool writer_done = false);
  void freeLease(std::unordered_map<uint64_t, Lease>::iterator it);
  void release(uint64_t lease_id, bool writer_done);
  void cancel(uint64_t request_id);
  void onCompletion(const rdma::Completion& completion);
  void onImmediate(const rdma::ImmediateEvent& event);
  void expireLeases();
  void decodeStep();
  void finish(size_t index, std::string_view reason, std::string_view message = {},
              std::string_view code = {});
  bool emit(Stream& stream, std::string line, bool last);
  Collected collect(bool snapshot);
  bool idle() const { return leases_.empty() && active_.empty() && pending_.empty(); }
  Result<rdma::PeerId> peerFor(const std::string& blob_base64);
  void notePrefillTime(uint64_t tokens, double seconds);
  AgentMetrics::Peer peerMetrics(uint32_t node_id);
  void publishGauges();

  // Transfer thread.
  void transferLoop();

  void stopThreads();

  const config::NodeAgentConfig config_;
  asio::io_context& io_;
  prometheus::Registry metrics_registry_;
  AgentMetrics metrics_;
  http::Server server_;
  http::ClientPool client_;
  http::tcp::endpoint orchestrator_;
  std::function<void(const Status&)> on_fatal_;

  // Identity, fixed at init.
  std::string model_fingerprint_;
  std::string tokenizer_hash_;
  std::string hash_seed_id_;
  std::string blob_base64_;
  std::vector<rdma::RegionId> regions_;  // K0, V0, K1, V1, …
  std::vector<rdma::KvPool> pools_;      // same order

  // io thread state.
  std::optional<uint32_t> node_id_;
  bool ever_registered_ = false;
  uint32_t heartbeat_interval_ms_ = 1000;
  uint64_t event_sequence_ = 0;
  std::vector<wire::KvEventBatchWire> unacked_;
  bool need_snapshot_ = true;
  std::atomic<bool> draining_{false};
  bool left_ = false;

  // Engine thread.
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<rdma::Transport> transport_;
  asio::io_context engine_io_;
  asio::executor_work_guard<asio::io_context::executor_type> engine_work_{
      engine_io_.get_executor()};
  std::unordered_map<uint64_t, Lease> leases_;
  std::unordered_map<uint32_t, uint64_t> slot_leases_;
  uint32_t next_slot_ = 0;
  uint64_t next_lease_ = 1;
  std::vector<Active> active_;
  std::unordered_map<uint64_t, PendingPrefill> pending_;
  uint64_t next_prefill_ = 1;
  std::unordered_map<std::string, rdma::PeerId> peers_;
  std::unordered_map<uint32_t, AgentMetrics::Peer> peer_metrics_;  // by decode node id
  // Request ids cancelled before their work ran (a cancel may also name a request that already
  // ended): the newest kMaxCancelled, oldest forgotten first.
  static constexpr size_t kMaxCancelled = 4096;
  std::unordered_set<uint64_t> cancelled_;
  std::deque<uint64_t> cancelled_order_;
  std::unique_ptr<engine::Sampler> sampler_;
  std::vector<float> logits_;
  std::vector<engine::SequenceId> step_ids_;
  std::vector<TokenId> step_tokens_;
  std::vector<rdma::TransferOp> ops_;
  std::vector<engine::KvBlockEvent> events_;
  Clock::time_point last_expiry_scan_;
  wire::PrefillModel prefill_model_;
  std::atomic<uint64_t> queued_prefill_tokens_{0};
  std::atomic<uint32_t> queued_prefill_requests_{0};
  // Requests named by an /agent/cancel whose engine-thread cancel() has not run yet: a prefill
  // of one of them that is computing (or about to) stops before its next chunk (runPrefill).
  // The HTTP thread adds, cancel() and runPrefill remove.
  std::mutex stop_prefill_mu_;
  std::unordered_set<uint64_t> stop_prefill_;
  bool stopRequested(uint64_t request_id) {
    std::lock_guard lock(stop_prefill_mu_);
    return stop_prefill_.contains(request_id);
  }
  void forgetStop(uint64_t request_id) {
    std::lock_guard lock(stop_prefill_mu_);
    stop_prefill_.erase(request_id);
  }
  // A resumed answer's random draws: at most one per token of a sequence (and discard() is
  // linear, so a huge value would stall the engine thread).
  Status checkRngDraws(uint64_t draws) const {
    if (draws <= engine_->maxSequenceTokens()) return Status::ok();
    return invalidArgument("rng_draws " + std::to_string(draws) + " is more than the " +
                           std::to_string(engine_->maxSequenceTokens()) +
                           " tokens a sequence can have");
  }

  std::atomic<bool> stop_threads_{false};
  std::thread engine_thread_;
  std::thread transfer_thread_;
};

// ---------------------------------------------------------------------------------------------
// Set-up

Status NodeAgentImpl::init() {
  if (config_.model.path.empty()) return invalidArgument("model.path is not set");
  ASSIGN_OR_RETURN(model::GgufFile file, model::GgufFile::open(config_.model.path));
  ASSIGN_OR_RETURN(model::Vocabulary vocab, model::readVocabulary(file));
  ASSIGN_OR_RETURN(model::BlockHashSeed seed, model::parseHashSeed(config_.model.hash_seed));
  ASSIGN_OR_RETURN(auto weights, engine::LlamaWeights::load(file));
  model_fingerprint_ = model::hex64(model::modelFingerprint(file, weights->params()));
  tokenizer_hash_ = model::hex64(model::vocabularyHash(vocab));
  hash_seed_id_ = model::hashSeedId(seed);

  engine::EngineConfig ec;
  ec.block_tokens = config_.model.block_tokens;
  ec.num_blocks = config_.kv_blocks;
  ec.prefix_caching = config_.prefix_caching;
  ec.hash_seed = seed;
  ec.max_batch_tokens = std::max(config_.max_batch_tokens, config_.max_batch_sequences);
  ec.threads = config_.threads;
  ASSIGN_OR_RETURN(engine_, engine::Engine::create(weights, ec));
  sampler_ = std::make_unique<engine::Sampler>(engine_->vocabSize());

  ASSIGN_OR_RETURN(transport_, rdma::makeTransport(config_.transport));
  const engine::KvGeometry& geometry = engine_->kvGeometry();
  for (uint32_t layer = 0; layer < geometry.layers; ++layer) {
    for (engine::KvPoolRegion pool : {engine_->keyPool(layer), engine_->valuePool(layer)}) {
      rdma::MemoryKind kind = pool.cuda_device >= 0 ? rdma::MemoryKind::cuda(pool.cuda_device)
                                                    : rdma::MemoryKind::host();
      ASSIGN_OR_RETURN(rdma::RegionId region,
                       transport_->registerRegion(pool.base, pool.bytes, kind));
      regions_.push_back(region);
      pools_.push_back({region, geometry.blockBytes(), geometry.num_blocks});
    }
  }
  ASSIGN_OR_RETURN(rdma::EndpointBlob blob, transport_->localBlob());
  blob_base64_ = wire::base64Encode(blob);

  ASSIGN_OR_RETURN(orchestrator_,
                   http::parseEndpoint(config_.orchestrator_address, "agent.orchestrator_address"));
  RETURN_IF_ERROR(server_.listen(config_.control_address));
  routes();
  spdlog::info(
      "node agent: {} role, model {} ({} layers, {} KV blocks of {} tokens, {:.1f} MiB of KV), "
      "transport {}, control API on port {}",
      config::nodeRoleName(config_.role), config_.model.path, geometry.layers, geometry.num_blocks,
      geometry.block_tokens, 2.0 * geometry.layers * geometry.poolBytes() / (1 << 20),
      transport_->name(), server_.port());
  return Status::ok();
}

void NodeAgentImpl::start() {
  engine_thread_ = std::thread([this] { engineLoop(); });
  transfer_thread_ = std::thread([this] { transferLoop(); });
  server_.start();
  asio::co_spawn(io_, heartbeatLoop(), asio::detached);
}

void NodeAgentImpl::stopThreads() {
  if (stop_threads_.exchange(true)) return;
  engine_io_.stop();
  if (engine_thread_.joinable()) engine_thread_.join();
  if (transfer_thread_.joinable()) transfer_thread_.join();
}

void NodeAgentImpl::shutdown(std::function<void()> done) {
  draining_ = true;
  spdlog::info("node agent: draining (up to {} ms)", config_.drain_timeout_ms);
  asio::co_spawn(
      io_,
      [this, done = std::move(done)]() -> Task<void> {
        auto deadline = Clock::now() + milliseconds(config_.drain_timeout_ms);
        for (;;) {
          Reply r = co_await onEngine([this](std::shared_ptr<ReplyChannel> ch) {
            ch->try_send(boost::system::error_code{}, Reply{idle() ? 200u : 503u, ""});
          });
          if (r.status == 200) break;
          if (Clock::now() >= deadline) {
            spdlog::warn("node agent: drain timeout; stopping with requests still running");
            break;
          }
          asio::steady_timer timer(io_, milliseconds(50));
          co_await timer.async_wait(kNoThrow);
        }
        if (node_id_ && !left_) {
          wire::LeaveRequest leave{*node_id_};
          auto r = co_await client_.request(orchestrator_, http::Verb::post, "/v1/agents/leave",
                                            wire::encode(leave), milliseconds(2000));
          if (!r.isOk()) spdlog::warn("node agent: leave failed: {}", r.status().toString());
          left_ = true;
        }
        server_.stop();
        stopThreads();
        spdlog::info("node agent: stopped");
        done();
      },
      asio::detached);
}

// ---------------------------------------------------------------------------------------------
// Control API (io thread)

template <typename Fn>
Task<Reply> NodeAgentImpl::onEngine(Fn fn) {
  auto channel = std::make_shared<ReplyChannel>(io_.get_executor(), 1);
  asio::post(engine_io_, [channel, fn = std::move(fn)]() mutable { fn(channel); });
  auto [ec, reply] = co_await channel->async_receive(kNoThrow);
  if (ec) co_return errorReply(503, "the agent is stopping");
  co_return reply;
}

void NodeAgentImpl::routes() {
  using http::Verb;
  auto bind = [this](auto method) {
    return [this, method](const http::Request& r, http::ResponseWriter& w) -> Task<void> {
      return (this->*method)(r, w);
    };
  };
  server_.route(Verb::post, wire::route::kReserve, bind(&NodeAgentImpl::handleReserve));
  server_.route(Verb::post, wire::route::kPrefill, bind(&NodeAgentImpl::handlePrefill));
  server_.route(Verb::post, wire::route::kDecode, bind(&NodeAgentImpl::handleDecode));
  server_.route(Verb::post, wire::route::kGenerate, bind(&NodeAgentImpl::handleGenerate));
  server_.route(Verb::post, wire::route::kRelease, bind(&NodeAgentImpl::handleRelease));
  server_.route(Verb::post, wire::route::kCancel, bind(&NodeAgentImpl::handleCancel));
  server_.route(Verb::get, "/metrics", bind(&NodeAgentImpl::handleMetrics));
  server_.route(Verb::get, "/health",
                [this](const http::Request&, http::ResponseWriter& w) -> Task<void> {
                  boost::json::object body{{"status", draining_ ? "draining" : "ok"},
                                           {"role", config::nodeRoleName(config_.role)}};
                  if (node_id_) body["node_id"] = *node_id_;
                  co_await w.sendJson(HttpStatus::ok, boost::json::serialize(body));
                });
}

Task<bool> NodeAgentImpl::refuse(http::ResponseWriter& writer, AgentMetrics::Kind kind,
                                 bool drain_refuses, config::NodeRole wrong_role, std::string why) {
  if (drain_refuses && draining_) {
    metrics_.countRequest(kind, AgentMetrics::Outcome::kRejected);
    co_await writer.sendJson(HttpStatus::service_unavailable,
                             http::errorBody("the agent is draining"));
    co_return true;
  }
  if (config_.role == wrong_role) {
    metrics_.countRequest(kind, AgentMetrics::Outcome::kError);
    co_await writer.sendJson(HttpStatus::bad_request, http::errorBody(why));
    co_return true;
  }
  co_return false;
}

// Decodes a body of type T or answers 400 naming the bad field.
template <typename T>
std::optional<T> decodeOr400(const http::Request& request, Reply& error) {
  auto message = wire::decode<T>(request.body());
  if (!message.isOk()) {
    error = errorReply(400, message.status().message());
    return std::nullopt;
  }
  return std::move(message).value();
}

Task<void> NodeAgentImpl::handleReserve(const http::Request& request,
                                        http::ResponseWriter& writer) {
  // Awaited into a local: GCC 12 miscompiles `if (co_await ...)`.
  const bool refused =
      co_await refuse(writer, AgentMetrics::Kind::kReserve, true, config::NodeRole::kPrefill,
                      "this agent only prefills; reserve on a decode node");
  if (refused) co_return;
  Reply reply;
  auto message = decodeOr400<wire::ReserveRequest>(request, reply);
  if (message) {
    // Named, not a temporary inside co_await: GCC 12 destroys the init-captures of a lambda
    // temporary in a co_await expression twice.
    auto work = [this, m = std::move(*message)](std::shared_ptr<ReplyChannel> ch) {
      ch->try_send(boost::system::error_code{}, reserve(m));
    };
    reply = co_await onEngine(std::move(work));
  }
  metrics_.countRequest(AgentMetrics::Kind::kReserve, AgentMetrics::outcomeOf(reply.status));
  co_await writer.send(static_cast<HttpStatus>(reply.status), "application/json", reply.body);
}

Task<void> NodeAgentImpl::handlePrefill(const http::Request& request,
                                        http::ResponseWriter& writer) {
  const bool refused =
      co_await refuse(writer, AgentMetrics::Kind::kPrefill, true, config::NodeRole::kDecode,
                      "this agent only decodes; prefill on another node");
  if (refused) co_return;
  Reply reply;
  auto message = decodeOr400<wire::PrefillRequest>(request, reply);
  if (message) {
    uint64_t tokens = message->tokens.size();
    queued_prefill_tokens_ += tokens;
    ++queued_prefill_requests_;
    auto work = [this, m = std::move(*message)](std::shared_ptr<ReplyChannel> ch) {
      prefill(m, std::move(ch));
    };  // named: see handleReserve
    reply = co_await onEngine(std::move(work));
  }
  metrics_.countRequest(AgentMetrics::Kind::kPrefill, AgentMetrics::outcomeOf(reply.status));
  co_await writer.send(static_cast<HttpStatus>(reply.status), "application/json", reply.body);
}

Task<void> NodeAgentImpl::handleDecode(const http::Request& request, http::ResponseWriter& writer) {
  // Not refused while draining: the lease was granted before, and its request should finish.
  const bool refused =
      co_await refuse(writer, AgentMetrics::Kind::kDecode, false, config::NodeRole::kPrefill,
                      "this agent only prefills; decode on a decode node");
  if (refused) co_return;
  Reply error;
  auto message = decodeOr400<wire::DecodeRequest>(request, error);
  if (!message) {
    metrics_.countRequest(AgentMetrics::Kind::kDecode, AgentMetrics::Outcome::kError);
    co_await writer.sendJson(HttpStatus::bad_request, error.body);
    co_return;
  }
  auto stream = std::make_shared<Stream>(io_.get_executor(), message->max_new_tokens + 4,
                                         message->request_id);
  asio::post(engine_io_, [this, m = std::move(*message), stream] { decode(m, stream); });
  co_await writeStream(std::move(stream), writer, AgentMetrics::Kind::kDecode);
}

Task<void> NodeAgentImpl::handleGenerate(const http::Request& request,
                                         http::ResponseWriter& writer) {
  // Decode agents prefill too when the scheduler colocates a request on them (conditional
  // disaggregation: a short uncached suffix costs less to compute than to move).
  const bool refused =
      co_await refuse(writer, AgentMetrics::Kind::kGenerate, true, config::NodeRole::kPrefill,
                      "this agent only prefills; generate on a decode node");
  if (refused) co_return;
  Reply error;
  auto message = decodeOr400<wire::GenerateRequest>(request, error);
  if (!message) {
    metrics_.countRequest(AgentMetrics::Kind::kGenerate, AgentMetrics::Outcome::kError);
    co_await writer.sendJson(HttpStatus::bad_request, error.body);
    co_return;
  }
  queued_prefill_tokens_ += message->tokens.size();
  ++queued_prefill_requests_;
  auto stream = std::make_shared<Stream>(io_.get_executor(), message->max_new_tokens + 4,
                                         message->request_id);
  asio::post(engine_io_, [this, m = std::move(*message), stream] { generate(m, stream); });
  co_await writeStream(std::move(stream), writer, AgentMetrics::Kind::kGenerate);
}

Task<void> NodeAgentImpl::writeStream(std::shared_ptr<Stream> stream, http::ResponseWriter& writer,
                                      AgentMetrics::Kind kind) {
  const bool started = co_await writer.beginStream(HttpStatus::ok, "application/x-ndjson");
  if (!started) {
    metrics_.countRequest(kind, AgentMetrics::Outcome::kCancelled);
    cancelStream(stream);
    co_return;
  }
  // The stream's outcome is its finish line's (an engine that stopped sends none).
  AgentMetrics::Outcome outcome = AgentMetrics::Outcome::kError;
  for (;;) {
    auto [ec, line, last] = co_await stream->lines.async_receive(kNoThrow);
    if (ec) break;
    if (last) {
      Result<wire::StreamLine> finish = wire::decode<wire::StreamLine>(line);
      if (finish.isOk() && (finish->finish == "stop" || finish->finish == "length")) {
        outcome = AgentMetrics::Outcome::kOk;
      } else if (finish.isOk() && finish->message == "cancelled") {
        outcome = AgentMetrics::Outcome::kCancelled;
      }
    }
    line.push_back('\n');
    const bool written = co_await writer.writeChunk(line);
    if (!written) {
      metrics_.countRequest(kind, AgentMetrics::Outcome::kCancelled);
      cancelStream(stream);  // the orchestrator closed the stream: stop decoding
      co_return;
    }
    if (last) break;
  }
  metrics_.countRequest(kind, outcome);
  co_await writer.endStream();
}

void NodeAgentImpl::cancelStream(const std::shared_ptr<Stream>& stream) {
  stream->cancelled = true;
  asio::post(engine_io_, [this, id = stream->request_id] { cancel(id); });
}

Task<void> NodeAgentImpl::handleRelease(const http::Request& request,
                                        http::ResponseWriter& writer) {
  Reply reply;
  if (auto message = decodeOr400<wire::ReleaseRequest>(request, reply)) {
    auto work = [this, id = message->id,
                 writer_done = message->writer_done](std::shared_ptr<ReplyChannel> ch) {
      release(id, writer_done);
      ch->try_send(boost::system::error_code{}, jsonReply(200, "{}"));
    };  // named: see handleReserve
    reply = co_await onEngine(std::move(work));
  }
  metrics_.countRequest(AgentMetrics::Kind::kRelease, AgentMetrics::outcomeOf(reply.status));
  co_await writer.send(static_cast<HttpStatus>(reply.status), "application/json", reply.body);
}

Task<void> NodeAgentImpl::handleCancel(const http::Request& request, http::ResponseWriter& writer) {
  Reply reply;
  if (auto message = decodeOr400<wire::IdRequest>(request, reply)) {
    // A prefill of it that is computing now holds the engine thread: reach it from here.
    {
      std::lock_guard lock(stop_prefill_mu_);
      stop_prefill_.insert(message->id);
    }
    auto work = [this, id = message->id](std::shared_ptr<ReplyChannel> ch) {
      cancel(id);
      ch->try_send(boost::system::error_code{}, jsonReply(200, "{}"));
    };  // named: see handleReserve
    reply = co_await onEngine(std::move(work));
  }
  metrics_.countRequest(AgentMetrics::Kind::kCancel, AgentMetrics::outcomeOf(reply.status));
  co_await writer.send(static_cast<HttpStatus>(reply.status), "application/json", reply.body);
}

Task<void> NodeAgentImpl::handleMetrics(const http::Request& request,
                                        http::ResponseWriter& writer) {
  (void)request;
  co_await writer.send(HttpStatus::ok, metrics::kContentType, metrics::text(metrics_registry_));
}

// ---------------------------------------------------------------------------------------------
// Registration and heartbeats (io thread)

wire::RegisterRequest NodeAgentImpl::registration() const {
  const engine::KvGeometry& g = engine_->kvGeometry();
  wire::RegisterRequest r;
  std::string address = "127.0.0.1:" + std::to_string(server_.port());
  if (auto ep = http::parseEndpoint(config_.control_address, "control_address"); ep.isOk()) {
    if (!ep->address().is_unspecified()) {
      address = http::endpointText(http::tcp::endpoint(ep->address(), server_.port()));
    }
  }
  r.name = config_.name.empty() ? address : config_.name;
  r.role = config::nodeRoleName(config_.role);
  r.control_address = address;
  r.model_fingerprint = model_fingerprint_;
  r.tokenizer_hash = tokenizer_hash_;
  r.hash_seed_id = hash_seed_id_;
  r.block_tokens = g.block_tokens;
  r.kv_layout = {"f32", g.layers, g.kv_heads, g.head_dim, g.blockBytes()};
  r.transport = std::string(transport_->name());
  r.transport_blob = blob_base64_;
  r.kv_blocks = g.num_blocks;
  r.max_sequence_tokens = engine_->maxSequenceTokens();
  r.prefill_model = prefill_model_;
  return r;
}

Task<Status> NodeAgentImpl::registerOnce() {
  auto response = co_await client_.request(orchestrator_, http::Verb::post, "/v1/agents/register",
                                           wire::encode(registration()), milliseconds(5000));
  if (!response.isOk()) co_return response.status();
  if (response->status == 409 || response->status == 400) {
    co_return failedPrecondition("the orchestrator refused this agent: " + response->body);
  }
  if (response->status != 200) {
    co_return unavailable("register: HTTP " + std::to_string(response->status) + ": " +
                          response->body);
  }
  CO_ASSIGN_OR_RETURN(wire::RegisterResponse r,
                      wire::decode<wire::RegisterResponse>(response->body));
  node_id_ = r.node_id;
  heartbeat_interval_ms_ = std::max<uint32_t>(r.heartbeat_interval_ms, 10);
  event_sequence_ = 0;
  unacked_.clear();
  need_snapshot_ = true;
  spdlog::info("node agent: registered with {} as node {} (heartbeat every {} ms)",
               http::endpointText(orchestrator_), r.node_id, heartbeat_interval_ms_);
  co_return Status::ok();
}

Task<void> NodeAgentImpl::heartbeatLoop() {
  auto first_deadline = Clock::now() + milliseconds(config_.register_timeout_ms);
  milliseconds backoff(50);
  Clock::time_point last_warning{};
  while (!draining_ || (node_id_ && !left_)) {
    if (left_) co_return;
    if (!node_id_) {
      Status s = co_await registerOnce();
      if (!s.isOk()) {
        bool fatal = s.code() == StatusCode::kFailedPrecondition ||
                     (!ever_registered_ && Clock::now() >= first_deadline);
        if (fatal) {
          spdlog::error("node agent: {}", s.toString());
          if (on_fatal_) on_fatal_(s);
          co_return;
        }
        if (Clock::now() - last_warning > std::chrono::seconds(5)) {
          spdlog::warn("node agent: cannot register yet: {}", s.toString());
          last_warning = Clock::now();
        }
        asio::steady_timer timer(io_, backoff);
        co_await timer.async_wait(kNoThrow);
        backoff = std::min(backoff * 2, milliseconds(1000));
        continue;
      }
      ever_registered_ = true;
      backoff = milliseconds(50);
    }

    bool snapshot = need_snapshot_ || unacked_.size() > 64;
    Collected collected;
    Reply ignored =
        co_await onEngine([this, snapshot, &collected](std::shared_ptr<ReplyChannel> ch) {
          collected = collect(snapshot);
          ch->try_send(boost::system::error_code{}, Reply{});
        });
    (void)ignored;
    wire::HeartbeatRequest hb;
    hb.node_id = *node_id_;
    hb.load = collected.load;
    hb.prefill_model = collected.prefill_model;
    hb.draining = draining_;
    if (collected.snapshot) {
      unacked_.clear();  // the snapshot includes every event drained with it
      hb.kv_snapshot = wire::KvEventBatchWire{event_sequence_, std::move(*collected.snapshot), {}};
    } else if (collected.overflowed) {
      need_snapshot_ = true;  // events were lost: the next heartbeat sends a snapshot
    } else if (!collected.stored.empty() || !collected.evicted.empty()) {
      unacked_.push_back(
          {++event_sequence_, std::move(collected.stored), std::move(collected.evicted)});
    }
    hb.kv_events = unacked_;
    auto response =
        co_await client_.request(orchestrator_, http::Verb::post, "/v1/agents/heartbeat",
                                 wire::encode(hb), milliseconds(heartbeat_interval_ms_ * 2 + 1000));
    if (!response.isOk() || (response->status != 200 && response->status != 404)) {
      if (Clock::now() - last_warning > std::chrono::seconds(5)) {
        spdlog::warn("node agent: heartbeat failed: {}",
                     response.isOk() ? "HTTP " + std::to_string(response->status)
                                     : response.status().toString());
        last_warning = Clock::now();
      }
      if (collected.snapshot) need_snapshot_ = true;
    } else if (response->status == 404) {
      spdlog::warn("node agent: the orchestrator no longer knows node {}; registering again",
                   *node_id_);
      node_id_.reset();
      continue;
    } else {
      unacked_.clear();
      if (collected.snapshot) need_snapshot_ = false;
      auto answer = wire::decode<wire::HeartbeatResponse>(response->body);
      if (answer.isOk() && answer->resync) need_snapshot_ = true;
    }
    if (draining_ && left_) co_return;
    asio::steady_timer timer(io_, milliseconds(heartbeat_interval_ms_));
    co_await timer.async_wait(kNoThrow);
  }
}

// ---------------------------------------------------------------------------------------------
// Engine thread

void NodeAgentImpl::engineLoop() {
  while (!stop_threads_) {
    engine_io_.poll();
    if (stop_threads_) break;
    expireLeases();
    if (!active_.empty()) {
      decodeStep();
      publishGauges();
      continue;
    }
    publishGauges();
    engine_io_.run_one_for(milliseconds(20));
  }
}

// Once per loop turn (a decode step, or at most every 20 ms when idle): a few atomic stores.
void NodeAgentImpl::publishGauges() {
  const engine::KvBlockManager& blocks = engine_->blocks();
  uint32_t leased = 0;
  for (const auto& [id, lease] : leases_) leased += lease.blocks;
  leased = std::min(leased, blocks.usedBlocks());
  metrics_.setKvBlocks(blocks.usedBlocks() - leased, leased, blocks.evictableBlocks(),
                       blocks.freeBlocks());
  metrics_.active_leases.Set(static_cast<double>(leases_.size()));
  metrics_.decoding_sequences.Set(static_cast<double>(active_.size()));
}

AgentMetrics::Peer NodeAgentImpl::peerMetrics(uint32_t node_id) {
  auto it = peer_metrics_.find(node_id);
  if (it == peer_metrics_.end()) it = peer_metrics_.emplace(node_id, metrics_.peer(node_id)).first;
  return it->second;
}

Reply NodeAgentImpl::reserve(const wire::ReserveRequest& request) {
  if (cancelled_.erase(request.request_id)) return errorReply(409, "the request was cancelled");
  std::vector<TokenId> tokens = tokensOf(request.tokens);
  auto reservation = engine_->reserveImport(tokens);
  if (!reservation.isOk()) {
    const Status& s = reservation.status();
    unsigned status = s.code() == StatusCode::kResourceExhausted ? 503 : 400;
    return errorReply(status, "reserve: " + s.message(), capacityCode(s), false);
  }
  auto view = engine_->sequence(reservation->id);
  if (slot_leases_.size() >= kSlotCount / 2) {
    engine_->release(reservation->id).ignoreError();
    return errorReply(503, "reserve: too many leases");
  }
  while (slot_leases_.contains(next_slot_)) next_slot_ = (next_slot_ + 1) % kSlotCount;
  Lease lease;
  lease.id = next_lease_++;
  lease.request_id = request.request_id;
  lease.slot = next_slot_;
  next_slot_ = (next_slot_ + 1) % kSlotCount;
  lease.seq = reservation->id;
  lease.blocks = static_cast<uint32_t>(view->block_ids.size());
  lease.deadline = Clock::now() + milliseconds(request.lease_ms);
  uint32_t layers = engine_->kvGeometry().layers;
  lease.expected_layers = reservation->cached_blocks < lease.blocks ? layers : 0;
  lease.landed.assign(layers, false);

  wire::ReserveResponse response;
  response.lease_id = lease.id;
  response.slot = lease.slot;
  response.block_ids.assign(view->block_ids.begin(), view->block_ids.end());
  response.cached_blocks = reservation->cached_blocks;
  response.regions.assign(regions_.begin(), regions_.end());
  slot_leases_[lease.slot] = lease.id;
  leases_.emplace(lease.id, std::move(lease));
  return jsonReply(200, wire::encode(response));
}

Result<rdma::PeerId> NodeAgentImpl::peerFor(const std::string& blob_base64) {
  if (auto it = peers_.find(blob_base64); it != peers_.end()) return it->second;
  ASSIGN_OR_RETURN(std::vector<uint8_t> blob, wire::base64Decode(blob_base64));
  ASSIGN_OR_RETURN(rdma::PeerId peer, transport_->connect(blob));
  peers_[blob_base64] = peer;
  return peer;
}

void NodeAgentImpl::prefill(const wire::PrefillRequest& request,
                            std::shared_ptr<ReplyChannel> reply) {
  queued_prefill_tokens_ -= request.tokens.size();
  --queued_prefill_requests_;
  // Refusals before anything was posted: no write of this prefill can land on the target.
  auto send = [&](unsigned status, std::string message) {
    reply->try_send(boost::system::error_code{}, errorReply(status, std::move(message), "", true));
  };
  if (cancelled_.erase(request.request_id)) return send(409, "cancelled");
  const wire::TransferTarget& target = request.target;
  const engine::KvGeometry& geometry = engine_->kvGeometry();
  const uint64_t prompt_blocks =
      (request.tokens.size() + geometry.block_tokens - 1) / geometry.block_tokens;
  if (target.block_ids.size() != prompt_blocks || target.cached_blocks > prompt_blocks ||
      target.regions.size() != 2 * uint64_t{geometry.layers}) {
    return send(400, "prefill: the target holds " + std::to_string(target.block_ids.size()) +
                         " blocks and " + std::to_string(target.regions.size()) +
                         " regions; the prompt needs " + std::to_string(prompt_blocks) +
                         " blocks and this model " + std::to_string(2 * geometry.layers) +
                         " regions");
  }
  engine::SamplingParams sampling = samplingOf(request.sampling);
  if (Status s = engine::validateSamplingParams(sampling); !s.isOk()) {
    return send(400, "prefill: " + s.message());
  }
  engine::LogitParams logit_params = logitParamsOf(request.sampling, request.stop_tokens);
  if (Status s = engine::validateLogitParams(logit_params, engine_->vocabSize()); !s.isOk()) {
    return send(400, "prefill: " + s.message());
  }
  if (Status s = checkRngDraws(request.rng_draws); !s.isOk()) {
    return send(400, "prefill: " + s.message());
  }
  rdma::PeerId peer = 0;
  const AgentMetrics::Peer peer_metrics = peerMetrics(target.node_id);
  if (target.cached_blocks < prompt_blocks) {
    auto connected = peerFor(target.transport_blob);
    if (!connected.isOk()) {
      peer_metrics.errors->Increment();
      return send(502, "transfer to node " + std::to_string(target.node_id) +
                           " failed: " + connected.status().toString());
    }
    peer = *connected;
  }

  const uint64_t key = next_prefill_++;
  PendingPrefill& pending = pending_[key];
  pending.request_id = request.request_id;
  pending.target_node = target.node_id;
  pending.blob = target.transport_blob;
  pending.reply = std::move(reply);
  pending.metrics = peer_metrics;
  const uint32_t first_block = target.cached_blocks;

  // After each layer of the last chunk: that layer's K and V of every block the target lacks.
  auto on_layer = [&](uint32_t layer) {
    std::span<const uint32_t> blocks = engine_->prefillingBlockIds();
    if (first_block >= blocks.size() || !pending.error.isOk()) return;
    ops_.clear();
    auto local = blocks.subspan(first_block);
    auto remote = std::span<const uint32_t>(target.block_ids).subspan(first_block);
    for (uint32_t kv = 0; kv < 2; ++kv) {
      rdma::KvPool remote_pool{target.regions[2 * layer + kv], geometry.blockBytes(), UINT32_MAX};
      Status s = rdma::appendBlockOps(pools_[2 * layer + kv], remote_pool, local, remote, ops_);
      if (!s.isOk()) {
        pending.error = s;
        return;
      }
    }
    if (!pending.posted) {
      pending.first_post = Clock::now();
      pending.posted = true;
    }
    uint32_t imm = target.slot << kLayerBits | layer;
    auto give_up = Clock::now() + milliseconds(config_.transport.op_timeout_ms);
    for (;;) {
      Status s = transport_->postWrite(peer, ops_, imm, key);
      if (s.isOk()) break;
      if (s.code() != StatusCode::kResourceExhausted || Clock::now() > give_up) {
        pending.error = s;
        return;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));  // the queue drains
    }
    ++pending.outstanding;
    uint64_t bytes = 0;
    for (const rdma::TransferOp& op : ops_) bytes += op.length;
    pending.response.transfer_bytes += bytes;
    pending.metrics.bytes->Increment(static_cast<double>(bytes));
    pending.metrics.batches->Increment();
  };

  std::vector<TokenId> tokens = tokensOf(request.tokens);
  auto start = Clock::now();
  auto result = runPrefill(request.request_id, tokens, on_layer);
  pending.computed = true;
  if (!result.isOk()) {
    if (pending.error.isOk()) pending.error = result.status();
  } else {
    pending.seq = result->id;
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    notePrefillTime(tokens.size() - result->cached_tokens, seconds);
    metrics_.prefill_seconds.Observe(seconds);
    metrics_.prefill_tokens.Increment(static_cast<double>(tokens.size() - result->cached_tokens));
    metrics_.prefill_cached_tokens.Increment(result->cached_tokens);
    engine::SamplingRng rng(sampling.seed);
    rng.discard(request.rng_draws);  // a resumed answer goes on where it stopped
    engine::LogitProcessor processor(std::move(logit_params), tokens,
                                     request.sampling.answer_tokens);
    const engine::LogitProcessor::PickedToken first =
        processor.pick(logits_, *sampler_, engine::drawFor(sampling, rng));
    pending.response.first_token = first.token;
    pending.response.logprobs = wireLogprobs(first.logprobs);
    pending.response.rng_draws = rng.draws();
    pending.response.cached_tokens = result->cached_tokens;
    pending.response.prefill_ms = msSince(start);
  }
  if (pending.outstanding == 0) finishPrefill(key);
}

void NodeAgentImpl::finishPrefill(uint64_t key) {
  auto it = pending_.find(key);
  if (it == pending_.end()) return;
  PendingPrefill& p = it->second;
  if (p.seq) engine_->release(*p.seq).ignoreError();
  Reply reply;
  if (!p.error.isOk()) {
    bool transfer = p.computed && p.posted;
    // runPrefill stopped it (a cancel): nothing was posted, the peer is fine.
    const bool stopped = !p.posted && p.error.code() == StatusCode::kCancelled;
    if (transfer) p.metrics.errors->Increment();
    if (!stopped && (p.error.code() == StatusCode::kUnavailable ||
                     p.error.code() == StatusCode::kDeadlineExceeded ||
                     p.error.code() == StatusCode::kCancelled)) {
      // The peer is gone or stuck: reconnect (with a fresh blob) next time.
      if (auto peer = peers_.find(p.blob); peer != peers_.end()) {
        transport_->disconnect(peer->second).ignoreError();
        peers_.erase(peer);
      }
    }
    unsigned status = transfer || p.error.code() == StatusCode::kUnavailable ? 502 : 400;
    if (p.error.code() == StatusCode::kResourceExhausted) status = 503;
    if (stopped) status = 409;
    // Every batch posted has completed by now (outstanding is 0); one that failed may still have
    // bytes on their way to the target.
    reply = errorReply(status,
                       (transfer ? "transfer to node " + std::to_string(p.target_node) + " failed: "
                                 : std::string("prefill: ")) +
                           p.error.toString(),
                       p.posted ? "" : capacityCode(p.error), !p.write_failed);
  } else {
    p.response.transfer_ms = p.posted ? msSince(p.first_post) : 0;
    if (p.posted) metrics_.transfer_seconds.Observe(p.response.transfer_ms / 1000);
    reply = jsonReply(200, wire::encode(p.response));
  }
  p.reply->try_send(boost::system::error_code{}, std::move(reply));
  pending_.erase(it);
}

void NodeAgentImpl::onCompletion(const rdma::Completion& completion) {
  auto it = pending_.find(completion.cookie);
  if (it == pending_.end()) return;
  PendingPrefill& p = it->second;
  if (!completion.status.isOk() && p.error.isOk()) p.error = completion.status;
  if (!completion.status.isOk()) p.write_failed = true;
  if (p.outstanding > 0) --p.outstanding;
  if (p.outstanding == 0 && p.computed) finishPrefill(completion.cookie);
}

void NodeAgentImpl::onImmediate(const rdma::ImmediateEvent& event) {
  uint32_t slot = event.imm >> kLayerBits;
  uint32_t layer = event.imm & ((1u << kLayerBits) - 1);
  auto it = slot_leases_.find(slot);
  if (it == slot_leases_.end()) {
    spdlog::debug("node agent: immediate for slot {} with no lease (a late write)", slot);
    return;
  }
  Lease& lease = leases_.at(it->second);
  if (layer >= lease.landed.size() || lease.landed[layer]) {
    spdlog::warn("node agent: unexpected immediate (slot {}, layer {})", slot, layer);
    return;
  }
  lease.landed[layer] = true;
  ++lease.landed_count;
  if (lease.landed_count < lease.expected_layers) return;
  if (lease.quarantined) {
    freeLease(leases_.find(lease.id));  // the last late write landed
  } else if (lease.stream) {
    activateLease(lease);
  }
}

void NodeAgentImpl::decode(const wire::DecodeRequest& request, std::shared_ptr<Stream> stream) {
  auto it = leases_.find(request.lease_id);
  if (it == leases_.end()) {
    emit(*stream,
         finishLine("error", "unknown or expired lease " + std::to_string(request.lease_id)), true);
    return;
  }
  Lease& lease = it->second;
  if (lease.quarantined) {
    emit(*stream, finishLine("error", "lease " + std::to_string(request.lease_id) + " has ended"),
         true);
    return;
  }
  if (lease.stream) {
    emit(*stream, finishLine("error", "the lease is already being decoded"), true);
    return;
  }
  if (Status s = checkRngDraws(request.rng_draws); !s.isOk()) {
    emit(*stream, finishLine("error", s.message()), true);
    return;
  }
  lease.stream = std::move(stream);
  lease.decode = request;
  if (lease.landed_count == lease.expected_layers) activateLease(lease);
}

void NodeAgentImpl::activateLease(Lease& lease) {
  const uint64_t lease_id = lease.id;
  Status s = engine_->commitImport(lease.seq);
  if (!s.isOk()) {
    endLease(lease_id, "commit: " + s.message());
    return;
  }
  Active active;
  active.request_id = lease.decode.request_id;
  active.seq = lease.seq;
  active.stream = std::move(lease.stream);
  active.sampling = samplingOf(lease.decode.sampling);
  active.rng = engine::SamplingRng(active.sampling.seed);
  active.rng.discard(lease.decode.rng_draws);
  active.next = lease.decode.first_token;
  active.remaining = lease.decode.max_new_tokens;
  active.stop = tokensOf(lease.decode.stop_tokens);
  engine::LogitParams logit_params = logitParamsOf(lease.decode.sampling, lease.decode.stop_tokens);
  Status valid_logits = engine::validateLogitParams(logit_params, engine_->vocabSize());
  if (valid_logits.isOk()) {
    // The sequence holds the prompt; the prefill agent picked the answer's first token.
    auto view = engine_->sequence(lease.seq);
    active.logits = engine::LogitProcessor(std::move(logit_params),
                                           view.isOk() ? view->tokens : std::span<const TokenId>(),
                                           lease.decode.sampling.answer_tokens);
    active.logits.accept(lease.decode.first_token);
  }
  slot_leases_.erase(lease.slot);
  leases_.erase(lease_id);
  if (!valid_logits.isOk()) {
    emit(*active.stream, finishLine("error", valid_logits.message()), true);
    engine_->release(active.seq).ignoreError();
    return;
  }
  if (Status v = engine::validateSamplingParams(active.sampling); !v.isOk()) {
    emit(*active.stream, finishLine("error", v.message()), true);
    engine_->release(active.seq).ignoreError();
    return;
  }
  if (active.remaining == 0) {
    emit(*active.stream, finishLine("length"), true);
    engine_->release(active.seq).ignoreError();
    return;
  }
  active_.push_back(std::move(active));
}

// Ends a lease that will not decode: frees its blocks and tells a waiting stream why.
void NodeAgentImpl::endLease(uint64_t lease_id, std::string_view why, bool writer_done) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return;
  Lease& lease = it->second;
  if (lease.quarantined && !writer_done) return;
  if (lease.stream) emit(*lease.stream, finishLine("error", why), true);
  lease.stream.reset();
  if (lease.landed_count < lease.expected_layers && !writer_done) {
    lease.quarantined = true;
    lease.deadline = Clock::now() + milliseconds(config_.transport.op_timeout_ms + 1000);
    return;
  }
  freeLease(it);
}

void NodeAgentImpl::freeLease(std::unordered_map<uint64_t, Lease>::iterator it) {
  engine_->release(it->second.seq).ignoreError();
  slot_leases_.erase(it->second.slot);
  leases_.erase(it);
}

void NodeAgentImpl::release(uint64_t lease_id, bool writer_done) {
  endLease(lease_id, "released", writer_done);
}

void NodeAgentImpl::cancel(uint64_t request_id) {
  // Any prefill of it that was computing when the cancel came has stopped or ended by now (this
  // thread ran it); queued ones are refused through cancelled_ below.
  forgetStop(request_id);
  bool found = false;
  std::vector<uint64_t> leases;
  for (const auto& [id, lease] : leases_) {
    if (lease.request_id == request_id) leases.push_back(id);
  }
  for (uint64_t id : leases) endLease(id, "cancelled");
  found = !leases.empty();
  for (size_t i = 0; i < active_.size();) {
    if (active_[i].request_id == request_id) {
      finish(i, "error", "cancelled");
      found = true;
    } else {
      ++i;
    }
  }
  for (const auto& [key, p] : pending_) {
    if (p.request_id == request_id) found = true;  // its transfer finishes on its own
  }
  // Work not yet run (a prefill or reserve still queued) is refused when it runs.
  if (!found && cancelled_.insert(request_id).second) {
    cancelled_order_.push_back(request_id);
    if (cancelled_order_.size() > kMaxCancelled) {
      cancelled_.erase(cancelled_order_.front());
      cancelled_order_.pop_front();
    }
  }
}

void NodeAgentImpl::expireLeases() {
  auto now = Clock::now();
  if (now - last_expiry_scan_ < milliseconds(10)) return;
  last_expiry_scan_ = now;
  std::vector<uint64_t> expired;
  for (const auto& [id, lease] : leases_) {
    if (now >= lease.deadline) expired.push_back(id);
  }
  for (uint64_t id : expired) {
    const Lease& lease = leases_.at(id);
    if (lease.quarantined) {
      spdlog::warn(
          "node agent: lease {} (request {}): {} of {} layers landed; its blocks are "
          "free again after the writer's timeout",
          id, lease.request_id, lease.landed_count, lease.expected_layers);
      freeLease(leases_.find(id));
      continue;
    }
    std::string why = "the KV did not arrive within the lease (" +
                      std::to_string(lease.landed_count) + " of " +
                      std::to_string(lease.expected_layers) + " layers landed)";
    spdlog::warn("node agent: lease {} (request {}) expired: {}", id, lease.request_id, why);
    endLease(id, why);
  }
}

Result<engine::PrefillResult> NodeAgentImpl::runPrefill(uint64_t request_id,
                                                        std::span<const TokenId> tokens,
                                                        const engine::LayerDoneCallback& on_layer,
                                                        const std::atomic<bool>* also_stop) {
  logits_.resize(engine_->vocabSize());
  auto result = engine_->prefill(tokens, logits_, on_layer, [&] {
    return stopRequested(request_id) ||
           (also_stop != nullptr && also_stop->load(std::memory_order_relaxed));
  });
  forgetStop(request_id);  // done with that cancel: a later attempt of this id must run
  return result;
}

void NodeAgentImpl::generate(const wire::GenerateRequest& request, std::shared_ptr<Stream> stream) {
  queued_prefill_tokens_ -= request.tokens.size();
  --queued_prefill_requests_;
  if (stream->cancelled || cancelled_.erase(request.request_id)) {
    emit(*stream, finishLine("error", "cancelled"), true);  // ends the stream it would feed
    return;
  }
  engine::SamplingParams sampling = samplingOf(request.sampling);
  if (Status s = engine::validateSamplingParams(sampling); !s.isOk()) {
    emit(*stream, finishLine("error", s.message()), true);
    return;
  }
  engine::LogitParams logit_params = logitParamsOf(request.sampling, request.stop_tokens);
  if (Status s = engine::validateLogitParams(logit_params, engine_->vocabSize()); !s.isOk()) {
    emit(*stream, finishLine("error", s.message()), true);
    return;
  }
  if (Status s = checkRngDraws(request.rng_draws); !s.isOk()) {
    emit(*stream, finishLine("error", s.message()), true);
    return;
  }
  std::vector<TokenId> tokens = tokensOf(request.tokens);
  auto start = Clock::now();
  auto result = runPrefill(request.request_id, tokens, nullptr, &stream->cancelled);
  if (!result.isOk()) {
    const bool stopped = result.status().code() == StatusCode::kCancelled;
    emit(*stream,
         finishLine("error", stopped ? "cancelled" : "prefill: " + result.status().toString(),
                    capacityCode(result.status())),
         true);
    return;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  notePrefillTime(tokens.size() - result->cached_tokens, seconds);
  metrics_.prefill_seconds.Observe(seconds);
  metrics_.prefill_tokens.Increment(static_cast<double>(tokens.size() - result->cached_tokens));
  metrics_.prefill_cached_tokens.Increment(result->cached_tokens);
  Active active;
  active.request_id = request.request_id;
  active.seq = result->id;
  active.stream = std::move(stream);
  active.sampling = sampling;
  active.rng = engine::SamplingRng(sampling.seed);
  active.rng.discard(request.rng_draws);  // a resumed answer goes on where it stopped
  active.stop = tokensOf(request.stop_tokens);
  active.logits =
      engine::LogitProcessor(std::move(logit_params), tokens, request.sampling.answer_tokens);
  const engine::LogitProcessor::PickedToken first =
      active.logits.pick(logits_, *sampler_, engine::drawFor(sampling, active.rng));
  active_.push_back(std::move(active));
  Active& a = active_.back();
  // A stop token is sent too (it counts as an answer token, as the prefill agent's first token
  // does), then ends the answer.
  bool stop = std::find(a.stop.begin(), a.stop.end(), first.token) != a.stop.end();
  if (!emit(*a.stream, tokenLine(first, result->cached_tokens), false)) {
    return finish(active_.size() - 1, "error", "cancelled");
  }
  if (stop) return finish(active_.size() - 1, "stop");
  if (request.max_new_tokens <= 1) return finish(active_.size() - 1, "length");
  a.next = first.token;
  a.remaining = request.max_new_tokens - 1;
}

bool NodeAgentImpl::emit(Stream& stream, std::string line, bool last) {
  if (stream.cancelled) return false;
  return stream.lines.try_send(boost::system::error_code{}, std::move(line), last);
}

void NodeAgentImpl::finish(size_t index, std::string_view reason, std::string_view message,
                           std::string_view code) {
  Active& a = active_[index];
  if (!a.stream->cancelled) emit(*a.stream, finishLine(reason, message, code), true);
  engine_->release(a.seq).ignoreError();
  active_.erase(active_.begin() + static_cast<ptrdiff_t>(index));
}

void NodeAgentImpl::decodeStep() {
  // Drop cancelled streams and sequences at the end of the context first.
  for (size_t i = 0; i < active_.size();) {
    auto view = engine_->sequence(active_[i].seq);
    if (active_[i].stream->cancelled) {
      finish(i, "error", "cancelled");
    } else if (view.isOk() && view->tokens.size() >= engine_->maxSequenceTokens()) {
      finish(i, "length");
    } else {
      ++i;
    }
  }
  if (active_.empty()) return;
  const size_t n = std::min<size_t>(active_.size(), config_.max_batch_sequences);
  step_ids_.clear();
  step_tokens_.clear();
  for (size_t i = 0; i < n; ++i) {
    step_ids_.push_back(active_[i].seq);
    step_tokens_.push_back(active_[i].next);
  }
  const uint32_t vocab = engine_->vocabSize();
  logits_.resize(size_t{vocab} * n);
  const Clock::time_point step_start = Clock::now();
  Status s =
      engine_->decode(step_ids_, step_tokens_, std::span<float>(logits_.data(), size_t{vocab} * n));
  metrics_.decode_step_seconds.Observe(
      std::chrono::duration<double>(Clock::now() - step_start).count());
  metrics_.decode_batch_sequences.Observe(static_cast<double>(n));
  if (!s.isOk()) {
    // Out of KV blocks: the newest sequence of the step gives way so the others go on.
    spdlog::warn("node agent: decode step of {} sequences failed: {}", n, s.toString());
    finish(n - 1, "error", "decode: " + s.toString(), capacityCode(s));
    return;
  }
  std::vector<size_t> done;
  for (size_t i = 0; i < n; ++i) {
    Active& a = active_[i];
    std::span<float> row(logits_.data() + i * vocab, vocab);
    const engine::LogitProcessor::PickedToken picked =
        a.logits.pick(row, *sampler_, engine::drawFor(a.sampling, a.rng));
    const TokenId token = picked.token;
    if (std::find(a.stop.begin(), a.stop.end(), token) != a.stop.end()) {
      // Sent, then the answer ends: a stop token counts as an answer token on every path.
      if (!emit(*a.stream, tokenLine(picked), false)) a.stream->cancelled = true;
      done.push_back(i);
      a.remaining = 0;
      a.next = -1;  // marks a stop
      continue;
    }
    if (!emit(*a.stream, tokenLine(picked), false)) {
      a.stream->cancelled = true;
      done.push_back(i);
      continue;
    }
    a.next = token;
    if (--a.remaining == 0) done.push_back(i);
  }
  for (auto it = done.rbegin(); it != done.rend(); ++it) {
    const Active& a = active_[*it];
    if (a.stream->cancelled) {
      finish(*it, "error", "cancelled");
    } else {
      finish(*it, a.next == -1 ? "stop" : "length");
    }
  }
  // Fairness when more sequences are active than one step takes.
  if (active_.size() > config_.max_batch_sequences) {
    size_t shift = std::min<size_t>(n - done.size(), active_.size());
    std::rotate(active_.begin(), active_.begin() + static_cast<ptrdiff_t>(shift), active_.end());
  }
}

NodeAgentImpl::Collected NodeAgentImpl::collect(bool snapshot) {
  Collected c;
  const engine::KvBlockManager& blocks = engine_->blocks();
  c.load.queued_prefill_tokens = queued_prefill_tokens_;
  c.load.queued_prefill_requests = queued_prefill_requests_;
  c.load.active_decode_seqs = static_cast<uint32_t>(active_.size());
  c.load.free_kv_blocks = blocks.availableBlocks();
  c.load.cached_kv_blocks = blocks.evictableBlocks();
  c.load.total_kv_blocks = blocks.numBlocks();
  c.load.active_leases = static_cast<uint32_t>(leases_.size());
  for (const auto& [id, lease] : leases_) c.load.leased_blocks += lease.blocks;
  c.prefill_model = prefill_model_;
  events_.clear();
  c.overflowed = engine_->drainKvEvents(events_);
  if (snapshot) {
    c.snapshot.emplace();
    engine_->cachedBlockHashes(*c.snapshot);
    return c;
  }
  // The net effect per hash (its last event), so the batch's stored and evicted sets are
  // disjoint and their order does not matter.
  std::unordered_map<uint64_t, bool> last;
  for (const engine::KvBlockEvent& e : events_) {
    last[e.hash] = e.kind == engine::KvBlockEvent::Kind::kStored;
  }
  for (const auto& [hash, stored] : last) (stored ? c.stored : c.evicted).push_back(hash);
  return c;
}

void NodeAgentImpl::notePrefillTime(uint64_t tokens, double seconds) {
  if (tokens == 0) return;
  // A running per-token cost (the scheduler's linear term); the fixed and quadratic terms stay 0
  // until there is a fit worth the name.
  double per_token = seconds / static_cast<double>(tokens);
  prefill_model_.per_token_s = prefill_model_.per_token_s == 0
                                   ? per_token
                                   : 0.9 * prefill_model_.per_token_s + 0.1 * per_token;
}

// ---------------------------------------------------------------------------------------------
// Transfer thread

void NodeAgentImpl::transferLoop() {
  std::array<rdma::Completion, 64> completions;
  std::array<rdma::ImmediateEvent, 64> immediates;
  while (!stop_threads_) {
    size_t n = transport_->pollCompletions(completions, std::chrono::microseconds(500));
    for (size_t i = 0; i < n; ++i) {
      asio::post(engine_io_, [this, c = std::move(completions[i])] { onCompletion(c); });
    }
    size_t m = transport_->pollImmediates(immediates, std::chrono::microseconds(n ? 0 : 500));
    for (size_t i = 0; i < m; ++i) {
      asio::post(engine_io_, [this, e = immediates[i]] { onImmediate(e); });
    }
  }
}

}  // namespace

Result<std::unique_ptr<NodeAgent>> NodeAgent::create(const config::NodeAgentConfig& config,
                                                     boost::asio::io_context& io) {
  auto agent = std::make_unique<NodeAgentImpl>(config, io);
  RETURN_IF_ERROR(agent->init());
  return std::unique_ptr<NodeAgent>(std::move(agent));
}

}  // namespace kvferry::agent
