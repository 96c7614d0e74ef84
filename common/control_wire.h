// The agent ↔ orchestrator wire types (DESIGN.md §3): JSON bodies of the control plane's HTTP
// calls, one struct per body. docs/control_plane.md lists the calls, who makes them and when.
//
// Encoding: Boost.JSON. encode() never fails; decode() returns INVALID_ARGUMENT naming the field
// that is missing or of the wrong type (unknown fields are ignored, so either side can add
// fields first). Block hashes and token ids are JSON numbers (uint64 / int32).
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvferry::wire {

// The control plane's paths, named once for the side that serves them and the side that calls
// them (docs/control_plane.md). Arrays, not string_views, so they convert to the std::string a
// route or a request target takes.
namespace route {
// Served by the orchestrator, called by the agents.
inline constexpr char kRegister[] = "/v1/agents/register";
inline constexpr char kHeartbeat[] = "/v1/agents/heartbeat";
inline constexpr char kLeave[] = "/v1/agents/leave";
// Served by the agents (their control API), called by the orchestrator.
inline constexpr char kReserve[] = "/agent/reserve";
inline constexpr char kPrefill[] = "/agent/prefill";
inline constexpr char kDecode[] = "/agent/decode";
inline constexpr char kGenerate[] = "/agent/generate";
inline constexpr char kRelease[] = "/agent/release";
inline constexpr char kCancel[] = "/agent/cancel";
}  // namespace route

// ---- agent → orchestrator ----

struct KvLayout {
  std::string dtype = "f32";
  uint32_t layers = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  uint64_t block_bytes = 0;
};

// The prefill cost model t(n) = fixed_s + per_token_s·n + per_token_squared_s·n², as the agent
// measured it on its own prefills (the scheduler's PrefillTimeModel).
struct PrefillModel {
  double fixed_s = 0;
  double per_token_s = 0;
  double per_token_squared_s = 0;
};

struct RegisterRequest {
  std::string name;               // operator-facing name (host:port by default)
  std::string role;               // "prefill" | "decode" | "both"
  std::string control_address;    // "host:port" of the agent's control API
  std::string model_fingerprint;  // hex, model::modelFingerprint
  std::string tokenizer_hash;     // hex, model::vocabularyHash
  std::string hash_seed_id;       // hex, a hash of the block-hash seed (the seed stays secret)
  uint32_t block_tokens = 0;
  KvLayout kv_layout;
  std::string transport;       // "tcp" | "verbs" | "loopback"
  std::string transport_blob;  // base64 of the transfer engine's endpoint blob
  uint32_t kv_blocks = 0;      // KV capacity in blocks
  uint32_t max_sequence_tokens = 0;
  PrefillModel prefill_model;
  // What computes: "cpu", or the GPU's name and index ("NVIDIA H200 (GPU 0)"), and its memory.
  // Informational (shown in /v1/nodes); optional on the wire.
  std::string device = "cpu";
  uint64_t device_memory_bytes = 0;
};

struct RegisterResponse {
  uint32_t node_id = 0;
  // Random, new with every registration: heartbeats and the leave carry it, so a node id that an
  // earlier orchestrator (or an earlier registration) gave out cannot speak for another node.
  uint64_t node_token = 0;
  uint32_t heartbeat_interval_ms = 0;
  uint32_t heartbeat_timeout_ms = 0;
};

// KV blocks are in one of four states (docs/control_plane.md, "KV blocks"): free, cached (a
// prefix kept for later prompts, evictable: free_kv_blocks counts it as available), leased (held
// by reservations not yet decoding) and in use (sequences prefilling or decoding). in use =
// total − free_kv_blocks − leased.
struct Load {
  uint64_t queued_prefill_tokens = 0;
  uint32_t queued_prefill_requests = 0;
  uint32_t active_decode_seqs = 0;
  uint32_t free_kv_blocks = 0;  // available: free or cached (evictable)
  uint32_t total_kv_blocks = 0;
  uint32_t active_leases = 0;
  uint32_t leased_blocks = 0;     // blocks held by reservations not yet decoding
  uint32_t cached_kv_blocks = 0;  // of free_kv_blocks, those that hold a cached prefix
  // Reservations the agent had granted when it took these figures (ReserveResponse::kv_sequence
  // numbers them): the orchestrator tells by it which of its reservations the report shows.
  uint64_t kv_sequence = 0;
};

struct KvEventBatchWire {
  uint64_t sequence = 0;
  std::vector<uint64_t> stored;  // applied before evicted within one batch
  std::vector<uint64_t> evicted;
};

struct HeartbeatRequest {
  uint32_t node_id = 0;
  uint64_t node_token = 0;  // RegisterResponse::node_token
  Load load;
  PrefillModel prefill_model;
  std::vector<KvEventBatchWire> kv_events;      // in sequence order
  std::optional<KvEventBatchWire> kv_snapshot;  // stored = every cached hash after `sequence`
  bool draining = false;
};

struct HeartbeatResponse {
  bool resync = false;  // send a snapshot next time
};

struct LeaveRequest {
  uint32_t node_id = 0;
  uint64_t node_token = 0;  // RegisterResponse::node_token
};

// ---- orchestrator → agent ----

struct LogitBias {
  int32_t token = 0;
  float bias = 0;  // added to the token's logit
  bool operator==(const LogitBias&) const = default;
};

struct Sampling {
  float temperature = 0;
  float top_p = 1;
  uint64_t seed = 0;
  // The logit processors (node_agent/engine/logit_processor.h), applied on the host to each
  // logits row before the pick; the defaults leave the logits alone, and only non-default values
  // travel (older agents read none of them).
  float repetition_penalty = 1;  // (0, 2]: on tokens of the prompt and the answer
  float presence_penalty = 0;    // [-2, 2]: on tokens of the answer
  float frequency_penalty = 0;   // [-2, 2]: on tokens of the answer, per occurrence
  std::vector<LogitBias> logit_bias;
  uint32_t min_tokens = 0;  // the request's stop tokens are masked until the answer has this many
  // Tokens at the end of the prompt that are the answer's (a resumed answer): penalties and
  // min_tokens count them as answer tokens.
  uint32_t answer_tokens = 0;
  // Report each token's log-probability and that of this many most likely tokens.
  std::optional<uint32_t> logprobs;
};

// A token's log-probability under the model (the raw logits' log-softmax, before the logit
// processors and temperature), and the most likely tokens', most likely first.
struct TokenLogprobs {
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
  bool operator==(const TokenLogprobs&) const = default;
};

// Random draws one sampled token uses: none when greedy (temperature 0), else exactly one. A
// stream resumed on another agent after n tokens skips n × this many draws of its seed, so it
// goes on with the tokens the first agent would have drawn (engine/sampler.h keeps to this).
inline uint64_t randomDrawsPerToken(const Sampling& sampling) {
  return sampling.temperature == 0 ? 0 : 1;
}

struct ReserveRequest {
  uint64_t request_id = 0;
  std::vector<int32_t> tokens;  // the prompt whose KV will be written here
  uint32_t lease_ms = 0;        // the reservation ends by then unless decoding started
};

struct ReserveResponse {
  uint64_t lease_id = 0;
  uint32_t slot = 0;  // carried in the immediates: imm = slot << 12 | layer
  std::vector<uint32_t> block_ids;
  uint32_t cached_blocks = 0;     // leading blocks this agent had: not to be sent
  std::vector<uint32_t> regions;  // region ids: K of layer 0, V of layer 0, K of layer 1, …
  uint64_t kv_sequence = 0;       // this reservation's number (1, 2, …): see Load::kv_sequence
};

struct TransferTarget {
  uint32_t node_id = 0;
  std::string transport_blob;  // base64
  uint32_t slot = 0;
  std::vector<uint32_t> block_ids;
  uint32_t cached_blocks = 0;
  std::vector<uint32_t> regions;
};

struct PrefillRequest {
  uint64_t request_id = 0;
  std::vector<int32_t> tokens;
  Sampling sampling;
  TransferTarget target;
  // Draws of the seed's stream to skip before sampling: an answer resumed after some tokens
  // (they end `tokens`) goes on where it stopped. Optional on the wire (0).
  uint64_t rng_draws = 0;
  // The tokens that end the answer: masked while sampling.min_tokens is not reached. Optional.
  std::vector<int32_t> stop_tokens;
};

struct PrefillResponse {
  int32_t first_token = 0;
  uint32_t cached_tokens = 0;
  uint64_t rng_draws = 0;  // random draws the first token used (the decode side skips them)
  double prefill_ms = 0;   // compute
  double transfer_ms = 0;  // from the first layer's post to the last completion
  uint64_t transfer_bytes = 0;
  std::optional<TokenLogprobs> logprobs;  // the first token's, when sampling.logprobs asked
  // agent.kv_checksum on the prefill agent: per layer, the KvChecksummer checksum of the K and V it
  // wrote (node_agent/kv_transfer/kv_checksum.h). Empty otherwise; optional on the wire.
  std::vector<uint64_t> kv_checksums;
};

struct DecodeRequest {
  uint64_t request_id = 0;
  uint64_t lease_id = 0;
  int32_t first_token = 0;
  Sampling sampling;
  uint64_t rng_draws = 0;
  uint32_t max_new_tokens = 0;  // tokens this stream may add after first_token
  std::vector<int32_t> stop_tokens;
  // The prefill's PrefillResponse::kv_checksums, passed on: the decode agent checks the landed KV
  // against them before it decodes. Optional (empty: not checked).
  std::vector<uint64_t> kv_checksums;
};

struct GenerateRequest {  // role both: prefill and decode here, no transfer
  uint64_t request_id = 0;
  std::vector<int32_t> tokens;
  Sampling sampling;
  uint32_t max_new_tokens = 0;  // including the first token
  std::vector<int32_t> stop_tokens;
  uint64_t rng_draws = 0;  // as PrefillRequest::rng_draws
};

// What kind of error an agent answers, in AgentError::code and StreamLine::code.
namespace error_code {
// The KV pool has no room for the request now: not the node's fault; wait and retry.
inline constexpr char kKvCapacity[] = "kv_capacity";
// The KV that landed differs from what the prefill sent (its checksums): the transfer is to
// blame, not the decode node; the request goes on elsewhere, and nothing was decoded from it.
inline constexpr char kKvCorrupt[] = "kv_corrupt";
}  // namespace error_code

// One line of a decode / generate stream (NDJSON): a token, or the end.
struct StreamLine {
  std::optional<int32_t> token;
  std::optional<uint32_t> cached_tokens;  // on the first line of a generate stream
  std::optional<TokenLogprobs> logprobs;  // the token's, when sampling.logprobs asked
  std::string finish;                     // "" | "stop" | "length" | "error"
  std::string message;                    // the error, when finish == "error"
  std::string code;                       // the error's kind (error_code), when there is one
};

// An agent's error body: {"error":{"message":…,"code":…,"writes_settled":…}}.
struct AgentError {
  std::string message;
  std::string code;  // error_code::…, or empty
  // A prefill's: no KV write it posted can still land on the target (it posted none, or each
  // completed), so the target's reservation may be freed at once.
  bool writes_settled = false;
};

struct IdRequest {  // cancel (request_id)
  uint64_t id = 0;
};

struct ReleaseRequest {  // release
  uint64_t id = 0;       // the lease
  // No write into the lease's blocks can land any more (its prefill answered and said its
  // writes settled): the blocks are free at once, even with layers missing. Optional (false).
  bool writer_done = false;
};

// ---- encoding ----

boost::json::value toJson(const RegisterRequest&);
boost::json::value toJson(const RegisterResponse&);
boost::json::value toJson(const HeartbeatRequest&);
boost::json::value toJson(const HeartbeatResponse&);
boost::json::value toJson(const LeaveRequest&);
boost::json::value toJson(const ReserveRequest&);
boost::json::value toJson(const ReserveResponse&);
boost::json::value toJson(const PrefillRequest&);
boost::json::value toJson(const PrefillResponse&);
boost::json::value toJson(const DecodeRequest&);
boost::json::value toJson(const GenerateRequest&);
boost::json::value toJson(const StreamLine&);
boost::json::value toJson(const IdRequest&);
boost::json::value toJson(const ReleaseRequest&);
boost::json::value toJson(const AgentError&);

template <typename T>
std::string encode(const T& message);

// T is any of the structs above.
template <typename T>
Result<T> decode(std::string_view json);

// A stream's token lines, one per generated token each way, are written and read without a JSON
// tree: {"token":N} and {"token":N,"cached_tokens":M}, byte for byte what Boost.JSON writes for
// them; any other line takes the general path.
template <>
std::string encode<StreamLine>(const StreamLine& message);
template <>
Result<StreamLine> decode<StreamLine>(std::string_view json);

// Base64 (RFC 4648, with padding) for endpoint blobs.
std::string base64Encode(std::span<const uint8_t> bytes);
Result<std::vector<uint8_t>> base64Decode(std::string_view text);

}  // namespace kvferry::wire
