#include "config/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace kvferry::config {
namespace {

auto verbsFields(const VerbsConfig& v) {
  return std::tie(v.devices, v.port, v.gid_index, v.netdev, v.mtu, v.inline_bytes, v.qp_timeout,
                  v.retry_count, v.rnr_retry, v.recv_depth, v.max_rd_atomic, v.gpu_registration,
                  v.gpu_flush);
}

auto fields(const TransportConfig& c) {
  return std::tie(c.kind, c.listen_address, c.queue_depth, c.connections_per_peer, c.chain_length,
                  c.signal_interval, c.max_batch_ops, c.connect_timeout_ms, c.connect_retries,
                  c.retry_backoff_ms, c.op_timeout_ms, c.direct_receive_bytes,
                  c.socket_buffer_bytes, c.gpu_staging_chunk_bytes, c.gpu_staging_chunks, c.rails,
                  c.stripe_min_bytes, c.rail_cooldown_ms);
}

// The error message of parsing `yaml` as a node_agent.yaml named "t.yaml"; "" when it parses.
std::string agentError(std::string_view yaml) {
  Result<NodeAgentConfig> config = parseNodeAgentConfig(yaml, "t.yaml");
  if (config.isOk()) return "";
  EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
  return config.status().message();
}

struct UintField {
  const char* name;
  uint32_t TransportConfig::*field;
  uint32_t min;
  uint32_t max;
};

// Every unsigned knob of `transport:` with the range config.h documents.
const std::vector<UintField> kUintFields = {
    {"queue_depth", &TransportConfig::queue_depth, 1, 65536},
    {"connections_per_peer", &TransportConfig::connections_per_peer, 1, 64},
    {"chain_length", &TransportConfig::chain_length, 1, 1024},
    {"signal_interval", &TransportConfig::signal_interval, 1, 1024},
    {"max_batch_ops", &TransportConfig::max_batch_ops, 1, 1048576},
    {"connect_timeout_ms", &TransportConfig::connect_timeout_ms, 1, 600000},
    {"connect_retries", &TransportConfig::connect_retries, 0, 100},
    {"retry_backoff_ms", &TransportConfig::retry_backoff_ms, 0, 60000},
    {"op_timeout_ms", &TransportConfig::op_timeout_ms, 1, 600000},
    {"direct_receive_bytes", &TransportConfig::direct_receive_bytes, 0, 1073741824},
    {"socket_buffer_bytes", &TransportConfig::socket_buffer_bytes, 0, 1073741824},
    {"gpu_staging_chunk_bytes", &TransportConfig::gpu_staging_chunk_bytes, 4096, 268435456},
    {"gpu_staging_chunks", &TransportConfig::gpu_staging_chunks, 2, 1024},
    {"stripe_min_bytes", &TransportConfig::stripe_min_bytes, 4096, 1073741824},
    {"rail_cooldown_ms", &TransportConfig::rail_cooldown_ms, 1, 600000},
};

TEST(ConfigDefaultsTest, EmptyCommentOnlyAndEmptySectionsGiveDefaults) {
  for (const char* yaml : {"", "\n\n", "# nothing\n  # here either\n", "---\n", "{}",
                           "logging:\ntransport:\n", "logging: {}\ntransport: {}\n"}) {
    Result<NodeAgentConfig> agent = parseNodeAgentConfig(yaml, "t.yaml");
    ASSERT_TRUE(agent.isOk()) << "'" << yaml << "': " << agent.status().toString();
    EXPECT_EQ(agent->logging.level, LogLevel::kInfo);
    EXPECT_EQ(fields(agent->transport), fields(TransportConfig{}));
    EXPECT_EQ(verbsFields(agent->transport.verbs), verbsFields(VerbsConfig{}));
    Result<TransferBenchConfig> bench = parseTransferBenchConfig(yaml, "t.yaml");
    ASSERT_TRUE(bench.isOk()) << bench.status().toString();
    EXPECT_EQ(fields(bench->transport), fields(TransportConfig{}));
    EXPECT_EQ(verbsFields(bench->transport.verbs), verbsFields(VerbsConfig{}));
  }
  const TransportConfig defaults;
  EXPECT_EQ(defaults.kind, TransportKind::kTcp);
  EXPECT_EQ(defaults.listen_address, "127.0.0.1:0");
  EXPECT_EQ(defaults.queue_depth, 256u);

  Result<OrchestratorConfig> orchestrator = parseOrchestratorConfig("# empty\n", "o.yaml");
  ASSERT_TRUE(orchestrator.isOk()) << orchestrator.status().toString();
  EXPECT_EQ(orchestrator->logging.level, LogLevel::kInfo);
  EXPECT_EQ(orchestrator->listen_address, "127.0.0.1:8000");
}

TEST(ConfigParseTest, ReadsEveryKey) {
  Result<NodeAgentConfig> config = parseNodeAgentConfig(R"(
logging:
  level: debug
transport:
  kind: verbs
  listen_address: "[::1]:7000"
  queue_depth: 1
  connections_per_peer: 2
  chain_length: 3
  signal_interval: 4
  max_batch_ops: 5
  connect_timeout_ms: 6
  connect_retries: 7
  retry_backoff_ms: 8
  op_timeout_ms: 9
  direct_receive_bytes: 10
  socket_buffer_bytes: 11
  gpu_staging_chunk_bytes: 65536
  gpu_staging_chunks: 13
  stripe_min_bytes: 16384
  rail_cooldown_ms: 15
  rails: [mlx5_0, mlx5_1]
)",
                                                        "t.yaml");
  ASSERT_TRUE(config.isOk()) << config.status().toString();
  EXPECT_EQ(config->logging.level, LogLevel::kDebug);
  const TransportConfig& t = config->transport;
  EXPECT_EQ(t.kind, TransportKind::kVerbs);
  EXPECT_EQ(t.listen_address, "[::1]:7000");
  EXPECT_EQ(t.rails, (std::vector<std::string>{"mlx5_0", "mlx5_1"}));
  for (size_t i = 0; i < kUintFields.size(); ++i) {
    // Each knob its own value (its index + 1, or a value in range where that is below it).
    const std::string name = kUintFields[i].name;
    const uint64_t want = name == "gpu_staging_chunk_bytes" ? 65536
                          : name == "stripe_min_bytes"      ? 16384
                                                            : i + 1;
    EXPECT_EQ(t.*kUintFields[i].field, want) << kUintFields[i].name;
  }

  Result<OrchestratorConfig> orchestrator =
      parseOrchestratorConfig("logging: {level: off}\nlisten_address: 0.0.0.0:8080\n", "o.yaml");
  ASSERT_TRUE(orchestrator.isOk()) << orchestrator.status().toString();
  EXPECT_EQ(orchestrator->logging.level, LogLevel::kOff);
  EXPECT_EQ(orchestrator->listen_address, "0.0.0.0:8080");

  Result<TransferBenchConfig> bench =
      parseTransferBenchConfig("transport:\n  kind: loopback\n", "b.yaml");
  ASSERT_TRUE(bench.isOk()) << bench.status().toString();
  EXPECT_EQ(bench->transport.kind, TransportKind::kLoopback);
}

TEST(ConfigErrorTest, UnknownKeysListTheAllowedOnes) {
  EXPECT_EQ(agentError("logging: {}\ntransprt:\n  queue_depth: 1\n"),
            "t.yaml:2: transprt: unknown key (allowed: logging, transport, model, agent, engine, "
            "faults, auth)");
  EXPECT_EQ(agentError("transport:\n  kind: tcp\n  queue_dept: 5\n"),
            "t.yaml:3: transport.queue_dept: unknown key (allowed: kind, listen_address, "
            "queue_depth, connections_per_peer, chain_length, signal_interval, max_batch_ops, "
            "connect_timeout_ms, connect_retries, retry_backoff_ms, op_timeout_ms, "
            "direct_receive_bytes, socket_buffer_bytes, gpu_staging_chunk_bytes, "
            "gpu_staging_chunks, rails, stripe_min_bytes, rail_cooldown_ms, verbs, faults)");
  EXPECT_EQ(agentError("logging:\n  level: info\n  colour: true\n"),
            "t.yaml:3: logging.colour: unknown key (allowed: level)");
  Result<OrchestratorConfig> orchestrator =
      parseOrchestratorConfig("listen_address: 1.2.3.4:5\ntransport: {}\n", "o.yaml");
  ASSERT_FALSE(orchestrator.isOk());
  EXPECT_EQ(orchestrator.status().message(),
            "o.yaml:2: transport: unknown key (allowed: logging, listen_address, model, scheduler, "
            "registry, admission, requests, auth)");
}

TEST(ConfigErrorTest, WrongTypesNameWhatWasFound) {
  const std::string prefix = "t.yaml:3: transport.queue_depth: expected an unsigned integer, got ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"abc", "'abc'"},
      {"-1", "'-1'"},
      {"1.5", "'1.5'"},
      {"1e3", "'1e3'"},
      {"0x10", "'0x10'"},
      {"+5", "'+5'"},
      {"\"5\"", "the quoted string '5'"},
      {"{a: 1}", "a map"},
      {"[1, 2]", "a sequence"},
      {"", "an empty value"},
      {"~", "an empty value"},
  };
  for (const auto& [value, found] : cases) {
    EXPECT_EQ(agentError("logging: {}\ntransport:\n  queue_depth: " + value + "\n"), prefix + found)
        << value;
  }
  EXPECT_EQ(agentError("logging:\n  level:\n    name: info\n"),
            "t.yaml:2: logging.level: expected a scalar, got a map");
  EXPECT_EQ(agentError("transport:\n  listen_address: [a, b]\n"),
            "t.yaml:2: transport.listen_address: expected a scalar, got a sequence");
}

TEST(ConfigErrorTest, SectionsAndTheTopLevelMustBeMaps) {
  EXPECT_EQ(agentError("transport: tcp\n"), "t.yaml:1: transport: expected a map, got 'tcp'");
  EXPECT_EQ(agentError("# comment\nlogging:\n  - info\n"),
            "t.yaml:2: logging: expected a map, got a sequence");
  EXPECT_EQ(agentError("- logging\n- transport\n"), "t.yaml:1: expected a map, got a sequence");
  EXPECT_EQ(agentError("# comment\nhello\n"), "t.yaml:2: expected a map, got 'hello'");
}

TEST(ConfigErrorTest, OutOfRangeGivesTheRange) {
  EXPECT_EQ(agentError("transport:\n  queue_depth: 0\n"),
            "t.yaml:2: transport.queue_depth: 0 is out of range (1..65536)");
  EXPECT_EQ(agentError("transport:\n  queue_depth: 99999999999999999999999\n"),
            "t.yaml:2: transport.queue_depth: 99999999999999999999999 is out of range (1..65536)");
}

TEST(ConfigErrorTest, EveryRangeBoundIsAcceptedAndOnePastIsRejected) {
  for (const UintField& f : kUintFields) {
    auto yaml = [&](uint64_t value) {
      return "transport:\n  " + std::string(f.name) + ": " + std::to_string(value) + "\n";
    };
    auto rejected = [&](uint64_t value) {
      return "t.yaml:2: transport." + std::string(f.name) + ": " + std::to_string(value) +
             " is out of range (" + std::to_string(f.min) + ".." + std::to_string(f.max) + ")";
    };
    for (uint32_t bound : {f.min, f.max}) {
      Result<NodeAgentConfig> config = parseNodeAgentConfig(yaml(bound), "t.yaml");
      ASSERT_TRUE(config.isOk()) << config.status().toString();
      EXPECT_EQ(config->transport.*f.field, bound) << f.name;
    }
    if (f.min > 0) {
      EXPECT_EQ(agentError(yaml(f.min - 1)), rejected(f.min - 1));
    }
    EXPECT_EQ(agentError(yaml(uint64_t{f.max} + 1)), rejected(uint64_t{f.max} + 1));
  }
}

TEST(ConfigErrorTest, BadEnumValuesListTheAllowedOnes) {
  EXPECT_EQ(agentError("transport:\n  kind: rdma\n"),
            "t.yaml:2: transport.kind: unknown transport kind 'rdma' (expected tcp, verbs or "
            "loopback)");
  EXPECT_EQ(agentError("logging:\n  level: verbose\n"),
            "t.yaml:2: logging.level: unknown log level 'verbose' (expected trace, debug, info, "
            "warn, error or off)");
  EXPECT_EQ(agentError("transport:\n  kind: TCP\n"),
            "t.yaml:2: transport.kind: unknown transport kind 'TCP' (expected tcp, verbs or "
            "loopback)");
}

TEST(ConfigErrorTest, ListenAddressMustBeHostPort) {
  EXPECT_EQ(
      agentError("transport:\n  listen_address: localhost\n"),
      "t.yaml:2: transport.listen_address: 'localhost' is not \"host:port\": missing ':port'");
  Result<OrchestratorConfig> orchestrator =
      parseOrchestratorConfig("logging: {}\nlisten_address: '[::1]:99999'\n", "o.yaml");
  ASSERT_FALSE(orchestrator.isOk());
  EXPECT_EQ(orchestrator.status().message(),
            "o.yaml:2: listen_address: '[::1]:99999' is not \"host:port\": the port must be a "
            "number 0..65535");
}

TEST(ConfigErrorTest, MalformedYamlGivesTheParserLine) {
  EXPECT_EQ(agentError("transport:\n  queue_depth: [1\n"),
            "t.yaml:3: invalid YAML: end of sequence flow not found");
  EXPECT_EQ(agentError("logging: {}\ntransport: kind: tcp\n"),
            "t.yaml:2: invalid YAML: illegal map value");
  EXPECT_EQ(agentError("logging: {}\n---\nlogging: {}\n"),
            "t.yaml:3: expected one YAML document, found 2");
}

TEST(ConfigErrorTest, DuplicateKeysAreRejected) {
  EXPECT_EQ(agentError("transport:\n  queue_depth: 1\n  queue_depth: 2\n"),
            "t.yaml:3: transport.queue_depth: duplicate key (first at line 2)");
}

TEST(ConfigErrorTest, TheEarliestErrorInTheFileIsReported) {
  // `logging` is read before `transport`, but the message must point at line 2.
  EXPECT_EQ(agentError("transport:\n  queue_depth: 0\n  bogus: 1\nlogging:\n  level: loud\n"),
            "t.yaml:2: transport.queue_depth: 0 is out of range (1..65536)");
}

TEST(ConfigFileTest, FileErrorsNameThePath) {
  Result<NodeAgentConfig> missing = loadNodeAgentConfig("/nonexistent/kvferry/node_agent.yaml");
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.status().code(), StatusCode::kIoError);
  EXPECT_EQ(missing.status().message(),
            "open /nonexistent/kvferry/node_agent.yaml: No such file or directory");

  const std::string path = testing::TempDir() + "kvferry_config_test.yaml";
  std::ofstream(path) << "# a comment\ntransport:\n  chain_length: 2000\n";
  Result<TransferBenchConfig> bad = loadTransferBenchConfig(path);
  ASSERT_FALSE(bad.isOk());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            path + ":3: transport.chain_length: 2000 is out of range (1..1024)");
  std::remove(path.c_str());
}

TEST(ConfigFileTest, ExampleFilesLoadWithTheDocumentedDefaults) {
  const std::string dir = KVFERRY_SOURCE_DIR "/config/examples/";
  for (const char* name : {"node_agent.yaml", "transfer_bench.yaml"}) {
    std::ifstream file(dir + name);
    std::stringstream text;
    text << file.rdbuf();
    // Every key is written out, so the file documents all of them.
    for (const char* key : {"logging:", "level:", "transport:", "kind:", "listen_address:"}) {
      EXPECT_NE(text.str().find(key), std::string::npos) << name << " lacks " << key;
    }
    for (const UintField& f : kUintFields) {
      EXPECT_NE(text.str().find(std::string("\n  ") + f.name + ": "), std::string::npos)
          << name << " lacks " << f.name;
    }
  }
  Result<NodeAgentConfig> agent = loadNodeAgentConfig(dir + "node_agent.yaml");
  ASSERT_TRUE(agent.isOk()) << agent.status().toString();
  EXPECT_EQ(agent->logging.level, LogLevel::kInfo);
  EXPECT_EQ(fields(agent->transport), fields(TransportConfig{}));
  EXPECT_EQ(verbsFields(agent->transport.verbs), verbsFields(VerbsConfig{}));

  Result<TransferBenchConfig> bench = loadTransferBenchConfig(dir + "transfer_bench.yaml");
  ASSERT_TRUE(bench.isOk()) << bench.status().toString();
  EXPECT_EQ(bench->logging.level, LogLevel::kInfo);
  EXPECT_EQ(fields(bench->transport), fields(TransportConfig{}));
  EXPECT_EQ(verbsFields(bench->transport.verbs), verbsFields(VerbsConfig{}));

  Result<OrchestratorConfig> orchestrator = loadOrchestratorConfig(dir + "orchestrator.yaml");
  ASSERT_TRUE(orchestrator.isOk()) << orchestrator.status().toString();
  EXPECT_EQ(orchestrator->logging.level, LogLevel::kInfo);
  EXPECT_EQ(orchestrator->listen_address, "127.0.0.1:8000");
  // The pipeline sections document their defaults too.
  const OrchestratorConfig od;
  EXPECT_EQ(orchestrator->policy, od.policy);
  EXPECT_EQ(orchestrator->model.block_tokens, od.model.block_tokens);
  EXPECT_EQ(orchestrator->heartbeat_timeout_ms, od.heartbeat_timeout_ms);
  EXPECT_EQ(orchestrator->max_inflight, od.max_inflight);
  EXPECT_EQ(orchestrator->lease_ms, od.lease_ms);
  EXPECT_EQ(orchestrator->link_bandwidth_bytes_per_s, od.link_bandwidth_bytes_per_s);
  const NodeAgentConfig ad;
  EXPECT_EQ(agent->role, ad.role);
  EXPECT_EQ(agent->kv_blocks, ad.kv_blocks);
  EXPECT_EQ(agent->max_batch_sequences, ad.max_batch_sequences);
  EXPECT_EQ(agent->orchestrator_address, ad.orchestrator_address);
  EXPECT_EQ(agent->prefix_caching, ad.prefix_caching);
}

TEST(ConfigParseTest, FaultSectionsReadAndValidate) {
  Result<NodeAgentConfig> config = parseNodeAgentConfig(R"(transport:
  faults:
    delay_ms: 5
    delay_jitter_ms: 3
    drop_rate: 0.25
    corrupt_rate: 0.5
    connect_fail_rate: 1
    cut_every_batches: 9
    seed: 42
faults:
  at: transfer_layer
  layer: 3
  after: 2
  action: stall
)",
                                                        "t.yaml");
  ASSERT_TRUE(config.isOk()) << config.status().toString();
  const TransportFaults& t = config->transport.faults;
  EXPECT_EQ(std::tie(t.delay_ms, t.delay_jitter_ms, t.cut_every_batches, t.seed),
            std::make_tuple(5u, 3u, 9u, 42u));
  EXPECT_EQ(std::tie(t.drop_rate, t.corrupt_rate, t.connect_fail_rate),
            std::make_tuple(0.25, 0.5, 1.0));
  EXPECT_TRUE(t.any());
  EXPECT_FALSE(TransportFaults{}.any());
  EXPECT_EQ(config->faults.at, FaultPhase::kTransferLayer);
  EXPECT_EQ(config->faults.layer, 3u);
  EXPECT_EQ(config->faults.after, 2u);
  EXPECT_EQ(config->faults.action, FaultAction::kStall);
  EXPECT_EQ(NodeAgentConfig{}.faults.at, FaultPhase::kNone);

  EXPECT_EQ(agentError("transport:\n  faults:\n    drop_rate: 1.5\n"),
            "t.yaml:3: transport.faults.drop_rate: 1.5 is out of range (0..1)");
  EXPECT_EQ(agentError("faults:\n  at: mid_decode\n"),
            "t.yaml:2: faults.at: unknown fault point 'mid_decode' (expected none, "
            "before_prefill, transfer_layer or decode_step)");
  EXPECT_EQ(agentError("faults:\n  action: crash\n"),
            "t.yaml:2: faults.action: unknown fault action 'crash' (expected die or stall)");
  EXPECT_EQ(agentError("faults:\n  after: 0\n"),
            "t.yaml:2: faults.after: 0 is out of range (1..1000000000)");
}

TEST(ConfigParseTest, VerbsSectionReadsAndValidates) {
  Result<NodeAgentConfig> config = parseNodeAgentConfig(R"(transport:
  kind: verbs
  verbs:
    devices: [rxe0, mlx5_1]
    port: 2
    gid_index: 3
    netdev: eth1
    mtu: 1024
    inline_bytes: 0
    qp_timeout: 20
    retry_count: 1
    rnr_retry: 0
    recv_depth: 16
    max_rd_atomic: 255
    gpu_registration: peermem
    gpu_flush: always
)",
                                                        "t.yaml");
  ASSERT_TRUE(config.isOk()) << config.status().toString();
  const VerbsConfig& v = config->transport.verbs;
  EXPECT_EQ(v.devices, (std::vector<std::string>{"rxe0", "mlx5_1"}));
  EXPECT_EQ(v.port, 2u);
  EXPECT_EQ(v.gid_index, 3);
  EXPECT_EQ(v.netdev, "eth1");
  EXPECT_EQ(v.mtu, 1024u);
  EXPECT_EQ(v.qp_timeout, 20u);
  EXPECT_EQ(v.max_rd_atomic, 255u);
  EXPECT_EQ(v.gpu_registration, GpuRegistration::kPeermem);
  EXPECT_EQ(v.gpu_flush, GpuFlush::kAlways);
  EXPECT_EQ(parseNodeAgentConfig("transport:\n  verbs:\n    gid_index: auto\n", "t.yaml")
                ->transport.verbs.gid_index,
            -1);

  auto error = [](const std::string& yaml) {
    Result<NodeAgentConfig> c = parseNodeAgentConfig(yaml, "t.yaml");
    return c.isOk() ? std::string("(accepted)") : c.status().message();
  };
  EXPECT_EQ(error("transport:\n  verbs:\n    mtu: 1500\n"),
            "t.yaml:3: transport.verbs.mtu: '1500' is not an RDMA MTU (256, 512, 1024, 2048 or "
            "4096)");
  EXPECT_EQ(error("transport:\n  verbs:\n    gid_index: -2\n"),
            "t.yaml:3: transport.verbs.gid_index: '-2' is not a GID index (auto or 0..255)");
  EXPECT_EQ(error("transport:\n  verbs:\n    devices: mlx5_0\n"),
            "t.yaml:3: transport.verbs.devices: expected a list, e.g. [mlx5_0, mlx5_1], got "
            "'mlx5_0'");
  EXPECT_EQ(error("transport:\n  verbs:\n    retry_count: 8\n"),
            "t.yaml:3: transport.verbs.retry_count: 8 is out of range (0..7)");
  EXPECT_EQ(error("transport:\n  verbs:\n    gpu_registration: nvidia-peermem\n"),
            "t.yaml:3: transport.verbs.gpu_registration: unknown GPU registration "
            "'nvidia-peermem' (expected auto, dmabuf or peermem)");
  EXPECT_EQ(error("transport:\n  verbs:\n    gpu_flush: true\n"),
            "t.yaml:3: transport.verbs.gpu_flush: unknown GPU flush mode 'true' (expected auto, "
            "always or never)");
  EXPECT_EQ(error("transport:\n  verbs:\n    qpn: 1\n").substr(0, 40),
            "t.yaml:3: transport.verbs.qpn: unknown k");
}

TEST(HostPortTest, AcceptsHostColonPort) {
  const std::vector<std::tuple<std::string, std::string, uint16_t>> good = {
      {"127.0.0.1:0", "127.0.0.1", 0},
      {"0.0.0.0:8000", "0.0.0.0", 8000},
      {"localhost:65535", "localhost", 65535},
      {"node-3.example.com:7000", "node-3.example.com", 7000},
      {"[::1]:80", "::1", 80},
      {"[fe80::1%eth0]:4791", "fe80::1%eth0", 4791},
  };
  for (const auto& [text, host, port] : good) {
    Result<HostPort> parsed = parseHostPort(text);
    ASSERT_TRUE(parsed.isOk()) << text << ": " << parsed.status().toString();
    EXPECT_EQ(parsed->host, host);
    EXPECT_EQ(parsed->port, port);
  }
}

TEST(HostPortTest, RejectsEverythingElse) {
  for (const char* text : {"", "localhost", ":80", "host:", "host:65536", "host:-1", "host:+80",
                           "host:8o", "host:99999999999999999999", "::1:80", "[::1]", "[::1]80",
                           "[::1:80", "[]:80", "my host:80", "a]b:80"}) {
    Result<HostPort> parsed = parseHostPort(text);
    ASSERT_FALSE(parsed.isOk()) << text;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(
        parsed.status().message().rfind("'" + std::string(text) + "' is not \"host:port\"", 0), 0u)
        << parsed.status().message();
  }
}

TEST(GpuModeTest, NamesRoundTripAndDefaultToAuto) {
  for (GpuRegistration m :
       {GpuRegistration::kAuto, GpuRegistration::kDmabuf, GpuRegistration::kPeermem}) {
    const std::string yaml =
        "transport:\n  verbs:\n    gpu_registration: " + std::string(gpuRegistrationName(m)) + "\n";
    EXPECT_EQ(parseNodeAgentConfig(yaml, "t.yaml")->transport.verbs.gpu_registration, m);
  }
  for (GpuFlush m : {GpuFlush::kAuto, GpuFlush::kAlways, GpuFlush::kNever}) {
    const std::string yaml =
        "transport:\n  verbs:\n    gpu_flush: " + std::string(gpuFlushName(m)) + "\n";
    EXPECT_EQ(parseNodeAgentConfig(yaml, "t.yaml")->transport.verbs.gpu_flush, m);
  }
  EXPECT_EQ(VerbsConfig{}.gpu_registration, GpuRegistration::kAuto);
  EXPECT_EQ(VerbsConfig{}.gpu_flush, GpuFlush::kAuto);
}

TEST(TransportKindTest, NamesRoundTrip) {
  EXPECT_EQ(transportKindName(TransportKind::kTcp), "tcp");
  EXPECT_EQ(transportKindName(TransportKind::kVerbs), "verbs");
  EXPECT_EQ(transportKindName(TransportKind::kLoopback), "loopback");
  for (TransportKind kind :
       {TransportKind::kTcp, TransportKind::kVerbs, TransportKind::kLoopback}) {
    std::string yaml = "transport:\n  kind: " + std::string(transportKindName(kind)) + "\n";
    Result<NodeAgentConfig> config = parseNodeAgentConfig(yaml, "t.yaml");
    ASSERT_TRUE(config.isOk()) << config.status().toString();
    EXPECT_EQ(config->transport.kind, kind);
  }
}

auto routeSimFields(const RouteSimConfig& c) {
  const SchedulerConfig& s = c.scheduler;
  return std::tie(
      c.logging.level, c.prefill_nodes, c.decode_nodes, c.block_tokens, c.kv_blocks_per_node,
      c.kv_bytes_per_token, c.link_bandwidth_bytes_per_s, c.prefill_fixed_s, c.prefill_per_token_s,
      c.prefill_per_token_squared_s, c.decode_step_fixed_s, c.decode_per_sequence_s,
      c.decode_per_context_token_s, c.slo_ttft_ms, c.slo_tpot_ms, s.sglang_balance_abs_threshold,
      s.sglang_balance_rel_threshold, s.sglang_cache_threshold, s.dynamo_prefill_load_scale,
      s.kvferry_colocate_max_tokens, s.kvferry_colocate_queue_s, s.kvferry_ttft_tolerance_s);
}

std::string routeSimError(std::string_view yaml) {
  Result<RouteSimConfig> config = parseRouteSimConfig(yaml, "r.yaml");
  return config.isOk() ? "" : config.status().message();
}

TEST(RouteSimConfigTest, ExampleFileLoadsWithTheDefaults) {
  Result<RouteSimConfig> example =
      loadRouteSimConfig(KVFERRY_SOURCE_DIR "/config/examples/routesim_h100_llama3_8b.yaml");
  ASSERT_TRUE(example.isOk()) << example.status().toString();
  EXPECT_EQ(routeSimFields(*example), routeSimFields(RouteSimConfig{}));
  Result<RouteSimConfig> empty = parseRouteSimConfig("", "r.yaml");
  ASSERT_TRUE(empty.isOk());
  EXPECT_EQ(routeSimFields(*empty), routeSimFields(RouteSimConfig{}));
}

TEST(RouteSimConfigTest, ReadsEveryKey) {
  Result<RouteSimConfig> config = parseRouteSimConfig(R"(
logging: {level: warn}
cluster:
  prefill_nodes: 3
  decode_nodes: 5
  block_tokens: 256
  kv_blocks_per_node: 1000
  kv_bytes_per_token: 4096
  link_bandwidth_bytes_per_s: 2.5e10
prefill_model: {fixed_s: 0.02, per_token_s: 1e-5, per_token_squared_s: 0}
decode_model: {step_fixed_s: 0.01, per_sequence_s: 2e-5, per_context_token_s: 1e-10}
slo: {ttft_ms: 1000, tpot_ms: 40}
scheduler:
  sglang_balance_abs_threshold: 32
  sglang_balance_rel_threshold: 2
  sglang_cache_threshold: 0.5
  dynamo_prefill_load_scale: 0.5
  kvferry_colocate_max_tokens: 0
  kvferry_colocate_queue_s: 2
  kvferry_ttft_tolerance_s: 0
)",
                                                      "r.yaml");
  ASSERT_TRUE(config.isOk()) << config.status().toString();
  RouteSimConfig expected;
  expected.logging.level = LogLevel::kWarn;
  expected.prefill_nodes = 3;
  expected.decode_nodes = 5;
  expected.block_tokens = 256;
  expected.kv_blocks_per_node = 1000;
  expected.kv_bytes_per_token = 4096;
  expected.link_bandwidth_bytes_per_s = 2.5e10;
  expected.prefill_fixed_s = 0.02;
  expected.prefill_per_token_s = 1e-5;
  expected.prefill_per_token_squared_s = 0;
  expected.decode_step_fixed_s = 0.01;
  expected.decode_per_sequence_s = 2e-5;
  expected.decode_per_context_token_s = 1e-10;
  expected.slo_ttft_ms = 1000;
  expected.slo_tpot_ms = 40;
  expected.scheduler = {32, 2, 0.5, 0.5, 0, 2, 0};
  EXPECT_EQ(routeSimFields(*config), routeSimFields(expected));
}

TEST(RouteSimConfigTest, ErrorsNameFileLineAndKey) {
  EXPECT_EQ(routeSimError("cluster:\n  prefill_nodes: 0\n"),
            "r.yaml:2: cluster.prefill_nodes: 0 is out of range (1..256)");
  EXPECT_EQ(routeSimError("prefill_model:\n  per_token_s: fast\n"),
            "r.yaml:2: prefill_model.per_token_s: expected a number, got 'fast'");
  EXPECT_EQ(routeSimError("prefill_model:\n  per_token_s: 1e-5x\n"),
            "r.yaml:2: prefill_model.per_token_s: expected a number, got '1e-5x'");
  EXPECT_EQ(routeSimError("scheduler:\n  sglang_cache_threshold: 1.5\n"),
            "r.yaml:2: scheduler.sglang_cache_threshold: 1.5 is out of range (0..1)");
  EXPECT_EQ(routeSimError("cluster:\n  link_bandwidth_bytes_per_s: -1\n"),
            "r.yaml:2: cluster.link_bandwidth_bytes_per_s: -1 is out of range (1..1e+30)");
  EXPECT_EQ(routeSimError("slo:\n  ttft_ms: 2000\n  p99: true\n"),
            "r.yaml:3: slo.p99: unknown key (allowed: ttft_ms, tpot_ms)");
  EXPECT_EQ(routeSimError("decode_model: [1, 2]\n"),
            "r.yaml:1: decode_model: expected a map, got a sequence");
  EXPECT_EQ(routeSimError("prefill_model:\n  fixed_s: [1]\n"),
            "r.yaml:2: prefill_model.fixed_s: expected a scalar, got a sequence");
}

}  // namespace
}  // namespace kvferry::config

namespace kvferry::config {
namespace {

TEST(PipelineConfigTest, AgentAndOrchestratorSections) {
  auto agent = parseNodeAgentConfig(
      "model:\n  path: m.gguf\n  block_tokens: 32\n  hash_seed: 000102030405060708090a0b0c0d0e0f\n"
      "agent:\n  role: prefill\n  orchestrator_address: 127.0.0.1:9000\n  kv_checksum: true\n"
      "engine:\n  kv_blocks: 512\n  prefix_caching: false\n",
      "a.yaml");
  ASSERT_TRUE(agent.isOk()) << agent.status().toString();
  EXPECT_EQ(agent->model.block_tokens, 32u);
  EXPECT_EQ(agent->role, NodeRole::kPrefill);
  EXPECT_TRUE(agent->kv_checksum);
  EXPECT_FALSE(parseNodeAgentConfig("", "a.yaml")->kv_checksum);
  EXPECT_EQ(agent->kv_blocks, 512u);
  EXPECT_FALSE(agent->prefix_caching);
  auto bad = parseNodeAgentConfig("agent:\n  role: leader\n", "a.yaml");
  ASSERT_FALSE(bad.isOk());
  EXPECT_EQ(bad.status().message(),
            "a.yaml:2: agent.role: unknown role 'leader' (expected prefill, decode or both)");
  bad = parseNodeAgentConfig("model:\n  hash_seed: abc\n", "a.yaml");
  ASSERT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("model.hash_seed: expected 32 hex digits"),
            std::string::npos);

  auto orch = parseOrchestratorConfig(
      "scheduler:\n  policy: least_loaded\n  kvferry_colocate_max_tokens: 0\n"
      "admission:\n  max_inflight: 8\n  max_queue: 0\n",
      "o.yaml");
  ASSERT_TRUE(orch.isOk()) << orch.status().toString();
  EXPECT_EQ(orch->policy, "least_loaded");
  EXPECT_EQ(orch->scheduler.kvferry_colocate_max_tokens, 0u);
  EXPECT_EQ(orch->max_inflight, 8u);
  EXPECT_EQ(orch->max_queue, 0u);
  EXPECT_TRUE(orch->api_keys_file.empty());  // no key: the API is open

  orch = parseOrchestratorConfig(
      "auth:\n  api_keys_file: /etc/kvferry/api_keys\n  keyed_health_and_metrics: true\n",
      "o.yaml");
  ASSERT_TRUE(orch.isOk()) << orch.status().toString();
  EXPECT_EQ(orch->api_keys_file, "/etc/kvferry/api_keys");
  EXPECT_TRUE(orch->keyed_health_and_metrics);
  orch = parseOrchestratorConfig("auth:\n  api_key: x\n", "o.yaml");
  ASSERT_FALSE(orch.isOk());
  EXPECT_NE(orch.status().message().find("o.yaml:2"), std::string::npos) << orch.status().message();
}

}  // namespace
}  // namespace kvferry::config

namespace kvferry::config {
namespace {

TEST(ConfigTest, AuthAndRegistryLimitsReadAndValidate) {
  Result<NodeAgentConfig> agent =
      parseNodeAgentConfig("auth:\n  cluster_secret_file: /etc/kvferry/cluster.secret\n", "a.yaml");
  ASSERT_TRUE(agent.isOk()) << agent.status().toString();
  EXPECT_EQ(agent->cluster_secret_file, "/etc/kvferry/cluster.secret");
  Result<OrchestratorConfig> orchestrator = parseOrchestratorConfig(
      "auth:\n  cluster_secret_file: s\nregistry:\n  max_registrations_per_s: 5\n"
      "  forget_after_ms: 0\n",
      "o.yaml");
  ASSERT_TRUE(orchestrator.isOk()) << orchestrator.status().toString();
  EXPECT_EQ(orchestrator->cluster_secret_file, "s");
  EXPECT_EQ(orchestrator->max_registrations_per_s, 5u);
  EXPECT_EQ(orchestrator->forget_after_ms, 0u);
  EXPECT_EQ(OrchestratorConfig{}.max_registrations_per_s, 20u);
  Result<OrchestratorConfig> zero =
      parseOrchestratorConfig("registry:\n  max_registrations_per_s: 0\n", "o.yaml");
  ASSERT_FALSE(zero.isOk());
  EXPECT_NE(zero.status().message().find("max_registrations_per_s"), std::string::npos)
      << zero.status().message();
}

}  // namespace
}  // namespace kvferry::config

namespace kvferry::config {
namespace {

// Found by fuzz/fuzz_config: yaml-cpp loops forever on some malformed UTF-8, so the loaders
// refuse it first, naming the line.
TEST(ConfigTest, TextThatIsNotUtf8IsRefusedWithItsLine) {
  const std::string bad = "logging:\n  level: info\n# finish_rea\xd0\xd0\xd0son\nagent: {}\n";
  Result<NodeAgentConfig> config = parseNodeAgentConfig(bad, "a.yaml");
  ASSERT_FALSE(config.isOk());
  EXPECT_EQ(config.status().message(),
            "a.yaml:3: not UTF-8 text, or a control character (a config file must be UTF-8 text)");
  EXPECT_FALSE(parseOrchestratorConfig(std::string("\0,T", 3), "o.yaml").isOk());
  for (const std::string& truncated : {std::string("a: \xe2\x86"), std::string("\xff"),
                                       std::string("a: \xed\xa0\x80"), std::string("\xc0\xaf")}) {
    EXPECT_FALSE(parseOrchestratorConfig(truncated, "o.yaml").isOk()) << truncated;
  }
  // Nor a line that starts with ',' outside a flow collection (yaml-cpp loops forever on some).
  for (const std::string& comma :
       {std::string(","), std::string("# note\n ,x\n"), std::string("a: 1\n---\n,"),
        std::string("a:\n    b: auto\n, c"), std::string("a: '[x'\n,")}) {
    Result<TransferBenchConfig> refused = parseTransferBenchConfig(comma, "b.yaml");
    ASSERT_FALSE(refused.isOk()) << comma;
    EXPECT_NE(refused.status().message().find("cannot start with ','"), std::string::npos)
        << refused.status().message();
  }
  EXPECT_TRUE(
      parseOrchestratorConfig("registry:\n  heartbeat_interval_ms: 100 # ,\n", "o.yaml").isOk());
  Result<NodeAgentConfig> flow = parseNodeAgentConfig(
      "transport:\n  verbs:\n    devices: [mlx5_0\n      , mlx5_1]\n", "a.yaml");
  ASSERT_TRUE(flow.isOk()) << flow.status().toString();
  EXPECT_EQ(flow->transport.verbs.devices.size(), 2u);
  // Real UTF-8 (the examples' arrows and ×) is fine.
  EXPECT_TRUE(parseOrchestratorConfig("# device\xe2\x86\x94host, 2 \xc3\x97 4\n", "o.yaml").isOk());
}

}  // namespace
}  // namespace kvferry::config
