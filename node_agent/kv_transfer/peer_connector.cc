#include "node_agent/kv_transfer/peer_connector.h"

#include <pthread.h>

#include <algorithm>
#include <boost/asio/post.hpp>

namespace kvferry::agent::kv_transfer {

PeerConnector::PeerConnector(rdma::Transport& transport, unsigned threads) : transport_(transport) {
  for (unsigned i = 0; i < std::max(threads, 1u); ++i) {
    threads_.emplace_back([this] {
      pthread_setname_np(pthread_self(), "kvf-connect");
      io_.run();
    });
  }
}

void PeerConnector::connect(rdma::EndpointBlob blob, boost::asio::any_io_executor reply_to,
                            Done done) {
  boost::asio::post(io_, [this, blob = std::move(blob), reply_to = std::move(reply_to),
                          done = std::move(done)]() mutable {
    Result<rdma::PeerId> peer = transport_.connect(blob);
    boost::asio::post(reply_to, [done = std::move(done), peer = std::move(peer)]() mutable {
      done(std::move(peer));
    });
  });
}

void PeerConnector::stop() {
  work_.reset();
  io_.stop();
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();
}

}  // namespace kvferry::agent::kv_transfer
