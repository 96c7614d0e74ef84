#include "orchestrator/request_flow.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <limits>
#include <set>
#include <utility>

#include "orchestrator/openai/detokenizer.h"
#include "orchestrator/openai/response.h"

// GCC 12 flags Asio's coroutine frames (aligned_alloc'd, freed with free() by
// awaitable_frame_base::operator delete) as -Wmismatched-new-delete when it inlines the frame
// allocation: a false positive (GCC PR 109224, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace kvferry::orchestrator {
namespace {

using http::Task;
using http::tcp;
namespace json = boost::json;

double msBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

double secondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

bool isSuccess(unsigned status) { return status >= 200 && status < 300; }

// The message of an agent's {"error":{"message":...}} body, else the start of the body.
std::string agentErrorMessage(const http::Response& response) {
  boost::system::error_code ec;
  json::value body = json::parse(response.body, ec);
  if (!ec && body.is_object()) {
    if (const json::value* error = body.as_object().if_contains("error");
        error != nullptr && error->is_object()) {
      if (const json::value* message = error->as_object().if_contains("message");
          message != nullptr && message->is_string()) {
        return std::string(message->as_string());
      }
    }
  }
  if (response.body.empty()) return "(empty body)";
  return response.body.substr(0, 200);
}

// The answer to one OpenAI request: SSE chunks or one JSON body, from generated token ids.
// Owns the request's detokenizer and stop-string matcher.
class ClientOutput {
 public:
  ClientOutput(http::ResponseWriter& writer, const PreparedRequest& request,
               const ServedModel& model, OrchestratorMetrics& metrics)
      : writer_(writer),
        request_(request),
        model_(model),
        metrics_(metrics),
        detokenizer_(*model.tokenizer, request.tokens),
        stops_(request.api.stop) {
    context_.endpoint = request.api.endpoint;
    context_.id = request.openai_id;
    context_.created = request.created;
    context_.model = model.name;
    context_.include_usage = request.api.include_usage;
    context_.system_fingerprint = "kvferry-" + model.identity.model_fingerprint;
  }

  // One generated token. True: more are wanted. False: the answer is complete (a stop token or
  // string, or the token budget: endReason() says which), the client is gone, or the token is
  // not in the vocabulary (badToken(); such a token is not counted, so another agent can go on
  // from the ones before it once beginAttempt() cleared that).
  Task<bool> token(model::TokenId id) {
    if (!end_reason_.empty() || client_gone_ || !bad_token_.empty()) co_return false;
    std::string text;
    if (std::find(model_.stop_tokens.begin(), model_.stop_tokens.end(), id) !=
        model_.stop_tokens.end()) {
      end_reason_ = "stop";
    } else {
      Result<std::string> piece = detokenizer_.feed(id);
      if (!piece.isOk()) {
        bad_token_ = "the agent sent token " + std::to_string(id) + ", outside the vocabulary";
        co_return false;
      }
      openai::StopMatcher::Output out = stops_.feed(*piece);
      text = std::move(out.text);
      if (out.stopped) end_reason_ = "stop";
    }
    ++completion_tokens_;
    token_ids_.push_back(id);
    const Clock::time_point now = Clock::now();
    if (last_token_at_) {
      metrics_.itl_seconds.Observe(secondsBetween(*last_token_at_, now));
    } else {
      first_token_at_ = now;
    }
    last_token_at_ = now;
    if (end_reason_.empty() && completion_tokens_ >= request_.max_tokens) end_reason_ = "length";
    const bool sent = co_await emit(text);
    co_return sent&& end_reason_.empty();
  }

  // Completes the answer: what the detokenizer and the stop matcher still hold, the finish
  // reason (this output's own if it ended the answer, else `agent_reason`), usage, [DONE].
  Task<void> finish(std::string_view agent_reason) {
    std::string reason = end_reason_.empty() ? std::string(agent_reason) : end_reason_;
    std::string tail;
    if (!stops_.stopped()) {
      openai::StopMatcher::Output out = stops_.feed(detokenizer_.flush());
      tail = std::move(out.text);
      if (out.stopped) {
        reason = "stop";
      } else {
        tail += stops_.flush();
      }
    }
    finish_reason_ = reason;
    if (!request_.api.stream) {
      text_ += tail;
      std::string body = openai::completionResponse(request_.api.endpoint, request_.openai_id,
                                                    request_.created, model_.name, text_, reason,
                                                    usage(), context_.system_fingerprint);
      if (request_.api.return_token_ids) body = withTokenIds(std::move(body));
      const bool sent = co_await writer_.sendJson(http::HttpStatus::ok, std::move(body));
      client_gone_ = !sent;
      co_return;
    }
    // write() does nothing once the client is gone, so the sequence needs no checks.
    co_await emit(tail);
    co_await write(openai::streamFinishChunk(context_, reason));
    if (request_.api.include_usage) co_await write(openai::streamUsageChunk(context_, usage()));
    co_await write(std::string(openai::sseDone()));
    co_await endStream();
  }

  // Ends the answer with an error: the HTTP error when nothing was written yet, else an SSE
  // error event and [DONE].
  Task<void> fail(const openai::ApiError& error) {
    if (!begun_) {
      begun_ = true;
      co_await sendApiError(writer_, error);
      co_return;
    }
    co_await write(openai::streamErrorEvent(error));
    co_await write(std::string(openai::sseDone()));
    co_await endStream();
  }

  // A new attempt: the answer goes on from the tokens counted so far.
  void beginAttempt() { bad_token_.clear(); }
  // The prompt's cached tokens, for usage.
  void setCachedTokens(uint32_t tokens) { cached_tokens_ = tokens; }
  uint32_t cachedTokens() const { return cached_tokens_; }
  bool begun() const { return begun_; }  // bytes reached (or were sent to) the client
  // A write failed, or a watch with a callback saw the connection close.
  bool clientGone() const { return client_gone_; }
  // That, or a watch saw it close after unwatchClient() (the watch runs on to the end). Asked
  // before resuming a failed answer; not after a complete one, whose client may close its
  // connection as soon as it has read the end.
  bool clientLeft() const { return client_gone_ || writer_.gone(); }
  // Before the first write a departed client is otherwise noticed only at that write: watch its
  // connection meanwhile, and run `on_gone` if it closes (at once if an earlier watch already saw
  // it go). unwatchClient() ends that.
  void watchClient(std::function<void()> on_gone) {
    writer_.watchDisconnect([this, on_gone = std::move(on_gone)] {
      client_gone_ = true;
      if (on_gone) on_gone();
    });
  }
  void unwatchClient() { writer_.watchDisconnect(nullptr); }
  // Before a resumed attempt of a stream the client has bytes of: an SSE comment (clients ignore
  // it) that keeps its read timeout from firing and finds out whether it is still there. False
  // when it is gone.
  Task<bool> keepAliveWhileResuming() {
    if (request_.api.stream && begun_) co_await write(": resuming the answer on another node\n\n");
    co_return !clientLeft();
  }
  const std::string& badToken() const { return bad_token_; }
  const std::string& endReason() const { return end_reason_; }
  const std::string& finishReason() const { return finish_reason_; }
  uint32_t completionTokens() const { return completion_tokens_; }
  // Every token counted so far, in order (the last may be a stop token that ended the answer).
  const std::vector<model::TokenId>& tokenIds() const { return token_ids_; }
  std::optional<Clock::time_point> firstTokenAt() const { return first_token_at_; }

 private:
  openai::Usage usage() const {
    return {static_cast<uint32_t>(request_.tokens.size()), completion_tokens_, cached_tokens_};
  }

  // Streams: the response header and role chunk before the first text; then the text.
  // Non-streamed: collects the text. False when the client is gone.
  //
  // GCC 12 miscompiles co_await inside some conditions (`if (co_await f())`, `a && co_await
  // f()`, `c ? co_await f() : x`): every awaited value here goes through a named local first.
  Task<bool> emit(const std::string& text) {
    if (!request_.api.stream) {
      text_ += text;
      co_return true;
    }
    if (!begun_) {
      begun_ = true;
      const bool started = co_await writer_.beginStream(http::HttpStatus::ok, "text/event-stream");
      client_gone_ = !started;
      if (request_.api.endpoint == openai::Endpoint::kChatCompletions) {
        co_await write(openai::streamRoleChunk(context_));
      }
    }
    if (!text.empty()) co_await write(openai::streamTextChunk(context_, text));
    co_return !client_gone_;
  }

  // One SSE chunk; nothing once the client is gone. False when it is.
  Task<bool> write(std::string data) {
    if (client_gone_) co_return false;
    const bool written = co_await writer_.writeChunk(data);
    client_gone_ = !written;
    co_return written;
  }

  Task<void> endStream() {
    if (client_gone_) co_return;
    const bool ended = co_await writer_.endStream();
    client_gone_ = !ended;
  }

  http::ResponseWriter& writer_;
  const PreparedRequest& request_;
  const ServedModel& model_;
  OrchestratorMetrics& metrics_;
  openai::StreamContext context_;
  // choices[0].token_ids added to a completion body (the return_token_ids extension).
  std::string withTokenIds(std::string body) const {
    boost::system::error_code ec;
    boost::json::value root = boost::json::parse(body, ec);
    if (ec || !root.is_object()) return body;
    boost::json::array* choices = root.as_object()["choices"].if_array();
    if (choices == nullptr || choices->empty() || !(*choices)[0].is_object()) return body;
    boost::json::array ids;
    for (model::TokenId id : token_ids_) ids.push_back(id);
    (*choices)[0].as_object()["token_ids"] = std::move(ids);
    return boost::json::serialize(root);
  }

  openai::IncrementalDetokenizer detokenizer_;
  std::vector<model::TokenId> token_ids_;
  openai::StopMatcher stops_;
  std::string text_;  // non-streamed answers
  uint32_t completion_tokens_ = 0;
  uint32_t cached_tokens_ = 0;
  std::optional<Clock::time_point> first_token_at_;
  std::optional<Clock::time_point> last_token_at_;
  std::string end_reason_;
  std::string finish_reason_;
  std::string bad_token_;
  bool begun_ = false;
  bool client_gone_ = false;
};

// One request's attempts on the pairs the policy chooses.
class Runner {
 public:
  Runner(FlowContext& ctx, const PreparedRequest& request, http::ResponseWriter& writer)
      : ctx_(ctx), request_(request), writer_(writer), timeout_(ctx.config.agent_timeout_ms) {}

  Task<RequestOutcome> run();

 private:
  struct Failure {
    Status error;
    NodeId blame = 0;  // excluded from this request's later attempts
  };
  using AttemptResult = std::optional<Failure>;  // nullopt: answered, or the client is gone

  // What an attempt sends: the prompt; or, once the client has tokens of the answer, the prompt
  // followed by them, with the token budget and the random draws they used (DESIGN.md §2: the
  // answer resumes on a healthy pair where it broke).
  struct AttemptInput {
    std::vector<model::TokenId> tokens;
    std::vector<uint64_t> block_hashes;
    uint32_t max_new_tokens = 0;
    uint64_t rng_draws = 0;
    uint32_t resumed_tokens = 0;  // answer tokens at the end of `tokens`
  };
  Result<AttemptInput> nextInput() const;
  // The prefill node's cached prefix for this attempt; usage reports the first prompt's.
  void noteCachedTokens(uint32_t tokens);

  Task<AttemptResult> runColocated(NodeId node, uint64_t prefill_tokens);
  Task<AttemptResult> runSplit(NodeId prefill, NodeId decode, uint64_t prefill_tokens);
  // Reads an agent's token stream (generate or decode) into the output and completes the
  // answer. `first_token` runs when the first token line arrives.
  Task<AttemptResult> streamTokens(NodeId node, std::string target, std::string body,
                                   const std::function<void()>& first_token);
  struct StreamState {
    bool saw_token = false;
    bool stopped = false;  // the output ended the answer (or the client left): we hung up
    std::string finish;
    std::string message;
    std::string bad_line;
  };
  Task<bool> onStreamLine(StreamState& state, std::string_view line,
                          const std::function<void()>& first_token);
  void release(NodeId decode, uint64_t lease_id);
  // Stops this request's prefill or stream on `node` (a queued prefill never runs).
  void cancel(NodeId node);

  std::string label(NodeId id) const {
    const NodeRecord* node = ctx_.registry.node(id);
    return "node " + std::to_string(id) + " (" +
           (node != nullptr ? node->registration.control_address : std::string("?")) + ")";
  }
  tcp::endpoint endpointOf(NodeId id) const { return ctx_.registry.node(id)->control_endpoint; }
  Failure httpFailure(std::string_view call, NodeId called, const http::Response& response,
                      NodeId blame) const {
    return {unavailable(std::string(call) + " on " + label(called) + " answered HTTP " +
                        std::to_string(response.status) + ": " + agentErrorMessage(response)),
            blame};
  }
  std::string noPairMessage(const Status& policy_error) const;

  FlowContext& ctx_;
  const PreparedRequest& request_;
  http::ResponseWriter& writer_;
  const std::chrono::milliseconds timeout_;
  std::optional<ClientOutput> output_;
  AttemptInput input_;
  std::optional<uint32_t> attempt_cached_tokens_;
  RequestOutcome outcome_;
};

Result<Runner::AttemptInput> Runner::nextInput() const {
  AttemptInput input;
  input.tokens = request_.tokens;
  const std::vector<model::TokenId>& answer = output_->tokenIds();
  if (answer.empty()) {
    input.block_hashes = request_.block_hashes;
    input.max_new_tokens = request_.max_tokens;
    return input;
  }
  input.tokens.insert(input.tokens.end(), answer.begin(), answer.end());
  ASSIGN_OR_RETURN(input.block_hashes, model::blockHashes(ctx_.model.hash_seed, input.tokens,
                                                          ctx_.registry.identity().block_tokens));
  input.resumed_tokens = static_cast<uint32_t>(answer.size());
  input.max_new_tokens = request_.max_tokens - input.resumed_tokens;  // > 0: it did not end
  input.rng_draws = answer.size() * wire::randomDrawsPerToken(request_.sampling);
  return input;
}

void Runner::noteCachedTokens(uint32_t tokens) {
  attempt_cached_tokens_ = tokens;
  if (input_.resumed_tokens == 0) output_->setCachedTokens(tokens);
}

Task<RequestOutcome> Runner::run() {
  std::set<NodeId> excluded;
  std::optional<Failure> last;
  output_.emplace(writer_, request_, ctx_.model, ctx_.metrics);
  for (uint32_t attempt = 1; attempt <= ctx_.config.max_attempts; ++attempt) {
    Result<AttemptInput> input = nextInput();
    if (!input.isOk()) {
      last = Failure{input.status().withContext("resuming the answer"), 0};
      break;
    }
    input_ = std::move(input).value();
    if (input_.resumed_tokens > 0) {
      const bool here = co_await output_->keepAliveWhileResuming();
      if (!here) {
        outcome_.error = "client disconnected";
        outcome_.http_status = 499;
        co_return outcome_;
      }
    }
    scheduler::ClusterView view = ctx_.registry.view();
    for (NodeId id : excluded) view.mutableNodes()[id].alive = false;
    scheduler::Request request;
    request.id = request_.id;
    request.input_tokens = static_cast<uint32_t>(input_.tokens.size());
    request.output_tokens = input_.max_new_tokens;
    request.block_hashes = input_.block_hashes;
    const Clock::time_point choosing = Clock::now();
    Result<scheduler::Decision> decision = ctx_.policy.choose(request, view);
    ctx_.metrics.routing_decision_seconds.Observe(secondsBetween(choosing, Clock::now()));
    if (!decision.isOk()) {
      if (!last) {
        ctx_.metrics.countRejection(OrchestratorMetrics::Rejection::kNoNodes);
        outcome_.http_status = 503;
        outcome_.error = noPairMessage(decision.status());
        const openai::ApiError error = serverError(503, outcome_.error);
        co_await sendApiError(writer_, error);
        co_return outcome_;
      }
      break;  // every pair left was tried
    }
    const bool same_node = decision->colocated || decision->prefill == decision->decode;
    if (attempt > 1) ctx_.metrics.retries.Increment();
    if (input_.resumed_tokens > 0) {
      ctx_.metrics.resumes.Increment();
      ++outcome_.resumes;
      spdlog::info("request {}: resuming after {} tokens on {} -> {}", request_.openai_id,
                   input_.resumed_tokens, decision->prefill, decision->decode);
    }
    outcome_.attempts = attempt;
    outcome_.prefill = decision->prefill;
    outcome_.decode = decision->decode;
    const uint64_t prefill_tokens = scheduler::prefillTokens(
        request, decision->predicted_cached_blocks, ctx_.registry.identity().block_tokens);
    output_->beginAttempt();
    attempt_cached_tokens_.reset();
    AttemptResult failure;
    if (same_node) {
      failure = co_await runColocated(decision->decode, prefill_tokens);
    } else {
      failure = co_await runSplit(decision->prefill, decision->decode, prefill_tokens);
    }
    outcome_.cached_tokens = output_->cachedTokens();
    outcome_.output_tokens = output_->completionTokens();
    if (attempt_cached_tokens_) {
      ctx_.metrics.observeCachePrediction(
          uint64_t{decision->predicted_cached_blocks} * ctx_.registry.identity().block_tokens,
          *attempt_cached_tokens_);
    }
    if (auto first = output_->firstTokenAt()) {
      outcome_.ttft_ms = msBetween(request_.arrived, *first);
    }
    if (!failure || output_->clientGone()) {  // a departed client is not retried
      if (output_->clientGone()) {
        outcome_.error = "client disconnected";
        outcome_.http_status = 499;
      } else {
        outcome_.finish_reason = output_->finishReason();
      }
      co_return outcome_;
    }
    if (output_->clientLeft()) {  // nobody to resume or retry for
      outcome_.error = "client disconnected";
      outcome_.http_status = 499;
      co_return outcome_;
    }
    spdlog::warn("request {}: attempt {} of {} failed after {} answer tokens: {}",
                 request_.openai_id, attempt, ctx_.config.max_attempts, output_->completionTokens(),
                 failure->error.message());
    excluded.insert(failure->blame);
    last = std::move(failure);
  }
  // No attempt finished the answer.
  const bool had_tokens = output_->completionTokens() > 0;
  outcome_.http_status = had_tokens ? 502 : 503;
  outcome_.error = "no attempt finished the answer (" + std::to_string(outcome_.attempts) +
                   " tried, " + std::to_string(output_->completionTokens()) +
                   " tokens sent); the last error: " + last->error.message();
  const openai::ApiError error = serverError(outcome_.http_status, outcome_.error);
  // Streamed bytes already went out: end the stream with the error event. Otherwise the error
  // is the whole answer.
  co_await output_->fail(error);
  co_return outcome_;
}

std::string Runner::noPairMessage(const Status& policy_error) const {
  size_t alive = 0;
  for (const NodeRecord& node : ctx_.registry.nodes()) alive += node.schedulable() ? 1 : 0;
  return policy_error.message() + " (" + std::to_string(ctx_.registry.nodes().size()) +
         " nodes registered, " + std::to_string(alive) +
         " alive and not draining: " + std::to_string(ctx_.registry.livePrefillNodes()) +
         " can prefill, " + std::to_string(ctx_.registry.liveDecodeNodes()) + " can decode)";
}

void Runner::release(NodeId decode, uint64_t lease_id) {
  ctx_.fire_and_forget(endpointOf(decode), wire::route::kRelease,
                       wire::encode(wire::IdRequest{lease_id}));
}

void Runner::cancel(NodeId node) {
  ctx_.fire_and_forget(endpointOf(node), wire::route::kCancel,
                       wire::encode(wire::IdRequest{request_.id}));
}

Task<Runner::AttemptResult> Runner::runColocated(NodeId node, uint64_t prefill_tokens) {
  wire::GenerateRequest generate;
  generate.request_id = request_.id;
  generate.tokens = input_.tokens;
  generate.sampling = request_.sampling;
  generate.max_new_tokens = input_.max_new_tokens;
  generate.stop_tokens = ctx_.model.stop_tokens;
  generate.rng_draws = input_.rng_draws;
  NodeRegistry::WorkTicket work = ctx_.registry.startPrefill(node, prefill_tokens);
  // Named, not a temporary of the co_await expression: GCC 12 mishandles closures and
  // std::function temporaries there (double destruction).
  const std::function<void()> first_token = [&] {
    output_->unwatchClient();
    work.decoding();
  };
  // A client that leaves while its prompt waits or prefills: stop the work on the agent.
  output_->watchClient([this, node] { cancel(node); });
  std::string body = wire::encode(generate);
  AttemptResult result =
      co_await streamTokens(node, wire::route::kGenerate, std::move(body), first_token);
  output_->unwatchClient();
  if (result) cancel(node);  // the agent may still be computing the prompt (a timeout)
  co_return result;
}

Task<Runner::AttemptResult> Runner::runSplit(NodeId prefill, NodeId decode,
                                             uint64_t prefill_tokens) {
  const tcp::endpoint decode_endpoint = endpointOf(decode);
  const tcp::endpoint prefill_endpoint = endpointOf(prefill);
  const std::string decode_blob = ctx_.registry.node(decode)->registration.transport_blob;

  wire::ReserveRequest reserve;
  reserve.request_id = request_.id;
  reserve.tokens = input_.tokens;
  reserve.lease_ms = ctx_.config.lease_ms;
  Result<http::Response> reserved = co_await ctx_.agents.request(
      decode_endpoint, http::Verb::post, wire::route::kReserve, wire::encode(reserve), timeout_);
  if (!reserved.isOk()) {
    co_return Failure{reserved.status().withContext("reserve on " + label(decode)), decode};
  }
  if (!isSuccess(reserved->status)) co_return httpFailure("reserve", decode, *reserved, decode);
  Result<wire::ReserveResponse> lease = wire::decode<wire::ReserveResponse>(reserved->body);
  if (!lease.isOk()) {
    co_return Failure{lease.status().withContext("reserve answer of " + label(decode)), decode};
  }

  wire::PrefillRequest prefill_request;
  prefill_request.request_id = request_.id;
  prefill_request.tokens = input_.tokens;
  prefill_request.sampling = request_.sampling;
  prefill_request.rng_draws = input_.rng_draws;
  prefill_request.target.node_id = decode;
  prefill_request.target.transport_blob = decode_blob;
  prefill_request.target.slot = lease->slot;
  prefill_request.target.block_ids = lease->block_ids;
  prefill_request.target.cached_blocks = lease->cached_blocks;
  prefill_request.target.regions = lease->regions;
  NodeRegistry::WorkTicket prefilling = ctx_.registry.startPrefill(prefill, prefill_tokens);
  // A client that leaves during the prefill: cancel it (a queued prefill never runs) and free
  // the reservation now.
  output_->watchClient([this, prefill, decode, lease_id = lease->lease_id] {
    cancel(prefill);
    release(decode, lease_id);
  });
  Result<http::Response> prefilled =
      co_await ctx_.agents.request(prefill_endpoint, http::Verb::post, wire::route::kPrefill,
                                   wire::encode(prefill_request), timeout_);
  output_->unwatchClient();
  prefilling.end();
  if (output_->clientGone()) co_return std::nullopt;  // cancelled and released above
  if (!prefilled.isOk()) {
    // It may still be computing: stop it, and free the reservation.
    cancel(prefill);
    release(decode, lease->lease_id);
    co_return Failure{prefilled.status().withContext("prefill on " + label(prefill)), prefill};
  }
  if (!isSuccess(prefilled->status)) {
    release(decode, lease->lease_id);
    // 502: the KV transfer to the decode node failed; anything else is the prefill node's.
    co_return httpFailure("prefill", prefill, *prefilled,
                          prefilled->status == 502 ? decode : prefill);
  }
  Result<wire::PrefillResponse> first = wire::decode<wire::PrefillResponse>(prefilled->body);
  if (!first.isOk()) {
    release(decode, lease->lease_id);
    co_return Failure{first.status().withContext("prefill answer of " + label(prefill)), prefill};
  }
  noteCachedTokens(first->cached_tokens);
  ctx_.metrics.observePhase(OrchestratorMetrics::Phase::kPrefill, first->prefill_ms / 1000);
  if (first->transfer_bytes > 0) {
    ctx_.metrics.observePhase(OrchestratorMetrics::Phase::kTransfer, first->transfer_ms / 1000);
  }
  const bool more = co_await output_->token(first->first_token);
  if (!more) {
    release(decode, lease->lease_id);  // nothing to decode
    if (!output_->badToken().empty()) {
      co_return Failure{internalError(output_->badToken()), prefill};
    }
    if (!output_->clientGone()) co_await output_->finish("");
    co_return std::nullopt;
  }

  wire::DecodeRequest decode_request;
  decode_request.request_id = request_.id;
  decode_request.lease_id = lease->lease_id;
  decode_request.first_token = first->first_token;
  decode_request.sampling = request_.sampling;
  decode_request.rng_draws = first->rng_draws;
  decode_request.max_new_tokens = input_.max_new_tokens - 1;
  decode_request.stop_tokens = ctx_.model.stop_tokens;
  NodeRegistry::WorkTicket decoding = ctx_.registry.startDecode(decode);
  const std::function<void()> nothing = [] {};
  AttemptResult result =
      co_await streamTokens(decode, wire::route::kDecode, wire::encode(decode_request), nothing);
  decoding.end();
  // A decode that ended normally ended the lease; otherwise make sure it ends (idempotent).
  if (result || output_->clientGone()) release(decode, lease->lease_id);
  co_return result;
}

Task<bool> Runner::onStreamLine(StreamState& state, std::string_view line,
                                const std::function<void()>& first_token) {
  if (line.empty() || !state.finish.empty()) co_return true;
  Result<wire::StreamLine> parsed = wire::decode<wire::StreamLine>(line);
  if (!parsed.isOk()) {
    state.bad_line = parsed.status().message();
    co_return false;
  }
  if (parsed->cached_tokens) noteCachedTokens(*parsed->cached_tokens);
  if (parsed->token) {
    if (!state.saw_token) first_token();
    state.saw_token = true;
    const model::TokenId token = *parsed->token;
    const bool more = co_await output_->token(token);
    if (!more) {
      state.stopped = true;
      co_return false;  // closing the connection cancels the sequence on the agent
    }
  }
  if (!parsed->finish.empty()) {
    state.finish = parsed->finish;
    state.message = parsed->message;
  }
  co_return true;
}

Task<Runner::AttemptResult> Runner::streamTokens(NodeId node, std::string target, std::string body,
                                                 const std::function<void()>& first_token) {
  StreamState state;
  // Not a coroutine itself: a lambda coroutine's frame would refer to the closure. A named
  // std::function, not one built inside the co_await expression (GCC 12, see runColocated).
  const std::function<Task<bool>(std::string_view)> on_line =
      [this, &state, &first_token](std::string_view line) {
        return onStreamLine(state, line, first_token);
      };
  const std::string call = target.substr(target.rfind('/') + 1);
  Result<http::Response> streamed =
      co_await ctx_.agents.streamLines(endpointOf(node), http::Verb::post, std::move(target),
                                       std::move(body), timeout_, timeout_, on_line);
  if (!output_->badToken().empty()) co_return Failure{internalError(output_->badToken()), node};
  if (state.stopped) {
    if (!output_->clientGone()) co_await output_->finish("");
    co_return std::nullopt;
  }
  const bool finished = !state.finish.empty() && state.finish != "error";
  if (!streamed.isOk() && !finished) {
    co_return Failure{streamed.status().withContext(call + " on " + label(node)), node};
  }
  if (streamed.isOk() && !isSuccess(streamed->status)) {
    co_return httpFailure(call, node, *streamed, node);
  }
  if (!state.bad_line.empty()) {
    co_return Failure{internalError(call + " stream of " + label(node) +
                                    " has a malformed line: " + state.bad_line),
                      node};
  }
  if (state.finish == "error") {
    co_return Failure{
        unavailable(call + " on " + label(node) + " failed: " +
                    (state.message.empty() ? std::string("(no message)") : state.message)),
        node};
  }
  if (state.finish.empty()) {
    co_return Failure{unavailable(call + " stream of " + label(node) + " ended without a finish"),
                      node};
  }
  co_await output_->finish(state.finish);
  co_return std::nullopt;
}

}  // namespace

std::variant<PreparedRequest, openai::ApiError> prepareRequest(const ServedModel& model,
                                                               const NodeRegistry& registry,
                                                               openai::ApiRequest api, uint64_t id,
                                                               uint64_t seed, int64_t created,
                                                               Clock::time_point arrived) {
  if (api.model != model.name) {
    openai::ApiError error = openai::modelNotFound(api.model);
    error.message += " This server serves `" + model.name + "`.";
    return error;
  }
  const bool chat = api.endpoint == openai::Endpoint::kChatCompletions;
  const std::string param = chat ? "messages" : "prompt";
  const model::Tokenizer& tokenizer = *model.tokenizer;
  model::EncodeOptions options;
  options.add_bos = tokenizer.vocabulary().add_bos;
  std::string text;
  if (chat) {
    Result<std::string> rendered = model.chat_template.apply(api.messages);
    if (!rendered.isOk()) return openai::invalidRequest(rendered.status().message(), param);
    text = std::move(rendered).value();
    options.parse_special = model.chat_template.parseSpecial();
  } else {
    text = api.prompt;
  }
  Result<std::vector<model::TokenId>> tokens = tokenizer.encode(text, options);
  if (!tokens.isOk()) return openai::invalidRequest(tokens.status().message(), param);
  if (tokens->empty()) return openai::invalidRequest("The prompt is empty.", param);

  uint32_t context = model.params.context_length;
  if (uint32_t nodes = registry.minMaxSequenceTokens();
      nodes > 0 && (context == 0 || nodes < context)) {
    context = nodes;
  }
  if (context == 0) context = std::numeric_limits<uint32_t>::max();
  const uint64_t prompt = tokens->size();
  if (prompt >= context) {
    return openai::ApiError{400, "invalid_request_error",
                            "This model's maximum context length is " + std::to_string(context) +
                                " tokens, but the prompt has " + std::to_string(prompt) +
                                " tokens (at least one token must be left for the completion). "
                                "Please shorten the prompt.",
                            param, "context_length_exceeded"};
  }
  PreparedRequest out;
  out.context_tokens = context;
  const uint32_t room = context - static_cast<uint32_t>(prompt);
  out.max_tokens = api.max_tokens ? std::min(*api.max_tokens, room) : room;
  Result<std::vector<uint64_t>> hashes =
      model::blockHashes(model.hash_seed, *tokens, model.identity.block_tokens);
  if (!hashes.isOk()) return openai::apiErrorFromStatus(hashes.status());
  out.block_hashes = std::move(hashes).value();
  out.tokens = std::move(tokens).value();
  out.sampling.temperature = api.temperature;
  out.sampling.top_p = api.top_p;
  out.sampling.seed = api.seed.value_or(seed);
  out.id = id;
  out.openai_id = openai::requestId(api.endpoint, id);
  out.created = created;
  out.arrived = arrived;
  out.api = std::move(api);
  return out;
}

Task<RequestOutcome> runRequest(FlowContext& ctx, const PreparedRequest& request,
                                http::ResponseWriter& writer) {
  Runner runner(ctx, request, writer);
  RequestOutcome outcome = co_await runner.run();
  outcome.total_ms = msBetween(request.arrived, Clock::now());
  ctx.metrics.prompt_tokens.Increment(static_cast<double>(request.tokens.size()));
  ctx.metrics.generated_tokens.Increment(outcome.output_tokens);
  if (outcome.error.empty() && outcome.ttft_ms) {
    const double ttft_s = *outcome.ttft_ms / 1000;
    const double decode_s = std::max(0.0, (outcome.total_ms - *outcome.ttft_ms) / 1000);
    ctx.metrics.ttft_seconds.Observe(ttft_s);
    ctx.metrics.e2e_seconds.Observe(outcome.total_ms / 1000);
    ctx.metrics.observePhase(OrchestratorMetrics::Phase::kDecode, decode_s);
    if (outcome.output_tokens > 1) {
      ctx.metrics.tpot_seconds.Observe(decode_s / (outcome.output_tokens - 1));
    }
  }
  co_return outcome;
}

openai::ApiError serverError(int http_status, std::string message) {
  return {http_status, "server_error", std::move(message), {}, {}};
}

Task<void> sendApiError(http::ResponseWriter& writer, const openai::ApiError& error,
                        http::ResponseWriter::Headers headers) {
  co_await writer.send(static_cast<http::HttpStatus>(error.http_status), "application/json",
                       openai::errorJson(error), std::move(headers));
}

}  // namespace kvferry::orchestrator
