// benchmark_client: an open-loop load generator for OpenAI-compatible servers (kvferry's
// orchestrator, vLLM, SGLang) that measures TTFT, TPOT, ITL and end-to-end latency. See --help
// and docs/benchmark_client.md.
//
// Exit status: 0 when the run completed and at least one request succeeded; 1 when every request
// failed; 2 for a bad command line, tokenizer, dataset or an unreachable server.
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>

#include "bench/benchmark_client/dataset.h"
#include "bench/benchmark_client/load_runner.h"
#include "bench/benchmark_client/options.h"
#include "bench/benchmark_client/report.h"
#include "bench/benchmark_client/text_synth.h"
#include "common/logging.h"
#include "model/tokenizer.h"
#include "model/tokenizer_files.h"

namespace kvferry::bench {
namespace {

namespace asio = boost::asio;

// Every request holds one socket; at --request-rate inf that can be thousands.
void raiseOpenFileLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

std::string dateNow() {
  std::time_t now = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&now, &local);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y%m%d-%H%M%S", &local);
  return buffer;
}

// A completions prompt of N tokens is N + 1 with BOS on the server (N when it adds none); any
// other usage.prompt_tokens means the server tokenizes differently from --tokenizer, and every
// input length in the report is off. (Chat prompts carry a template, so they are not checked.)
void warnOnTokenizerMismatch(const std::vector<RequestResult>& results) {
  uint64_t mismatched = 0;
  const RequestResult* example = nullptr;
  for (const RequestResult& r : results) {
    if (!r.success || !r.server_prompt_tokens) continue;
    const uint32_t server = *r.server_prompt_tokens;
    if (server != r.input_tokens && server != r.input_tokens + 1) {
      ++mismatched;
      if (example == nullptr) example = &r;
    }
  }
  if (example != nullptr) {
    std::fprintf(stderr,
                 "benchmark_client: WARNING: for %llu requests the server counted other prompt "
                 "lengths than --tokenizer (e.g. %u prompt tokens for %u synthesized + BOS): is "
                 "it the served model's tokenizer?\n",
                 static_cast<unsigned long long>(mismatched), *example->server_prompt_tokens,
                 example->input_tokens);
  }
}

// Runs one coroutine to completion on a fresh turn of `io`.
template <typename T>
Result<T> runOn(asio::io_context& io, http::Task<Result<T>> task) {
  std::optional<Result<T>> out;
  asio::co_spawn(
      io,
      [&out, task = std::move(task)]() mutable -> http::Task<void> {
        out.emplace(co_await std::move(task));
      },
      asio::detached);
  io.restart();
  io.run();
  if (!out) return internalError("the run ended without a result");
  return std::move(*out);
}

Result<int> run(int argc, char** argv) {
  ASSIGN_OR_RETURN(Options o, parseOptions(argc, argv));
  if (o.help) {
    std::fwrite(kUsage.data(), 1, kUsage.size(), stdout);
    return 0;
  }
  setupLogging("benchmark_client", LogLevel::kWarn);
  raiseOpenFileLimit();

  ASSIGN_OR_RETURN(std::unique_ptr<model::Tokenizer> tokenizer,
                   model::loadTokenizer(o.tokenizer_path));
  ASSIGN_OR_RETURN(TextSynthesizer synth, TextSynthesizer::create(*tokenizer));
  ASSIGN_OR_RETURN(http::tcp::endpoint endpoint, http::parseEndpoint(o.host_port, "--base-url"));
  std::fprintf(stderr, "benchmark_client: synthesizing the %s workload (%zu-word list)\n",
               std::string(datasetName(o.dataset.kind)).c_str(), synth.words().size());
  ASSIGN_OR_RETURN(Workload workload, buildWorkload(o.dataset, synth));
  ASSIGN_OR_RETURN(Workload warmup,
                   warmupWorkload(o.warmup_requests, workload, o.dataset.seed, synth));

  asio::io_context io;
  Target target{.endpoint = endpoint,
                .path = o.path_prefix + o.endpoint,
                .chat = o.chat,
                .model = o.model,
                .max_tokens = o.max_tokens,
                .temperature = o.temperature,
                .ignore_eos = o.ignore_eos,
                .api_key = o.api_key};
  if (target.model.empty()) {
    http::ClientPool pool(io);
    useApiKey(pool, o.api_key);
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));
    ASSIGN_OR_RETURN(target.model, runOn(io, firstModelId(pool, endpoint, o.path_prefix, timeout)));
  }
  Load load;
  load.request_rate = o.request_rate;
  load.burstiness = o.burstiness;
  load.max_concurrency = o.max_concurrency;
  load.seed = o.dataset.seed;
  load.duration_limit_s = o.duration_limit_s;
  load.timeout_s = o.timeout_s;
  load.progress_is_tty = ::isatty(STDERR_FILENO) == 1;
  load.progress = o.progress || load.progress_is_tty;

  const bool timed = workload.timed;
  std::fprintf(stderr, "benchmark_client: %llu requests to %s%s, model %s\n",
               static_cast<unsigned long long>(workload.requests()), o.host_port.c_str(),
               target.path.c_str(), target.model.c_str());
  if (timed) {
    std::fprintf(stderr, "benchmark_client: arrivals follow the trace, time scale %g\n",
                 o.dataset.trace_time_scale);
  } else {
    std::fprintf(stderr,
                 "benchmark_client: request rate %g/s, burstiness %g (%s), max concurrency %s\n",
                 o.request_rate, o.burstiness, o.burstiness == 1 ? "Poisson" : "gamma",
                 o.max_concurrency ? std::to_string(o.max_concurrency).c_str() : "unlimited");
  }

  LoadRunner runner(io, target, load, synth);
  ASSIGN_OR_RETURN(RunOutcome outcome, runOn(io, runner.run(warmup, workload)));

  const Summary summary = summarize(outcome.results, outcome.duration_s, o.percentiles, o.goodput);
  RunInfo info;
  info.backend = o.chat ? "openai-chat" : "openai";
  info.model_id = target.model;
  info.tokenizer_id = o.tokenizer_path;
  info.dataset = std::string(datasetName(o.dataset.kind));
  info.seed = o.dataset.seed;
  info.num_prompts = workload.requests();
  info.not_sent = outcome.not_sent;
  info.request_rate = timed ? std::numeric_limits<double>::quiet_NaN() : o.request_rate;
  info.burstiness = o.burstiness;
  info.max_concurrency = o.max_concurrency;
  info.percentiles = o.percentiles;
  info.goodput = o.goodput.any();
  if (!o.chat) warnOnTokenizerMismatch(outcome.results);
  printTable(stdout, info, summary);
  std::fflush(stdout);

  if (!o.result_json.empty()) {
    RETURN_IF_ERROR(
        writeJson(o.result_json, resultJson(info, summary, outcome.results, dateNow())));
    std::fprintf(stderr, "benchmark_client: wrote %s\n", o.result_json.c_str());
  }
  if (!o.plot.empty()) {
    if (std::optional<std::string> gnuplot = findGnuplot()) {
      Status plotted = plotCdfs(*gnuplot, o.plot, outcome.results);
      if (plotted.isOk()) {
        std::fprintf(stderr, "benchmark_client: wrote %s\n", o.plot.c_str());
      } else {
        std::fprintf(stderr, "benchmark_client: no plot: %s\n", plotted.toString().c_str());
      }
    } else {
      std::fprintf(stderr,
                   "benchmark_client: --plot needs gnuplot on PATH (apt-get install gnuplot-nox); "
                   "no plot written\n");
    }
  }
  if (summary.completed == 0 && summary.failed > 0) {
    std::fprintf(stderr, "benchmark_client: every request failed\n");
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace kvferry::bench

int main(int argc, char** argv) {
  kvferry::Result<int> code = kvferry::bench::run(argc, argv);
  if (!code.isOk()) {
    std::fprintf(stderr, "benchmark_client: %s\n", code.status().toString().c_str());
    return 2;
  }
  return *code;
}
