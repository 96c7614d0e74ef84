#include "orchestrator/server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <random>
#include <variant>
#include <vector>

#include "common/control_auth.h"
#include "common/control_wire.h"
#include "common/coroutine_rules.h"
#include "model/gguf.h"
#include "orchestrator/admission.h"
#include "orchestrator/agent_client.h"
#include "orchestrator/api_keys.h"
#include "orchestrator/metrics.h"
#include "orchestrator/openai/request.h"
#include "orchestrator/openai/response.h"
#include "orchestrator/registry.h"
#include "orchestrator/request_flow.h"
#include "orchestrator/scheduler/policy.h"

namespace kvferry::orchestrator {

namespace asio = boost::asio;
namespace json = boost::json;
using http::HttpStatus;
using http::Request;
using http::ResponseWriter;
using http::Task;
using http::Verb;

namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

// GET /v1/models/{id}.
constexpr std::string_view kModelsPrefix = "/v1/models/";
// kvferry_requests_total's endpoint label for a path no route serves (bounded cardinality).
constexpr std::string_view kOtherEndpoint = "other";

// %XX escapes of a URL path segment decoded; a malformed escape stays as it is.
std::string percentDecoded(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto hex = [](char c) {
      return c >= '0' && c <= '9'   ? c - '0'
             : c >= 'a' && c <= 'f' ? c - 'a' + 10
             : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                    : -1;
    };
    if (text[i] == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
      out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

int64_t unixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view roleName(scheduler::NodeRole role) {
  switch (role) {
    case scheduler::NodeRole::kPrefill:
      return "prefill";
    case scheduler::NodeRole::kDecode:
      return "decode";
    case scheduler::NodeRole::kBoth:
      return "both";
  }
  return "both";
}

std::string nodeText(const NodeRecord& node) {
  return "node " + std::to_string(node.id) + " (" + node.registration.name + ", " +
         std::string(roleName(node.role)) + ", " + node.registration.control_address + ")";
}

std::string formatMs(std::optional<double> ms) {
  if (!ms) return "-";
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", *ms);
  return text;
}

}  // namespace

class OrchestratorServer::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::io_context& io, config::OrchestratorConfig config, ServedModel model,
       std::unique_ptr<scheduler::Policy> policy, ApiKeys api_keys,
       std::shared_ptr<control_auth::Authenticator> auth, uint64_t seed)
      : io_(io),
        config_(std::move(config)),
        api_keys_(std::move(api_keys)),
        auth_(std::move(auth)),
        model_(std::move(model)),
        metrics_(metrics_registry_),
        registry_(model_.identity, std::chrono::milliseconds(config_.heartbeat_timeout_ms),
                  config_.link_bandwidth_bytes_per_s,
                  std::chrono::milliseconds(config_.forget_after_ms)),
        policy_(std::move(policy)),
        agent_pool_(io),
        agents_(agent_pool_, registry_, std::chrono::milliseconds(config_.agent_timeout_ms),
                [this](Task<void> call) { spawnBestEffort(std::move(call)); }),
        admission_(io, config_.max_inflight, config_.max_queue,
                   [this] { return registry_.decodeKvRoom(); }),
        http_(io, httpOptions()),
        expiry_timer_(io),
        rng_(seed),
        next_request_id_(rng_()),
        created_(unixSeconds()),
        flow_{config_,
              model_,
              registry_,
              *policy_,
              agents_,
              metrics_,
              [this](uint64_t kv_blocks, Clock::time_point deadline) {
                return admission_.waitForRoom(kv_blocks, deadline);
              }} {
    if (auth_ != nullptr) {
      agent_pool_.signRequests([auth = auth_](http::Request& r) { auth->sign(r); });
    }
  }

  void addRoutes();
  Status listen() { return http_.listen(config_.listen_address); }
  uint16_t port() const { return http_.port(); }
  void start() {
    http_.start();
    asio::co_spawn(io_, expiryLoop(shared_from_this()), asio::detached);
  }
  Task<void> shutdown(std::shared_ptr<Impl> self, std::chrono::milliseconds grace);
  // Closes every connection and stops the timer at once.
  void stopNow() {
    if (stopped_) return;
    stopped_ = true;
    draining_ = true;
    admission_.close();
    http_.stop();
    expiry_timer_.cancel();
  }

  const std::string& modelName() const { return model_.name; }
  std::string_view policyName() const { return policy_->name(); }

 private:
  // Counts a request while it lives: those in flight (parsed, admitted or waiting), for the
  // drain at shutdown, and each API key's.
  class ActiveRequest {
   public:
    explicit ActiveRequest(uint32_t& count) : count_(count) { ++count_; }
    ~ActiveRequest() { --count_; }
    ActiveRequest(const ActiveRequest&) = delete;
    ActiveRequest& operator=(const ActiveRequest&) = delete;

   private:
    uint32_t& count_;
  };

  Task<void> completion(std::shared_ptr<Impl> self, openai::Endpoint endpoint,
                        const Request& request, ResponseWriter& writer);
  // The HTTP server's own errors (unknown URL, method, body too large) in OpenAI's shape, and
  // counted in kvferry_requests_total.
  http::ServerOptions httpOptions();
  // `handler` behind the API keys: a request without a valid `Authorization: Bearer` key gets
  // 401 (counted under `endpoint`) and never reaches it.
  http::Handler keyed(std::string endpoint, http::Handler handler);
  Task<void> refuseUnauthorized(std::shared_ptr<Impl> self, std::string endpoint,
                                ResponseWriter& writer);
  // A 429 in OpenAI's shape with Retry-After: admission.retry_after_s, counted for `path`.
  Task<void> refuseRateLimited(std::string_view path, std::string message, ResponseWriter& writer);
  Task<void> models(std::shared_ptr<Impl> self, ResponseWriter& writer);
  Task<void> model(std::shared_ptr<Impl> self, const Request& request, ResponseWriter& writer);
  Task<void> health(std::shared_ptr<Impl> self, ResponseWriter& writer);
  Task<void> nodes(std::shared_ptr<Impl> self, ResponseWriter& writer);
  Task<void> metricsPage(std::shared_ptr<Impl> self, ResponseWriter& writer);
  Task<void> registerAgent(std::shared_ptr<Impl> self, const Request& request,
                           ResponseWriter& writer);
  Task<void> heartbeat(std::shared_ptr<Impl> self, const Request& request, ResponseWriter& writer);
  Task<void> leave(std::shared_ptr<Impl> self, const Request& request, ResponseWriter& writer);
  Task<void> expiryLoop(std::shared_ptr<Impl> self);
  // Runs an agent call nobody waits for (release, cancel) in the background, keeping this
  // object alive until it ends; none once the server stopped.
  void spawnBestEffort(Task<void> call);
  static Task<void> keepAliveWhile(std::shared_ptr<Impl> self, Task<void> call);
  void logOutcome(const PreparedRequest& request, const RequestOutcome& outcome) const;

  // Declaration order is construction order; teardown runs in reverse.
  asio::io_context& io_;
  const config::OrchestratorConfig config_;
  const ApiKeys api_keys_;
  std::vector<uint32_t> per_key_requests_ = std::vector<uint32_t>(api_keys_.size());  // by key
  // registry.max_registrations_per_s (io thread).
  TokenBucket registration_bucket_{static_cast<double>(config_.max_registrations_per_s)};
  const std::shared_ptr<control_auth::Authenticator> auth_;  // null: an open control plane
  const ServedModel model_;
  prometheus::Registry metrics_registry_;
  OrchestratorMetrics metrics_;
  NodeRegistry registry_;
  std::unique_ptr<scheduler::Policy> policy_;
  http::ClientPool agent_pool_;  // connections to the agents' control APIs
  HttpAgentClient agents_;
  Admission admission_;
  http::Server http_;
  asio::steady_timer expiry_timer_;
  std::mt19937_64 rng_;           // the control plane's request ids and default sampling seeds
  std::random_device os_random_;  // the ids clients see
  uint64_t randomBits() { return (uint64_t{os_random_()} << 32) | os_random_(); }
  uint64_t next_request_id_;
  const int64_t created_;
  FlowContext flow_;
  uint32_t active_requests_ = 0;
  bool draining_ = false;
  bool stopped_ = false;
};

void OrchestratorServer::Impl::addRoutes() {
  // Each handler hands its coroutine a reference to this object, so a suspended request keeps
  // the server's state alive.
  auto self = [this] { return shared_from_this(); };
  const bool key_ops = config_.keyed_health_and_metrics;
  http_.route(
      Verb::post, "/v1/chat/completions",
      keyed("/v1/chat/completions", [this, self](const Request& request, ResponseWriter& writer) {
        return completion(self(), openai::Endpoint::kChatCompletions, request, writer);
      }));
  http_.route(
      Verb::post, "/v1/completions",
      keyed("/v1/completions", [this, self](const Request& request, ResponseWriter& writer) {
        return completion(self(), openai::Endpoint::kCompletions, request, writer);
      }));
  http_.route(Verb::get, "/v1/models",
              keyed("/v1/models", [this, self](const Request&, ResponseWriter& writer) {
                return models(self(), writer);
              }));
  http_.routePrefix(Verb::get, std::string(kModelsPrefix),
                    keyed(std::string(kModelsPrefix),
                          [this, self](const Request& request, ResponseWriter& writer) {
                            return model(self(), request, writer);
                          }));
  http::Handler health_page = [this, self](const Request&, ResponseWriter& writer) {
    return health(self(), writer);
  };
  http_.route(Verb::get, "/health",
              key_ops ? keyed("/health", std::move(health_page)) : std::move(health_page));
  // The registry's internals (addresses, caches): for the cluster's operators. With a cluster
  // secret, it is their credential (Bearer <secret>); without one, an API key is.
  http::Handler nodes_page = [this, self](const Request&, ResponseWriter& writer) {
    return nodes(self(), writer);
  };
  http_.route(Verb::get, "/v1/nodes",
              auth_ != nullptr ? control_auth::guard(auth_, std::move(nodes_page),
                                                     control_auth::Callers::kClusterAndOperator)
                               : keyed("/v1/nodes", std::move(nodes_page)));
  http::Handler metrics_page = [this, self](const Request&, ResponseWriter& writer) {
    return metricsPage(self(), writer);
  };
  http_.route(Verb::get, "/metrics",
              key_ops ? keyed("/metrics", std::move(metrics_page)) : std::move(metrics_page));
  // The agents' calls carry the cluster's MAC (common/control_auth.h).
  http_.route(
      Verb::post, wire::route::kRegister,
      control_auth::guard(auth_, [this, self](const Request& request, ResponseWriter& writer) {
        return registerAgent(self(), request, writer);
      }));
  http_.route(
      Verb::post, wire::route::kHeartbeat,
      control_auth::guard(auth_, [this, self](const Request& request, ResponseWriter& writer) {
        return heartbeat(self(), request, writer);
      }));
  http_.route(
      Verb::post, wire::route::kLeave,
      control_auth::guard(auth_, [this, self](const Request& request, ResponseWriter& writer) {
        return leave(self(), request, writer);
      }));
}

http::Handler OrchestratorServer::Impl::keyed(std::string endpoint, http::Handler handler) {
  if (api_keys_.open()) return handler;
  return [this, endpoint = std::move(endpoint), handler = std::move(handler)](
             const Request& request, ResponseWriter& writer) {
    if (api_keys_.accepts(request[boost::beast::http::field::authorization])) {
      return handler(request, writer);
    }
    return refuseUnauthorized(shared_from_this(), endpoint, writer);
  };
}

Task<void> OrchestratorServer::Impl::refuseRateLimited(std::string_view path, std::string message,
                                                       ResponseWriter& writer) {
  const openai::ApiError error{
      429, "rate_limit_error", std::move(message), {}, "rate_limit_exceeded"};
  const ResponseWriter::Headers headers{{"Retry-After", std::to_string(config_.retry_after_s)}};
  metrics_.countRequest(path, error.http_status);
  co_await sendApiError(writer, error, headers);
}

Task<void> OrchestratorServer::Impl::refuseUnauthorized(std::shared_ptr<Impl> self,
                                                        std::string endpoint,
                                                        ResponseWriter& writer) {
  (void)self;
  openai::ApiError error;
  error.http_status = 401;
  error.type = "invalid_request_error";
  error.code = "invalid_api_key";
  error.message =
      "a valid API key is required: send it as 'Authorization: Bearer <key>' (the keys are in "
      "the orchestrator's auth.api_keys_file or KVFERRY_API_KEYS)";
  metrics_.countRequest(endpoint, error.http_status);
  co_await sendApiError(writer, error);
}

Task<void> OrchestratorServer::Impl::completion(std::shared_ptr<Impl> self,
                                                openai::Endpoint endpoint, const Request& request,
                                                ResponseWriter& writer) {
  (void)self;
  const Clock::time_point arrived = Clock::now();
  const std::string_view path = openai::endpointPath(endpoint);
  if (draining_) {
    const openai::ApiError error = serverError(503, "the orchestrator is shutting down");
    metrics_.countRejection(OrchestratorMetrics::Rejection::kShuttingDown);
    metrics_.countRequest(path, error.http_status);
    co_await sendApiError(writer, error);
    co_return;
  }
  ActiveRequest active(active_requests_);
  // admission.max_requests_per_key: one key's completions under way at once.
  const std::optional<size_t> key =
      api_keys_.match(request[boost::beast::http::field::authorization]);
  std::optional<ActiveRequest> key_active;
  if (key) key_active.emplace(per_key_requests_[*key]);
  if (key && config_.max_requests_per_key > 0 &&
      per_key_requests_[*key] > config_.max_requests_per_key) {
    metrics_.countRejection(OrchestratorMetrics::Rejection::kKeyLimit);
    const std::string message = "This API key already has " +
                                std::to_string(config_.max_requests_per_key) +
                                " requests under way, its limit. Retry after " +
                                std::to_string(config_.retry_after_s) + " s.";
    spdlog::info("{}: refused (429): {}", path, message);
    co_await refuseRateLimited(path, message, writer);
    co_return;
  }
  openai::ParseResult parsed = openai::parseRequest(endpoint, request.body());
  if (const auto* error = std::get_if<openai::ApiError>(&parsed)) {
    spdlog::debug("{}: refused with {}: {}", path, error->http_status, error->message);
    metrics_.countRequest(path, error->http_status);
    co_await sendApiError(writer, *error);
    co_return;
  }
  const uint64_t id = next_request_id_++;
  auto prepared = prepareRequest(model_, registry_, std::move(std::get<openai::ApiRequest>(parsed)),
                                 id, rng_(), unixSeconds(), arrived, config_.clamp_max_tokens);
  if (const auto* error = std::get_if<openai::ApiError>(&prepared)) {
    spdlog::debug("{}: refused with {}: {}", path, error->http_status, error->message);
    metrics_.countRequest(path, error->http_status);
    co_await sendApiError(writer, *error);
    co_return;
  }
  PreparedRequest& ready = std::get<PreparedRequest>(prepared);
  spdlog::debug("request {}: {} prompt tokens, parsed, tokenized and hashed in {:.2f} ms", id,
                ready.tokens.size(),
                std::chrono::duration<double, std::milli>(Clock::now() - arrived).count());
  ready.openai_id = openai::requestId(ready.api.endpoint, randomBits(), randomBits());

  // It waits for a slot and for a decode node with room for its prompt, until its deadline.
  const Clock::time_point queued_at = Clock::now();
  const uint64_t kv_blocks = kvBlocksToStart(ready.tokens.size(), model_.identity.block_tokens);
  const Clock::time_point deadline = arrived + std::chrono::milliseconds(config_.queue_timeout_ms);
  Admission::Outcome admitted = co_await admission_.acquire(kv_blocks, deadline);
  if (!admitted.slot) {
    std::string message;
    switch (admitted.refusal) {
      case Admission::Refusal::kQueueFull:
        metrics_.countRejection(OrchestratorMetrics::Rejection::kQueueFull);
        message = "The server is at capacity (" + std::to_string(config_.max_inflight) +
                  " requests in flight, " + std::to_string(config_.max_queue) +
                  " waiting). Retry after " + std::to_string(config_.retry_after_s) + " s.";
        break;
      case Admission::Refusal::kQueueTimeout:
        metrics_.countRejection(OrchestratorMetrics::Rejection::kQueueTimeout);
        message = "The request waited " + std::to_string(config_.queue_timeout_ms) +
                  " ms for a slot and for KV room for its " + std::to_string(ready.tokens.size()) +
                  " prompt tokens, and gave up. Retry after " +
                  std::to_string(config_.retry_after_s) + " s.";
        break;
      case Admission::Refusal::kClosed:
        metrics_.countRejection(OrchestratorMetrics::Rejection::kShuttingDown);
        message = "the orchestrator is shutting down";
        break;
      case Admission::Refusal::kNone:
        break;
    }
    if (admitted.refusal == Admission::Refusal::kClosed) {
      const openai::ApiError error = serverError(503, message);
      metrics_.countRequest(path, error.http_status);
      co_await sendApiError(writer, error);
      co_return;
    }
    spdlog::info("request {}: refused (429): {}", ready.openai_id, message);
    co_await refuseRateLimited(path, message, writer);
    co_return;
  }
  metrics_.observePhase(OrchestratorMetrics::Phase::kQueue,
                        std::chrono::duration<double>(Clock::now() - queued_at).count());
  RequestOutcome outcome = co_await runRequest(flow_, ready, writer);
  admitted.slot.release();
  admission_.capacityChanged();  // its KV is back
  metrics_.countRequest(path, outcome.http_status);
  logOutcome(ready, outcome);
}

void OrchestratorServer::Impl::logOutcome(const PreparedRequest& request,
                                          const RequestOutcome& outcome) const {
  std::string nodes = "-";
  if (outcome.prefill && outcome.decode) {
    nodes = std::to_string(*outcome.prefill) + "->" + std::to_string(*outcome.decode);
  }
  std::string result = outcome.error.empty() ? "finish " + outcome.finish_reason
                                             : "error (" + std::to_string(outcome.http_status) +
                                                   "): " + outcome.error;
  spdlog::info(
      "request {} (id {}) {}: nodes {}, attempts {} (resumed {}), prompt {} cached {} output {} "
      "tokens, ttft {} ms, total {} ms, {}",
      request.openai_id, request.id, openai::endpointPath(request.api.endpoint), nodes,
      outcome.attempts, outcome.resumes, request.tokens.size(), outcome.cached_tokens,
      outcome.output_tokens, formatMs(outcome.ttft_ms), formatMs(outcome.total_ms), result);
}

http::ServerOptions OrchestratorServer::Impl::httpOptions() {
  http::ServerOptions options;
  options.error_body = [](unsigned status, std::string_view message) {
    return openai::errorJson(openai::httpError(static_cast<int>(status), std::string(message)));
  };
  options.on_error = [this](std::string_view route, unsigned status) {
    metrics_.countRequest(route.empty() ? kOtherEndpoint : route, static_cast<int>(status));
  };
  return options;
}

Task<void> OrchestratorServer::Impl::models(std::shared_ptr<Impl> self, ResponseWriter& writer) {
  (void)self;
  std::vector<openai::ModelInfo> models{{model_.name, created_, "kvferry"}};
  co_await writer.sendJson(HttpStatus::ok, openai::modelsResponse(models));
}

Task<void> OrchestratorServer::Impl::model(std::shared_ptr<Impl> self, const Request& request,
                                           ResponseWriter& writer) {
  (void)self;
  // The id is the rest of the path (it may hold '/', as "org/model" ids do), percent-decoded.
  std::string_view target = request.target();
  target = target.substr(0, target.find('?'));
  const std::string id = percentDecoded(target.substr(kModelsPrefix.size()));
  // Answers built into locals, not temporaries of the co_await (common/coroutine_rules.h).
  if (id != model_.name) {
    const openai::ApiError error = openai::modelNotFound(model::printable(id));
    co_await sendApiError(writer, error);
    co_return;
  }
  std::string body = openai::modelResponse({model_.name, created_, "kvferry"});
  co_await writer.sendJson(HttpStatus::ok, std::move(body));
}

Task<void> OrchestratorServer::Impl::health(std::shared_ptr<Impl> self, ResponseWriter& writer) {
  (void)self;
  const size_t prefill = registry_.livePrefillNodes();
  const size_t decode = registry_.liveDecodeNodes();
  json::object body;
  std::string missing;
  if (draining_) {
    missing = "the orchestrator is shutting down";
  } else if (prefill == 0 && decode == 0) {
    missing = "no live node can prefill or decode";
  } else if (decode == 0) {
    missing = "no live node can decode";
  } else if (prefill == 0) {
    // Served, colocated: a decode node prefills its own requests.
    body["message"] = "no live node can prefill: the decode nodes serve whole requests";
  }
  body["status"] = missing.empty() ? "ok" : "unavailable";
  body["model"] = model_.name;
  body["policy"] = policy_->name();
  body["prefill_nodes"] = prefill;
  body["decode_nodes"] = decode;
  body["registered_nodes"] = registry_.nodes().size();
  if (!missing.empty()) body["message"] = missing;
  co_await writer.sendJson(missing.empty() ? HttpStatus::ok : HttpStatus::service_unavailable,
                           json::serialize(body));
}

Task<void> OrchestratorServer::Impl::nodes(std::shared_ptr<Impl> self, ResponseWriter& writer) {
  (void)self;
  const Clock::time_point now = Clock::now();
  json::array out;
  for (const NodeRecord& node : registry_.nodes()) {
    if (node.forgotten) continue;
    json::object n;
    n["id"] = node.id;
    n["name"] = node.registration.name;
    n["role"] = roleName(node.role);
    n["control_address"] = node.registration.control_address;
    n["transport"] = node.registration.transport;
    n["device"] = node.registration.device;
    n["device_memory_bytes"] = node.registration.device_memory_bytes;
    n["alive"] = node.liveness == NodeLiveness::kAlive;
    n["state"] = livenessName(node.liveness);
    n["draining"] = node.draining;
    n["last_heartbeat_ms_ago"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(now - node.last_heartbeat).count();
    n["queued_prefill_tokens"] = node.load.queued_prefill_tokens;
    n["queued_prefill_requests"] = node.load.queued_prefill_requests;
    n["active_decode_seqs"] = node.load.active_decode_seqs;
    n["active_leases"] = node.load.active_leases;
    n["leased_blocks"] = node.load.leased_blocks;
    n["free_kv_blocks"] = node.load.free_kv_blocks;
    n["total_kv_blocks"] = node.load.total_kv_blocks;
    const KvBlockStates states = kvBlockStates(node);
    n["kv_blocks"] = json::object{{"in_use", states.in_use},
                                  {"leased", states.leased},
                                  {"cached", states.cached},
                                  {"free", states.free},
                                  {"total", states.total}};
    n["available_kv_blocks"] = node.availableKvBlocks();
    n["max_sequence_tokens"] = node.registration.max_sequence_tokens;
    n["cached_blocks"] = registry_.cachedBlocks(node.id);
    n["inflight_prefill_requests"] = node.local_prefill_requests;
    n["inflight_decode_seqs"] = node.local_decode_seqs;
    out.push_back(std::move(n));
  }
  co_await writer.sendJson(HttpStatus::ok, json::serialize(out));
}

Task<void> OrchestratorServer::Impl::metricsPage(std::shared_ptr<Impl> self,
                                                 ResponseWriter& writer) {
  (void)self;
  // Gauges that mirror state owned elsewhere are copied at scrape time, so they cannot drift.
  metrics_.queued_requests.Set(static_cast<double>(admission_.queued()));
  metrics_.inflight_requests.Set(admission_.inflight());
  metrics_.syncNodes(registry_);
  co_await writer.send(HttpStatus::ok, metrics::kContentType, metrics::text(metrics_registry_));
}

Task<void> OrchestratorServer::Impl::registerAgent(std::shared_ptr<Impl> self,
                                                   const Request& request, ResponseWriter& writer) {
  (void)self;
  if (!registration_bucket_.take(Clock::now())) {
    spdlog::warn("refused a registration: more than {} a second", config_.max_registrations_per_s);
    std::string refusal = http::errorBody("too many registrations: at most " +
                                          std::to_string(config_.max_registrations_per_s) +
                                          " a second (registry.max_registrations_per_s)");
    ResponseWriter::Headers headers{{"Retry-After", "1"}};  // locals: coroutine_rules.h, 2
    co_await writer.send(HttpStatus::too_many_requests, "application/json", std::move(refusal),
                         std::move(headers));
    co_return;
  }
  Result<wire::RegisterRequest> body = wire::decode<wire::RegisterRequest>(request.body());
  if (!body.isOk()) {
    co_await writer.sendJson(HttpStatus::bad_request, http::errorBody(body.status().message()));
    co_return;
  }
  Result<NodeRegistry::Registered> registered = registry_.registerNode(*body, Clock::now());
  if (!registered.isOk()) {
    const bool conflict = registered.status().code() == StatusCode::kFailedPrecondition;
    spdlog::warn("refused agent '{}' at {}: {}", body->name, body->control_address,
                 registered.status().message());
    co_await writer.sendJson(conflict ? HttpStatus::conflict : HttpStatus::bad_request,
                             http::errorBody(registered.status().message()));
    co_return;
  }
  const NodeRecord& node = *registry_.node(registered->id);
  admission_.capacityChanged();  // a node with room
  if (registered->replaced) {
    spdlog::info("node {} replaces node {} at the same address", registered->id,
                 *registered->replaced);
  }
  spdlog::info("{} registered: {} KV blocks, max {} tokens per sequence, transport {}",
               nodeText(node), body->kv_blocks, body->max_sequence_tokens, body->transport);
  wire::RegisterResponse response;
  response.node_id = registered->id;
  response.node_token = registered->token;
  response.heartbeat_interval_ms = config_.heartbeat_interval_ms;
  response.heartbeat_timeout_ms = config_.heartbeat_timeout_ms;
  co_await writer.sendJson(HttpStatus::ok, wire::encode(response));
}

Task<void> OrchestratorServer::Impl::heartbeat(std::shared_ptr<Impl> self, const Request& request,
                                               ResponseWriter& writer) {
  (void)self;
  Result<wire::HeartbeatRequest> body = wire::decode<wire::HeartbeatRequest>(request.body());
  if (!body.isOk()) {
    co_await writer.sendJson(HttpStatus::bad_request, http::errorBody(body.status().message()));
    co_return;
  }
  const NodeRecord* before = registry_.node(body->node_id);
  const bool was_draining = before != nullptr && before->draining;
  Result<wire::HeartbeatResponse> answer = registry_.heartbeat(*body, Clock::now());
  if (!answer.isOk()) {
    co_await writer.sendJson(HttpStatus::not_found, http::errorBody(answer.status().message()));
    co_return;
  }
  admission_.capacityChanged();  // the node's KV room, as it reports it now
  if (body->draining && !was_draining) {
    spdlog::info("{} is draining", nodeText(*registry_.node(body->node_id)));
  }
  if (answer->resync) {
    spdlog::debug("node {}: KV events have a gap; asking for a snapshot", body->node_id);
  }
  co_await writer.sendJson(HttpStatus::ok, wire::encode(*answer));
}

Task<void> OrchestratorServer::Impl::leave(std::shared_ptr<Impl> self, const Request& request,
                                           ResponseWriter& writer) {
  (void)self;
  Result<wire::LeaveRequest> body = wire::decode<wire::LeaveRequest>(request.body());
  if (!body.isOk()) {
    co_await writer.sendJson(HttpStatus::bad_request, http::errorBody(body.status().message()));
    co_return;
  }
  const NodeRecord* node = registry_.node(body->node_id);
  const bool was_alive = node != nullptr && node->liveness == NodeLiveness::kAlive;
  Status left = registry_.leave(body->node_id, body->node_token);
  if (!left.isOk()) {
    co_await writer.sendJson(HttpStatus::not_found, http::errorBody(left.message()));
    co_return;
  }
  node = registry_.node(body->node_id);
  if (was_alive) {
    spdlog::info("{} left", nodeText(*node));
    agent_pool_.forget(node->control_endpoint);
  }
  co_await writer.sendJson(HttpStatus::ok, "{}");
}

Task<void> OrchestratorServer::Impl::expiryLoop(std::shared_ptr<Impl> self) {
  (void)self;
  const auto period = std::chrono::milliseconds(std::max(1u, config_.heartbeat_interval_ms / 2));
  while (!stopped_) {
    expiry_timer_.expires_after(period);
    auto [ec] = co_await expiry_timer_.async_wait(kNoThrow);
    if (ec || stopped_) co_return;
    const Clock::time_point now = Clock::now();
    for (NodeId id : registry_.expire(now)) {
      const NodeRecord& node = *registry_.node(id);
      spdlog::warn(
          "{} is dead: no heartbeat for {} ms (timeout {} ms)", nodeText(node),
          std::chrono::duration_cast<std::chrono::milliseconds>(now - node.last_heartbeat).count(),
          config_.heartbeat_timeout_ms);
      // A frozen node's calls would wait out agent_timeout_ms: end them, so their requests go
      // on elsewhere now.
      agent_pool_.abort(node.control_endpoint);
    }
  }
}

void OrchestratorServer::Impl::spawnBestEffort(Task<void> call) {
  if (stopped_) return;
  asio::co_spawn(io_, keepAliveWhile(shared_from_this(), std::move(call)), asio::detached);
}

Task<void> OrchestratorServer::Impl::keepAliveWhile(std::shared_ptr<Impl> self, Task<void> call) {
  (void)self;
  co_await std::move(call);
}

Task<void> OrchestratorServer::Impl::shutdown(std::shared_ptr<Impl> self,
                                              std::chrono::milliseconds grace) {
  (void)self;
  if (stopped_) co_return;
  draining_ = true;
  admission_.close();
  const Clock::time_point deadline = Clock::now() + grace;
  asio::steady_timer timer(io_);
  while (active_requests_ > 0 && Clock::now() < deadline) {
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(kNoThrow);
  }
  if (active_requests_ > 0) {
    spdlog::warn("shutting down with {} requests still in flight", active_requests_);
  }
  stopNow();
}

// ---- OrchestratorServer ----

Result<std::unique_ptr<OrchestratorServer>> OrchestratorServer::create(
    asio::io_context& io, config::OrchestratorConfig config) {
  ASSIGN_OR_RETURN(ServedModel model, ServedModel::load(config.model));
  ASSIGN_OR_RETURN(ApiKeys api_keys,
                   ApiKeys::load(config.api_keys_file, std::getenv("KVFERRY_API_KEYS")));
  if (api_keys.open()) {
    spdlog::warn(
        "orchestrator: no API key configured (auth.api_keys_file, KVFERRY_API_KEYS): "
        "anyone who reaches {} may use the API",
        config.listen_address);
  } else {
    spdlog::info("orchestrator: the API wants one of {} key(s)", api_keys.size());
  }
  ASSIGN_OR_RETURN(std::shared_ptr<control_auth::Authenticator> auth,
                   control_auth::fromFileOrOpen(config.cluster_secret_file,
                                                "anyone who reaches " + config.listen_address +
                                                    " may register as a node and receive users' "
                                                    "prompts"));
  const uint64_t seed = std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32);
  ASSIGN_OR_RETURN(std::unique_ptr<scheduler::Policy> policy,
                   scheduler::makePolicy(config.policy, config.scheduler, seed));
  auto impl = std::make_shared<Impl>(io, std::move(config), std::move(model), std::move(policy),
                                     std::move(api_keys), std::move(auth), seed);
  impl->addRoutes();
  return std::unique_ptr<OrchestratorServer>(new OrchestratorServer(std::move(impl)));
}

OrchestratorServer::~OrchestratorServer() { impl_->stopNow(); }

Status OrchestratorServer::listen() { return impl_->listen(); }
uint16_t OrchestratorServer::port() const { return impl_->port(); }
void OrchestratorServer::start() { impl_->start(); }
Task<void> OrchestratorServer::shutdown(std::chrono::milliseconds grace) {
  return impl_->shutdown(impl_, grace);
}
const std::string& OrchestratorServer::modelName() const { return impl_->modelName(); }
std::string_view OrchestratorServer::policyName() const { return impl_->policyName(); }

}  // namespace kvferry::orchestrator
