#include "node_agent/agent.h"

#include <prometheus/registry.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <thread>

#include "common/control_auth.h"
#include "common/control_wire.h"
#include "common/http.h"
#include "node_agent/batch_loop.h"
#include "node_agent/control_api.h"
#include "node_agent/engine/engine.h"
#include "node_agent/engine_work_impl.h"
#include "node_agent/kv_transfer/kv_checksum.h"
#include "node_agent/kv_transfer/kv_receiver.h"
#include "node_agent/kv_transfer/kv_regions.h"
#include "node_agent/kv_transfer/kv_sender.h"
#include "node_agent/kv_transfer/peer_connector.h"
#include "node_agent/membership.h"
#include "node_agent/metrics.h"
#include "node_agent/prefill_runner.h"
#include "rdma/transport.h"

namespace kvferry::agent {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

class NodeAgentImpl final : public NodeAgent {
 public:
  NodeAgentImpl(const config::NodeAgentConfig& config, asio::io_context& io,
                std::unique_ptr<engine::Engine> engine, std::unique_ptr<rdma::Transport> transport,
                ModelIdentity identity, kv_transfer::KvRegions regions, std::string blob_base64,
                http::tcp::endpoint orchestrator, std::shared_ptr<control_auth::Authenticator> auth)
      : config_(config),
        io_(io),
        identity_(std::move(identity)),
        metrics_(metrics_registry_, config::nodeRoleName(config.role)),
        engine_(std::move(engine)),
        transport_(std::move(transport)),
        blob_base64_(std::move(blob_base64)),
        connector_(*transport_),
        prefills_(*engine_, metrics_),
        loop_(*engine_, prefills_, metrics_, config.max_batch_sequences),
        receiver_(*engine_, regions.ids,
                  milliseconds(config.transport.op_timeout_ms) + std::chrono::seconds(1), metrics_,
                  [this](kv_transfer::KvReceiver::Landed landed) {
                    loop_.admitImported(landed.seq, landed.decode, std::move(landed.stream));
                  }),
        sender_(*engine_, prefills_, *transport_, connector_, engine_io_.get_executor(),
                std::move(regions.pools), metrics_, milliseconds(config.transport.op_timeout_ms),
                config.kv_checksum),
        work_(loop_, sender_, receiver_, prefills_, backlog_),
        auth_(std::move(auth)),
        client_(io),
        membership_(io, client_, std::move(orchestrator), milliseconds(config.register_timeout_ms),
                    work_, engine_io_.get_executor()),
        control_api_(
            io, config.role, work_, engine_io_.get_executor(), backlog_, metrics_,
            metrics_registry_, [this] { return membership_.nodeId(); }, auth_) {
    if (auth_ != nullptr) client_.signRequests([auth = auth_](http::Request& r) { auth->sign(r); });
  }

  ~NodeAgentImpl() override { stopThreads(); }

  Status listen() { return control_api_.listen(config_.control_address); }
  void start() override;
  void shutdown(std::function<void()> done) override;
  uint16_t controlPort() const override { return control_api_.port(); }
  void onFatal(std::function<void(const Status&)> handler) override {
    on_fatal_ = std::move(handler);
  }

 private:
  wire::RegisterRequest registration() const;
  // The engine thread's periodic work besides decoding, once per loop turn.
  void engineTurn();
  void transferLoop();
  void stopThreads();

  const config::NodeAgentConfig config_;
  asio::io_context& io_;
  const ModelIdentity identity_;
  prometheus::Registry metrics_registry_;
  AgentMetrics metrics_;
  // The engine before the transport: the transport, destroyed first, deregisters the pools the
  // engine owns.
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<rdma::Transport> transport_;
  const std::string blob_base64_;
  // The engine thread's queue; everything below runs on it but the connector, the client, the
  // membership and the control API (io thread).
  asio::io_context engine_io_;
  asio::executor_work_guard<asio::io_context::executor_type> engine_work_{
      engine_io_.get_executor()};
  kv_transfer::PeerConnector connector_;  // stopped in stopThreads, before the transport goes
  PrefillBacklog backlog_;
  PrefillRunner prefills_;
  BatchLoop loop_;
  kv_transfer::KvReceiver receiver_;
  kv_transfer::KvSender sender_;
  EngineWorkImpl work_;
  std::shared_ptr<control_auth::Authenticator> auth_;  // null: an open control plane
  http::ClientPool client_;
  Membership membership_;
  ControlApi control_api_;
  std::function<void(const Status&)> on_fatal_;

  std::atomic<bool> stop_threads_{false};
  std::thread engine_thread_;
  std::thread transfer_thread_;
};

wire::RegisterRequest NodeAgentImpl::registration() const {
  return registrationOf(config_, identity_, control_api_.port(), engine_->kvGeometry(),
                        engine_->maxSequenceTokens(), transport_->name(), blob_base64_);
}

void NodeAgentImpl::start() {
  wire::RegisterRequest registration = this->registration();  // before the engine thread runs
  engine_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kvf-engine");
    loop_.run(engine_io_, stop_threads_, [this] { engineTurn(); });
  });
  transfer_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kvf-transfer");
    transferLoop();
  });
  control_api_.start();
  membership_.start(std::move(registration), [this](const Status& s) {
    if (on_fatal_) on_fatal_(s);
  });
}

void NodeAgentImpl::engineTurn() {
  const Clock::time_point now = Clock::now();
  receiver_.expire(now);
  sender_.retryRefused(now);
  metrics_.active_leases.Set(static_cast<double>(receiver_.leaseCount()));
  const engine::KvBlockManager& blocks = engine_->blocks();
  const uint32_t leased = std::min(receiver_.leasedBlocks(), blocks.usedBlocks());
  metrics_.setKvBlocks(blocks.usedBlocks() - leased, leased, blocks.evictableBlocks(),
                       blocks.freeBlocks());
}

void NodeAgentImpl::transferLoop() {
  std::array<rdma::Completion, 64> completions;
  std::array<rdma::ImmediateEvent, 64> immediates;
  while (!stop_threads_) {
    size_t n = transport_->pollCompletions(completions, std::chrono::microseconds(500));
    for (size_t i = 0; i < n; ++i) {
      asio::post(engine_io_, [this, c = std::move(completions[i])] { sender_.onCompletion(c); });
    }
    size_t m = transport_->pollImmediates(immediates, std::chrono::microseconds(n ? 0 : 500));
    for (size_t i = 0; i < m; ++i) {
      asio::post(engine_io_, [this, e = immediates[i]] { receiver_.onImmediate(e); });
    }
  }
}

void NodeAgentImpl::stopThreads() {
  if (stop_threads_.exchange(true)) return;
  engine_io_.stop();
  if (engine_thread_.joinable()) engine_thread_.join();
  if (transfer_thread_.joinable()) transfer_thread_.join();
  connector_.stop();
}

void NodeAgentImpl::shutdown(std::function<void()> done) {
  control_api_.drain();
  membership_.drain();
  spdlog::info("node agent: draining (up to {} ms)", config_.drain_timeout_ms);
  asio::co_spawn(
      io_,
      [this, done = std::move(done)]() -> http::Task<void> {
        auto deadline = Clock::now() + milliseconds(config_.drain_timeout_ms);
        for (;;) {
          auto ask = [this](std::shared_ptr<ReplyChannel> ch) {
            sendReply(*ch, Reply{work_.idle() ? 200u : 503u, ""});
          };  // named: GCC 12 destroys the init-captures of a lambda temporary in co_await twice
          Reply r = co_await onEngine(io_.get_executor(), engine_io_.get_executor(), ask);
          if (r.status == 200) break;
          if (Clock::now() >= deadline) {
            spdlog::warn("node agent: drain timeout; stopping with requests still running");
            break;
          }
          asio::steady_timer timer(io_, milliseconds(50));
          co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        co_await membership_.leave();
        // main destroys this agent before its io_context: no coroutine of ours may stay
        // suspended there (a heartbeat still waiting on a gone orchestrator held its connection's
        // entry in client_ and erased it from freed memory when ~io_context destroyed it).
        co_await membership_.stop();
        control_api_.stop();
        stopThreads();
        spdlog::info("node agent: stopped");
        done();
      },
      asio::detached);
}

}  // namespace

Result<std::unique_ptr<NodeAgent>> NodeAgent::create(const config::NodeAgentConfig& config,
                                                     boost::asio::io_context& io,
                                                     std::unique_ptr<engine::Engine> engine,
                                                     std::unique_ptr<rdma::Transport> transport,
                                                     ModelIdentity identity) {
  if (engine == nullptr || transport == nullptr) {
    return invalidArgument("a node agent needs an engine and a transport");
  }
  if (config.kv_checksum) RETURN_IF_ERROR(kv_transfer::checkKvChecksumSupported(*engine));
  ASSIGN_OR_RETURN(kv_transfer::KvRegions regions,
                   kv_transfer::registerKvPools(*engine, *transport));
  ASSIGN_OR_RETURN(rdma::EndpointBlob blob, transport->localBlob());
  ASSIGN_OR_RETURN(http::tcp::endpoint orchestrator,
                   http::parseEndpoint(config.orchestrator_address, "agent.orchestrator_address"));
  const engine::KvGeometry geometry = engine->kvGeometry();
  ASSIGN_OR_RETURN(std::shared_ptr<control_auth::Authenticator> auth,
                   control_auth::fromFileOrOpen(
                       config.cluster_secret_file,
                       "this agent's control API takes calls from anyone who can reach it"));
  const std::string transport_name(transport->name());
  auto agent = std::make_unique<NodeAgentImpl>(
      config, io, std::move(engine), std::move(transport), std::move(identity), std::move(regions),
      wire::base64Encode(blob), std::move(orchestrator), std::move(auth));
  RETURN_IF_ERROR(agent->listen());
  spdlog::info(
      "node agent: {} role, model {} ({} layers, {} KV blocks of {} tokens, {:.1f} MiB of KV), "
      "transport {}, control API on port {}",
      config::nodeRoleName(config.role), config.model.path, geometry.layers, geometry.num_blocks,
      geometry.block_tokens, 2.0 * geometry.layers * geometry.poolBytes() / (1 << 20),
      transport_name, agent->controlPort());
  return std::unique_ptr<NodeAgent>(std::move(agent));
}

}  // namespace kvferry::agent
