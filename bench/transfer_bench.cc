// transfer_bench: block-size sweep of the KV transfer engine.
//
// Writes batches of non-adjacent, randomly chosen blocks (as a KV transfer does: scattered block
// ids, one immediate per batch) from an initiator pool into a target pool, keeping queue_depth
// batches in flight, and reports per block size GB/s (1e9 bytes/s) and p50/p99 batch latency.
// Target and initiator run in one process (--role both) or two (--role target / initiator,
// which meet through --blob-file).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include "bench/percentile.h"
#include "common/logging.h"
#include "config/config.h"
#include "rdma/factory.h"
#include "rdma/kv_layout.h"
#include "rdma/loopback/loopback_transport.h"
#ifdef KVFERRY_HAVE_CUDA_IPC
#include "rdma/cuda_ipc/device_memory.h"
#endif

namespace kvferry {
namespace {

using Clock = std::chrono::steady_clock;
using rdma::Transport;

constexpr const char* kUsage = R"(usage: transfer_bench [options]

Sweeps block sizes through the KV transfer engine and prints GB/s and batch latency. GB/s is
the steady-state rate: bytes of the batches that completed inside the measured window (after a
0.3 s warm-up that fills the queue) over its length; latency is nearest-rank p50/p99 of the
batches posted inside it; post_us is the mean time one accepted post call took (the initiator's
own cost per batch: past batch bytes / GB/s, the host is the bottleneck).

  --role both|target|initiator   one process, or one side of two processes (default both)
  --transport tcp|verbs|loopback|cuda_ipc
                                 backend (default tcp; overrides the config file; the RDMA
                                 device comes from the config's transport.verbs section).
                                 cuda_ipc puts both pools in GPU memory (--gpu) and prints,
                                 beside each row, the same blocks moved without the transport:
                                 one contiguous cudaMemcpyAsync of the batch's bytes
                                 (contig: each run the next window of the pool, as the
                                 batches walk it; hot: the same window each run, from L2
                                 when it fits there), one
                                 cudaMemcpyAsync per block, and a gather kernel then a scatter
                                 kernel (PyTorch's index_select + index_copy_)
  --memory host|cuda             tcp: where both pools live (default host). cuda puts them in
                                 GPU memory (--gpu), staged through pinned chunks
                                 (transport.gpu_staging_*), and prints beside each row what
                                 the staging cannot beat: one pinned device→host and one
                                 host→device copy of the batch's bytes
  --gpu N                        cuda_ipc, --memory cuda: the device holding the pools (default 0)
  --config FILE                  transfer_bench YAML (logging + transport sections)
  --listen HOST:PORT             target's data-plane address (default 127.0.0.1:0)
  --blob-file PATH               two-process mode: the target writes its endpoint blob here,
                                 the initiator waits for it (default /tmp/kvferry-bench.blob);
                                 across hosts, give the target a reachable --listen address and
                                 copy the file to the initiator's host (it is one hex line)
  --block-sizes LIST             e.g. 1K,4K,16K,64K,256K,1M,4M (default)
  --batch N                      blocks per batch (default 32), capped by --max-batch-bytes
  --max-batch-bytes BYTES        cap on one batch's bytes, so large blocks don't put gigabytes
                                 in flight (default 8M; 0 = no cap); each row shows its batch
  --queue-depth N                batches in flight (default 16)
  --connections N                connections per peer (default from config: 2)
  --duration SECONDS             measured time per block size (default 3; +0.3 s warm-up)
  --pool-bytes BYTES             size of each side's KV pool (default 256M)
  --seed N                       block-id shuffle seed (default 1)
  --json PATH                    also write the results as JSON
  --log-level LEVEL              trace|debug|info|warn|error|off (default: the config
                                 file's logging.level, else warn)
  -h, --help                     this text

The target runs until SIGINT/SIGTERM and then prints how many immediates it received.
)";

struct Options {
  std::string role = "both";
  std::optional<std::string> transport;
  std::optional<std::string> config_path;
  std::optional<std::string> listen;
  std::string blob_file = "/tmp/kvferry-bench.blob";
  std::vector<uint64_t> block_sizes{1 << 10,   4 << 10,    16 << 10,  64 << 10,
                                    256 << 10, 1024 << 10, 4096 << 10};
  uint32_t batch = 32;
  uint64_t max_batch_bytes = 8ull << 20;
  std::optional<uint32_t> queue_depth;
  std::optional<uint32_t> connections;
  double duration_s = 3.0;
  uint64_t pool_bytes = 256ull << 20;
  uint32_t seed = 1;
  std::optional<std::string> json_path;
  std::optional<std::string> log_level;  // default: the config file's, else warn
  int gpu = 0;
  bool cuda_memory = false;  // --memory cuda
};

Result<uint64_t> parseSize(std::string_view text) {
  if (text.empty()) return invalidArgument("empty size");
  uint64_t mult = 1;
  switch (text.back()) {
    case 'K':
    case 'k':
      mult = 1ull << 10;
      text.remove_suffix(1);
      break;
    case 'M':
    case 'm':
      mult = 1ull << 20;
      text.remove_suffix(1);
      break;
    case 'G':
    case 'g':
      mult = 1ull << 30;
      text.remove_suffix(1);
      break;
    default:
      break;
  }
  uint64_t value = 0;
  if (text.empty()) return invalidArgument("size without digits");
  for (char c : text) {
    if (c < '0' || c > '9') return invalidArgument("'" + std::string(text) + "' is not a size");
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value == 0) return invalidArgument("size must be > 0");
  return value * mult;
}

Result<uint32_t> parseCount(std::string_view flag, std::string_view text) {
  Result<uint64_t> v = parseSize(text);
  if (!v.isOk() || *v > UINT32_MAX) {
    return invalidArgument(std::string(flag) + ": '" + std::string(text) +
                           "' is not a positive integer");
  }
  return static_cast<uint32_t>(*v);
}

Result<Options> parseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (i + 1 >= argc) return invalidArgument(std::string(flag) + " needs a value (see --help)");
    std::string_view v = argv[++i];
    if (flag == "--role") {
      if (v != "both" && v != "target" && v != "initiator") {
        return invalidArgument("--role must be both, target or initiator");
      }
      o.role = v;
    } else if (flag == "--transport") {
      o.transport = std::string(v);
    } else if (flag == "--config") {
      o.config_path = std::string(v);
    } else if (flag == "--listen") {
      o.listen = std::string(v);
    } else if (flag == "--blob-file") {
      o.blob_file = v;
    } else if (flag == "--block-sizes") {
      o.block_sizes.clear();
      std::stringstream ss{std::string(v)};
      for (std::string item; std::getline(ss, item, ',');) {
        Result<uint64_t> size = parseSize(item);
        if (!size.isOk()) return size.status().withContext("--block-sizes");
        o.block_sizes.push_back(*size);
      }
    } else if (flag == "--batch") {
      ASSIGN_OR_RETURN(o.batch, parseCount(flag, v));
    } else if (flag == "--max-batch-bytes") {
      if (v == "0") {
        o.max_batch_bytes = 0;
      } else {
        Result<uint64_t> size = parseSize(v);
        if (!size.isOk()) return size.status().withContext("--max-batch-bytes");
        o.max_batch_bytes = *size;
      }
    } else if (flag == "--queue-depth") {
      ASSIGN_OR_RETURN(o.queue_depth, parseCount(flag, v));
    } else if (flag == "--connections") {
      ASSIGN_OR_RETURN(o.connections, parseCount(flag, v));
    } else if (flag == "--duration") {
      const std::string text(v);  // strtod's end pointer points into it: keep it alive
      char* end = nullptr;
      o.duration_s = std::strtod(text.c_str(), &end);
      if (*end != '\0' || !(o.duration_s > 0 && o.duration_s <= 3600)) {
        return invalidArgument("--duration must be seconds in (0, 3600]");
      }
    } else if (flag == "--pool-bytes") {
      Result<uint64_t> size = parseSize(v);
      if (!size.isOk()) return size.status().withContext("--pool-bytes");
      o.pool_bytes = *size;
    } else if (flag == "--seed") {
      ASSIGN_OR_RETURN(o.seed, parseCount(flag, v));
    } else if (flag == "--json") {
      o.json_path = std::string(v);
    } else if (flag == "--log-level") {
      o.log_level = std::string(v);
    } else if (flag == "--memory") {
      if (v != "host" && v != "cuda") return invalidArgument("--memory must be host or cuda");
      o.cuda_memory = v == "cuda";
    } else if (flag == "--gpu") {
      ASSIGN_OR_RETURN(const uint32_t gpu, parseCount(flag, v));
      o.gpu = static_cast<int>(gpu);
    } else {
      return invalidArgument("unknown option " + std::string(flag) + " (see --help)");
    }
  }
  return o;
}

// The config file (if any) with the command line's overrides applied. Without a file, the
// defaults suit a benchmark: a quiet stderr and 16 batches in flight.
Result<config::TransferBenchConfig> benchConfig(const Options& o) {
  config::TransferBenchConfig c;
  c.logging.level = LogLevel::kWarn;
  c.transport.queue_depth = 16;
  if (o.config_path) {
    ASSIGN_OR_RETURN(c, config::loadTransferBenchConfig(*o.config_path));
  }
  if (o.log_level) {
    ASSIGN_OR_RETURN(c.logging.level, parseLogLevel(*o.log_level));
  }
  config::TransportConfig& t = c.transport;
  if (o.transport) {
    if (*o.transport == "tcp") {
      t.kind = config::TransportKind::kTcp;
    } else if (*o.transport == "verbs") {
      t.kind = config::TransportKind::kVerbs;
    } else if (*o.transport == "loopback") {
      t.kind = config::TransportKind::kLoopback;
      if (o.role != "both") return invalidArgument("--transport loopback needs --role both");
    } else if (*o.transport == "cuda_ipc") {
      t.kind = config::TransportKind::kCudaIpc;
    } else {
      return invalidArgument("--transport must be tcp, verbs, loopback or cuda_ipc");
    }
  }
  if (o.cuda_memory && t.kind != config::TransportKind::kTcp) {
    return invalidArgument(
        "--memory cuda is for --transport tcp (cuda_ipc always uses GPU memory)");
  }
  if (o.listen) t.listen_address = *o.listen;
  if (o.queue_depth) t.queue_depth = *o.queue_depth;
  if (o.connections) t.connections_per_peer = *o.connections;
  t.max_batch_ops = std::max(t.max_batch_ops, o.batch);
  return c;
}

// One side's KV pool: host memory, or device memory for cuda_ipc and tcp --memory cuda.
class Pool {
 public:
  static Result<Pool> make(const config::TransportConfig& tc, const Options& o, uint8_t fill) {
    Pool pool;
    pool.bytes_ = o.pool_bytes;
    if (tc.kind != config::TransportKind::kCudaIpc && !o.cuda_memory) {
      pool.host_.assign(o.pool_bytes, fill);  // touched now: page faults are not measured
      return pool;
    }
#ifdef KVFERRY_HAVE_CUDA_IPC
    ASSIGN_OR_RETURN(pool.device_, rdma::cuda_ipc::DeviceMemory::allocate(o.gpu, o.pool_bytes));
    return pool;
#else
    return unavailable("this build has no CUDA");
#endif
  }
  void* data() {
#ifdef KVFERRY_HAVE_CUDA_IPC
    if (device_.data() != nullptr) return device_.data();
#endif
    return host_.data();
  }
  uint64_t bytes() const { return bytes_; }
  rdma::MemoryKind kind() const {
#ifdef KVFERRY_HAVE_CUDA_IPC
    if (device_.data() != nullptr) return rdma::MemoryKind::cuda(device_.gpu());
#endif
    return rdma::MemoryKind::host();
  }
#ifdef KVFERRY_HAVE_CUDA_IPC
  const rdma::cuda_ipc::DeviceMemory& device() const { return device_; }
#endif

 private:
  std::vector<uint8_t> host_;
  uint64_t bytes_ = 0;
#ifdef KVFERRY_HAVE_CUDA_IPC
  rdma::cuda_ipc::DeviceMemory device_;
#endif
};

// --- Blob exchange between the two processes (hex text, written atomically). ---

Status writeBlobFile(const std::string& path, const rdma::EndpointBlob& blob) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return ioError("open " + tmp, errno);
    static const char* kHex = "0123456789abcdef";
    for (uint8_t b : blob) out << kHex[b >> 4] << kHex[b & 15];
    out << '\n';
    if (!out) return ioError("write " + tmp, errno);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return ioError("rename " + tmp, ec.value());
  return Status::ok();
}

Result<rdma::EndpointBlob> waitBlobFile(const std::string& path, std::chrono::seconds limit) {
  const auto give_up = Clock::now() + limit;
  while (!std::filesystem::exists(path)) {
    if (Clock::now() > give_up) {
      return deadlineExceeded("no blob file at " + path + " after " +
                              std::to_string(limit.count()) + " s: is the target running?");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::ifstream in(path);
  std::string hex;
  in >> hex;
  if (hex.size() % 2 != 0) return invalidArgument(path + ": not a hex blob");
  rdma::EndpointBlob blob(hex.size() / 2);
  for (size_t i = 0; i < blob.size(); ++i) {
    blob[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  return blob;
}

// --- The sweep. ---

// Blocks per batch for a block size: --batch, capped by --max-batch-bytes (at least 1).
uint32_t batchFor(const Options& o, uint64_t block_bytes) {
  if (o.max_batch_bytes == 0) return o.batch;
  return static_cast<uint32_t>(std::clamp<uint64_t>(o.max_batch_bytes / block_bytes, 1, o.batch));
}

struct Row {
  uint64_t block_bytes = 0;
  uint32_t batch = 0;
  double gbps = 0;
  double p50_us = 0;
  double p99_us = 0;
  uint64_t batches = 0;
  double post_us = 0;  // mean time the initiator spent inside one post call (host cost per batch)
  // cuda_ipc: the same batch's bytes without the transport (0 elsewhere).
  double contiguous_gbps = 0;
  double contiguous_hot_gbps = 0;
  double per_block_gbps = 0;
  double gather_scatter_gbps = 0;
  // tcp --memory cuda: the batch's bytes through pinned memory without the transport.
  double pinned_d2h_gbps = 0;
  double pinned_h2d_gbps = 0;
};

// Precomputed batches of scattered blocks: ids are even (never adjacent, so nothing coalesces)
// and shuffled, on both sides independently.
Result<std::vector<std::vector<rdma::TransferOp>>> makeBatches(const rdma::KvPool& local,
                                                               const rdma::KvPool& remote,
                                                               uint32_t batch, uint32_t seed) {
  const uint64_t even_blocks = std::min(local.num_blocks, remote.num_blocks) / 2;
  if (even_blocks < batch) {
    return invalidArgument("pool holds " + std::to_string(even_blocks) + " usable blocks of " +
                           std::to_string(local.block_bytes) + " bytes, fewer than --batch " +
                           std::to_string(batch) + "; raise --pool-bytes");
  }
  std::mt19937 rng(seed);
  std::vector<uint32_t> src(even_blocks), dst(even_blocks);
  for (uint32_t i = 0; i < even_blocks; ++i) src[i] = dst[i] = 2 * i;
  std::shuffle(src.begin(), src.end(), rng);
  std::shuffle(dst.begin(), dst.end(), rng);
  const size_t count = std::max<size_t>(1, std::min<size_t>(256, even_blocks / batch));
  std::vector<std::vector<rdma::TransferOp>> batches(count);
  for (size_t b = 0; b < count; ++b) {
    std::span<const uint32_t> s(src.data() + b * batch, batch);
    std::span<const uint32_t> d(dst.data() + b * batch, batch);
    RETURN_IF_ERROR(rdma::appendBlockOps(local, remote, s, d, batches[b]));
  }
  return batches;
}

Result<Row> runBlockSize(Transport& initiator, rdma::PeerId peer, rdma::RegionId local_region,
                         rdma::RegionId remote_region, const Options& o, uint64_t block_bytes,
                         uint32_t queue_depth) {
  const rdma::KvPool local{local_region, block_bytes, o.pool_bytes / block_bytes};
  const rdma::KvPool remote{remote_region, block_bytes, o.pool_bytes / block_bytes};
  const uint32_t batch = batchFor(o, block_bytes);
  ASSIGN_OR_RETURN(auto batches, makeBatches(local, remote, batch, o.seed));

  std::vector<Clock::time_point> posted_at(queue_depth);
  std::vector<uint64_t> free_slots;
  for (uint64_t i = 0; i < queue_depth; ++i) free_slots.push_back(i);
  std::vector<double> latencies_us;
  latencies_us.reserve(1 << 20);
  std::vector<rdma::Completion> done(queue_depth);

  const auto warmup_end = Clock::now() + std::chrono::milliseconds(300);
  const auto measure = std::chrono::duration<double>(o.duration_s);
  Clock::time_point start{};
  Clock::time_point end{};
  bool measuring = false;
  uint64_t measured_batches = 0;     // posted inside the window: their latencies are reported
  uint64_t completed_in_window = 0;  // completed inside it: the throughput
  double post_us_sum = 0;            // inside post calls that were accepted, in the window
  uint64_t posts = 0;
  size_t next = 0;
  Status failure;

  while (true) {
    const auto now = Clock::now();
    if (!measuring && now >= warmup_end) {
      measuring = true;
      start = now;
      end = now + std::chrono::duration_cast<Clock::duration>(measure);
    }
    const bool stop_posting = measuring && now >= end;
    while (!stop_posting && !free_slots.empty()) {
      const uint64_t slot = free_slots.back();
      posted_at[slot] = Clock::now();
      Status s = initiator.postWrite(peer, batches[next], static_cast<uint32_t>(slot), slot);
      if (s.code() == StatusCode::kResourceExhausted) break;
      if (!s.isOk()) return s.withContext("post");
      if (measuring) {
        post_us_sum +=
            std::chrono::duration<double, std::micro>(Clock::now() - posted_at[slot]).count();
        ++posts;
      }
      free_slots.pop_back();
      next = (next + 1) % batches.size();
    }
    if (stop_posting && free_slots.size() == queue_depth) break;
    const size_t n = initiator.pollCompletions(done, std::chrono::milliseconds(100));
    const auto t = Clock::now();
    for (size_t i = 0; i < n; ++i) {
      if (!done[i].status.isOk()) return done[i].status.withContext("batch");
      const uint64_t slot = done[i].cookie;
      if (measuring && t <= end) ++completed_in_window;
      if (measuring && posted_at[slot] >= start && posted_at[slot] < end) {
        latencies_us.push_back(
            std::chrono::duration<double, std::micro>(t - posted_at[slot]).count());
        ++measured_batches;
      }
      free_slots.push_back(slot);
    }
  }
  // Throughput is the steady-state rate: bytes of the batches that completed inside the window
  // over its length, with the queue kept full from the warm-up on. (Counting the batches posted
  // in the window over the time until they completed would charge the window with the warm-up's
  // batches still in flight at its start: queue_depth × batch bytes, 10 % of a 2 s window on a
  // slow link.)
  Row row;
  row.block_bytes = block_bytes;
  row.batch = batch;
  row.batches = measured_batches;
  row.gbps = static_cast<double>(completed_in_window * batch * block_bytes) / measure.count() / 1e9;
  std::sort(latencies_us.begin(), latencies_us.end());
  row.p50_us = bench::nearestRankPercentile(latencies_us, 50);
  row.p99_us = bench::nearestRankPercentile(latencies_us, 99);
  row.post_us = posts == 0 ? 0 : post_us_sum / static_cast<double>(posts);
  return row;
}

std::string humanSize(uint64_t bytes) {
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return std::to_string(bytes >> 20) + "M";
  if (bytes >= (1ull << 10) && bytes % (1ull << 10) == 0) return std::to_string(bytes >> 10) + "K";
  return std::to_string(bytes);
}

std::atomic<bool> g_stop{false};
void onSignal(int) { g_stop = true; }

Status runTarget(Transport& target, const Options& o, Pool& pool) {
  ASSIGN_OR_RETURN(rdma::RegionId region,
                   target.registerRegion(pool.data(), pool.bytes(), pool.kind()));
  (void)region;
  ASSIGN_OR_RETURN(rdma::EndpointBlob blob, target.localBlob());
  RETURN_IF_ERROR(writeBlobFile(o.blob_file, blob));
  std::signal(SIGINT, onSignal);
  std::signal(SIGTERM, onSignal);
  std::fprintf(stderr, "transfer_bench target: ready, blob in %s; stop with SIGINT/SIGTERM\n",
               o.blob_file.c_str());
  uint64_t immediates = 0;
  std::vector<rdma::ImmediateEvent> events(1024);
  while (!g_stop) immediates += target.pollImmediates(events, std::chrono::milliseconds(100));
  std::filesystem::remove(o.blob_file);
  std::printf("target: %llu immediates received\n", static_cast<unsigned long long>(immediates));
  return Status::ok();
}

// cuda_ipc: the copy baselines for one row, between the initiator's pool and a second local one,
// over the row's block size and batch (scattered even block ids, as the sweep's batches).
Status addCopyBaselines(const Options& o, Pool& pool, Row& row) {
#ifdef KVFERRY_HAVE_CUDA_IPC
  if (pool.device().data() == nullptr) return Status::ok();
  if (o.cuda_memory) {  // tcp: the staging copies' ceiling
    ASSIGN_OR_RETURN(rdma::cuda_ipc::PinnedCopyRates rates,
                     rdma::cuda_ipc::measurePinnedCopies(
                         pool.device(), std::min(pool.bytes(), row.block_bytes * row.batch), 20));
    row.pinned_d2h_gbps = rates.device_to_host_bytes_per_s / 1e9;
    row.pinned_h2d_gbps = rates.host_to_device_bytes_per_s / 1e9;
    return Status::ok();
  }
  ASSIGN_OR_RETURN(rdma::cuda_ipc::DeviceMemory other,
                   rdma::cuda_ipc::DeviceMemory::allocate(o.gpu, pool.bytes()));
  const uint64_t even_blocks = pool.bytes() / row.block_bytes / 2;
  std::mt19937 rng(o.seed);
  std::vector<uint32_t> src(even_blocks), dst(even_blocks);
  for (uint32_t i = 0; i < even_blocks; ++i) src[i] = dst[i] = 2 * i;
  std::shuffle(src.begin(), src.end(), rng);
  std::shuffle(dst.begin(), dst.end(), rng);
  ASSIGN_OR_RETURN(rdma::cuda_ipc::CopyBaselines b,
                   rdma::cuda_ipc::measureCopyBaselines(pool.device(), other, row.block_bytes,
                                                        src.data(), dst.data(), row.batch, 20));
  row.contiguous_gbps = b.contiguous_bytes_per_s / 1e9;
  row.contiguous_hot_gbps = b.contiguous_hot_bytes_per_s / 1e9;
  row.per_block_gbps = b.per_block_bytes_per_s / 1e9;
  row.gather_scatter_gbps = b.gather_scatter_bytes_per_s / 1e9;
#else
  (void)o;
  (void)pool;
  (void)row;
#endif
  return Status::ok();
}

Status runInitiator(Transport& initiator, const rdma::EndpointBlob& blob, const Options& o,
                    const config::TransportConfig& tc, Pool& pool) {
  ASSIGN_OR_RETURN(rdma::RegionId local,
                   initiator.registerRegion(pool.data(), pool.bytes(), pool.kind()));
  ASSIGN_OR_RETURN(rdma::EndpointInfo info, rdma::decodeEndpoint(blob));
  if (info.regions.empty()) return failedPrecondition("the target advertises no region");
  ASSIGN_OR_RETURN(rdma::PeerId peer, initiator.connect(blob));

  std::printf("transport=%s queue_depth=%u connections=%u duration=%.1fs\n",
              std::string(initiator.name()).c_str(), tc.queue_depth, tc.connections_per_peer,
              o.duration_s);
  const bool device = pool.kind().type == rdma::MemoryKind::Type::kCuda;
  std::printf("%10s %6s %10s %10s %10s %10s %8s", "block", "batch", "GB/s", "p50_us", "p99_us",
              "batches", "post_us");
  if (device && o.cuda_memory) {
    std::printf(" %12s %12s %10s", "d2h_GB/s", "h2d_GB/s", "x_d2h");
  } else if (device) {
    std::printf(" %12s %12s %12s %14s %10s", "contig_GB/s", "hot_GB/s", "perblk_GB/s",
                "gath+scat_GB/s", "x_contig");
  }
  std::printf("\n");
  boost::json::array rows;
  for (uint64_t bs : o.block_sizes) {
    ASSIGN_OR_RETURN(
        Row row, runBlockSize(initiator, peer, local, info.regions[0].id, o, bs, tc.queue_depth));
    RETURN_IF_ERROR(addCopyBaselines(o, pool, row));
    std::printf("%10s %6u %10.3f %10.1f %10.1f %10llu %8.2f", humanSize(bs).c_str(), row.batch,
                row.gbps, row.p50_us, row.p99_us, static_cast<unsigned long long>(row.batches),
                row.post_us);
    if (device && o.cuda_memory) {
      std::printf(" %12.1f %12.1f %10.2f", row.pinned_d2h_gbps, row.pinned_h2d_gbps,
                  row.gbps / row.pinned_d2h_gbps);
    } else if (device) {
      std::printf(" %12.1f %12.1f %12.1f %14.1f %10.2f", row.contiguous_gbps,
                  row.contiguous_hot_gbps, row.per_block_gbps, row.gather_scatter_gbps,
                  row.gbps / row.contiguous_gbps);
    }
    std::printf("\n");
    std::fflush(stdout);
    rows.push_back(boost::json::object{{"block_bytes", row.block_bytes},
                                       {"batch", row.batch},
                                       {"gbps", row.gbps},
                                       {"p50_us", row.p50_us},
                                       {"p99_us", row.p99_us},
                                       {"batches", row.batches},
                                       {"post_us", row.post_us},
                                       {"contiguous_gbps", row.contiguous_gbps},
                                       {"contiguous_hot_gbps", row.contiguous_hot_gbps},
                                       {"per_block_gbps", row.per_block_gbps},
                                       {"gather_scatter_gbps", row.gather_scatter_gbps},
                                       {"pinned_d2h_gbps", row.pinned_d2h_gbps},
                                       {"pinned_h2d_gbps", row.pinned_h2d_gbps}});
  }
  if (o.json_path) {
    boost::json::object doc{{"transport", std::string(initiator.name())},
                            {"memory", device ? "cuda" : "host"},
                            {"gpu_staging_chunk_bytes", tc.gpu_staging_chunk_bytes},
                            {"gpu_staging_chunks", tc.gpu_staging_chunks},
                            {"queue_depth", tc.queue_depth},
                            {"connections", tc.connections_per_peer},
                            {"duration_s", o.duration_s},
                            {"rows", rows}};
    std::ofstream out(*o.json_path, std::ios::trunc);
    out << boost::json::serialize(doc) << '\n';
    if (!out) return ioError("write " + *o.json_path, errno);
  }
  return initiator.disconnect(peer);
}

Status run(int argc, char** argv) {
  ASSIGN_OR_RETURN(Options o, parseArgs(argc, argv));
  ASSIGN_OR_RETURN(config::TransferBenchConfig bc, benchConfig(o));
  setupLogging("transfer_bench", bc.logging.level);
  const config::TransportConfig& tc = bc.transport;
  const uint64_t largest = *std::max_element(o.block_sizes.begin(), o.block_sizes.end());
  // The initiator picks the blocks, so the pool must fit its sweep; the target only serves.
  const uint64_t needed = 2 * largest * batchFor(o, largest);
  if (o.role != "target" && o.pool_bytes < needed) {
    return invalidArgument("--pool-bytes " + std::to_string(o.pool_bytes) + " is too small for " +
                           std::to_string(batchFor(o, largest)) + " non-adjacent blocks of " +
                           std::to_string(largest) + " bytes (needs " + std::to_string(needed) +
                           ")");
  }
  ASSIGN_OR_RETURN(Pool pool, Pool::make(tc, o, 0x5A));

  auto fabric = std::make_shared<rdma::LoopbackFabric>();
  if (o.role == "target") {
    ASSIGN_OR_RETURN(auto target, rdma::makeTransport(tc, fabric));
    return runTarget(*target, o, pool);
  }
  if (o.role == "initiator") {
    ASSIGN_OR_RETURN(rdma::EndpointBlob blob, waitBlobFile(o.blob_file, std::chrono::seconds(30)));
    ASSIGN_OR_RETURN(auto initiator, rdma::makeTransport(tc, fabric));
    return runInitiator(*initiator, blob, o, tc, pool);
  }
  // Both sides in this process; a thread drains the target's immediates.
  ASSIGN_OR_RETURN(auto target, rdma::makeTransport(tc, fabric));
  ASSIGN_OR_RETURN(auto initiator, rdma::makeTransport(tc, fabric));
  ASSIGN_OR_RETURN(Pool target_pool, Pool::make(tc, o, 0));
  RETURN_IF_ERROR(
      target->registerRegion(target_pool.data(), target_pool.bytes(), target_pool.kind()).status());
  ASSIGN_OR_RETURN(rdma::EndpointBlob blob, target->localBlob());
  std::atomic<bool> done{false};
  std::atomic<uint64_t> immediates{0};
  std::thread drain([&] {
    std::vector<rdma::ImmediateEvent> events(1024);
    while (!done) immediates += target->pollImmediates(events, std::chrono::milliseconds(50));
  });
  Status s = runInitiator(*initiator, blob, o, tc, pool);
  done = true;
  drain.join();
  std::printf("target: %llu immediates received\n",
              static_cast<unsigned long long>(immediates.load()));
  return s;
}

}  // namespace
}  // namespace kvferry

int main(int argc, char** argv) {
  kvferry::Status s = kvferry::run(argc, argv);
  if (!s.isOk()) {
    std::fprintf(stderr, "transfer_bench: %s\n", s.toString().c_str());
    return 1;
  }
  return 0;
}
