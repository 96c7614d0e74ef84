// Connection: moving bytes of CUDA regions through the transport's pinned staging rings
// (staging_ring.h). Every member runs on the progress thread.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cstring>

#include "rdma/tcp/tcp_connection.h"

namespace kvferry::rdma::tcp_backend {

// ---------------------------------------------------------------------------------------------
// Sending: the frame stream of the item at the front of the queue is laid into send-ring chunks;
// each chunk's device bytes are copied device→host in one batched copy, and chunks go on the
// wire in order as their copies complete, while the next chunks are being copied.

bool Connection::isStaged(const OutItem& item) const {
  return item.batch != nullptr ? item.batch->staged : item.staged;
}

void Connection::startStagedSend(const OutItem& item) {
  if (owner_.staging() == nullptr) {
    return onStagingError(internalError("a CUDA payload to send, but no staging rings"));
  }
  writing_ = true;
  staged_sending_ = true;
  send_segments_ = item.batch != nullptr ? std::span<const Segment>(item.batch->segments)
                                         : std::span<const Segment>(item.segments);
  send_cursor_ = {};
  fillStaged();
}

void Connection::fillStaged() {
  send_waiting_ = false;
  if (closed_ || !staged_sending_) return;
  StagingRing& ring = *owner_.staging()->send;
  while (!send_cursor_.atEnd(send_segments_)) {
    std::optional<uint32_t> chunk = ring.acquire([self = shared_from_this()] {
      if (self->send_waiting_) self->fillStaged();
    });
    if (!chunk) {
      send_waiting_ = true;  // backpressure: the ring is full
      break;
    }
    SendChunk sc;
    sc.index = *chunk;
    sc.bytes = packChunk(send_segments_, send_cursor_, {ring.data(*chunk), ring.chunkBytes()},
                         send_pieces_);
    sc.ready = send_pieces_.empty();  // host bytes only: nothing to wait for
    send_chunks_.push_back(sc);
    if (sc.ready) continue;
    Status copying = ring.copy(*chunk, send_pieces_,
                               [self = shared_from_this()](uint32_t c) { self->onSendCopied(c); });
    if (!copying.isOk()) {
      send_chunks_.back().ready = true;  // no copy in flight: abandonStaging() releases it
      return onStagingError(copying);
    }
  }
  pumpStaged();
}

void Connection::onSendCopied(uint32_t chunk) {
  auto it = std::find_if(send_chunks_.begin(), send_chunks_.end(),
                         [chunk](const SendChunk& c) { return c.index == chunk; });
  if (it == send_chunks_.end()) return;
  if (closed_) {
    owner_.staging()->send->release(chunk);
    send_chunks_.erase(it);
    return;
  }
  it->ready = true;
  pumpStaged();
}

void Connection::pumpStaged() {
  if (closed_ || !staged_sending_) return;
  if (send_chunks_.empty()) {
    if (!send_cursor_.atEnd(send_segments_)) return;  // waiting for a free chunk
    staged_sending_ = false;
    writing_ = false;
    send_segments_ = {};
    queue_.pop_front();
    if (close_after_flush_ && queue_.empty()) return close();
    return flush();
  }
  SendChunk& front = send_chunks_.front();
  if (!front.ready || front.on_wire) return;
  front.on_wire = true;
  const uint8_t* data = owner_.staging()->send->data(front.index);
  asio::async_write(socket_, asio::buffer(data, front.bytes),
                    [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                      // The chunk on the wire is always the front one.
                      self->owner_.staging()->send->release(self->send_chunks_.front().index);
                      self->send_chunks_.pop_front();
                      if (ec) return self->onIoError(ec, "send");
                      self->fillStaged();
                    });
}

// ---------------------------------------------------------------------------------------------
// Receiving: a payload bound for device memory is received into receive-ring chunks, and each
// full chunk is copied host→device in one batched copy while the next one fills. At a completion
// point (a write batch's last frame, a read response) the partial chunk is copied too and the
// frame ends only once every copy has completed: then the bytes are in device memory.

bool Connection::receiveToDevice() {
  if (!rx_stage_) {
    const StagingRings* rings = owner_.staging();
    if (rings == nullptr) {
      onStagingError(internalError("a payload for a CUDA region, but no staging rings"));
      return false;
    }
    rx_stage_ = std::make_unique<RxStager>(*rings->receive);
  }
  std::span<uint8_t> space = rx_stage_->space([self = shared_from_this()] {
    if (!self->rx_waiting_ || self->closed_) return;
    self->rx_waiting_ = false;
    self->process();
  });
  if (space.empty()) {
    rx_waiting_ = true;  // backpressure: the socket is not read until a chunk frees
    return false;
  }
  const size_t want = static_cast<size_t>(std::min<uint64_t>(space.size(), rx_left_));
  const size_t avail = rx_end_ - rx_begin_;
  if (avail > 0) {
    const size_t take = std::min(avail, want);
    std::memcpy(space.data(), &staging_[rx_begin_], take);
    rx_begin_ += take;
    commitReceived(take);
    return !closed_;
  }
  if (rx_left_ >= owner_.config().direct_receive_bytes) {
    asio::async_read(socket_, asio::buffer(space.data(), want),
                     [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                       if (ec) return self->onIoError(ec, "receive");
                       self->commitReceived(n);
                       self->process();
                     });
    return false;
  }
  readMore();
  return false;
}

void Connection::commitReceived(size_t bytes) {
  const bool full = rx_stage_->commit(rx_dest_ + rx_done_, bytes);
  rx_done_ += bytes;
  rx_left_ -= bytes;
  if (!full) return;
  Status s = rx_stage_->flush(
      [self = shared_from_this()](uint32_t chunk) { self->onReceiveCopied(chunk); });
  if (!s.isOk()) onStagingError(s);
}

bool Connection::drainAtFrameEnd() {
  if (!rx_stage_) return true;
  // A write batch is one frame, so its small ops have shared chunks; its end is a completion
  // point like a read response's.
  Status s = rx_stage_->flush(
      [self = shared_from_this()](uint32_t chunk) { self->onReceiveCopied(chunk); });
  if (!s.isOk()) {
    onStagingError(s);
    return false;
  }
  if (rx_stage_->idle()) return true;
  rx_draining_ = true;
  return false;
}

void Connection::onReceiveCopied(uint32_t chunk) {
  rx_stage_->onCopied(chunk);
  if (closed_) {
    // The batch's regions stayed registered until its last copy landed.
    if (rx_stage_->idle()) batch_pins_.clear();
    return;
  }
  if (!rx_draining_ || !rx_stage_->idle()) return;
  rx_draining_ = false;
  finishFrame();
  process();
}

void Connection::onStagingError(const Status& status) {
  spdlog::error("tcp transport: staging through pinned memory failed on the connection with {}: {}",
                remote_, status.toString());
  if (role_ == Role::kInitiator) {
    owner_.failPeer(peer_, status.withContext("connection to " + remote_));
  } else {
    close();
  }
}

void Connection::abandonStaging() {
  if (rx_stage_) rx_stage_->abandon();
  // Copies still landing in the batch's regions keep them registered; the last one clears them.
  if (!rx_stage_ || rx_stage_->idle()) batch_pins_.clear();
  rx_waiting_ = false;
  rx_draining_ = false;
  if (const StagingRings* rings = owner_.staging(); rings != nullptr) {
    for (auto it = send_chunks_.begin(); it != send_chunks_.end();) {
      if (it->ready && !it->on_wire) {
        rings->send->release(it->index);
        it = send_chunks_.erase(it);
      } else {
        ++it;
      }
    }
  }
  staged_sending_ = false;
  send_waiting_ = false;
}

}  // namespace kvferry::rdma::tcp_backend
