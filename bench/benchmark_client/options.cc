#include "bench/benchmark_client/options.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace kvferry::bench {

const std::string_view kUsage =
    R"(usage: benchmark_client --tokenizer PATH [--base-url URL] [--endpoint PATH]
                        [--dataset random|shared-prefix|multi-turn|trace] [options]

An open-loop load generator for any OpenAI-compatible server (kvferry's orchestrator, vLLM,
SGLang): it sends streamed completions at a chosen arrival rate and reports TTFT, TPOT, ITL and
end-to-end latency, throughput and goodput, like vLLM's `bench serve`. Prompts are synthesized
text of exact token lengths under the model's tokenizer (counted WITHOUT the BOS the server
adds), so every request's input length is known exactly. Everything is deterministic from --seed.

Target
  --base-url URL          http://IP:PORT[/prefix] of the server (default http://127.0.0.1:8000;
                          plain HTTP and an IP address only)
  --endpoint PATH         /v1/completions (default) or /v1/chat/completions
  --model ID              model id sent in each request (default: the first id of GET /v1/models)
  --api-key KEY           sent as 'Authorization: Bearer KEY' (default: $OPENAI_API_KEY, if set;
                          kvferry's quickstart prints where its key is)
  --max-tokens N          max_tokens of every request, overriding the dataset's output lengths
  --temperature T         sampling temperature (default 0: greedy)
  --ignore-eos            send "ignore_eos": true (a vLLM/SGLang extension, ignored elsewhere) so
                          outputs run to max_tokens
  --tokenizer PATH        the served model's tokenizer, required: it counts and synthesizes prompt
                          tokens and counts output text without usage. A GGUF file (only its
                          metadata is read), a Hugging Face model directory, a directory holding
                          tokenizer.json and tokenizer_config.json, or a tokenizer.json;
                          SentencePiece or byte-level BPE (Llama 3, Qwen, Mistral-Nemo, GPT-2)

Workload (--dataset, default random)
  random         --num-prompts N (default 1000) prompts of --input-len tokens (default 1024)
                 asking for --output-len tokens (default 128), both uniform in
                 [len·(1−r), len·(1+r)] with --range-ratio r (default 0, 0 <= r < 1)
  shared-prefix  --num-groups G (default 8) prefixes of --prefix-len tokens (default 1024), each
                 followed by --prompts-per-group N (default 16) different questions of
                 --suffix-len tokens (default 128); the G·N prompts go in a seeded shuffled
                 order (--num-prompts keeps the first N of it); --output-len as above
  multi-turn     --num-sessions S (default 32) chat sessions of --turns T (default 4): each turn
                 sends the whole conversation so far (user messages of --input-len ± ratio tokens
                 and the model's own answers) to /v1/chat/completions; turns of a session are
                 sequential, sessions arrive open-loop; a failed turn ends its session
  trace          --trace FILE.jsonl: a Mooncake trace (timestamp ms, input_length,
                 output_length, hash_ids); each hash id is one --trace-block-tokens block
                 (default 512) of text that depends only on the id, so requests share prompt
                 prefixes exactly as the trace says; arrivals follow the timestamps times
                 --trace-time-scale X (default 1; 0.5 replays twice as fast); --num-prompts N
                 takes the first N lines
  --seed S                seed of prompts, lengths and arrivals (default 0)

Load
  --request-rate R        arrivals per second (requests; sessions for multi-turn), or inf
                          (default): everything at once. Not with trace.
  --burstiness B          gaps are Gamma(shape B, mean 1/R): 1 (default) is Poisson, < 1 burstier,
                          > 1 more regular (vLLM's definition)
  --max-concurrency N     at most N requests in flight; arrivals wait for a free slot, which makes
                          the load closed-loop once the server saturates (default: unlimited)
  --warmup-requests N     send N requests first (fresh text, same lengths), wait for them, then
                          start measuring (default 0)
  --duration-limit-s S    hard bound on the measured run: after S seconds nothing more is sent
                          and requests in flight are cut and counted as "cancelled"
  --timeout-s S           per-request bound, send to last byte (default 600): "timeout"

Output
  --percentiles LIST      percentiles reported (default 50,90,99), nearest-rank
  --goodput SLO...        requests/s that met every objective, e.g. --goodput ttft:500 tpot:50
                          (milliseconds; keys ttft, tpot, e2el)
  --result-json FILE      write the results with vLLM bench serve's field names
  --plot FILE.png         CDFs of TTFT, TPOT, ITL and E2E latency (needs gnuplot on PATH; without
                          it the run still succeeds and says so)
  --progress              a progress line on stderr even when stderr is not a terminal
                          (on a terminal it is always shown)
  --help                  this text

Errors are counted by kind: http_<status>, timeout, connect, stream_error (an SSE error event
or a malformed chunk), incomplete (no data: [DONE]), cancelled (--duration-limit-s).

Examples
  # A local kvferry cluster (scripts/quickstart.sh serves stories260K on port 8000):
  benchmark_client --base-url http://127.0.0.1:8000 --endpoint /v1/chat/completions \
      --tokenizer tests/data/models/stories260K/stories260K.gguf --dataset random \
      --input-len 128 --output-len 64 --num-prompts 200 --request-rate 4 --ignore-eos \
      --goodput ttft:200 tpot:20 --result-json kvferry.json

  # vLLM (vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000) replaying a Mooncake trace, with the
  # same model's Hugging Face directory (or just its tokenizer files) for the tokenizer:
  benchmark_client --base-url http://10.0.0.5:8000 --endpoint /v1/completions \
      --tokenizer Qwen2.5-7B-Instruct/ --dataset trace \
      --trace conversation_trace.jsonl --num-prompts 500 --trace-time-scale 0.5 \
      --ignore-eos --max-concurrency 64 --result-json vllm.json --plot vllm.png
)";

namespace {

Result<double> parseDouble(std::string_view flag, std::string_view text) {
  if (text == "inf") return std::numeric_limits<double>::infinity();
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || std::isnan(value)) {
    return invalidArgument(std::string(flag) + ": expected a number, got '" + std::string(text) +
                           "'");
  }
  return value;
}

Result<double> parsePositive(std::string_view flag, std::string_view text, bool allow_inf) {
  ASSIGN_OR_RETURN(double value, parseDouble(flag, text));
  if (!(value > 0) || (!allow_inf && std::isinf(value))) {
    return invalidArgument(std::string(flag) + ": expected a positive number, got '" +
                           std::string(text) + "'");
  }
  return value;
}

template <typename T>
Result<T> parseUnsigned(std::string_view flag, std::string_view text, T min = 0) {
  T value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min) {
    return invalidArgument(std::string(flag) + ": expected an integer >= " + std::to_string(min) +
                           ", got '" + std::string(text) + "'");
  }
  return value;
}

// "http://IP:PORT[/prefix]" → host_port and prefix.
Status parseBaseUrl(std::string_view url, Options& options) {
  constexpr std::string_view kScheme = "http://";
  if (url.starts_with("https://")) {
    return invalidArgument("--base-url: https is not supported; use http://IP:PORT");
  }
  if (!url.starts_with(kScheme)) {
    return invalidArgument("--base-url: '" + std::string(url) + "' does not start with http://");
  }
  url.remove_prefix(kScheme.size());
  const size_t slash = url.find('/');
  options.host_port = std::string(url.substr(0, slash));
  std::string_view prefix = slash == std::string_view::npos ? "" : url.substr(slash);
  while (prefix.ends_with('/')) prefix.remove_suffix(1);
  options.path_prefix = std::string(prefix);
  if (options.host_port.empty()) return invalidArgument("--base-url: no host:port");
  return Status::ok();
}

}  // namespace

Result<Options> parseOptions(int argc, const char* const* argv) {
  Options o;
  if (const char* key = std::getenv("OPENAI_API_KEY"); key != nullptr) o.api_key = key;
  DatasetOptions& d = o.dataset;
  o.request_rate = std::numeric_limits<double>::infinity();
  bool rate_given = false;
  bool burstiness_given = false;
  bool num_prompts_given = false;
  std::string goodput_text;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    std::string_view value;
    bool inline_value = false;
    if (const size_t eq = flag.find('='); flag.starts_with("--") && eq != std::string_view::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      inline_value = true;
    }
    // Flags without a value.
    if (flag == "--help" || flag == "-h") {
      o.help = true;
      return o;
    }
    if (flag == "--ignore-eos" || flag == "--progress") {
      if (inline_value) return invalidArgument(std::string(flag) + " takes no value");
      (flag == "--ignore-eos" ? o.ignore_eos : o.progress) = true;
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argc) return invalidArgument(std::string(flag) + ": missing value (see --help)");
      value = argv[++i];
    }
    if (flag == "--goodput") {
      // vLLM takes the objectives as separate arguments: --goodput ttft:500 tpot:50.
      goodput_text = std::string(value);
      while (!inline_value && i + 1 < argc && !std::string_view(argv[i + 1]).starts_with("--")) {
        goodput_text += ' ';
        goodput_text += argv[++i];
      }
      continue;
    }
    if (flag == "--base-url") {
      RETURN_IF_ERROR(parseBaseUrl(value, o));
    } else if (flag == "--endpoint") {
      if (!value.starts_with('/')) return invalidArgument("--endpoint: must start with '/'");
      o.endpoint = std::string(value);
    } else if (flag == "--model") {
      o.model = std::string(value);
    } else if (flag == "--api-key") {
      o.api_key = std::string(value);
    } else if (flag == "--max-tokens") {
      ASSIGN_OR_RETURN(o.max_tokens, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--temperature") {
      ASSIGN_OR_RETURN(o.temperature, parseDouble(flag, value));
      if (!(o.temperature >= 0) || std::isinf(o.temperature)) {
        return invalidArgument("--temperature: must be >= 0");
      }
    } else if (flag == "--tokenizer") {
      o.tokenizer_path = std::string(value);
    } else if (flag == "--dataset") {
      ASSIGN_OR_RETURN(d.kind, parseDatasetKind(value));
    } else if (flag == "--seed") {
      ASSIGN_OR_RETURN(d.seed, parseUnsigned<uint64_t>(flag, value));
    } else if (flag == "--num-prompts") {
      ASSIGN_OR_RETURN(d.num_prompts, parseUnsigned<uint64_t>(flag, value, 1));
      num_prompts_given = true;
    } else if (flag == "--input-len") {
      ASSIGN_OR_RETURN(d.input_len, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--output-len") {
      ASSIGN_OR_RETURN(d.output_len, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--range-ratio") {
      ASSIGN_OR_RETURN(d.range_ratio, parseDouble(flag, value));
      if (!(d.range_ratio >= 0 && d.range_ratio < 1)) {
        return invalidArgument("--range-ratio: must be in [0, 1)");
      }
    } else if (flag == "--num-groups") {
      ASSIGN_OR_RETURN(d.num_groups, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--prompts-per-group") {
      ASSIGN_OR_RETURN(d.prompts_per_group, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--prefix-len") {
      ASSIGN_OR_RETURN(d.prefix_len, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--suffix-len") {
      ASSIGN_OR_RETURN(d.suffix_len, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--num-sessions") {
      ASSIGN_OR_RETURN(d.num_sessions, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--turns") {
      ASSIGN_OR_RETURN(d.turns, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--trace") {
      d.trace_path = std::string(value);
    } else if (flag == "--trace-block-tokens") {
      ASSIGN_OR_RETURN(d.trace_block_tokens, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--trace-time-scale") {
      ASSIGN_OR_RETURN(d.trace_time_scale, parseDouble(flag, value));
      if (!(d.trace_time_scale >= 0) || std::isinf(d.trace_time_scale)) {
        return invalidArgument("--trace-time-scale: must be a finite number >= 0");
      }
    } else if (flag == "--request-rate") {
      ASSIGN_OR_RETURN(o.request_rate, parsePositive(flag, value, true));
      rate_given = true;
    } else if (flag == "--burstiness") {
      ASSIGN_OR_RETURN(o.burstiness, parsePositive(flag, value, false));
      burstiness_given = true;
    } else if (flag == "--max-concurrency") {
      ASSIGN_OR_RETURN(o.max_concurrency, parseUnsigned<uint32_t>(flag, value, 1));
    } else if (flag == "--warmup-requests") {
      ASSIGN_OR_RETURN(o.warmup_requests, parseUnsigned<uint64_t>(flag, value));
    } else if (flag == "--duration-limit-s") {
      ASSIGN_OR_RETURN(o.duration_limit_s, parsePositive(flag, value, false));
    } else if (flag == "--timeout-s") {
      ASSIGN_OR_RETURN(o.timeout_s, parsePositive(flag, value, false));
    } else if (flag == "--percentiles") {
      ASSIGN_OR_RETURN(o.percentiles, parsePercentiles(value));
    } else if (flag == "--result-json") {
      o.result_json = std::string(value);
    } else if (flag == "--plot") {
      o.plot = std::string(value);
    } else {
      return invalidArgument("unknown option '" + std::string(flag) + "' (see --help)");
    }
  }
  if (!goodput_text.empty()) {
    ASSIGN_OR_RETURN(o.goodput, parseSlo(goodput_text));
  }
  o.chat = o.endpoint.ends_with("/chat/completions");
  if (o.tokenizer_path.empty()) {
    return invalidArgument(
        "--tokenizer PATH is required: prompts are synthesized to exact token counts");
  }
  if (d.kind == DatasetKind::kMultiTurn && !o.chat) {
    return invalidArgument("--dataset multi-turn needs --endpoint /v1/chat/completions");
  }
  if (d.kind == DatasetKind::kMultiTurn && num_prompts_given) {
    return invalidArgument(
        "--num-prompts does not apply to multi-turn: use --num-sessions and --turns");
  }
  if (d.kind == DatasetKind::kTrace) {
    if (d.trace_path.empty()) return invalidArgument("--dataset trace needs --trace FILE.jsonl");
    if (rate_given || burstiness_given) {
      return invalidArgument(
          "--request-rate/--burstiness do not apply to trace (arrivals follow its timestamps; "
          "use --trace-time-scale)");
    }
  } else if (!d.trace_path.empty()) {
    return invalidArgument("--trace is only used with --dataset trace");
  }
  std::string_view endpoint = o.endpoint;
  if (!endpoint.ends_with("/completions")) {
    return invalidArgument("--endpoint: '" + o.endpoint +
                           "' is neither /v1/completions nor /v1/chat/completions");
  }
  return o;
}

}  // namespace kvferry::bench
