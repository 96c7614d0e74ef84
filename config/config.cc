// One generic reader (MapReader) walks a YAML map, reads each known key into a struct field and
// reports what it could not accept; the section and file readers below only list the keys.
#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include "model/utf8.h"

namespace kvferry::config {
namespace {

constexpr std::array<std::pair<std::string_view, TransportKind>, 4> kTransportKinds{{
    {"tcp", TransportKind::kTcp},
    {"verbs", TransportKind::kVerbs},
    {"loopback", TransportKind::kLoopback},
    {"cuda_ipc", TransportKind::kCudaIpc},
}};

constexpr std::array<std::pair<std::string_view, GpuRegistration>, 3> kGpuRegistrations{{
    {"auto", GpuRegistration::kAuto},
    {"dmabuf", GpuRegistration::kDmabuf},
    {"peermem", GpuRegistration::kPeermem},
}};

constexpr std::array<std::pair<std::string_view, GpuFlush>, 3> kGpuFlushes{{
    {"auto", GpuFlush::kAuto},
    {"always", GpuFlush::kAlways},
    {"never", GpuFlush::kNever},
}};

bool allDigits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) != 0;
  });
}

// What a node is, for "expected X, got Y".
std::string describe(const YAML::Node& node) {
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a sequence";
  if (node.IsScalar()) {
    // yaml-cpp tags quoted scalars "!" and plain ones "?".
    return (node.Tag() == "!" ? "the quoted string '" : "'") + node.Scalar() + "'";
  }
  return "an empty value";
}

int lineOf(const YAML::Mark& mark) { return std::max(mark.line, 0) + 1; }

// Keeps the error that comes first in the document, so the one line main() prints points at the
// earliest problem whatever order the readers happen to run in.
class Errors {
 public:
  explicit Errors(std::string_view source) : source_(source) {}

  void add(const YAML::Mark& mark, std::string_view path, std::string_view what) {
    std::pair<int, int> where{mark.line, mark.column};
    if (first_ && first_->first <= where) return;
    std::string message(source_);
    message += ':' + std::to_string(lineOf(mark)) + ": ";
    if (!path.empty()) message.append(path).append(": ");
    message += what;
    first_.emplace(where, std::move(message));
  }

  Status status() const { return first_ ? invalidArgument(first_->second) : Status::ok(); }

 private:
  std::string_view source_;
  std::optional<std::pair<std::pair<int, int>, std::string>> first_;
};

// Reads the known keys of one YAML map (or of an absent/empty one: every field keeps its
// default). Each reader call names one allowed key; finish() then reports the keys nobody asked
// for. Errors go to the shared Errors and leave the field at its default.
class MapReader {
 public:
  // `where` is the mark reported when `node` is not a map (the key that introduced it).
  MapReader(Errors& errors, const YAML::Node& node, std::string path, const YAML::Mark& where)
      : errors_(errors), path_(std::move(path)) {
    if (node.IsNull()) return;
    if (!node.IsMap()) {
      errors_.add(where, path_, "expected a map, got " + describe(node));
      return;
    }
    for (const auto& kv : node) {
      const YAML::Node& key = kv.first;
      if (!key.IsScalar()) {
        errors_.add(key.Mark(), path_, "expected a key name, got " + describe(key));
        continue;
      }
      if (const Entry* first = find(key.Scalar())) {
        errors_.add(key.Mark(), keyPath(key.Scalar()),
                    "duplicate key (first at line " + std::to_string(lineOf(first->mark)) + ")");
        continue;
      }
      entries_.push_back({key.Scalar(), key.Mark(), kv.second});
    }
  }

  void uint32(std::string_view key, uint32_t& field, uint32_t min, uint32_t max) {
    Entry* entry = take(key);
    if (entry == nullptr) return;
    const YAML::Node& value = entry->value;
    if (!value.IsScalar() || value.Tag() == "!" || !allDigits(value.Scalar())) {
      fail(*entry, "expected an unsigned integer, got " + describe(value));
      return;
    }
    const std::string& text = value.Scalar();
    uint64_t parsed = 0;
    std::errc ec = std::from_chars(text.data(), text.data() + text.size(), parsed).ec;
    if (ec != std::errc() || parsed < min || parsed > max) {
      fail(*entry,
           text + " is out of range (" + std::to_string(min) + ".." + std::to_string(max) + ")");
      return;
    }
    field = static_cast<uint32_t>(parsed);
  }

  // A scalar turned into a T by `parse` (std::string_view -> Result<T>), whose error message is
  // reported as is.
  template <typename T, typename Parse>
  void scalar(std::string_view key, T& field, Parse parse) {
    Entry* entry = take(key);
    if (entry == nullptr) return;
    if (!entry->value.IsScalar()) {
      fail(*entry, "expected a scalar, got " + describe(entry->value));
      return;
    }
    Result<T> parsed = parse(entry->value.Scalar());
    if (!parsed.isOk()) {
      fail(*entry, parsed.status().message());
      return;
    }
    field = std::move(parsed).value();
  }

  // A sequence of scalars (an empty or absent value keeps the default).
  void stringList(std::string_view key, std::vector<std::string>& field) {
    Entry* entry = take(key);
    if (entry == nullptr || entry->value.IsNull()) return;
    if (!entry->value.IsSequence()) {
      fail(*entry, "expected a list, e.g. [mlx5_0, mlx5_1], got " + describe(entry->value));
      return;
    }
    std::vector<std::string> items;
    for (const YAML::Node& item : entry->value) {
      if (!item.IsScalar() || item.Scalar().empty()) {
        fail(*entry, "list items must be non-empty names, got " + describe(item));
        return;
      }
      items.push_back(item.Scalar());
    }
    field = std::move(items);
  }

  // A nested map read by `read(MapReader&, T&)`.
  template <typename T, typename Read>
  void section(std::string_view key, T& field, Read read) {
    Entry* entry = take(key);
    if (entry == nullptr) return;
    MapReader reader(errors_, entry->value, keyPath(key), entry->mark);
    read(reader, field);
    reader.finish();
  }

  void finish() {
    std::string allowed;
    for (std::string_view key : allowed_) allowed.append(allowed.empty() ? "" : ", ").append(key);
    for (const Entry& entry : entries_) {
      if (!entry.used) fail(entry, "unknown key (allowed: " + allowed + ")");
    }
  }

 private:
  struct Entry {
    std::string key;
    YAML::Mark mark;
    YAML::Node value;
    bool used = false;
  };

  Entry* find(std::string_view key) {
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const Entry& entry) { return entry.key == key; });
    return it == entries_.end() ? nullptr : &*it;
  }

  // Registers `key` as allowed here and returns its entry, if the document has one.
  Entry* take(std::string_view key) {
    allowed_.push_back(key);
    Entry* entry = find(key);
    if (entry != nullptr) entry->used = true;
    return entry;
  }

  std::string keyPath(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + '.' + std::string(key);
  }

  void fail(const Entry& entry, std::string_view what) {
    errors_.add(entry.mark, keyPath(entry.key), what);
  }

  Errors& errors_;
  std::string path_;
  std::vector<Entry> entries_;
  std::vector<std::string_view> allowed_;
};

Result<TransportKind> parseTransportKind(std::string_view name) {
  for (const auto& [text, kind] : kTransportKinds) {
    if (text == name) return kind;
  }
  return invalidArgument("unknown transport kind '" + std::string(name) +
                         "' (expected tcp, verbs or loopback)");
}

Result<int32_t> parseGidIndex(std::string_view text) {
  if (text == "auto") return -1;
  uint32_t index = 0;
  if (!allDigits(text) ||
      std::from_chars(text.data(), text.data() + text.size(), index).ec != std::errc() ||
      index > 255) {
    return invalidArgument("'" + std::string(text) + "' is not a GID index (auto or 0..255)");
  }
  return static_cast<int32_t>(index);
}

Result<uint32_t> parseMtu(std::string_view text) {
  for (uint32_t mtu : {256u, 512u, 1024u, 2048u, 4096u}) {
    if (text == std::to_string(mtu)) return mtu;
  }
  return invalidArgument("'" + std::string(text) +
                         "' is not an RDMA MTU (256, 512, 1024, 2048 or 4096)");
}

Result<std::string> parseName(std::string_view text) { return std::string(text); }

Result<GpuRegistration> parseGpuRegistration(std::string_view text) {
  for (const auto& [name, mode] : kGpuRegistrations) {
    if (name == text) return mode;
  }
  return invalidArgument("unknown GPU registration '" + std::string(text) +
                         "' (expected auto, dmabuf or peermem)");
}

Result<GpuFlush> parseGpuFlush(std::string_view text) {
  for (const auto& [name, mode] : kGpuFlushes) {
    if (name == text) return mode;
  }
  return invalidArgument("unknown GPU flush mode '" + std::string(text) +
                         "' (expected auto, always or never)");
}

// A finite decimal number in [min, max], e.g. "3.2e-5".
auto numberIn(double min, double max) {
  return [min, max](std::string_view text) -> Result<double> {
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
        !std::isfinite(value)) {
      return invalidArgument("expected a number, got '" + std::string(text) + "'");
    }
    if (value < min || value > max) {
      std::ostringstream range;
      range << text << " is out of range (" << min << ".." << max << ")";
      return invalidArgument(range.str());
    }
    return value;
  };
}

void readVerbs(MapReader& reader, VerbsConfig& config) {
  reader.stringList("devices", config.devices);
  reader.uint32("port", config.port, 1, 255);
  reader.scalar("gid_index", config.gid_index, parseGidIndex);
  reader.scalar("netdev", config.netdev, parseName);
  reader.scalar("mtu", config.mtu, parseMtu);
  reader.uint32("inline_bytes", config.inline_bytes, 0, 1024);
  reader.uint32("qp_timeout", config.qp_timeout, 1, 31);
  reader.uint32("retry_count", config.retry_count, 0, 7);
  reader.uint32("rnr_retry", config.rnr_retry, 0, 7);
  reader.uint32("recv_depth", config.recv_depth, 16, 65536);
  reader.uint32("max_rd_atomic", config.max_rd_atomic, 1, 255);
  reader.uint32("max_inflight_bytes", config.max_inflight_bytes, 0, 1u << 31);
  reader.scalar("gpu_registration", config.gpu_registration, parseGpuRegistration);
  reader.scalar("gpu_flush", config.gpu_flush, parseGpuFlush);
}

Result<std::string> parseListenAddress(std::string_view text) {
  RETURN_IF_ERROR(parseHostPort(text).status());
  return std::string(text);
}

void readLogging(MapReader& reader, LoggingConfig& config) {
  reader.scalar("level", config.level, parseLogLevel);
}

void readFaults(MapReader& reader, TransportFaults& config) {
  reader.uint32("delay_ms", config.delay_ms, 0, 600000);
  reader.uint32("delay_jitter_ms", config.delay_jitter_ms, 0, 600000);
  reader.scalar("drop_rate", config.drop_rate, numberIn(0, 1));
  reader.scalar("corrupt_rate", config.corrupt_rate, numberIn(0, 1));
  reader.scalar("connect_fail_rate", config.connect_fail_rate, numberIn(0, 1));
  reader.uint32("cut_every_batches", config.cut_every_batches, 0, 1u << 30);
  reader.uint32("seed", config.seed, 0, 0xffffffffu);
}

void readTransport(MapReader& reader, TransportConfig& config) {
  reader.scalar("kind", config.kind, parseTransportKind);
  reader.scalar("listen_address", config.listen_address, parseListenAddress);
  reader.uint32("queue_depth", config.queue_depth, 1, 65536);
  reader.uint32("connections_per_peer", config.connections_per_peer, 1, 64);
  reader.uint32("chain_length", config.chain_length, 1, 1024);
  reader.uint32("signal_interval", config.signal_interval, 1, 1024);
  reader.uint32("max_batch_ops", config.max_batch_ops, 1, kMaxBatchOps);
  reader.uint32("connect_timeout_ms", config.connect_timeout_ms, 1, 600000);
  reader.uint32("connect_retries", config.connect_retries, 0, 100);
  reader.uint32("retry_backoff_ms", config.retry_backoff_ms, 0, 60000);
  reader.uint32("op_timeout_ms", config.op_timeout_ms, 1, 600000);
  reader.uint32("direct_receive_bytes", config.direct_receive_bytes, 0, 1u << 30);
  reader.uint32("socket_buffer_bytes", config.socket_buffer_bytes, 0, 1u << 30);
  reader.uint32("gpu_staging_chunk_bytes", config.gpu_staging_chunk_bytes, 4096, 1u << 28);
  reader.uint32("gpu_staging_chunks", config.gpu_staging_chunks, 2, 1024);
  reader.stringList("rails", config.rails);
  reader.uint32("stripe_min_bytes", config.stripe_min_bytes, 4096, 1u << 30);
  reader.uint32("rail_cooldown_ms", config.rail_cooldown_ms, 1, 600000);
  reader.section("verbs", config.verbs, readVerbs);
  reader.section("faults", config.faults, readFaults);
}

void readLoggingAndTransport(MapReader& reader, TransferBenchConfig& config) {
  reader.section("logging", config.logging, readLogging);
  reader.section("transport", config.transport, readTransport);
}

Result<bool> parseBool(std::string_view text) {
  if (text == "true") return true;
  if (text == "false") return false;
  return invalidArgument("expected true or false, got '" + std::string(text) + "'");
}

Result<std::string> parseHashSeed(std::string_view text) {
  bool hex = std::all_of(text.begin(), text.end(), [](char c) { return std::isxdigit(c) != 0; });
  if (!text.empty() && (text.size() != 32 || !hex)) {
    return invalidArgument("expected 32 hex digits (16 bytes) or \"\", got '" + std::string(text) +
                           "'");
  }
  return std::string(text);
}

Result<NodeRole> parseNodeRole(std::string_view text) {
  for (NodeRole role : {NodeRole::kPrefill, NodeRole::kDecode, NodeRole::kBoth}) {
    if (nodeRoleName(role) == text) return role;
  }
  return invalidArgument("unknown role '" + std::string(text) +
                         "' (expected prefill, decode or both)");
}

void readModel(MapReader& reader, ModelConfig& config) {
  reader.scalar("path", config.path, parseName);
  reader.scalar("name", config.name, parseName);
  reader.uint32("block_tokens", config.block_tokens, 1, 65536);
  reader.scalar("hash_seed", config.hash_seed, parseHashSeed);
}

void readAgent(MapReader& reader, NodeAgentConfig& config) {
  reader.scalar("role", config.role, parseNodeRole);
  reader.scalar("control_address", config.control_address, parseListenAddress);
  reader.scalar("orchestrator_address", config.orchestrator_address, parseListenAddress);
  reader.scalar("name", config.name, parseName);
  reader.uint32("register_timeout_ms", config.register_timeout_ms, 1, 3600000);
  reader.uint32("drain_timeout_ms", config.drain_timeout_ms, 0, 3600000);
  reader.scalar("kv_checksum", config.kv_checksum, parseBool);
}

Result<int32_t> parseGpu(std::string_view text) {
  if (text == "-1" || text == "none") return -1;
  uint32_t index = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), index);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || index > 1023) {
    return invalidArgument(
        "expected a CUDA device index 0..1023, or -1 (none: the CPU runtime), "
        "got '" +
        std::string(text) + "'");
  }
  return static_cast<int32_t>(index);
}

void readEngine(MapReader& reader, NodeAgentConfig& config) {
  reader.uint32("kv_blocks", config.kv_blocks, 0, 1u << 24);
  reader.uint32("max_batch_tokens", config.max_batch_tokens, 1, 65536);
  reader.uint32("max_batch_sequences", config.max_batch_sequences, 1, 4096);
  reader.uint32("threads", config.threads, 0, 1024);
  reader.scalar("prefix_caching", config.prefix_caching, parseBool);
  reader.scalar("gpu", config.gpu, parseGpu);
  reader.scalar("gpu_memory_fraction", config.gpu_memory_fraction, numberIn(0.01, 1));
}

constexpr std::array<std::pair<std::string_view, FaultPhase>, 4> kFaultPhases{{
    {"none", FaultPhase::kNone},
    {"before_prefill", FaultPhase::kBeforePrefill},
    {"transfer_layer", FaultPhase::kTransferLayer},
    {"decode_step", FaultPhase::kDecodeStep},
}};

Result<FaultPhase> parseFaultPhase(std::string_view text) {
  for (const auto& [name, phase] : kFaultPhases) {
    if (name == text) return phase;
  }
  return invalidArgument("unknown fault point '" + std::string(text) +
                         "' (expected none, before_prefill, transfer_layer or decode_step)");
}

Result<FaultAction> parseFaultAction(std::string_view text) {
  if (text == "die") return FaultAction::kDie;
  if (text == "stall") return FaultAction::kStall;
  return invalidArgument("unknown fault action '" + std::string(text) +
                         "' (expected die or stall)");
}

void readAgentFaults(MapReader& reader, AgentFaults& config) {
  reader.scalar("at", config.at, parseFaultPhase);
  reader.uint32("layer", config.layer, 0, 1u << 20);
  reader.uint32("after", config.after, 1, 1000000000);
  reader.scalar("action", config.action, parseFaultAction);
}

void readAgentAuth(MapReader& reader, NodeAgentConfig& config) {
  reader.scalar("cluster_secret_file", config.cluster_secret_file, parseName);
}

void readNodeAgent(MapReader& reader, NodeAgentConfig& config) {
  reader.section("logging", config.logging, readLogging);
  reader.section("transport", config.transport, readTransport);
  reader.section("model", config.model, readModel);
  reader.section("agent", config, readAgent);
  reader.section("engine", config, readEngine);
  reader.section("faults", config.faults, readAgentFaults);
  reader.section("auth", config, readAgentAuth);
}

constexpr double kHugeNumber = 1e30;

void readScheduler(MapReader& reader, SchedulerConfig& config) {
  reader.uint32("sglang_balance_abs_threshold", config.sglang_balance_abs_threshold, 0, 1000000);
  reader.scalar("sglang_balance_rel_threshold", config.sglang_balance_rel_threshold,
                numberIn(1, kHugeNumber));
  reader.scalar("sglang_cache_threshold", config.sglang_cache_threshold, numberIn(0, 1));
  reader.scalar("dynamo_prefill_load_scale", config.dynamo_prefill_load_scale,
                numberIn(0, kHugeNumber));
  reader.uint32("kvferry_colocate_max_tokens", config.kvferry_colocate_max_tokens, 0, 1000000);
  reader.scalar("kvferry_colocate_queue_s", config.kvferry_colocate_queue_s,
                numberIn(0, kHugeNumber));
  reader.scalar("kvferry_ttft_tolerance_s", config.kvferry_ttft_tolerance_s,
                numberIn(0, kHugeNumber));
}

void readOrchestratorScheduler(MapReader& reader, OrchestratorConfig& config) {
  reader.scalar("policy", config.policy, parseName);
  readScheduler(reader, config.scheduler);
  reader.scalar("link_bandwidth_bytes_per_s", config.link_bandwidth_bytes_per_s,
                numberIn(1, kHugeNumber));
}

void readRegistry(MapReader& reader, OrchestratorConfig& config) {
  reader.uint32("heartbeat_interval_ms", config.heartbeat_interval_ms, 10, 600000);
  reader.uint32("heartbeat_timeout_ms", config.heartbeat_timeout_ms, 20, 3600000);
  reader.uint32("max_registrations_per_s", config.max_registrations_per_s, 1, 100000);
  reader.uint32("forget_after_ms", config.forget_after_ms, 0, 86400000);
}

void readAdmission(MapReader& reader, OrchestratorConfig& config) {
  reader.uint32("max_inflight", config.max_inflight, 1, 100000);
  reader.uint32("max_queue", config.max_queue, 0, 1000000);
  reader.uint32("queue_timeout_ms", config.queue_timeout_ms, 1, 3600000);
  reader.uint32("retry_after_s", config.retry_after_s, 0, 3600);
  reader.uint32("max_requests_per_key", config.max_requests_per_key, 0, 100000);
}

void readRequests(MapReader& reader, OrchestratorConfig& config) {
  reader.uint32("lease_ms", config.lease_ms, 100, 3600000);
  reader.uint32("agent_timeout_ms", config.agent_timeout_ms, 100, 3600000);
  reader.uint32("max_attempts", config.max_attempts, 1, 16);
  reader.scalar("clamp_max_tokens", config.clamp_max_tokens, parseBool);
}

void readAuth(MapReader& reader, OrchestratorConfig& config) {
  reader.scalar("api_keys_file", config.api_keys_file, parseName);
  reader.scalar("keyed_health_and_metrics", config.keyed_health_and_metrics, parseBool);
  reader.scalar("cluster_secret_file", config.cluster_secret_file, parseName);
}

void readOrchestrator(MapReader& reader, OrchestratorConfig& config) {
  reader.section("logging", config.logging, readLogging);
  reader.scalar("listen_address", config.listen_address, parseListenAddress);
  reader.section("model", config.model, readModel);
  reader.section("scheduler", config, readOrchestratorScheduler);
  reader.section("registry", config, readRegistry);
  reader.section("admission", config, readAdmission);
  reader.section("requests", config, readRequests);
  reader.section("auth", config, readAuth);
}

void readRouteSimCluster(MapReader& reader, RouteSimConfig& config) {
  reader.uint32("prefill_nodes", config.prefill_nodes, 1, 256);
  reader.uint32("decode_nodes", config.decode_nodes, 1, 256);
  reader.uint32("block_tokens", config.block_tokens, 1, 65536);
  reader.uint32("kv_blocks_per_node", config.kv_blocks_per_node, 1, 1u << 24);
  reader.uint32("kv_bytes_per_token", config.kv_bytes_per_token, 1, 1u << 30);
  reader.scalar("link_bandwidth_bytes_per_s", config.link_bandwidth_bytes_per_s,
                numberIn(1, kHugeNumber));
}

void readRouteSimPrefill(MapReader& reader, RouteSimConfig& config) {
  reader.scalar("fixed_s", config.prefill_fixed_s, numberIn(0, 3600));
  reader.scalar("per_token_s", config.prefill_per_token_s, numberIn(0, 3600));
  reader.scalar("per_token_squared_s", config.prefill_per_token_squared_s, numberIn(0, 3600));
}

void readRouteSimDecode(MapReader& reader, RouteSimConfig& config) {
  reader.scalar("step_fixed_s", config.decode_step_fixed_s, numberIn(0, 3600));
  reader.scalar("per_sequence_s", config.decode_per_sequence_s, numberIn(0, 3600));
  reader.scalar("per_context_token_s", config.decode_per_context_token_s, numberIn(0, 3600));
}

void readRouteSimSlo(MapReader& reader, RouteSimConfig& config) {
  reader.uint32("ttft_ms", config.slo_ttft_ms, 1, 3600000);
  reader.uint32("tpot_ms", config.slo_tpot_ms, 1, 3600000);
}

void readRouteSim(MapReader& reader, RouteSimConfig& config) {
  reader.section("logging", config.logging, readLogging);
  reader.section("cluster", config, readRouteSimCluster);
  reader.section("prefill_model", config, readRouteSimPrefill);
  reader.section("decode_model", config, readRouteSimDecode);
  reader.section("slo", config, readRouteSimSlo);
  reader.section("scheduler", config.scheduler, readScheduler);
}

// The 1-based line of the first byte of `text` that is not well-formed UTF-8, or a control
// character YAML does not allow (all but tab, LF and CR); 0 when there is none. (yaml-cpp 0.7
// loops forever on some of both: found by fuzz/fuzz_config.)
size_t firstNonUtf8Line(std::string_view text) {
  size_t line = 1;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<uint8_t>(text[i]);
    if (c < 0x80) {
      if (c == '\n') ++line;
      if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F) return line;
      ++i;
      continue;
    }
    const std::optional<model::Utf8Lead> shape = model::utf8Lead(c);
    if (!shape || shape->length > text.size() - i) return line;  // not a lead, or cut short
    for (size_t k = 1; k < shape->length; ++k) {
      if (!model::utf8Continues(*shape, k, static_cast<uint8_t>(text[i + k]))) return line;
    }
    i += shape->length;
  }
  return 0;
}

// The 1-based line that starts (after blanks) with ',' outside any flow collection; 0 when none
// does. Such a line is never valid YAML, and yaml-cpp 0.7 loops forever on some of them (found
// by fuzz/fuzz_config). Brackets inside quotes and comments are not counted.
size_t strayCommaLine(std::string_view text) {
  int depth = 0;  // open [ and { so far
  size_t line = 1;
  bool line_start = true;
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
      line_start = true;
      if (quote == '\'') quote = 0;  // a single-quoted scalar cannot be what hangs; keep it simple
      continue;
    }
    if (quote != 0) {
      if (c == quote) quote = 0;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r') continue;
    if (line_start && c == ',' && depth == 0) return line;
    line_start = false;
    if (c == '#') {
      i = std::min(text.find('\n', i), text.size()) - 1;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '[' || c == '{') {
      ++depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return 0;
}

template <typename Config>
Result<Config> parseDocument(std::string_view yaml, std::string_view source,
                             void (*read)(MapReader&, Config&)) {
  if (const size_t line = firstNonUtf8Line(yaml); line != 0) {
    return invalidArgument(
        std::string(source) + ":" + std::to_string(line) +
        ": not UTF-8 text, or a control character (a config file must be UTF-8 text)");
  }
  if (const size_t line = strayCommaLine(yaml); line != 0) {
    return invalidArgument(std::string(source) + ":" + std::to_string(line) +
                           ": a line cannot start with ',' outside [...] or {...}");
  }
  Errors errors(source);
  Config config;
  try {
    std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml));
    if (documents.size() > 1) {
      errors.add(documents[1].Mark(), "",
                 "expected one YAML document, found " + std::to_string(documents.size()));
    }
    YAML::Node root = documents.empty() ? YAML::Node() : documents[0];
    MapReader reader(errors, root, "", root.Mark());
    read(reader, config);
    reader.finish();
  } catch (const YAML::Exception& e) {
    errors.add(e.mark, "", "invalid YAML: " + e.msg);
  } catch (const std::exception& e) {
    return internalError(std::string(source) + ": " + e.what());
  }
  RETURN_IF_ERROR(errors.status());
  return config;
}

Result<std::string> readFile(const std::string& path) {
  struct FileCloser {
    void operator()(std::FILE* file) const { std::fclose(file); }
  };
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) return ioError("open " + path, errno);
  std::string text;
  std::array<char, 65536> buffer;
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), file.get())) > 0)
    text.append(buffer.data(), n);
  if (std::ferror(file.get())) return ioError("read " + path, errno);
  return text;
}

template <typename Config>
Result<Config> loadFile(const std::string& path,
                        Result<Config> (*parse)(std::string_view, std::string_view)) {
  ASSIGN_OR_RETURN(std::string text, readFile(path));
  return parse(text, path);
}

}  // namespace

std::string_view nodeRoleName(NodeRole role) {
  switch (role) {
    case NodeRole::kPrefill:
      return "prefill";
    case NodeRole::kDecode:
      return "decode";
    case NodeRole::kBoth:
      return "both";
  }
  return "both";
}

std::string_view transportKindName(TransportKind kind) {
  for (const auto& [text, k] : kTransportKinds) {
    if (k == kind) return text;
  }
  return "tcp";
}

std::string_view gpuRegistrationName(GpuRegistration mode) {
  for (const auto& [text, m] : kGpuRegistrations) {
    if (m == mode) return text;
  }
  return "auto";
}

std::string_view gpuFlushName(GpuFlush mode) {
  for (const auto& [text, m] : kGpuFlushes) {
    if (m == mode) return text;
  }
  return "auto";
}

Result<HostPort> parseHostPort(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return invalidArgument("'" + std::string(text) + "' is not \"host:port\": " + std::string(why));
  };
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return bad("missing ']' after the IPv6 host");
    host = text.substr(1, close - 1);
    if (text.substr(close + 1, 1) != ":") return bad("expected ':port' after ']'");
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("missing ':port'");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return bad("write an IPv6 host in brackets, e.g. [::1]:80");
    }
  }
  if (host.empty()) return bad("empty host");
  if (std::any_of(host.begin(), host.end(), [](char c) {
        return std::isspace(static_cast<unsigned char>(c)) != 0 || c == '[' || c == ']';
      })) {
    return bad("the host contains a space or a bracket");
  }
  uint32_t number = 0;
  if (!allDigits(port) ||
      std::from_chars(port.data(), port.data() + port.size(), number).ec != std::errc() ||
      number > 65535) {
    return bad("the port must be a number 0..65535");
  }
  return HostPort{std::string(host), static_cast<uint16_t>(number)};
}

Result<NodeAgentConfig> parseNodeAgentConfig(std::string_view yaml, std::string_view source_name) {
  return parseDocument<NodeAgentConfig>(yaml, source_name, readNodeAgent);
}
Result<OrchestratorConfig> parseOrchestratorConfig(std::string_view yaml,
                                                   std::string_view source_name) {
  return parseDocument<OrchestratorConfig>(yaml, source_name, readOrchestrator);
}
Result<TransferBenchConfig> parseTransferBenchConfig(std::string_view yaml,
                                                     std::string_view source_name) {
  return parseDocument<TransferBenchConfig>(yaml, source_name, readLoggingAndTransport);
}

Result<RouteSimConfig> parseRouteSimConfig(std::string_view yaml, std::string_view source_name) {
  return parseDocument<RouteSimConfig>(yaml, source_name, readRouteSim);
}

Result<NodeAgentConfig> loadNodeAgentConfig(const std::string& path) {
  return loadFile(path, parseNodeAgentConfig);
}
Result<OrchestratorConfig> loadOrchestratorConfig(const std::string& path) {
  return loadFile(path, parseOrchestratorConfig);
}
Result<TransferBenchConfig> loadTransferBenchConfig(const std::string& path) {
  return loadFile(path, parseTransferBenchConfig);
}
Result<RouteSimConfig> loadRouteSimConfig(const std::string& path) {
  return loadFile(path, parseRouteSimConfig);
}

}  // namespace kvferry::config
