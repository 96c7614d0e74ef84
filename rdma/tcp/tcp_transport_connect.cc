// TcpTransport: the hello exchange, connecting to a peer and disconnecting from it.
#include <future>

#include "common/coroutine_rules.h"
#include "rdma/dial.h"
#include "rdma/tcp/tcp_transport_impl.h"

namespace kvferry::rdma::tcp_backend {
namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

}  // namespace

asio::awaitable<Status> TcpTransport::sayHello(tcp::socket& socket, std::string where,
                                               uint64_t target_id) {
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  FrameHeader hello;
  hello.opcode = Opcode::kHello;
  hello.region = wire::kProtocolVersion;
  hello.request_id = endpoint_id_;
  hello.offset = target_id;
  auto [sent, sent_bytes] =
      co_await asio::async_write(socket, asio::buffer(&hello, kHeaderBytes), kNoThrow);
  if (sent) co_return unavailable("hello to " + where + ": " + sent.message());
  FrameHeader reply;
  auto [got, got_bytes] =
      co_await asio::async_read(socket, asio::buffer(&reply, kHeaderBytes), kNoThrow);
  if (got) co_return unavailable("hello from " + where + ": " + got.message());
  if (reply.magic != wire::kFrameMagic || reply.opcode != Opcode::kHelloAck ||
      reply.length > wire::kMaxMessageBytes) {
    co_return unavailable(where + " is not a kvferry tcp endpoint");
  }
  std::string message(reply.length, '\0');
  auto [text, text_bytes] = co_await asio::async_read(socket, asio::buffer(message), kNoThrow);
  if (text) co_return unavailable("hello from " + where + ": " + text.message());
  if (reply.status != 0) {
    co_return Status(wire::statusCodeOf(reply.status), message)
        .withContext(where + " refused the connection");
  }
  co_return Status::ok();
}

Status TcpTransport::connectAll(const tcp::endpoint& ep, const std::string& where,
                                uint64_t target_id,
                                std::vector<std::shared_ptr<Connection>>& conns) {
  const SocketSetup setup = [this](tcp::socket& s, boost::system::error_code& ec) {
    setBufferSizes(s, ec);
  };
  const Handshake hello = [this, where, target_id](tcp::socket& s) {
    return sayHello(s, where, target_id);
  };
  const auto timeout = std::chrono::milliseconds(config_.connect_timeout_ms);
  conns.clear();
  for (uint32_t i = 0; i < config_.connections_per_peer; ++i) {
    ASSIGN_OR_RETURN(tcp::socket socket, dialOnce(io_, ep, timeout, setup, hello, where));
    conns.push_back(
        std::make_shared<Connection>(*this, std::move(socket), Connection::Role::kInitiator));
  }
  return Status::ok();
}

Result<PeerId> TcpTransport::connect(const EndpointBlob& peer_blob) {
  ASSIGN_OR_RETURN(EndpointInfo info, decodePeerBlob(peer_blob));
  const std::string address(info.address.begin(), info.address.end());
  ASSIGN_OR_RETURN(tcp::endpoint ep, ipEndpoint(address, "blob address"));

  std::vector<std::shared_ptr<Connection>> conns;
  Status connected = retryWithBackoff(
      DialPolicy::fromConfig(config_), "tcp transport: connect to " + address,
      [&] { return connectAll(ep, address, info.endpoint_id, conns); },
      // A refusal (stale blob, wrong version) will not change on retry.
      [](const Status& s) { return s.code() != StatusCode::kFailedPrecondition; });
  if (!connected.isOk()) {
    // Connections already made close on the progress thread, where their sockets live.
    asio::post(io_, [conns = std::move(conns)] {
      for (auto& c : conns) c->close();
    });
    return connected;
  }

  PeerId id = 0;
  {
    std::lock_guard lock(peers_mu_);
    id = next_peer_++;
    auto peer = std::make_unique<Peer>();
    peer->info = std::move(info);
    peer->connections = conns;
    for (auto& c : conns) c->setPeer(id);
    peers_.emplace(id, std::move(peer));
  }
  asio::post(io_, [conns = std::move(conns)] {
    for (auto& c : conns) c->start();
  });
  spdlog::info("tcp transport: connected to {} as peer {} ({} connections)", address, id,
               config_.connections_per_peer);
  return id;
}

Status TcpTransport::disconnect(PeerId peer) {
  {
    std::lock_guard lock(peers_mu_);
    if (peers_.find(peer) == peers_.end()) return notFound("no peer " + std::to_string(peer));
  }
  std::promise<void> done;
  asio::post(io_, [&] {
    failPeer(peer, cancelled("disconnected"));
    std::lock_guard lock(peers_mu_);
    peers_.erase(peer);
    done.set_value();
  });
  done.get_future().wait();
  return Status::ok();
}

}  // namespace kvferry::rdma::tcp_backend
