// Configuration: one YAML file per component, parsed once into the plain, validated, const
// structs below. This folder is the only place that includes yaml-cpp.
//
// Validation is strict: an unknown key, a value of the wrong type or a value out of range is an
// INVALID_ARGUMENT whose message names the file, the line and the key path, e.g.
//   "node_agent.yaml:7: transport.queue_depth: 0 is out of range (1..65536)"
// main() prints that one line and exits. Every key has a default, so an empty file is valid.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/logging.h"
#include "common/status.h"

namespace kvferry::config {

// `logging:` section.
struct LoggingConfig {
  LogLevel level = LogLevel::kInfo;  // logging.level: trace|debug|info|warn|error|off
};

// Which transfer backend moves KV blocks. `tcp` is always built; `verbs` needs rdma-core.
enum class TransportKind { kTcp, kVerbs, kLoopback, kCudaIpc };
std::string_view transportKindName(TransportKind kind);

// How the verbs backend registers GPU memory for GPUDirect RDMA: `auto` tries dma-buf
// (cuMemGetHandleForAddressRange + ibv_reg_dmabuf_mr) and falls back to ibv_reg_mr on the device
// pointer (needs the nvidia-peermem module); the other two use only that path.
enum class GpuRegistration { kAuto, kDmabuf, kPeermem };
std::string_view gpuRegistrationName(GpuRegistration mode);
// When a write batch ends with a 1-byte RDMA READ per target GPU before its immediate (the
// Ampere-class flush: the NIC's posted writes are in GPU memory once the read returns): `auto`
// when the target advertises the region as GPU memory, `always` for every region, `never`.
enum class GpuFlush { kAuto, kAlways, kNever };
std::string_view gpuFlushName(GpuFlush mode);

// `transport.faults:` section: faults injected on this endpoint's outgoing transfers, for tests
// and chaos runs (rdma/fault/fault_transport.h). All zero (the default): no wrapper at all.
struct TransportFaults {
  uint32_t delay_ms = 0;           // hold every batch this long before it is sent, 0..600000
  uint32_t delay_jitter_ms = 0;    // plus a uniform 0..jitter, 0..600000
  double drop_rate = 0;            // a batch is lost: nothing lands, it ends DEADLINE_EXCEEDED
  double corrupt_rate = 0;         // a batch lands with 16 bytes of one op overwritten
  double connect_fail_rate = 0;    // a connect() fails UNAVAILABLE
  uint32_t cut_every_batches = 0;  // every Nth batch to a peer, its connection is cut mid-batch
  uint32_t seed = 1;               // of the fault dice, so a run can be repeated
  bool any() const {
    return delay_ms > 0 || delay_jitter_ms > 0 || drop_rate > 0 || corrupt_rate > 0 ||
           connect_fail_rate > 0 || cut_every_batches > 0;
  }
};

// `transport.verbs:` section: the RDMA device, its addressing and the RC QP parameters.
struct VerbsConfig {
  // RDMA devices (ibv_devices names) to use, in order of preference; the first one present is
  // opened. Empty: the first device the system lists.
  std::vector<std::string> devices;
  uint32_t port = 1;  // HCA port, 1..255
  // GID table index; -1 ("auto") picks one deterministically: RoCE v2 with an IPv4-mapped
  // address first, then RoCE v2, then RoCE v1 IPv4-mapped, then RoCE v1 / IB; lowest index wins.
  int32_t gid_index = -1;
  std::string netdev;           // auto GID selection considers only this netdev's GIDs if set
  uint32_t mtu = 4096;          // path MTU: 256|512|1024|2048|4096, capped by the port's
  uint32_t inline_bytes = 64;   // writes up to this size go inline in the WQE; 0..1024
  uint32_t qp_timeout = 14;     // local ACK timeout 4.096 µs × 2^N; 1..31
  uint32_t retry_count = 7;     // transport retries before a QP errors; 0..7
  uint32_t rnr_retry = 7;       // receiver-not-ready retries (7 = infinite); 0..7
  uint32_t recv_depth = 4096;   // receives posted for immediates (shared receive queue); 16..65536
  uint32_t max_rd_atomic = 16;  // outstanding RDMA READs per QP; 1..255 (capped by the device)
  // Payload bytes posted to one peer and not yet known complete, at most (shared evenly by its
  // connections); 0: only the send queues bound it. A batch larger than the share still goes
  // alone. Deep queues into one receiver make a lossy fabric (Soft-RoCE, incast on real NICs)
  // drop and retransmit.
  uint32_t max_inflight_bytes = 0;                            // 0..2 GiB
  GpuRegistration gpu_registration = GpuRegistration::kAuto;  // auto | dmabuf | peermem
  GpuFlush gpu_flush = GpuFlush::kAuto;                       // auto | always | never
};

// The most ops one transfer batch may hold (transport.max_batch_ops' upper bound; the tcp target
// refuses a larger write batch from a peer).
inline constexpr uint32_t kMaxBatchOps = 1u << 20;

// transport.rails: [auto]: the RDMA devices, nearest the agent's GPU first.
inline constexpr std::string_view kAutoRails = "auto";

// `transport:` section: every knob of the KV transfer engine.
struct TransportConfig {
  TransportKind kind = TransportKind::kTcp;  // transport.kind: tcp | verbs | loopback | cuda_ipc
  // Data-plane listen address "host:port"; port 0 picks a free port (the endpoint blob carries
  // the real one). Loopback by default: exposing the data plane is an explicit decision.
  std::string listen_address = "127.0.0.1:0";
  uint32_t queue_depth = 256;          // max outstanding (unpolled) batches per transport, 1..65536
  uint32_t connections_per_peer = 2;   // TCP connections / RC QPs per peer, 1..64
  uint32_t chain_length = 16;          // work requests per doorbell (verbs), 1..1024
  uint32_t signal_interval = 16;       // signal every Nth unsignaled WR (verbs), 1..1024
  uint32_t max_batch_ops = 4096;       // max write/read ops in one batch, 1..1048576
  uint32_t connect_timeout_ms = 5000;  // one connect attempt, 1..600000
  uint32_t connect_retries = 3;        // further attempts after the first, 0..100
  uint32_t retry_backoff_ms = 100;     // wait before the first retry, doubled each time, 0..60000
  uint32_t op_timeout_ms = 10000;      // a batch not completed by then fails, 1..600000
  // Read responses (and payloads bound for GPU memory) at least this large are received straight
  // into their destination (no staging copy); smaller ones are parsed out of a staging buffer to
  // save system calls. Write batches into host memory are always received straight into their
  // regions (scatter reads). 0..1073741824.
  uint32_t direct_receive_bytes = 64 * 1024;
  uint32_t socket_buffer_bytes = 4 * 1024 * 1024;  // SO_SNDBUF/SO_RCVBUF; 0 = kernel default
  // tcp from GPU memory: bytes of CUDA regions cross pinned host chunks of this size (one batched
  // copy per chunk), 4096..268435456, and each direction of a transport has this many of them in
  // flight (device→host copy of the next chunk while the current one is on the wire), 2..1024.
  // Pinned per transport: 2 × gpu_staging_chunks × gpu_staging_chunk_bytes, once a CUDA region
  // is registered.
  uint32_t gpu_staging_chunk_bytes = 1024 * 1024;
  uint32_t gpu_staging_chunks = 8;
  // Several NICs (rdma/striped/striped_transport.h): one rail per entry, a batch's bytes sliced
  // over them. verbs: an RDMA device name per rail; tcp: a local address per rail, "host" or
  // "host:port", that rail listens on (a peer's rail i is reached from this one's rail i). One
  // entry only names the device or address; none: one NIC, as verbs.devices / listen_address say.
  // verbs only: [auto] (kAutoRails, alone) is every RDMA device on the host, the one nearest the
  // agent's GPU on the PCIe tree first (rail 0 matters most), by name without a GPU; the agent
  // resolves it at start-up (rdma/nic_topology.h), before it makes its transport.
  std::vector<std::string> rails;
  uint32_t stripe_min_bytes =
      256 * 1024;                    // a batch this large is sliced over the rails, 4096..1 GiB
  uint32_t rail_cooldown_ms = 2000;  // a failed rail sits out this long, then reconnects, 1..600000
  VerbsConfig verbs;
  TransportFaults faults;
};

// `model:` section of node_agent.yaml and orchestrator.yaml. Every process of a cluster must
// agree on all of it (the orchestrator refuses agents that do not).
struct ModelConfig {
  std::string path;            // GGUF file; required by the binaries
  std::string name;            // the model id the API serves; empty: the file name without ".gguf"
  uint32_t block_tokens = 16;  // tokens per KV block, 1..65536
  // Key of the KV block-hash chain: 32 hex digits (16 bytes); empty means all zero. A secret
  // seed keeps clients from engineering hash collisions across users.
  std::string hash_seed;
};

enum class NodeRole { kPrefill, kDecode, kBoth };
std::string_view nodeRoleName(NodeRole role);

// `faults:` section of node_agent.yaml: the agent dies (SIGKILL, as kill -9) or stops (SIGSTOP,
// as a hung host) at a chosen point, the `after`-th time it gets there; for fault tests and chaos
// runs (node_agent/fault_point.h). Off unless `at` is set.
enum class FaultPhase { kNone, kBeforePrefill, kTransferLayer, kDecodeStep };
enum class FaultAction { kDie, kStall };
struct AgentFaults {
  FaultPhase at = FaultPhase::kNone;       // none | before_prefill | transfer_layer | decode_step
  uint32_t layer = 0;                      // transfer_layer: after this layer's batch is posted
  uint32_t after = 1;                      // the Nth time the point is reached, 1..1000000000
  FaultAction action = FaultAction::kDie;  // die | stall
};

// `node_agent.yaml`.
struct NodeAgentConfig {
  LoggingConfig logging;
  TransportConfig transport;
  ModelConfig model;
  // `agent:`
  NodeRole role = NodeRole::kBoth;
  std::string control_address = "127.0.0.1:0";          // the control API the orchestrator calls
  std::string orchestrator_address = "127.0.0.1:8000";  // where to register
  std::string name;                                     // empty: the control address
  uint32_t register_timeout_ms = 30000;  // keep trying to register this long, 1..3600000
  uint32_t drain_timeout_ms = 30000;     // on SIGTERM, wait this long for requests, 0..3600000
  // Prefill side: a checksum of each layer's K and V it sends goes with its answer, and the
  // decode agent checks the landed KV against it before decoding (a mismatch fails the attempt
  // with code kv_corrupt; the orchestrator goes on elsewhere). Host-memory KV pools only.
  bool kv_checksum = false;
  // `engine:`
  uint32_t kv_blocks = 256;  // KV capacity in blocks, 0..16777216; 0: as many as fit (GPU only)
  uint32_t max_batch_tokens = 256;    // tokens per forward pass (prefill chunk), 1..65536
  uint32_t max_batch_sequences = 64;  // sequences in one decode step, 1..4096
  uint32_t threads = 0;               // CPU threads of the kernels, 0 = all cores
  bool prefix_caching = true;
  int32_t gpu = -1;                  // CUDA device of the CUDA runtime, 0..1023; -1: the CPU one
  double gpu_memory_fraction = 0.9;  // of the GPU's memory the engine may hold, (0, 1]
  AgentFaults faults;                // `faults:`
  // `auth:` the cluster secret that signs control calls (common/control_auth.h); empty: the
  // --cluster-secret-file flag, else KVFERRY_CLUSTER_SECRET_FILE, else an open control plane.
  std::string cluster_secret_file;
};

// `transfer_bench.yaml` (optional; command-line flags override it).
struct TransferBenchConfig {
  LoggingConfig logging;
  TransportConfig transport;
};

// `scheduler:` section: the knobs of the orchestrator's scheduling policies
// (orchestrator/scheduler/). The baselines' values are the ones their projects document.
struct SchedulerConfig {
  // sglang_cache_aware: the load is imbalanced when max - min > balance_abs_threshold AND
  // max > balance_rel_threshold × min; then the least-loaded worker wins. Otherwise the worker
  // with the longest matched prefix wins when match / input > cache_threshold, else the worker
  // with the smallest tree.
  uint32_t sglang_balance_abs_threshold = 64;  // 0..1000000 requests
  double sglang_balance_rel_threshold = 1.5;   // >= 1
  double sglang_cache_threshold = 0.3;         // 0..1
  // dynamo_kv_cost: cost = prefill_load_scale × (active prefill blocks + new blocks - overlap)
  // + decode blocks.
  double dynamo_prefill_load_scale = 1.0;  // >= 0
  // kvferry: conditional disaggregation. Prefill on the decode node itself when the uncached
  // suffix is at most colocate_max_tokens, or when every prefill node's queue is deeper than
  // colocate_queue_s seconds.
  uint32_t kvferry_colocate_max_tokens = 512;  // 0..1000000 (0: only when queues are deep)
  double kvferry_colocate_queue_s = 1.0;       // >= 0
  // Pairs whose estimated TTFT is within this much of the best are equivalent; the one whose
  // decode node carries the fewest active sequences wins among them.
  double kvferry_ttft_tolerance_s = 0.010;  // >= 0
};

// `orchestrator.yaml`.
struct OrchestratorConfig {
  LoggingConfig logging;
  std::string listen_address = "127.0.0.1:8000";  // listen_address: "host:port" of the HTTP API
  ModelConfig model;
  std::string policy = "kvferry";  // scheduler.policy: round_robin | least_loaded | … | kvferry
  SchedulerConfig scheduler;
  // `registry:`
  uint32_t heartbeat_interval_ms = 1000;  // agents send one this often, 10..600000
  uint32_t heartbeat_timeout_ms = 5000;   // no heartbeat for this long: the node is dead
  // Registrations accepted per second (and in one burst), 1..100000; more get 429: a flood of
  // registrations cannot crowd out the real nodes.
  uint32_t max_registrations_per_s = 20;
  // A dead or departed node leaves /v1/nodes and its metric series this long after it was last
  // heard from, 0..86400000.
  uint32_t forget_after_ms = 300000;
  // `admission:`
  uint32_t max_inflight = 64;         // requests being served at once, 1..100000
  uint32_t max_queue = 256;           // requests waiting for a slot, 0..1000000; more → 429
  uint32_t queue_timeout_ms = 30000;  // a waiting request gives up (429) after this, 1..3600000
  uint32_t retry_after_s = 1;         // the Retry-After of a 429, 0..3600
  // Completions one API key may have under way at once, 0..100000 (0: no limit); more → 429.
  uint32_t max_requests_per_key = 0;
  // `requests:`
  uint32_t lease_ms = 30000;          // a decode reservation lasts this long, 100..3600000
  uint32_t agent_timeout_ms = 60000;  // one call to an agent, 100..3600000
  uint32_t max_attempts = 3;          // pairs tried per request (resumptions too), 1..16
  // A max_tokens past the context left after the prompt is cut to it instead of being a 400.
  bool clamp_max_tokens = false;
  double link_bandwidth_bytes_per_s = 1e9;  // the scheduler's default prefill→decode link
  // `auth:` the OpenAI API's keys (orchestrator/api_keys.h), besides KVFERRY_API_KEYS; none:
  // the API is open.
  std::string api_keys_file;
  bool keyed_health_and_metrics = false;  // /health and /metrics want a key too
  // The cluster secret that signs control calls, as in NodeAgentConfig.
  std::string cluster_secret_file;
};

// `routesim.yaml` (bench/routesim): the simulated cluster, its cost models and the SLO.
struct RouteSimConfig {
  LoggingConfig logging;
  // `cluster:`
  uint32_t prefill_nodes = 4;                // 1..256 nodes that only prefill
  uint32_t decode_nodes = 4;                 // 1..256 nodes that decode (and may prefill)
  uint32_t block_tokens = 512;               // tokens per KV block (Mooncake traces: 512)
  uint32_t kv_blocks_per_node = 800;         // KV capacity of each node, 1..16777216 blocks
  uint32_t kv_bytes_per_token = 128 * 1024;  // all layers, K and V, 1..1 GiB
  double link_bandwidth_bytes_per_s = 50e9;  // every prefill→decode pair, > 0
  // `prefill_model:` t(n) = fixed_s + per_token_s·n + per_token_squared_s·n² for n new tokens.
  double prefill_fixed_s = 0.015;
  double prefill_per_token_s = 3.2e-5;
  double prefill_per_token_squared_s = 5.4e-10;
  // `decode_model:` one step = step_fixed_s + per_sequence_s·batch + per_context_token_s·Σctx.
  double decode_step_fixed_s = 0.007;
  double decode_per_sequence_s = 3.2e-5;
  double decode_per_context_token_s = 6.5e-11;
  // `slo:`
  uint32_t slo_ttft_ms = 2000;  // 1..3600000
  uint32_t slo_tpot_ms = 50;    // 1..3600000
  SchedulerConfig scheduler;
};

// Parse from a file (the name appears in errors) or from text (for tests; `source_name` is used
// in messages in place of a file name).
Result<NodeAgentConfig> loadNodeAgentConfig(const std::string& path);
Result<OrchestratorConfig> loadOrchestratorConfig(const std::string& path);
Result<TransferBenchConfig> loadTransferBenchConfig(const std::string& path);
Result<RouteSimConfig> loadRouteSimConfig(const std::string& path);
Result<NodeAgentConfig> parseNodeAgentConfig(std::string_view yaml, std::string_view source_name);
Result<OrchestratorConfig> parseOrchestratorConfig(std::string_view yaml,
                                                   std::string_view source_name);
Result<TransferBenchConfig> parseTransferBenchConfig(std::string_view yaml,
                                                     std::string_view source_name);
Result<RouteSimConfig> parseRouteSimConfig(std::string_view yaml, std::string_view source_name);

// "host:port" with a numeric port 0..65535 and a non-empty host (IPv6 as "[::1]:80").
struct HostPort {
  std::string host;
  uint16_t port = 0;
};
Result<HostPort> parseHostPort(std::string_view text);

}  // namespace kvferry::config
