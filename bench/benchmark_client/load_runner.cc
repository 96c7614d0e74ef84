#include "bench/benchmark_client/load_runner.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <cstdio>

#include "bench/benchmark_client/arrivals.h"
#include "bench/benchmark_client/sse.h"
#include "common/coroutine_rules.h"

namespace kvferry::bench {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);
constexpr uint64_t kArrivalStream = 0xa771;

double secondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

Clock::duration toDuration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

std::string clip(std::string_view text) {
  constexpr size_t kMax = 300;
  return std::string(text.substr(0, kMax)) + (text.size() > kMax ? "…" : "");
}

}  // namespace

// ---- Slots ----

http::Task<bool> Slots::acquire() {
  if (closed_) co_return false;
  if (unlimited_) co_return true;
  if (free_ > 0) {
    --free_;
    co_return true;
  }
  asio::steady_timer timer(io_, Clock::time_point::max());
  Waiter waiter{&timer};
  waiters_.push_back(&waiter);
  co_await timer.async_wait(kNoThrow);  // release() or close() cancels it
  co_return waiter.granted;
}

void Slots::release() {
  if (unlimited_) return;
  if (!closed_ && !waiters_.empty()) {  // hand the slot straight to the longest waiter
    Waiter* waiter = waiters_.front();
    waiters_.pop_front();
    waiter->granted = true;
    waiter->timer->cancel();
    return;
  }
  ++free_;
}

void Slots::close() {
  closed_ = true;
  for (Waiter* waiter : waiters_) waiter->timer->cancel();
  waiters_.clear();
}

// ---- requests ----

std::string requestBody(const Target& target, const Turn& turn,
                        const std::vector<std::pair<std::string, std::string>>& history) {
  boost::json::object body;
  body["model"] = target.model;
  if (target.chat) {
    boost::json::array messages;
    for (const auto& [user, assistant] : history) {
      messages.push_back(boost::json::object{{"role", "user"}, {"content", user}});
      messages.push_back(boost::json::object{{"role", "assistant"}, {"content", assistant}});
    }
    messages.push_back(boost::json::object{{"role", "user"}, {"content", turn.prompt}});
    body["messages"] = std::move(messages);
  } else {
    body["prompt"] = turn.prompt;
  }
  const uint32_t max_tokens = target.max_tokens.value_or(turn.max_tokens);
  body["max_tokens"] = max_tokens;
  // The newer chat name; vLLM and kvferry prefer it when both are present.
  if (target.chat) body["max_completion_tokens"] = max_tokens;
  body["temperature"] = target.temperature;
  body["stream"] = true;
  body["stream_options"] = boost::json::object{{"include_usage", true}};
  if (target.ignore_eos) body["ignore_eos"] = true;
  return boost::json::serialize(body);
}

http::Task<Result<std::string>> firstModelId(http::ClientPool& pool,
                                             const http::tcp::endpoint& endpoint,
                                             const std::string& prefix,
                                             std::chrono::milliseconds timeout) {
  const std::string target = prefix + "/v1/models";
  Result<http::Response> response =
      co_await pool.request(endpoint, http::Verb::get, target, "", timeout);
  if (!response.isOk()) co_return response.status().withContext("GET " + target);
  if (response->status != 200) {
    co_return unavailable("GET " + target + ": HTTP " + std::to_string(response->status) + ": " +
                          clip(response->body));
  }
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(response->body, ec);
  const boost::json::value* data =
      ec || !value.is_object() ? nullptr : value.get_object().if_contains("data");
  if (data != nullptr && data->is_array() && !data->get_array().empty() &&
      data->get_array()[0].is_object()) {
    const boost::json::value* id = data->get_array()[0].get_object().if_contains("id");
    if (id != nullptr && id->is_string()) co_return std::string(id->get_string());
  }
  co_return unavailable("GET " + target + ": no model id in " + clip(response->body) +
                        " (pass --model)");
}

LoadRunner::LoadRunner(asio::io_context& io, Target target, Load load, const TextSynthesizer& synth)
    : io_(io),
      target_(std::move(target)),
      load_(load),
      synth_(synth),
      pool_(io),
      slots_(io, load.max_concurrency),
      arrival_timer_(io),
      all_done_(io),
      watchdog_timer_(io),
      progress_timer_(io) {
  useApiKey(pool_, target_.api_key);
  pool_.freshConnectionPerStream();  // each request connects, as a new client does
}

void useApiKey(http::ClientPool& pool, const std::string& api_key) {
  if (api_key.empty()) return;
  pool.signRequests([bearer = "Bearer " + api_key](http::Request& request) {
    request.set(boost::beast::http::field::authorization, bearer);
  });
}

http::Task<RequestResult> LoadRunner::exchange(std::string body, Phase& phase) {
  using namespace asio::experimental::awaitable_operators;
  const Clock::time_point sent = Clock::now();
  const Clock::duration timeout = toDuration(load_.timeout_s);
  Clock::time_point deadline = sent + timeout;
  bool cut_by_limit = false;
  if (phase.measured && hard_deadline_ && *hard_deadline_ < deadline) {
    deadline = *hard_deadline_;
    cut_by_limit = true;
  }
  StreamMeasurement measurement(secondsBetween(phase.start, sent));
  std::optional<Result<http::Response>> response;
  auto on_line = [&](std::string_view line) -> http::Task<bool> {
    co_return measurement.onLine(line, secondsBetween(phase.start, Clock::now()));
  };
  auto stream = [&]() -> http::Task<void> {
    // A timeout cancels this branch: its operations then end with an error code, not a throw.
    co_await asio::this_coro::throw_if_cancelled(false);
    const auto timeout_ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
    response.emplace(co_await pool_.streamLines(target_.endpoint, http::Verb::post, target_.path,
                                                std::move(body), timeout_ms, timeout_ms, on_line));
  };
  asio::steady_timer timer(io_, deadline);
  const auto winner = co_await (stream() || timer.async_wait(kNoThrow));
  const double end_s = secondsBetween(phase.start, Clock::now());

  std::string kind;
  std::string detail;
  if (winner.index() == 1) {
    kind = cut_by_limit ? kErrorCancelled : kErrorTimeout;
    char what[64];
    std::snprintf(what, sizeof what, "no complete response within %g s", load_.timeout_s);
    detail = cut_by_limit ? "cut by --duration-limit-s" : what;
  } else if (!response || !response->isOk()) {
    const Status status = response ? response->status() : internalError("no response");
    if (status.message().starts_with("connect to")) {
      kind = kErrorConnect;
    } else if (status.code() == StatusCode::kDeadlineExceeded) {
      kind = kErrorTimeout;
    } else {
      kind = kErrorIncomplete;  // the connection broke before data: [DONE]
    }
    detail = status.toString();
  } else if (const http::Response& r = response->value(); r.status < 200 || r.status >= 300) {
    kind = "http_" + std::to_string(r.status);
    detail = "HTTP " + std::to_string(r.status) + ": " + clip(r.body);
  }
  auto count = [this](std::string_view text) -> std::optional<uint32_t> {
    Result<uint32_t> tokens = synth_.countTokens(text);
    return tokens.isOk() ? std::optional<uint32_t>(*tokens) : std::nullopt;
  };
  co_return std::move(measurement).finish(end_s, kind, detail, count);
}

http::Task<void> LoadRunner::conversation(const Conversation& c, size_t first, Phase& phase) {
  std::vector<std::pair<std::string, std::string>> history;
  uint32_t history_tokens = 0;
  for (size_t t = 0; t < c.turns.size(); ++t) {
    if (phase.measured && stopping_) break;
    // Awaited into a local (common/coroutine_rules.h).
    const bool got_slot = co_await slots_.acquire();
    if (!got_slot) break;
    const Turn& turn = c.turns[t];
    ++phase.in_flight;
    RequestResult r = co_await exchange(requestBody(target_, turn, history), phase);
    --phase.in_flight;
    slots_.release();
    r.input_tokens = history_tokens + turn.prompt_tokens;
    ++phase.completed;
    const bool ok = r.success;
    if (!ok) ++phase.errors;
    std::string answer = r.text;
    const uint32_t answer_tokens = r.output_tokens;
    phase.results[first + t] = std::move(r);
    if (!ok) break;  // later turns need this answer
    if (t + 1 < c.turns.size()) {
      Result<uint32_t> counted = synth_.countTokens(answer);
      history_tokens += turn.prompt_tokens + (counted.isOk() ? *counted : answer_tokens);
      history.emplace_back(turn.prompt, std::move(answer));
    }
  }
  if (--phase.active == 0) all_done_.cancel();
}

http::Task<void> LoadRunner::drive(const Workload& workload, std::vector<double> arrivals,
                                   Phase& phase) {
  phase.results.assign(workload.requests(), std::nullopt);
  phase.start = Clock::now();
  phase.running = true;
  size_t first = 0;
  for (size_t i = 0; i < workload.conversations.size(); ++i) {
    const Clock::time_point at = phase.start + toDuration(arrivals[i]);
    if (at > Clock::now() && !(phase.measured && stopping_)) {
      arrival_timer_.expires_at(at);
      co_await arrival_timer_.async_wait(kNoThrow);  // the watchdog may cancel it
    }
    if (phase.measured && stopping_) break;
    ++phase.active;
    asio::co_spawn(io_, conversation(workload.conversations[i], first, phase), asio::detached);
    first += workload.conversations[i].turns.size();
  }
  while (phase.active > 0) {
    all_done_.expires_at(Clock::time_point::max());
    co_await all_done_.async_wait(kNoThrow);  // the last conversation cancels it
  }
  phase.running = false;
}

http::Task<void> LoadRunner::watchdog(Clock::time_point deadline) {
  watchdog_timer_.expires_at(deadline);
  auto [ec] = co_await watchdog_timer_.async_wait(kNoThrow);
  if (ec) co_return;  // the run ended first
  stopping_ = true;
  slots_.close();
  arrival_timer_.cancel();
}

void LoadRunner::printProgress(const Phase& phase, bool final) const {
  const double elapsed = secondsBetween(phase.start, Clock::now());
  std::fprintf(stderr, "%s%llu/%zu done, %llu in flight, %llu errors, %.1f s%s",
               load_.progress_is_tty ? "\r\033[K" : "",
               static_cast<unsigned long long>(phase.completed), phase.results.size(),
               static_cast<unsigned long long>(phase.in_flight),
               static_cast<unsigned long long>(phase.errors), elapsed,
               load_.progress_is_tty && !final ? "" : "\n");
  std::fflush(stderr);
}

http::Task<void> LoadRunner::progressLine(Phase& phase) {
  while (phase.running) {
    printProgress(phase, false);
    progress_timer_.expires_after(500ms);
    co_await progress_timer_.async_wait(kNoThrow);
  }
  printProgress(phase, true);
}

http::Task<Result<RunOutcome>> LoadRunner::run(const Workload& warmup, const Workload& measured) {
  if (!warmup.conversations.empty()) {
    std::fprintf(stderr, "benchmark_client: warming up with %zu requests\n",
                 warmup.conversations.size());
    warmup_.measured = false;
    co_await drive(warmup, std::vector<double>(warmup.conversations.size(), 0.0), warmup_);
    const RequestResult* first_error = nullptr;
    for (const auto& r : warmup_.results) {
      if (r && !r->success && first_error == nullptr) first_error = &*r;
    }
    if (warmup_.errors == warmup_.results.size() && first_error != nullptr) {
      co_return unavailable("every warmup request failed; the first: " + first_error->error_kind +
                            ": " + first_error->error);
    }
    std::fprintf(stderr, "benchmark_client: warmup done (%llu failed)\n",
                 static_cast<unsigned long long>(warmup_.errors));
  }

  std::vector<double> arrivals;
  if (measured.timed) {
    for (const Conversation& c : measured.conversations) arrivals.push_back(c.arrival_s);
  } else {
    Rng rng(Rng::derive(load_.seed, kArrivalStream));
    Result<std::vector<double>> times =
        arrivalTimes(measured.conversations.size(), load_.request_rate, load_.burstiness, rng);
    if (!times.isOk()) co_return times.status();
    arrivals = std::move(times).value();
  }

  measured_.measured = true;
  if (load_.duration_limit_s > 0) {
    hard_deadline_ = Clock::now() + toDuration(load_.duration_limit_s);
    asio::co_spawn(io_, watchdog(*hard_deadline_), asio::detached);
  }
  measured_.running = true;
  measured_.start = Clock::now();
  measured_.results.assign(measured.requests(), std::nullopt);
  if (load_.progress) asio::co_spawn(io_, progressLine(measured_), asio::detached);
  co_await drive(measured, std::move(arrivals), measured_);
  RunOutcome outcome;
  outcome.duration_s = secondsBetween(measured_.start, Clock::now());
  watchdog_timer_.cancel();
  progress_timer_.cancel();
  for (auto& r : measured_.results) {
    if (r) {
      outcome.results.push_back(std::move(*r));
    } else {
      ++outcome.not_sent;
    }
  }
  co_return outcome;
}

}  // namespace kvferry::bench
