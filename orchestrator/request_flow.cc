#include "orchestrator/request_flow.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "common/coroutine_rules.h"
#include "orchestrator/agent_client.h"
#include "orchestrator/answer_writer.h"
#include "orchestrator/openai/response.h"

namespace kvferry::orchestrator {
namespace {

// `text` with every IPv4 "a.b.c.d[:port]" and bracketed IPv6 "[...][:port]" replaced by "…": for
// error messages that leave the cluster (an agent's failure names its address).
std::string withoutAddresses(std::string_view text) {
  std::string out;
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  size_t i = 0;
  while (i < text.size()) {
    size_t end = i;
    if (text[i] == '[') {
      const size_t close = text.find(']', i);
      const std::string_view inside =
          close == std::string_view::npos ? "" : text.substr(i + 1, close - i - 1);
      if (inside.find(':') != std::string_view::npos &&
          inside.find_first_not_of("0123456789abcdefABCDEF:.") == std::string_view::npos) {
        end = close + 1;
      }
    } else if (digit(text[i]) && (i == 0 || !digit(text[i - 1]))) {
      int dots = 0;
      size_t j = i;
      while (j < text.size() && (digit(text[j]) || (text[j] == '.' && dots < 3 && ++dots))) ++j;
      if (dots == 3 && digit(text[j - 1])) end = j;
    }
    if (end == i) {
      out += text[i++];
      continue;
    }
    if (end < text.size() && text[end] == ':' && end + 1 < text.size() && digit(text[end + 1])) {
      for (++end; end < text.size() && digit(text[end]);) ++end;
    }
    out += "…";
    i = end;
  }
  return out;
}

using http::Task;

double msBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

double secondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// One request's attempts on the pairs the policy chooses, and the answer they write together.
class RequestAttempts {
 public:
  RequestAttempts(FlowContext& ctx, const PreparedRequest& request, http::ResponseWriter& writer)
      : ctx_(ctx), request_(request), writer_(writer) {}

  Task<RequestOutcome> run();

 private:
  struct Failure {
    Status error;
    NodeId blame = 0;  // excluded from this request's later attempts
    // The node had no KV room (kv_capacity): it is not excluded; the request waits for room.
    bool no_room = false;
  };
  using AttemptResult = std::optional<Failure>;  // nullopt: answered, or the client is gone

  // What an attempt sends: the prompt; or, once the answer has tokens, the prompt followed by
  // them, with the token budget and the random draws they used (DESIGN.md §2: the answer
  // resumes on a healthy pair where it broke).
  struct AttemptInput {
    std::vector<model::TokenId> tokens;
    std::vector<uint64_t> block_hashes;
    uint32_t max_new_tokens = 0;
    uint64_t rng_draws = 0;
    uint32_t resumed_tokens = 0;  // answer tokens at the end of `tokens`
  };
  Result<AttemptInput> nextInput() const;
  // The request's sampling for this attempt: a resumed prompt ends with answer tokens, which the
  // penalties and min_tokens count as the answer's.
  wire::Sampling attemptSampling() const {
    wire::Sampling sampling = request_.sampling;
    sampling.answer_tokens = input_.resumed_tokens;
    return sampling;
  }
  // The prefill node's cached prefix for this attempt; usage reports the first prompt's.
  void noteCachedTokens(uint32_t tokens);
  // Ends the request as the client left it.
  RequestOutcome clientLeft();
  // KV blocks the attempt's decode node must have free to start: its prompt and one token.
  uint64_t kvBlocksToStart() const {
    return orchestrator::kvBlocksToStart(input_.tokens.size(),
                                         ctx_.registry.identity().block_tokens);
  }
  // When some decode-capable node of `view` has room to start the attempt, takes the decode role
  // from those that have not (a prefill-and-decode node may still prefill). False when none has.
  bool keepDecodeNodesWithRoom(scheduler::ClusterView& view) const;
  // Waits (keeping the admission slot) until a decode node may have room for the attempt, at
  // most queue_timeout_ms from the request's arrival (from now when resuming a begun answer). An
  // outcome when the request ends here (out of time, or the server shuts down).
  Task<std::optional<RequestOutcome>> waitForRoom();

  Task<AttemptResult> runColocated(NodeId node, uint64_t prefill_tokens);
  Task<AttemptResult> runSplit(NodeId prefill, NodeId decode, uint64_t prefill_tokens);
  // Each line of an agent's token stream (generate or decode): its tokens go to the answer;
  // `first_token` runs when the first one arrives. False: stop the agent's stream (the answer
  // wants no more, and the agent would not end it by itself now).
  Task<bool> onStreamLine(bool& saw_token, const wire::StreamLine& line,
                          const std::function<void()>& first_token);
  // Completes the answer after a token stream on `node` ended (or fails the attempt).
  Task<AttemptResult> afterStream(NodeId node, const AgentResult<StreamEnd>& ended);
  std::string noPairMessage(const Status& policy_error) const;

  FlowContext& ctx_;
  const PreparedRequest& request_;
  http::ResponseWriter& writer_;
  std::optional<AnswerWriter> answer_;
  AttemptInput input_;
  std::optional<uint32_t> attempt_cached_tokens_;
  RequestOutcome outcome_;
};

Result<RequestAttempts::AttemptInput> RequestAttempts::nextInput() const {
  AttemptInput input;
  input.tokens = request_.tokens;
  const std::vector<model::TokenId>& answer = answer_->answer().tokenIds();
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

void RequestAttempts::noteCachedTokens(uint32_t tokens) {
  attempt_cached_tokens_ = tokens;
  if (input_.resumed_tokens == 0) answer_->answer().setCachedTokens(tokens);
}

RequestOutcome RequestAttempts::clientLeft() {
  outcome_.error = "client disconnected";
  outcome_.http_status = 499;
  return outcome_;
}

Task<RequestOutcome> RequestAttempts::run() {
  std::set<NodeId> excluded;
  std::optional<Failure> last;
  answer_.emplace(writer_, request_, ctx_.model, ctx_.metrics);
  // Attempts that failed count against max_attempts; a node without KV room does not (the
  // request waits for room, up to its deadline).
  uint32_t failed = 0;
  for (uint32_t attempt = 1; failed < ctx_.config.max_attempts; ++attempt) {
    Result<AttemptInput> input = nextInput();
    if (!input.isOk()) {
      last = Failure{input.status().withContext("resuming the answer"), 0};
      break;
    }
    input_ = std::move(input).value();
    scheduler::ClusterView view = ctx_.registry.view();
    for (NodeId id : excluded) view.mutableNodes()[id].alive = false;
    if (!keepDecodeNodesWithRoom(view)) {
      std::optional<RequestOutcome> ended = co_await waitForRoom();
      if (ended) co_return std::move(*ended);
      --attempt;  // nothing was tried
      continue;
    }
    scheduler::Request request;
    request.id = request_.id;
    request.input_tokens = static_cast<uint32_t>(input_.tokens.size());
    request.output_tokens = input_.max_new_tokens;
    request.block_hashes = input_.block_hashes;
    const Clock::time_point choosing = Clock::now();
    // Every policy needs a prefill node; without one, the decode nodes serve whole requests.
    const bool fallback = !scheduler::anyPrefillNode(view);
    Result<scheduler::Decision> decision =
        fallback ? scheduler::chooseColocated(request, view) : ctx_.policy.choose(request, view);
    ctx_.metrics.routing_decision_seconds.Observe(secondsBetween(choosing, Clock::now()));
    if (fallback && decision.isOk()) {
      ctx_.metrics.colocated_fallbacks.Increment();
      spdlog::info("request {}: no live node can prefill; serving it whole on node {}",
                   request_.openai_id, decision->decode);
    }
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
    // Only once there is somewhere to go on: a stream with nowhere to resume gets its error
    // event, not a promise first.
    if (input_.resumed_tokens > 0) {
      const bool here = co_await answer_->keepAliveWhileResuming();
      if (!here) co_return clientLeft();
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
    answer_->answer().beginAttempt();
    attempt_cached_tokens_.reset();
    AttemptResult failure;
    if (same_node) {
      failure = co_await runColocated(decision->decode, prefill_tokens);
    } else {
      failure = co_await runSplit(decision->prefill, decision->decode, prefill_tokens);
    }
    outcome_.cached_tokens = answer_->answer().cachedTokens();
    outcome_.output_tokens = answer_->answer().completionTokens();
    if (attempt_cached_tokens_) {
      ctx_.metrics.observeCachePrediction(
          uint64_t{decision->predicted_cached_blocks} * ctx_.registry.identity().block_tokens,
          *attempt_cached_tokens_);
    }
    if (auto first = answer_->firstTokenAt()) {
      outcome_.ttft_ms = msBetween(request_.arrived, *first);
    }
    if (answer_->clientGone()) co_return clientLeft();  // a departed client is not retried
    if (!failure) {
      outcome_.finish_reason = answer_->answer().finishReason();
      co_return outcome_;
    }
    if (answer_->clientLeft()) co_return clientLeft();  // nobody to resume or retry for
    const NodeRecord* refusing = ctx_.registry.node(failure->blame);
    if (failure->no_room && refusing != nullptr &&
        refusing->load.total_kv_blocks >= kvBlocksToStart()) {
      // Not the node's fault: nothing fits it until it reports again. The next turn tries a
      // node with room, or waits for one. (A node that could never hold it has failed.)
      spdlog::info("request {}: node {} has no KV room for it now ({})", request_.openai_id,
                   failure->blame, failure->error.message());
      ctx_.registry.noteKvFull(failure->blame);
      continue;
    }
    ++failed;
    spdlog::warn("request {}: attempt {} ({} of {} failed) failed after {} answer tokens: {}",
                 request_.openai_id, attempt, failed, ctx_.config.max_attempts,
                 answer_->answer().completionTokens(), failure->error.message());
    excluded.insert(failure->blame);
    last = std::move(failure);
  }
  // No attempt finished the answer.
  const uint32_t tokens = answer_->answer().completionTokens();
  outcome_.http_status = tokens > 0 ? 502 : 503;
  const std::string summary = "no attempt finished the answer (" +
                              std::to_string(outcome_.attempts) + " tried, " +
                              std::to_string(tokens) + " tokens sent); the last error: ";
  outcome_.error = summary + last->error.message();  // for the log
  // The client's copy names no internal address; the log line of this request id has them.
  const openai::ApiError error =
      serverError(outcome_.http_status, summary + withoutAddresses(last->error.message()) +
                                            " (request " + request_.openai_id + ")");
  // Streamed bytes already went out: end the stream with the error event. Otherwise the error
  // is the whole answer.
  co_await answer_->fail(error);
  co_return outcome_;
}

bool RequestAttempts::keepDecodeNodesWithRoom(scheduler::ClusterView& view) const {
  const uint64_t need = kvBlocksToStart();
  std::vector<scheduler::NodeState>& nodes = view.mutableNodes();
  const auto decodes = [](const scheduler::NodeState& n) {
    return n.alive && scheduler::canDecode(n.role);
  };
  const auto has_room = [need](const scheduler::NodeState& n) { return n.free_kv_blocks >= need; };
  const auto could_hold = [need](const scheduler::NodeState& n) {
    return n.total_kv_blocks >= need;
  };
  // No decode node, or none that could ever hold it: the policy says what is missing.
  if (std::none_of(nodes.begin(), nodes.end(),
                   [&](const auto& n) { return decodes(n) && could_hold(n); })) {
    return true;
  }
  if (std::none_of(nodes.begin(), nodes.end(),
                   [&](const auto& n) { return decodes(n) && has_room(n); })) {
    return false;
  }
  for (scheduler::NodeState& node : nodes) {
    if (!decodes(node) || has_room(node)) continue;
    if (scheduler::canPrefill(node.role)) {
      node.role = scheduler::NodeRole::kPrefill;
    } else {
      node.alive = false;
    }
  }
  return true;
}

Task<std::optional<RequestOutcome>> RequestAttempts::waitForRoom() {
  const auto timeout = std::chrono::milliseconds(ctx_.config.queue_timeout_ms);
  const bool begun = answer_->answer().completionTokens() > 0;
  const Clock::time_point deadline = (begun ? Clock::now() : request_.arrived) + timeout;
  const Admission::Refusal refusal = co_await ctx_.wait_for_room(kvBlocksToStart(), deadline);
  if (refusal == Admission::Refusal::kNone) co_return std::nullopt;
  const bool closed = refusal == Admission::Refusal::kClosed;
  ctx_.metrics.countRejection(closed ? OrchestratorMetrics::Rejection::kShuttingDown
                                     : OrchestratorMetrics::Rejection::kQueueTimeout);
  outcome_.error = closed ? "the orchestrator is shutting down"
                          : "no decode node had KV room for the request's " +
                                std::to_string(input_.tokens.size()) + " tokens within " +
                                std::to_string(ctx_.config.queue_timeout_ms) + " ms. Retry after " +
                                std::to_string(ctx_.config.retry_after_s) + " s.";
  if (answer_->begun()) {
    outcome_.http_status = 502;  // the stream had begun: it ends with the error event
    const openai::ApiError error = serverError(503, outcome_.error);
    co_await answer_->fail(error);
    co_return outcome_;
  }
  outcome_.http_status = closed ? 503 : 429;
  const openai::ApiError error =
      closed ? serverError(503, outcome_.error)
             : openai::ApiError{429, "rate_limit_error", outcome_.error, {}, "rate_limit_exceeded"};
  http::ResponseWriter::Headers headers;
  if (!closed) headers.emplace_back("Retry-After", std::to_string(ctx_.config.retry_after_s));
  co_await sendApiError(writer_, error, std::move(headers));
  co_return outcome_;
}

std::string RequestAttempts::noPairMessage(const Status& policy_error) const {
  size_t alive = 0;
  for (const NodeRecord& node : ctx_.registry.nodes()) alive += node.schedulable() ? 1 : 0;
  return policy_error.message() + " (" + std::to_string(ctx_.registry.nodes().size()) +
         " nodes registered, " + std::to_string(alive) +
         " alive and not draining: " + std::to_string(ctx_.registry.livePrefillNodes()) +
         " can prefill, " + std::to_string(ctx_.registry.liveDecodeNodes()) + " can decode)";
}

Task<RequestAttempts::AttemptResult> RequestAttempts::runColocated(NodeId node,
                                                                   uint64_t prefill_tokens) {
  wire::GenerateRequest generate;
  generate.request_id = request_.id;
  generate.tokens = input_.tokens;
  generate.sampling = attemptSampling();
  generate.max_new_tokens = input_.max_new_tokens;
  generate.stop_tokens = request_.stop_tokens;
  generate.rng_draws = input_.rng_draws;
  NodeRegistry::WorkTicket work = ctx_.registry.startPrefill(node, prefill_tokens);
  NodeRegistry::KvHold kv = ctx_.registry.holdKv(node, kvBlocksToStart());
  // Named, not built in the co_await expression (common/coroutine_rules.h, rules 2 and 4).
  bool saw_token = false;
  const Clock::time_point called = Clock::now();
  const std::function<void()> first_token = [&] {
    spdlog::debug(
        "request {}: first token from node {} {:.2f} ms after the generate call, "
        "{:.2f} ms after the request arrived",
        request_.id, node, msBetween(called, Clock::now()),
        msBetween(request_.arrived, Clock::now()));
    answer_->unwatchClient();
    work.decoding();
  };
  const StreamLineHandler on_line{[this, &saw_token, &first_token](const wire::StreamLine& line) {
                                    return onStreamLine(saw_token, line, first_token);
                                  },
                                  [this] { return answer_->flush(); }};
  // A client that leaves while its prompt waits or prefills: stop the work on the agent.
  answer_->watchClient([this, node] { ctx_.agents.cancel(node, request_.id); });
  AgentResult<StreamEnd> ended = co_await ctx_.agents.generate(node, generate, on_line);
  AttemptResult result = co_await afterStream(node, ended);
  answer_->unwatchClient();
  // Without an answer the agent may still be computing the prompt (a timeout): stop it. Not after
  // a stream the agent ended itself: a cancel then finds nothing to stop, and the agent would
  // refuse this request's next attempt on it (a node without KV room is tried again).
  if (result && !ended.isOk() && ended.failure() == AgentFailure::kNoAnswer) {
    ctx_.agents.cancel(node, request_.id);
  }
  co_return result;
}

Task<RequestAttempts::AttemptResult> RequestAttempts::runSplit(NodeId prefill, NodeId decode,
                                                               uint64_t prefill_tokens) {
  wire::ReserveRequest reserve;
  reserve.request_id = request_.id;
  reserve.tokens = input_.tokens;
  reserve.lease_ms = ctx_.config.lease_ms;
  const Clock::time_point reserving = Clock::now();
  AgentResult<wire::ReserveResponse> lease = co_await ctx_.agents.reserve(decode, reserve);
  const Clock::time_point reserved = Clock::now();
  if (!lease.isOk()) {
    co_return Failure{lease.status(), decode, lease.failure() == AgentFailure::kNoCapacity};
  }
  const uint64_t lease_id = lease->lease_id;
  NodeRegistry::KvHold kv =
      ctx_.registry.holdKv(decode, lease->block_ids.size(), lease->kv_sequence);

  wire::PrefillRequest prefill_request;
  prefill_request.request_id = request_.id;
  prefill_request.tokens = input_.tokens;
  prefill_request.sampling = attemptSampling();
  prefill_request.stop_tokens = request_.stop_tokens;
  prefill_request.rng_draws = input_.rng_draws;
  prefill_request.target.node_id = decode;
  prefill_request.target.transport_blob = ctx_.registry.node(decode)->registration.transport_blob;
  prefill_request.target.slot = lease->slot;
  prefill_request.target.block_ids = lease->block_ids;
  prefill_request.target.cached_blocks = lease->cached_blocks;
  prefill_request.target.regions = lease->regions;
  NodeRegistry::WorkTicket prefilling = ctx_.registry.startPrefill(prefill, prefill_tokens);
  // A client that leaves during the prefill: cancel it (a queued prefill never runs; one
  // computing stops before its next chunk). Its answer then says whether its writes settled.
  answer_->watchClient([this, prefill] { ctx_.agents.cancel(prefill, request_.id); });
  AgentResult<wire::PrefillResponse> first = co_await ctx_.agents.prefill(prefill, prefill_request);
  answer_->unwatchClient();
  prefilling.end();
  // The reservation goes unless it is decoded; once the prefill answered with its writes settled
  // no late write can land in its blocks (the writer is fenced), so the decode node frees them at
  // once instead of holding them for the writer's op timeout.
  const bool writer_done = first.writesSettled();
  if (answer_->clientGone()) {
    ctx_.agents.release(decode, lease_id, writer_done);
    co_return std::nullopt;
  }
  if (!first.isOk()) {
    // Without an answer it may still be computing: stop it.
    if (first.failure() == AgentFailure::kNoAnswer) ctx_.agents.cancel(prefill, request_.id);
    ctx_.agents.release(decode, lease_id, writer_done);
    // The decode node is to blame when the prefill could not write the KV to it.
    co_return Failure{first.status(),
                      first.failure() == AgentFailure::kPeerFailed ? decode : prefill};
  }
  // Where an idle split request's time to its first token goes (TTFT against a colocated one).
  spdlog::debug(
      "request {}: reserve on node {} {:.2f} ms, prefill on node {} answered {:.2f} ms later "
      "(computed in {:.2f} ms, KV sent in {:.2f} ms from its first post); {:.2f} ms after the "
      "request arrived",
      request_.id, decode, msBetween(reserving, reserved), prefill,
      msBetween(reserved, Clock::now()), first->prefill_ms, first->transfer_ms,
      msBetween(request_.arrived, Clock::now()));
  noteCachedTokens(first->cached_tokens);
  ctx_.metrics.observePhase(OrchestratorMetrics::Phase::kPrefill, first->prefill_ms / 1000);
  if (first->transfer_bytes > 0) {
    ctx_.metrics.observePhase(OrchestratorMetrics::Phase::kTransfer, first->transfer_ms / 1000);
  }
  bool more = co_await answer_->token(first->first_token, first->logprobs);
  // The first token goes to the client now, not with the decode stream's first lines.
  if (more) {
    const bool sent = co_await answer_->flush();
    more = sent;
  }
  if (!more) {
    ctx_.agents.release(decode, lease_id, true);  // nothing to decode
    if (!answer_->answer().badToken().empty()) {
      co_return Failure{internalError(answer_->answer().badToken()), prefill};
    }
    if (!answer_->clientGone()) co_await answer_->finish("");
    co_return std::nullopt;
  }

  wire::DecodeRequest decode_request;
  decode_request.request_id = request_.id;
  decode_request.lease_id = lease_id;
  decode_request.first_token = first->first_token;
  decode_request.sampling = attemptSampling();
  decode_request.rng_draws = first->rng_draws;
  decode_request.max_new_tokens = input_.max_new_tokens - 1;
  decode_request.stop_tokens = request_.stop_tokens;
  decode_request.kv_checksums = std::move(first->kv_checksums);
  NodeRegistry::WorkTicket decoding = ctx_.registry.startDecode(decode);
  bool saw_token = false;
  const std::function<void()> nothing = [] {};
  const StreamLineHandler on_line{[this, &saw_token, &nothing](const wire::StreamLine& line) {
                                    return onStreamLine(saw_token, line, nothing);
                                  },
                                  [this] { return answer_->flush(); }};
  AgentResult<StreamEnd> ended = co_await ctx_.agents.decode(decode, decode_request, on_line);
  // KV that landed corrupt blames the pair's prefill side (its transport sent the bytes; the
  // decode node only found out): the next attempt prefills elsewhere.
  const bool corrupt = !ended.isOk() && ended.failure() == AgentFailure::kKvCorrupt;
  if (corrupt) ctx_.metrics.kv_corruptions.Increment();
  AttemptResult result = co_await afterStream(corrupt ? prefill : decode, ended);
  // A decode that ended normally ended the lease; otherwise make sure it ends (idempotent).
  if (result || answer_->clientGone()) ctx_.agents.release(decode, lease_id, true);
  co_return result;
}

Task<bool> RequestAttempts::onStreamLine(bool& saw_token, const wire::StreamLine& line,
                                         const std::function<void()>& first_token) {
  if (line.cached_tokens) noteCachedTokens(*line.cached_tokens);
  if (!line.token) co_return true;
  if (!saw_token) first_token();
  saw_token = true;
  const bool more = co_await answer_->token(*line.token, line.logprobs);
  // An answer the agent ends at the same token reads on to the agent's finish line (sent with
  // that token), so the stream ends cleanly and its connection carries the next call. One that
  // ended otherwise (a stop string, a departed client, a bad token) stops the agent's stream now.
  co_return more || (!answer_->clientGone() && answer_->answer().endedWithTheAgent());
}

Task<RequestAttempts::AttemptResult> RequestAttempts::afterStream(
    NodeId node, const AgentResult<StreamEnd>& ended) {
  if (!answer_->answer().badToken().empty()) {
    co_return Failure{internalError(answer_->answer().badToken()), node};
  }
  if (!ended.isOk()) {
    co_return Failure{ended.status(), node, ended.failure() == AgentFailure::kNoCapacity};
  }
  if (ended->stopped) {
    // The answer is complete (or its client left).
    if (!answer_->clientGone()) co_await answer_->finish("");
    co_return std::nullopt;
  }
  co_await answer_->finish(ended->finish_reason);
  co_return std::nullopt;
}

// The token ids a request names (stop_token_ids, logit_bias) must be in the vocabulary.
std::optional<openai::ApiError> checkTokenIds(const openai::ApiRequest& api,
                                              const model::Vocabulary& vocabulary) {
  const size_t size = vocabulary.tokens.size();
  const auto outside = [size](int32_t token) {
    return token < 0 || static_cast<size_t>(token) >= size;
  };
  for (size_t i = 0; i < api.stop_token_ids.size(); ++i) {
    if (!outside(api.stop_token_ids[i])) continue;
    const std::string param = "stop_token_ids[" + std::to_string(i) + "]";
    return openai::invalidRequest(
        "Invalid value for '" + param + "': " + std::to_string(api.stop_token_ids[i]) +
            " is not a token of this model's vocabulary of " + std::to_string(size) + ".",
        param);
  }
  for (const auto& [token, bias] : api.logit_bias) {
    if (!outside(token)) continue;
    return openai::invalidRequest("Invalid key in 'logit_bias': " + std::to_string(token) +
                                      " is not a token of this model's vocabulary of " +
                                      std::to_string(size) + ".",
                                  "logit_bias");
  }
  return std::nullopt;
}

}  // namespace

std::variant<PreparedRequest, openai::ApiError> prepareRequest(
    const ServedModel& model, const NodeRegistry& registry, openai::ApiRequest api, uint64_t id,
    uint64_t seed, int64_t created, Clock::time_point arrived, bool clamp_max_tokens) {
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
    Result<std::string> rendered =
        model.chat_template.apply(api.messages, std::chrono::system_clock::now());
    if (!rendered.isOk()) return openai::invalidRequest(rendered.status().message(), param);
    text = std::move(rendered).value();
    options.parse_special = model.chat_template.parseSpecial();
    options.add_bos = model.chat_template.addBos(tokenizer.vocabulary());
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
  if (api.max_tokens && *api.max_tokens > room && !api.max_tokens_field.empty() &&
      !clamp_max_tokens) {
    const std::string& field = api.max_tokens_field;
    return openai::ApiError{
        400, "invalid_request_error",
        "'" + field + "' is too large: " + std::to_string(*api.max_tokens) +
            ". This model's maximum context length is " + std::to_string(context) +
            " tokens and your request has " + std::to_string(prompt) + " input tokens (" +
            std::to_string(*api.max_tokens) + " > " + std::to_string(context) + " - " +
            std::to_string(prompt) + "). Ask for at most " + std::to_string(room) + ".",
        field, "context_length_exceeded"};
  }
  out.max_tokens = api.max_tokens ? std::min(*api.max_tokens, room) : room;
  if (api.min_tokens > out.max_tokens) {
    return openai::invalidRequest("'min_tokens' (" + std::to_string(api.min_tokens) +
                                      ") must be at most max_tokens (" +
                                      std::to_string(out.max_tokens) + ").",
                                  "min_tokens");
  }
  if (std::optional<openai::ApiError> error = checkTokenIds(api, tokenizer.vocabulary())) {
    return std::move(*error);
  }
  Result<std::vector<uint64_t>> hashes =
      model::blockHashes(model.hash_seed, *tokens, model.identity.block_tokens);
  if (!hashes.isOk()) return openai::apiErrorFromStatus(hashes.status());
  out.block_hashes = std::move(hashes).value();
  out.tokens = std::move(tokens).value();
  if (!api.ignore_eos) out.stop_tokens = model.stop_tokens;
  for (int32_t token : api.stop_token_ids) {
    if (std::find(out.stop_tokens.begin(), out.stop_tokens.end(), token) == out.stop_tokens.end()) {
      out.stop_tokens.push_back(token);
    }
  }
  out.sampling.temperature = api.temperature;
  out.sampling.top_p = api.top_p;
  out.sampling.seed = api.seed.value_or(seed);
  out.sampling.repetition_penalty = api.repetition_penalty;
  out.sampling.presence_penalty = api.presence_penalty;
  out.sampling.frequency_penalty = api.frequency_penalty;
  for (const auto& [token, bias] : api.logit_bias) out.sampling.logit_bias.push_back({token, bias});
  out.sampling.min_tokens = api.min_tokens;
  out.sampling.logprobs = api.logprobs;
  out.id = id;
  out.created = created;
  out.arrived = arrived;
  out.api = std::move(api);
  return out;
}

Task<RequestOutcome> runRequest(FlowContext& ctx, const PreparedRequest& request,
                                http::ResponseWriter& writer) {
  RequestAttempts attempts(ctx, request, writer);
  RequestOutcome outcome = co_await attempts.run();
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
