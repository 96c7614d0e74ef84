// node_agent: the per-node daemon (docs/control_plane.md). Loads the model, registers with the
// orchestrator and serves prefill / decode work until SIGTERM, then drains and leaves.
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/control_auth.h"
#include "common/logging.h"
#include "common/port_file.h"
#include "config/config.h"
#include "node_agent/agent.h"
#include "node_agent/fault_point.h"
#include "node_agent/load_model.h"
#include "rdma/factory.h"

namespace {

constexpr const char* kUsage = R"(usage: node_agent --config FILE [flags]

Runs one kvferry node agent: loads the model (GGUF), sizes and registers its KV pools with the
transfer engine, registers with the orchestrator and serves the control API the orchestrator
calls (reserve, prefill-and-send, decode stream, generate, release, cancel), plus GET /health
and GET /metrics (Prometheus) on the same port.

  --config FILE             node_agent.yaml (see config/examples/node_agent.yaml); every key
                            has a default, but model.path must be set here or with --model
  --model PATH              model.path: a GGUF file or a Hugging Face model directory (the
                            same model, in the same format, as the orchestrator's)
  --role ROLE               agent.role: prefill | decode | both
  --orchestrator HOST:PORT  agent.orchestrator_address: where to register
  --control-address HOST:PORT
                            agent.control_address: the control API (port 0: any free port)
  --transport-address HOST:PORT
                            transport.listen_address: the KV data plane (port 0: any)
  --kv-blocks N             engine.kv_blocks: KV capacity in blocks (0 with --gpu: as many as fit)
  --gpu N                   engine.gpu: run the CUDA runtime on GPU N (-1: the CPU runtime)
  --transport KIND          transport.kind: tcp | verbs | cuda_ipc | loopback
  --kv-checksum BOOL        agent.kv_checksum: checksum the KV this prefill agent sends, so the
                            decode agent refuses corrupt KV instead of decoding it
  --name NAME               agent.name: how operators see this node in /v1/nodes
  --port-file FILE          write the bound control port to FILE once listening
  --log-level LEVEL         logging.level: trace | debug | info | warn | error | off
  --fault KEY=VALUE,...     faults: die or stall at a chosen point, for fault tests, e.g.
                            at=transfer_layer,layer=2,action=die or at=decode_step,after=5,action=stall
  --transport-faults KEY=VALUE,...
                            transport.faults: faults injected into this agent's outgoing
                            transfers, e.g. drop_rate=0.1,cut_every_batches=20,seed=7
  --cluster-secret-file FILE
                            auth.cluster_secret_file: the cluster secret that signs control
                            calls (the orchestrator's and every agent's must be the same; made by
                            scripts/make_secrets.sh). Without it, and without
                            KVFERRY_CLUSTER_SECRET_FILE, the control API is open to anyone
  --help                    this text

Flags override the config file. SIGTERM or SIGINT drains: new work is refused, running requests
finish (agent.drain_timeout_ms at most), the agent leaves the cluster and exits 0.
)";

// "a=1,b=x" as the YAML lines "<indent>a: 1", "<indent>b: x" (the parser validates them).
std::string keyValuesAsYaml(const std::string& pairs, const std::string& indent) {
  std::string yaml;
  size_t start = 0;
  while (start <= pairs.size()) {
    size_t end = pairs.find(',', start);
    if (end == std::string::npos) end = pairs.size();
    std::string pair = pairs.substr(start, end - start);
    const size_t eq = pair.find('=');
    if (eq == std::string::npos) {
      yaml += indent + pair + ":\n";  // the parser names it (a key without a value)
    } else {
      yaml += indent + pair.substr(0, eq) + ": " + pair.substr(eq + 1) + "\n";
    }
    start = end + 1;
  }
  return yaml;
}

int fail(const std::string& message) {
  std::fprintf(stderr, "node_agent: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace kvferry;
  std::string config_path;
  std::string port_file;
  std::string secret_file;
  std::vector<std::pair<std::string, std::string>> overrides;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) return fail(arg + " needs a value (see --help)");
    std::string value = argv[++i];
    if (arg == "--config") {
      config_path = value;
    } else if (arg == "--port-file") {
      port_file = value;
    } else if (arg == "--cluster-secret-file") {
      secret_file = value;
    } else if (arg == "--model" || arg == "--role" || arg == "--orchestrator" ||
               arg == "--control-address" || arg == "--transport-address" || arg == "--kv-blocks" ||
               arg == "--gpu" || arg == "--transport" || arg == "--name" || arg == "--log-level" ||
               arg == "--fault" || arg == "--transport-faults" || arg == "--kv-checksum") {
      overrides.emplace_back(arg, value);
    } else {
      return fail("unknown flag " + arg + " (see --help)");
    }
  }
  Result<config::NodeAgentConfig> loaded = config_path.empty()
                                               ? config::parseNodeAgentConfig("", "(defaults)")
                                               : config::loadNodeAgentConfig(config_path);
  if (!loaded.isOk()) return fail(loaded.status().message());
  config::NodeAgentConfig config = *loaded;
  for (const auto& [flag, value] : overrides) {
    std::string yaml;
    if (flag == "--model") config.model.path = value;
    if (flag == "--name") config.name = value;
    // The rest go through the config parser, so they are validated exactly like the file.
    if (flag == "--role") yaml = "agent:\n  role: " + value;
    if (flag == "--orchestrator") yaml = "agent:\n  orchestrator_address: \"" + value + "\"";
    if (flag == "--control-address") yaml = "agent:\n  control_address: \"" + value + "\"";
    if (flag == "--transport-address") yaml = "transport:\n  listen_address: \"" + value + "\"";
    if (flag == "--kv-blocks") yaml = "engine:\n  kv_blocks: " + value;
    if (flag == "--gpu") yaml = "engine:\n  gpu: \"" + value + "\"";
    if (flag == "--transport") yaml = "transport:\n  kind: " + value;
    if (flag == "--log-level") yaml = "logging:\n  level: " + value;
    if (flag == "--kv-checksum") yaml = "agent:\n  kv_checksum: " + value;
    if (flag == "--fault") yaml = "faults:\n" + keyValuesAsYaml(value, "  ");
    if (flag == "--transport-faults") {
      yaml = "transport:\n  faults:\n" + keyValuesAsYaml(value, "    ");
    }
    if (yaml.empty()) continue;
    auto parsed = config::parseNodeAgentConfig(yaml, flag);
    if (!parsed.isOk()) return fail(parsed.status().message());
    if (flag == "--role") config.role = parsed->role;
    if (flag == "--orchestrator") config.orchestrator_address = parsed->orchestrator_address;
    if (flag == "--control-address") config.control_address = parsed->control_address;
    if (flag == "--transport-address")
      config.transport.listen_address = parsed->transport.listen_address;
    if (flag == "--kv-blocks") config.kv_blocks = parsed->kv_blocks;
    if (flag == "--gpu") config.gpu = parsed->gpu;
    if (flag == "--transport") config.transport.kind = parsed->transport.kind;
    if (flag == "--log-level") config.logging.level = parsed->logging.level;
    if (flag == "--fault") config.faults = parsed->faults;
    if (flag == "--kv-checksum") config.kv_checksum = parsed->kv_checksum;
    if (flag == "--transport-faults") config.transport.faults = parsed->transport.faults;
  }
  if (config.model.path.empty())
    return fail("no model: set model.path in the config or pass --model");
  config.cluster_secret_file =
      control_auth::secretFilePath(secret_file, config.cluster_secret_file);
  setupLogging("node_agent", config.logging.level);
  agent::armFaultPoint(config.faults);

  // The concrete model runtime and transport are chosen here, from the config (DESIGN.md §1).
  auto model = agent::loadModel(config);
  if (!model.isOk()) return fail(model.status().toString());
  // [auto] rails need the GPU's PCI address: resolved here, in the config the agent is given too.
  if (Status s = agent::resolveAutoRails(config); !s.isOk()) return fail(s.toString());
  auto transport = rdma::makeTransport(config.transport);
  if (!transport.isOk()) return fail(transport.status().toString());
  boost::asio::io_context io;
  auto agent = agent::NodeAgent::create(config, io, std::move(model->engine),
                                        std::move(transport).value(), model->identity);
  if (!agent.isOk()) return fail(agent.status().toString());
  if (!port_file.empty()) {
    if (Status s = writePortFile(port_file, (*agent)->controlPort()); !s.isOk()) {
      return fail(s.toString());
    }
  }
  int exit_code = 0;
  (*agent)->onFatal([&](const Status&) {
    exit_code = 1;
    (*agent)->shutdown([&] { io.stop(); });
  });
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    (*agent)->shutdown([&] { io.stop(); });
  });
  (*agent)->start();
  io.run();
  return exit_code;
}
