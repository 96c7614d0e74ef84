// Connects to peers off the engine thread. Transport::connect() blocks for up to the connect
// timeout × (retries + 1) plus backoff (about 20 s with the defaults) when a peer is slow or dead;
// run on the engine thread it would stall every decoding sequence. Like NCCL's non-blocking net
// connect, connect() here returns at once: the connect runs on one of the connector's threads
// ("kvf-connect") and its result is posted to the executor the caller names.
//
// Thread: connect() may be called from any thread (the engine thread does). stop() (and the
// destructor) joins the threads, waiting for connects in progress to return, and drops those
// not started; it must run before the transport is destroyed.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <thread>
#include <vector>

#include "common/status.h"
#include "rdma/transport.h"

namespace kvferry::agent::kv_transfer {

class PeerConnector {
 public:
  // Connects to different peers run in parallel on up to `threads` threads, so a dead peer does
  // not hold up the others.
  explicit PeerConnector(rdma::Transport& transport, unsigned threads = 4);
  ~PeerConnector() { stop(); }
  PeerConnector(const PeerConnector&) = delete;
  PeerConnector& operator=(const PeerConnector&) = delete;

  using Done = std::function<void(Result<rdma::PeerId>)>;
  // Starts transport.connect(blob); `done` runs on `reply_to` with the result.
  void connect(rdma::EndpointBlob blob, boost::asio::any_io_executor reply_to, Done done);
  void stop();

 private:
  rdma::Transport& transport_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      io_.get_executor()};
  std::vector<std::thread> threads_;
};

}  // namespace kvferry::agent::kv_transfer
