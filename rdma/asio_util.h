// Boost.Asio helpers shared by the backends that speak TCP (the tcp data plane, the verbs
// handshake): "host:port" → endpoint, and a listening acceptor, each with a clear error.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <string>
#include <string_view>

#include "common/status.h"
#include "config/config.h"

namespace kvferry::rdma {

// `what` names the value in errors ("transport.listen_address", "blob address").
inline Result<boost::asio::ip::tcp::endpoint> ipEndpoint(std::string_view host_port,
                                                         std::string_view what) {
  ASSIGN_OR_RETURN(config::HostPort hp, config::parseHostPort(host_port));
  boost::system::error_code ec;
  boost::asio::ip::address addr = boost::asio::ip::make_address(hp.host, ec);
  if (ec) {
    return invalidArgument(std::string(what) + " '" + std::string(host_port) +
                           "': host must be an IP address (" + ec.message() + ")");
  }
  return boost::asio::ip::tcp::endpoint(addr, hp.port);
}

inline std::string endpointText(const boost::asio::ip::tcp::endpoint& ep) {
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

// Opens, binds and listens; `configure(acceptor, ec)` runs between open and bind (socket
// options that accepted sockets inherit).
template <typename Configure>
Status listenOn(boost::asio::ip::tcp::acceptor& acceptor, std::string_view address,
                Configure&& configure) {
  ASSIGN_OR_RETURN(boost::asio::ip::tcp::endpoint ep,
                   ipEndpoint(address, "transport.listen_address"));
  boost::system::error_code ec;
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (!ec) configure(acceptor, ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) return unavailable("listen on " + std::string(address) + ": " + ec.message());
  return Status::ok();
}

}  // namespace kvferry::rdma
