// orchestrator: the HTTP front of a kvferry cluster (DESIGN.md §2–§3). Loads its YAML config and
// the model file, serves the OpenAI API and the agents' registry API on one io_context thread,
// and drains on SIGTERM / SIGINT.
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>

#include "common/control_auth.h"
#include "common/http.h"
#include "common/logging.h"
#include "common/port_file.h"
#include "common/status.h"
#include "config/config.h"
#include "orchestrator/server.h"

namespace kvferry {
namespace {

namespace asio = boost::asio;

constexpr std::string_view kUsage =
    R"usage(usage: orchestrator --config FILE [--model PATH] [--listen HOST:PORT] [--policy NAME]
                    [--api-keys-file FILE] [--cluster-secret-file FILE]
                    [--port-file FILE] [--log-level LEVEL]

The HTTP front of a kvferry cluster: serves the OpenAI API, keeps the registry of prefill and
decode node agents, chooses a (prefill, decode) pair per request and streams the answer.

Flags (each overrides the config file's key):
  --config FILE       orchestrator YAML (config/examples/orchestrator.yaml documents every key;
                      all keys are optional, so without --config the defaults apply)
  --model PATH        the model (model.path): a GGUF file or a Hugging Face directory; the
                      agents must serve the same model in the same format
  --listen HOST:PORT  address of the HTTP API (listen_address, default 127.0.0.1:8000);
                      port 0 picks a free port
  --policy NAME       scheduling policy (scheduler.policy): round_robin, least_loaded,
                      sglang_cache_aware, dynamo_kv_cost or kvferry (default)
  --api-keys-file FILE
                      the OpenAI API's keys, one per line (auth.api_keys_file); requests
                      then need 'Authorization: Bearer <key>'. KVFERRY_API_KEYS (keys
                      separated by commas) adds more. No key at all: the API is open
  --cluster-secret-file FILE
                      the cluster secret (auth.cluster_secret_file, else
                      KVFERRY_CLUSTER_SECRET_FILE) that every agent signs its calls with and
                      this orchestrator signs its calls to them with; also the operator's
                      credential for /v1/nodes ('Authorization: Bearer <secret>'). Make one
                      with scripts/make_secrets.sh. None: anyone may register as a node
  --port-file FILE    after listening, write the bound port (decimal and a newline) to FILE,
                      atomically (FILE.tmp, then renamed)
  --log-level LEVEL   trace, debug, info (default), warn, error or off (logging.level)
  -h, --help          this text

Endpoints:
  POST /v1/chat/completions, /v1/completions   OpenAI API (stream true: Server-Sent Events)
  GET  /v1/models                               the model served
  GET  /health                                  200 once a live node can prefill and one can
                                                decode; else 503 with what is missing
  GET  /v1/nodes                                the registered agents, their load and caches
                                                (for operators: the cluster secret as Bearer)
  GET  /metrics                                 Prometheus metrics (dashboards/README.md)
  POST /v1/agents/register|heartbeat|leave      the agents' side (docs/control_plane.md)

Example:
  echo "sk-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" > keys.txt
  orchestrator --config config/examples/orchestrator.yaml --model stories260K.gguf \
    --api-keys-file keys.txt
  curl -s http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $(cat keys.txt)" \
    -d '{"model":"stories260K","prompt":"Once upon a time","max_tokens":32}'

SIGTERM or SIGINT: stop taking requests, let those in flight finish (up to 10 s), exit 0.
Exit status: 0 after a clean stop, 1 when the server cannot listen, 2 for bad flags, a bad
config or an unusable model.
)usage";

constexpr std::chrono::seconds kDrainGrace{10};

struct Options {
  std::optional<std::string> config_path;
  std::optional<std::string> model;
  std::optional<std::string> listen;
  std::optional<std::string> policy;
  std::optional<std::string> port_file;
  std::optional<std::string> api_keys_file;
  std::optional<std::string> cluster_secret_file;
  std::optional<std::string> log_level;
};

Result<Options> parseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (i + 1 >= argc) return invalidArgument(std::string(flag) + " needs a value (see --help)");
    std::string value = argv[++i];
    if (flag == "--config") {
      o.config_path = value;
    } else if (flag == "--model") {
      o.model = value;
    } else if (flag == "--listen") {
      o.listen = value;
    } else if (flag == "--policy") {
      o.policy = value;
    } else if (flag == "--api-keys-file") {
      o.api_keys_file = value;
    } else if (flag == "--cluster-secret-file") {
      o.cluster_secret_file = value;
    } else if (flag == "--port-file") {
      o.port_file = value;
    } else if (flag == "--log-level") {
      o.log_level = value;
    } else {
      return invalidArgument("unknown option " + std::string(flag) + " (see --help)");
    }
  }
  return o;
}

// The config file (if any) with the flags applied, checked as a whole.
Result<config::OrchestratorConfig> loadConfig(const Options& o) {
  config::OrchestratorConfig c;
  if (o.config_path) {
    ASSIGN_OR_RETURN(c, config::loadOrchestratorConfig(*o.config_path));
  }
  if (o.model) c.model.path = *o.model;
  if (o.policy) c.policy = *o.policy;
  if (o.api_keys_file) c.api_keys_file = *o.api_keys_file;
  c.cluster_secret_file =
      control_auth::secretFilePath(o.cluster_secret_file.value_or(""), c.cluster_secret_file);
  if (o.log_level) {
    Result<LogLevel> level = parseLogLevel(*o.log_level);
    if (!level.isOk()) return level.status().withContext("--log-level");
    c.logging.level = *level;
  }
  if (o.listen) {
    Result<http::tcp::endpoint> endpoint = http::parseEndpoint(*o.listen, "--listen");
    if (!endpoint.isOk()) return endpoint.status();
    c.listen_address = *o.listen;
  }
  if (c.model.path.empty()) {
    return invalidArgument("no model file: pass --model PATH or set model.path in the config");
  }
  if (c.heartbeat_timeout_ms <= c.heartbeat_interval_ms) {
    return invalidArgument("registry.heartbeat_timeout_ms (" +
                           std::to_string(c.heartbeat_timeout_ms) +
                           ") must exceed registry.heartbeat_interval_ms (" +
                           std::to_string(c.heartbeat_interval_ms) + ")");
  }
  return c;
}

int run(int argc, char** argv) {
  Result<Options> options = parseArgs(argc, argv);
  if (!options.isOk()) {
    std::fprintf(stderr, "orchestrator: %s\n", options.status().message().c_str());
    return 2;
  }
  Result<config::OrchestratorConfig> config = loadConfig(*options);
  if (!config.isOk()) {
    std::fprintf(stderr, "orchestrator: %s\n", config.status().message().c_str());
    return 2;
  }
  setupLogging("orchestrator", config->logging.level);

  asio::io_context io(1);
  Result<std::unique_ptr<orchestrator::OrchestratorServer>> server =
      orchestrator::OrchestratorServer::create(io, *config);
  if (!server.isOk()) {
    std::fprintf(stderr, "orchestrator: %s\n", server.status().message().c_str());
    return 2;
  }
  orchestrator::OrchestratorServer& orchestrator = **server;
  if (Status listening = orchestrator.listen(); !listening.isOk()) {
    std::fprintf(stderr, "orchestrator: %s\n", listening.message().c_str());
    return 1;
  }
  const std::string address = config->listen_address.substr(0, config->listen_address.rfind(':')) +
                              ":" + std::to_string(orchestrator.port());
  if (options->port_file) {
    if (Status written = writePortFile(*options->port_file, orchestrator.port()); !written.isOk()) {
      std::fprintf(stderr, "orchestrator: %s\n", written.toString().c_str());
      return 1;
    }
  }
  orchestrator.start();
  spdlog::info("orchestrator: serving {} on http://{} (policy {})", orchestrator.modelName(),
               address, orchestrator.policyName());

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("orchestrator: signal {}: draining (up to {} s)", signal, kDrainGrace.count());
    asio::co_spawn(
        io,
        [&]() -> http::Task<void> {
          co_await orchestrator.shutdown(kDrainGrace);
          spdlog::info("orchestrator: stopped");
          io.stop();
        },
        asio::detached);
  });
  io.run();
  return 0;
}

}  // namespace
}  // namespace kvferry

int main(int argc, char** argv) { return kvferry::run(argc, argv); }
