// The QP exchange over TCP: the initiator sends its GID, LID, MTU and each QP's number and PSN
// (HandshakeMsg), the target creates as many QPs, brings both ends to RTS and answers with
// its own. The connection then stays open on both sides: its EOF is how either side learns
// that the other process is gone.
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstdio>
#include <future>

#include "common/coroutine_rules.h"
#include "rdma/dial.h"
#include "rdma/verbs/verbs_transport_impl.h"

namespace kvferry::rdma::verbs_backend {
namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

// The target's answer, once it came: a peer that answered is not asked again.
Status checkReply(HandshakeMsg& reply, const std::string& where, uint32_t num_qps) {
  if (reply.magic != kHandshakeMagic || reply.version != kHandshakeVersion) {
    return unavailable(where + " is not a kvferry verbs endpoint");
  }
  if (reply.status != 0) {
    reply.message[sizeof reply.message - 1] = '\0';
    return Status(static_cast<StatusCode>(reply.status), reply.message)
        .withContext(where + " refused the connection");
  }
  if (reply.num_qps != num_qps) return internalError("peer answered with a different QP count");
  return Status::ok();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Initiator side

Result<PeerId> VerbsTransport::connect(const EndpointBlob& peer_blob) {
  ASSIGN_OR_RETURN(EndpointInfo info, decodePeerBlob(peer_blob));
  const std::string address(info.address.begin(), info.address.end());
  ASSIGN_OR_RETURN(tcp::endpoint ep, ipEndpoint(address, "blob address"));
  const uint32_t n = std::min(config_.connections_per_peer, kMaxQpsPerPeer);

  auto peer = std::make_shared<Peer>();
  peer->info = std::move(info);
  peer->cq.reset(
      ibv_create_cq(ctx_.get(), static_cast<int>(n * sq_depth_) + 1, nullptr, channel_.get(), 0));
  if (!peer->cq) return ioError("ibv_create_cq", errno);
  HandshakeMsg request;
  fillLocal(request);
  request.to_endpoint = peer->info.endpoint_id;
  request.num_qps = n;
  for (uint32_t i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(verbs::QueuePair qp, createQp(peer->cq.get(), sq_depth_, false));
    auto state = std::make_unique<QpState>();
    state->qp = std::move(qp);
    // The peer's byte budget, shared evenly by its connections (round up: never 0 when set).
    state->budget = {sq_depth_, (uint64_t{config_.verbs.max_inflight_bytes} + n - 1) / n};
    request.qpn[i] = state->qp->qp_num;
    request.psn[i] = randomPsn();
    peer->qps.push_back(std::move(state));
  }

  // Exchange over TCP, with the connect timeout and retries of the config. A refusal, or an
  // answer that is not a verbs endpoint's, is final; a connection that failed is retried.
  HandshakeMsg reply;
  bool refused = false;
  const Handshake exchange = [&](tcp::socket& socket) {
    return exchangeQps(socket, request, reply, address, &refused);
  };
  const auto timeout = std::chrono::milliseconds(config_.connect_timeout_ms);
  Status exchanged = retryWithBackoff(
      DialPolicy::fromConfig(config_), "verbs transport: handshake with " + address,
      [&]() -> Status {
        ASSIGN_OR_RETURN(tcp::socket socket,
                         dialOnce(io_, ep, timeout, nullptr, exchange, address));
        peer->handshake = std::make_shared<tcp::socket>(std::move(socket));
        return Status::ok();
      },
      [&](const Status&) { return !refused; });
  if (!exchanged.isOk()) return exchanged;

  for (uint32_t i = 0; i < n; ++i) {
    RETURN_IF_ERROR(toRtr(peer->qps[i]->qp.get(), reply, i));
    RETURN_IF_ERROR(toRts(peer->qps[i]->qp.get(), request.psn[i]));
  }
  {
    std::lock_guard lock(peers_mu_);
    peer->id = next_peer_++;
    peers_.emplace(peer->id, peer);
    ++peers_version_;
  }
  asio::co_spawn(io_, watchPeer(peer, peer->handshake), asio::detached);
  spdlog::info("verbs transport: connected to {} as peer {} ({} RC QPs)", address, peer->id, n);
  return peer->id;
}

asio::awaitable<Status> VerbsTransport::exchangeQps(tcp::socket& socket,
                                                    const HandshakeMsg& request,
                                                    HandshakeMsg& reply, std::string where,
                                                    bool* refused) {
  auto [sent, sent_bytes] =
      co_await asio::async_write(socket, asio::buffer(&request, sizeof request), kNoThrow);
  if (sent) co_return unavailable("handshake: " + sent.message());
  auto [got, got_bytes] =
      co_await asio::async_read(socket, asio::buffer(&reply, sizeof reply), kNoThrow);
  if (got) co_return unavailable("handshake reply: " + got.message());
  Status verdict = checkReply(reply, where, request.num_qps);
  *refused = !verdict.isOk();
  co_return verdict;
}

// The handshake connection stays open: EOF means the peer process is gone. The watch holds the
// peer weakly: only peers_ and the progress thread own QPs, so teardown order stays ours.
asio::awaitable<void> VerbsTransport::watchPeer(std::weak_ptr<Peer> weak,
                                                std::shared_ptr<tcp::socket> socket) {
  uint8_t byte = 0;
  auto [ec, n] = co_await asio::async_read(*socket, asio::buffer(&byte, 1), kNoThrow);
  std::shared_ptr<Peer> peer = weak.lock();
  if (stop_ || !peer || peer->broken) co_return;
  failPeer(*peer,
           unavailable("peer endpoint closed its handshake connection (" + ec.message() + ")"));
}

Status VerbsTransport::disconnect(PeerId id) {
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard lock(peers_mu_);
    auto it = peers_.find(id);
    if (it == peers_.end()) return notFound("no peer " + std::to_string(id));
    peer = it->second;
    peers_.erase(it);
    ++peers_version_;
  }
  failPeer(*peer, cancelled("disconnected"));
  std::promise<void> closed;
  asio::post(io_, [&] {
    boost::system::error_code ignored;
    if (peer->handshake) peer->handshake->close(ignored);
    closed.set_value();
  });
  closed.get_future().wait();
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// Target side

void VerbsTransport::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) asio::co_spawn(io_, serveHandshake(std::move(socket)), asio::detached);
    accept();
  });
}

// One initiator: its request, its QPs and our answer, then its connection held open; when the
// initiator goes away (EOF), so do its QPs. Across a suspension the frame holds no verbs object
// (the Inbound is in inbound_ before the answer is written), only `kept` to find it again.
asio::awaitable<void> VerbsTransport::serveHandshake(tcp::socket socket) {
  HandshakeMsg request;
  auto [read, read_bytes] =
      co_await asio::async_read(socket, asio::buffer(&request, sizeof request), kNoThrow);
  if (read) co_return;
  HandshakeMsg reply;
  auto inbound = std::make_unique<Inbound>();
  Status accepted = acceptPeer(request, reply, *inbound);
  Inbound* kept = nullptr;
  if (accepted.isOk()) {
    kept = inbound.get();
    std::lock_guard lock(inbound_mu_);
    for (const auto& qp : inbound->qps) source_of_qpn_[qp->qp_num] = inbound->source_id;
    inbound_.push_back(std::move(inbound));
  } else {
    spdlog::warn("verbs transport: refused a connection: {}", accepted.toString());
    reply.status = static_cast<uint32_t>(accepted.code());
    std::snprintf(reply.message, sizeof reply.message, "%s", accepted.message().c_str());
    inbound.reset();  // QPs made before the refusal go now, not with the frame
  }
  auto [wrote, wrote_bytes] =
      co_await asio::async_write(socket, asio::buffer(&reply, sizeof reply), kNoThrow);
  if (wrote || kept == nullptr) co_return;
  uint8_t byte = 0;
  // Whatever ends the read (EOF, a reset) means the initiator is gone.
  co_await asio::async_read(socket, asio::buffer(&byte, 1), kNoThrow);
  if (stop_) co_return;
  std::lock_guard lock(inbound_mu_);
  for (auto it = inbound_.begin(); it != inbound_.end(); ++it) {
    if (it->get() != kept) continue;
    for (const auto& qp : kept->qps) source_of_qpn_.erase(qp->qp_num);
    inbound_.erase(it);
    break;
  }
}

Status VerbsTransport::acceptPeer(const HandshakeMsg& request, HandshakeMsg& reply,
                                  Inbound& inbound) {
  fillLocal(reply);
  reply.to_endpoint = request.from_endpoint;
  if (request.magic != kHandshakeMagic || request.version != kHandshakeVersion) {
    return failedPrecondition("not a kvferry verbs handshake (or another protocol version)");
  }
  if (request.to_endpoint != endpoint_id_) {
    // The endpoint id is the capability only the blob carries: not told to who lacks it.
    reply.from_endpoint = 0;
    return failedPrecondition(
        "stale endpoint blob: it names endpoint " + std::to_string(request.to_endpoint) +
        ", not this one (the peer restarted, or the caller was never introduced to it)");
  }
  if (request.num_qps == 0 || request.num_qps > kMaxQpsPerPeer) {
    return invalidArgument("bad QP count " + std::to_string(request.num_qps));
  }
  inbound.source_id = request.from_endpoint;
  reply.num_qps = request.num_qps;
  for (uint32_t i = 0; i < request.num_qps; ++i) {
    // The target's QPs never send: a send queue of 1, receives from the shared queue.
    ASSIGN_OR_RETURN(verbs::QueuePair qp, createQp(recv_cq_.get(), 1, true));
    reply.qpn[i] = qp->qp_num;
    reply.psn[i] = randomPsn();
    RETURN_IF_ERROR(toRtr(qp.get(), request, i));
    RETURN_IF_ERROR(toRts(qp.get(), reply.psn[i]));
    inbound.qps.push_back(std::move(qp));
  }
  return Status::ok();
}

}  // namespace kvferry::rdma::verbs_backend
