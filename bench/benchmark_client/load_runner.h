// The network side of benchmark_client: sends a Workload to an OpenAI-compatible server on an
// open-loop schedule and records every request (sse.h measures the streams).
//
// Threading: a LoadRunner belongs to one io_context, run by one thread; every coroutine of the run
// (the arrival loop, one per conversation, the watchdog, the progress line) runs there, so the
// counters need no locks.
//
// Each request is a fresh HTTP/1.1 connection (ClientPool::streamLines), so TTFT includes the
// TCP connect, as aiohttp's does for vLLM's client when it opens a connection. A request races a
// timer set to min(send + timeout, end of --duration-limit-s); when the timer wins, the stream
// is cancelled through Asio's per-operation cancellation and the request is recorded as
// "timeout" (or "cancelled" when the duration limit cut it).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "bench/benchmark_client/dataset.h"
#include "bench/benchmark_client/metrics.h"
#include "bench/benchmark_client/text_synth.h"
#include "common/http.h"

namespace kvferry::bench {

struct Target {
  http::tcp::endpoint endpoint;
  std::string path;  // the base URL's prefix + the endpoint
  bool chat = false;
  std::string model;
  std::optional<uint32_t> max_tokens;  // overrides each turn's max_tokens
  double temperature = 0;
  bool ignore_eos = false;
  std::string api_key;  // sent as "Authorization: Bearer <key>" when not empty
};

// Makes every request of `pool` carry `api_key` (none when empty).
void useApiKey(http::ClientPool& pool, const std::string& api_key);

struct Load {
  double request_rate = 0;  // +inf: all at once
  double burstiness = 1;
  uint32_t max_concurrency = 0;  // 0: unlimited
  uint64_t seed = 0;
  double duration_limit_s = 0;  // 0: none
  double timeout_s = 600;
  bool progress = false;
  bool progress_is_tty = false;  // redraw one line with '\r' rather than print lines
};

struct RunOutcome {
  std::vector<RequestResult> results;  // measured requests that were sent, in workload order
  uint64_t not_sent = 0;               // stopped by the duration limit or a failed earlier turn
  double duration_s = 0;               // first arrival to last response of the measured run
};

// A counting semaphore for coroutines on one thread. close() wakes every waiter with false.
class Slots {
 public:
  Slots(boost::asio::io_context& io, uint32_t limit) : io_(io), free_(limit), unlimited_(!limit) {}
  http::Task<bool> acquire();
  void release();
  void close();

 private:
  struct Waiter {
    boost::asio::steady_timer* timer;
    bool granted = false;
  };
  boost::asio::io_context& io_;
  uint32_t free_;
  bool unlimited_;
  bool closed_ = false;
  std::deque<Waiter*> waiters_;
};

// The request body of one turn (exposed for tests). `history` holds (user, assistant) pairs of
// the turns before this one.
std::string requestBody(const Target& target, const Turn& turn,
                        const std::vector<std::pair<std::string, std::string>>& history);

// GET {prefix}/v1/models → the first model's id.
http::Task<Result<std::string>> firstModelId(http::ClientPool& pool,
                                             const http::tcp::endpoint& endpoint,
                                             const std::string& prefix,
                                             std::chrono::milliseconds timeout);

class LoadRunner {
 public:
  // `synth` counts output text when the server sends no usage; it must outlive the LoadRunner.
  LoadRunner(boost::asio::io_context& io, Target target, Load load, const TextSynthesizer& synth);

  // Sends `warmup` (all released at once, under the concurrency limit) and waits for it, then
  // runs `measured` on its arrival schedule (the workload's own times when it is timed).
  http::Task<Result<RunOutcome>> run(const Workload& warmup, const Workload& measured);

 private:
  // One phase of the run (the warmup or the measured requests). Owned by the LoadRunner so that it
  // outlives every coroutine that refers to it.
  struct Phase {
    bool measured = false;
    std::chrono::steady_clock::time_point start;
    std::vector<std::optional<RequestResult>> results;  // by request index; empty: never sent
    uint64_t completed = 0;
    uint64_t errors = 0;
    uint64_t in_flight = 0;
    uint64_t active = 0;  // conversations started and not finished
    bool running = false;
  };

  http::Task<void> drive(const Workload& workload, std::vector<double> arrivals, Phase& phase);
  http::Task<void> conversation(const Conversation& c, size_t first, Phase& phase);
  http::Task<RequestResult> exchange(std::string body, Phase& phase);
  http::Task<void> watchdog(std::chrono::steady_clock::time_point deadline);
  http::Task<void> progressLine(Phase& phase);
  void printProgress(const Phase& phase, bool final) const;

  boost::asio::io_context& io_;
  const Target target_;
  const Load load_;
  const TextSynthesizer& synth_;
  http::ClientPool pool_;
  Slots slots_;
  boost::asio::steady_timer arrival_timer_;
  boost::asio::steady_timer all_done_;
  boost::asio::steady_timer watchdog_timer_;
  boost::asio::steady_timer progress_timer_;
  Phase warmup_;
  Phase measured_;
  std::optional<std::chrono::steady_clock::time_point> hard_deadline_;
  bool stopping_ = false;
};

}  // namespace kvferry::bench
