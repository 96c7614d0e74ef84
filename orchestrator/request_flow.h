// One OpenAI request through the cluster (DESIGN.md §2, docs/control_plane.md): validation and
// tokenization (prepareRequest), then scheduling, the agent calls and streaming the answer back
// (runRequest).
//
// Lifecycle of an attempt on the pair the policy chose:
//  - colocated (prefill node == decode node): POST /agent/generate, stream its tokens;
//  - split: POST /agent/reserve on decode → POST /agent/prefill on prefill (KV written into the
//    reservation) → the first token goes to the client at once → POST /agent/decode, stream.
// Only decode nodes with KV room for the attempt's prompt are offered to the policy; with none,
// the request waits for room (keeping its admission slot) up to its deadline, then gets 429 with
// Retry-After. A node that answers kv_capacity is not to blame: it counts as full until it
// reports again and the request tries a node with room, or waits. With no live node that can
// prefill, a decode node serves the whole request (scheduler::chooseColocated).
// A failed attempt releases the lease (best effort; at once when the prefill answered that none
// of its writes can still land, else after the writer's timeout on the agent), excludes the
// node to blame for the rest of this request and tries another pair, up to max_attempts. When the
// answer had tokens already (streamed to the client or not), the next attempt resumes it (DESIGN.md
// §2): its prompt is the request's prompt followed by those tokens, its budget what is left, and
// the agents skip the random draws those tokens used, so the answer goes on with the same random
// stream (the tokens match the unbroken answer's unless recomputing the answer's KV in one prefill
// instead of step by step moves a logit across a near-tie). When no attempt is left, a stream that
// has begun ends with an SSE error event and [DONE]; otherwise the client gets the HTTP error (502
// when tokens had been produced, 503 when not).
//
// The agent calls go through FlowContext::agents (agent_client.h); the answer is rendered by
// openai::AnswerRenderer and written to the client by AnswerWriter (answer_writer.h).
//
// Owner: the orchestrator's io_context thread; every function here runs on it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/control_wire.h"
#include "common/http.h"
#include "config/config.h"
#include "model/block_hash.h"
#include "model/tokenizer.h"
#include "orchestrator/admission.h"
#include "orchestrator/agent_client.h"
#include "orchestrator/metrics.h"
#include "orchestrator/openai/request.h"
#include "orchestrator/registry.h"
#include "orchestrator/scheduler/policy.h"
#include "orchestrator/served_model.h"

namespace kvferry::orchestrator {

// A request that passed validation, tokenized and hashed, ready to schedule.
struct PreparedRequest {
  openai::ApiRequest api;
  uint64_t id = 0;        // the control plane's request_id
  std::string openai_id;  // "chatcmpl-…" / "cmpl-…", random (the server sets it)
  int64_t created = 0;    // Unix seconds
  std::vector<model::TokenId> tokens;
  std::vector<uint64_t> block_hashes;
  uint32_t context_tokens = 0;  // min(model context, smallest max_sequence_tokens of live nodes)
  uint32_t max_tokens = 0;      // effective: the requested or default budget, within the context
  // The tokens that end the answer: the model's end-of-sequence tokens (unless ignore_eos) and
  // the request's stop_token_ids.
  std::vector<model::TokenId> stop_tokens;
  wire::Sampling sampling;
  Clock::time_point arrived;
};

// Validates what the parser cannot (the model name, the context, token ids against the
// vocabulary) and tokenizes. `seed` is used when the request carries none. A max_tokens past the
// context left after the prompt is a 400 naming the limit, or cut to it when `clamp_max_tokens`
// (config requests.clamp_max_tokens); defaults are always cut. Errors are the API errors the
// client gets.
std::variant<PreparedRequest, openai::ApiError> prepareRequest(
    const ServedModel& model, const NodeRegistry& registry, openai::ApiRequest api, uint64_t id,
    uint64_t seed, int64_t created, Clock::time_point arrived, bool clamp_max_tokens = false);

// KV blocks a decode node must have free to start a sequence of `tokens` prompt tokens: the
// prompt's blocks and room for its first generated token.
inline uint64_t kvBlocksToStart(size_t tokens, uint32_t block_tokens) {
  return (tokens + block_tokens) / block_tokens;
}

// What happened, for the log line and the tests.
struct RequestOutcome {
  std::optional<NodeId> prefill;
  std::optional<NodeId> decode;
  uint32_t attempts = 0;
  uint32_t resumes = 0;  // attempts that went on with an answer begun on another pair
  uint32_t cached_tokens = 0;
  uint32_t output_tokens = 0;
  std::optional<double> ttft_ms;  // request arrival → first token
  double total_ms = 0;
  std::string finish_reason;  // "stop" | "length" when it succeeded
  std::string error;          // why it failed (also "client disconnected")
  int http_status = 200;
};

// What runRequest needs from the server.
struct FlowContext {
  const config::OrchestratorConfig& config;
  const ServedModel& model;
  NodeRegistry& registry;
  scheduler::Policy& policy;
  AgentClient& agents;
  // Latencies, phases, routing time, cache prediction and retries are observed here.
  OrchestratorMetrics& metrics;
  // Waits, keeping the request's admission slot, until some decode node may have room for
  // `kv_blocks` (Admission::waitForRoom), at most until `deadline`.
  std::function<http::Task<Admission::Refusal>(uint64_t kv_blocks, Clock::time_point deadline)>
      wait_for_room;
};

// Schedules, calls the agents and writes the whole answer (or error) to `writer`.
http::Task<RequestOutcome> runRequest(FlowContext& ctx, const PreparedRequest& request,
                                      http::ResponseWriter& writer);

// An OpenAI "server_error" with that HTTP status.
openai::ApiError serverError(int http_status, std::string message);

// Answers `error` with its HTTP status and OpenAI body. `headers` is taken by value
// (common/coroutine_rules.h, rule 3).
http::Task<void> sendApiError(http::ResponseWriter& writer, const openai::ApiError& error,
                              http::ResponseWriter::Headers headers = {});

}  // namespace kvferry::orchestrator
