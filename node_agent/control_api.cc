#include "node_agent/control_api.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>

#include "common/metrics.h"

namespace kvferry::agent {
namespace {

namespace asio = boost::asio;
using http::HttpStatus;

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

using Admission = ControlApi::Admission;
constexpr Admission kAnyAgent{};
constexpr Admission kReserveWork{true, config::NodeRole::kPrefill,
                                 "this agent only prefills; reserve on a decode node"};
// Decode agents prefill too when the scheduler colocates a request on them (conditional
// disaggregation: a short uncached suffix costs less to compute than to move).
constexpr Admission kGenerateWork{true, config::NodeRole::kPrefill,
                                  "this agent only prefills; generate on a decode node"};
constexpr Admission kPrefillWork{true, config::NodeRole::kDecode,
                                 "this agent only decodes; prefill on another node"};
// Not refused while draining: the lease was granted before, and its request should finish.
constexpr Admission kDecodeStream{false, config::NodeRole::kPrefill,
                                  "this agent only prefills; decode on a decode node"};

}  // namespace

ControlApi::ControlApi(asio::io_context& io, config::NodeRole role, EngineWork& work,
                       asio::any_io_executor engine, PrefillBacklog& backlog, AgentMetrics& metrics,
                       prometheus::Registry& registry,
                       std::function<std::optional<uint32_t>()> node_id,
                       std::shared_ptr<control_auth::Authenticator> auth)
    : io_(io),
      role_(role),
      work_(work),
      engine_(std::move(engine)),
      backlog_(backlog),
      metrics_(metrics),
      registry_(registry),
      node_id_(std::move(node_id)),
      auth_(std::move(auth)),
      server_(io, http::ServerOptions{}) {
  routes();
}

void ControlApi::routes() {
  using http::Verb;
  auto bind = [this](auto method) {
    return [this, method](const http::Request& r, http::ResponseWriter& w) -> Task {
      return (this->*method)(r, w);
    };
  };
  // The orchestrator's calls carry the cluster's MAC; /metrics and /health stay open (Prometheus
  // and load balancers do not sign).
  auto control = [&](auto method) { return control_auth::guard(auth_, bind(method)); };
  server_.route(Verb::post, wire::route::kReserve, control(&ControlApi::handleReserve));
  server_.route(Verb::post, wire::route::kPrefill, control(&ControlApi::handlePrefill));
  server_.route(Verb::post, wire::route::kDecode, control(&ControlApi::handleDecode));
  server_.route(Verb::post, wire::route::kGenerate, control(&ControlApi::handleGenerate));
  server_.route(Verb::post, wire::route::kRelease, control(&ControlApi::handleRelease));
  server_.route(Verb::post, wire::route::kCancel, control(&ControlApi::handleCancel));
  server_.route(Verb::get, "/metrics", bind(&ControlApi::handleMetrics));
  server_.route(Verb::get, "/health", bind(&ControlApi::handleHealth));
}

ControlApi::StopIndex::iterator ControlApi::newStop(uint64_t request_id) {
  return stops_.emplace(request_id, std::make_shared<StopFlag>(false));
}

template <typename T>
http::Task<std::optional<T>> ControlApi::accept(const http::Request& request,
                                                http::ResponseWriter& writer,
                                                AgentMetrics::Kind kind, Admission admission) {
  std::optional<std::string_view> refusal;
  unsigned status = 503;
  if (admission.drain_refuses && draining_) {
    metrics_.countRequest(kind, AgentMetrics::Outcome::kRejected);
    refusal = "the agent is draining";
  } else if (admission.wrong_role == role_) {
    metrics_.countRequest(kind, AgentMetrics::Outcome::kError);
    refusal = admission.why;
    status = 400;
  }
  if (refusal) {
    co_await writer.sendJson(static_cast<HttpStatus>(status), http::errorBody(*refusal));
    co_return std::nullopt;
  }
  const auto decoding = std::chrono::steady_clock::now();
  Result<T> message = wire::decode<T>(request.body());
  spdlog::debug(
      "control API: {} bytes of {} decoded in {:.2f} ms", request.body().size(),
      std::string_view(request.target()),
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - decoding)
          .count());
  if (!message.isOk()) {
    metrics_.countRequest(kind, AgentMetrics::Outcome::kError);
    co_await writer.sendJson(HttpStatus::bad_request, http::errorBody(message.status().message()));
    co_return std::nullopt;
  }
  co_return std::move(message).value();
}

ControlApi::Task ControlApi::answer(http::ResponseWriter& writer, AgentMetrics::Kind kind,
                                    const Reply& reply) {
  metrics_.countRequest(kind, AgentMetrics::outcomeOf(reply.status));
  co_await writer.send(static_cast<HttpStatus>(reply.status), "application/json", reply.body);
}

ControlApi::Task ControlApi::handleReserve(const http::Request& request,
                                           http::ResponseWriter& writer) {
  // Awaited into a local: GCC 12 miscompiles `if (co_await ...)`.
  std::optional<wire::ReserveRequest> message = co_await accept<wire::ReserveRequest>(
      request, writer, AgentMetrics::Kind::kReserve, kReserveWork);
  if (!message) co_return;
  // Named, not a temporary inside co_await: GCC 12 destroys the init-captures of a lambda
  // temporary in a co_await expression twice.
  auto work = [this, m = std::move(*message)](std::shared_ptr<ReplyChannel> ch) {
    agent::sendReply(*ch, work_.reserve(m));
  };
  const Reply reply = co_await onEngine(std::move(work));
  co_await answer(writer, AgentMetrics::Kind::kReserve, reply);
}

ControlApi::Task ControlApi::handlePrefill(const http::Request& request,
                                           http::ResponseWriter& writer) {
  std::optional<wire::PrefillRequest> message = co_await accept<wire::PrefillRequest>(
      request, writer, AgentMetrics::Kind::kPrefill, kPrefillWork);
  if (!message) co_return;
  backlog_.add(message->tokens.size());
  const StopIndex::iterator stop = newStop(message->request_id);
  auto work = [this, m = std::move(*message), flag = std::shared_ptr<const StopFlag>(stop->second)](
                  std::shared_ptr<ReplyChannel> ch) mutable {
    work_.prefill(std::move(m), std::move(ch), std::move(flag));
  };  // named: see handleReserve
  const Reply reply = co_await onEngine(std::move(work));
  forgetStop(stop);
  co_await answer(writer, AgentMetrics::Kind::kPrefill, reply);
}

ControlApi::Task ControlApi::handleDecode(const http::Request& request,
                                          http::ResponseWriter& writer) {
  std::optional<wire::DecodeRequest> message = co_await accept<wire::DecodeRequest>(
      request, writer, AgentMetrics::Kind::kDecode, kDecodeStream);
  if (!message) co_return;
  auto stream = std::make_shared<Stream>(io_.get_executor(), message->max_new_tokens + 4,
                                         message->request_id);
  asio::post(engine_, [this, m = std::move(*message), stream]() mutable {
    work_.decode(std::move(m), stream);
  });
  co_await writeStream(std::move(stream), writer, AgentMetrics::Kind::kDecode);
}

ControlApi::Task ControlApi::handleGenerate(const http::Request& request,
                                            http::ResponseWriter& writer) {
  std::optional<wire::GenerateRequest> message = co_await accept<wire::GenerateRequest>(
      request, writer, AgentMetrics::Kind::kGenerate, kGenerateWork);
  if (!message) co_return;
  backlog_.add(message->tokens.size());
  auto stream = std::make_shared<Stream>(io_.get_executor(), message->max_new_tokens + 4,
                                         message->request_id);
  const StopIndex::iterator stop = newStop(message->request_id);
  asio::post(engine_, [this, m = std::move(*message), stream,
                       flag = std::shared_ptr<const StopFlag>(stop->second)]() mutable {
    work_.generate(std::move(m), stream, std::move(flag));
  });
  co_await writeStream(std::move(stream), writer, AgentMetrics::Kind::kGenerate);
  forgetStop(stop);
}

ControlApi::Task ControlApi::writeStream(std::shared_ptr<Stream> stream,
                                         http::ResponseWriter& writer, AgentMetrics::Kind kind) {
  // The header goes with the first lines: one write, and one wake-up of the orchestrator, fewer
  // per stream (its wait for them is bounded as its wait for the first line was).
  writer.beginStreamWithNextWrite(HttpStatus::ok, "application/x-ndjson");
  // The stream's outcome is its finish line's (an engine that stopped sends none).
  AgentMetrics::Outcome outcome = AgentMetrics::Outcome::kError;
  // Appends a line to `out`; true when it was the finish line.
  const auto append = [&outcome](std::string& out, const std::string& line, bool last) {
    if (last) {
      Result<wire::StreamLine> finish = wire::decode<wire::StreamLine>(line);
      if (finish.isOk() && (finish->finish == "stop" || finish->finish == "length")) {
        outcome = AgentMetrics::Outcome::kOk;
      } else if (finish.isOk() && finish->message == "cancelled") {
        outcome = AgentMetrics::Outcome::kCancelled;
      }
    }
    out += line;
    out += '\n';
    return last;
  };
  std::string out;
  for (;;) {
    auto [ec, line, last] = co_await stream->lines.async_receive(kNoThrow);
    if (ec) break;
    // Lines the engine queued meanwhile (a finish right after the last token, the tokens of
    // several steps while this connection was slow) go out in the same write.
    out.clear();
    bool done = append(out, line, last);
    while (!done && stream->lines.try_receive(
                        [&](boost::system::error_code more_ec, std::string more, bool more_last) {
                          if (!more_ec) done = append(out, more, more_last);
                        })) {
    }
    bool written = false;  // awaited into a local (common/coroutine_rules.h)
    if (done) {
      written = co_await writer.endStream(out);
    } else {
      written = co_await writer.writeChunk(out);
    }
    if (!written) {
      metrics_.countRequest(kind, AgentMetrics::Outcome::kCancelled);
      cancelStream(stream);  // the orchestrator closed the stream: stop decoding
      co_return;
    }
    if (done) {
      metrics_.countRequest(kind, outcome);
      co_return;
    }
  }
  metrics_.countRequest(kind, outcome);
  co_await writer.endStream();
}

void ControlApi::cancelStream(const std::shared_ptr<Stream>& stream) {
  stream->cancelled = true;
  asio::post(engine_, [this, id = stream->request_id] { work_.cancel(id); });
}

ControlApi::Task ControlApi::handleRelease(const http::Request& request,
                                           http::ResponseWriter& writer) {
  constexpr AgentMetrics::Kind kind = AgentMetrics::Kind::kRelease;
  std::optional<wire::ReleaseRequest> message =
      co_await accept<wire::ReleaseRequest>(request, writer, kind, kAnyAgent);
  if (!message) co_return;
  auto work = [this, id = message->id,
               writer_done = message->writer_done](std::shared_ptr<ReplyChannel> ch) {
    work_.release(id, writer_done);
    agent::sendReply(*ch, jsonReply(200, "{}"));
  };  // named: see handleReserve
  const Reply reply = co_await onEngine(std::move(work));
  co_await answer(writer, kind, reply);
}

ControlApi::Task ControlApi::handleCancel(const http::Request& request,
                                          http::ResponseWriter& writer) {
  constexpr AgentMetrics::Kind kind = AgentMetrics::Kind::kCancel;
  std::optional<wire::IdRequest> message =
      co_await accept<wire::IdRequest>(request, writer, kind, kAnyAgent);
  if (!message) co_return;
  const uint64_t id = message->id;
  // A prefill of it that is computing now holds the engine thread: its stop flag reaches it
  // before its next chunk; the cancel below ends the rest once the engine thread gets to it.
  auto [first, end] = stops_.equal_range(id);
  for (auto it = first; it != end; ++it) it->second->store(true);
  auto work = [this, id](std::shared_ptr<ReplyChannel> ch) {
    work_.cancel(id);
    agent::sendReply(*ch, jsonReply(200, "{}"));
  };  // named: see handleReserve
  const Reply reply = co_await onEngine(std::move(work));
  co_await answer(writer, kind, reply);
}

ControlApi::Task ControlApi::handleHealth(const http::Request& request,
                                          http::ResponseWriter& writer) {
  (void)request;
  boost::json::object body{{"status", draining_ ? "draining" : "ok"},
                           {"role", config::nodeRoleName(role_)}};
  if (std::optional<uint32_t> id = node_id_()) body["node_id"] = *id;
  co_await writer.sendJson(HttpStatus::ok, boost::json::serialize(body));
}

ControlApi::Task ControlApi::handleMetrics(const http::Request& request,
                                           http::ResponseWriter& writer) {
  (void)request;
  co_await writer.send(HttpStatus::ok, metrics::kContentType, metrics::text(registry_));
}

}  // namespace kvferry::agent
