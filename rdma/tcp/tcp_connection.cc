#include "rdma/tcp/tcp_connection.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/error.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>

#include "rdma/tcp/stream_copy.h"

namespace kvferry::rdma::tcp_backend {
namespace {

// Error text payloads (acks, failed read responses) go to `message`.
Status receiveMessage(const FrameHeader& h, std::string& message, uint8_t*& dest) {
  if (h.length > wire::kMaxMessageBytes) {
    return invalidArgument("error text of " + std::to_string(h.length) + " bytes");
  }
  message.resize(h.length);
  dest = reinterpret_cast<uint8_t*>(message.data());
  return Status::ok();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Connection: sending

void Connection::flush() {
  while (!writing_ && !deferring_ && !closed_ && !queue_.empty()) {
    if (isStaged(queue_.front())) return startStagedSend(queue_.front());
    iov_.clear();
    iov_pos_ = 0;
    write_items_ = 0;
    const auto add = [this](const void* data, size_t bytes) {
      if (bytes > 0) iov_.push_back(iovec{const_cast<void*>(data), bytes});
    };
    for (const OutItem& item : queue_) {
      if (isStaged(item)) break;
      const size_t buffers = item.batch != nullptr ? item.batch->gather.size() : 3;
      if (write_items_ > 0 && iov_.size() + buffers > kMaxWriteBuffers) break;
      if (item.batch != nullptr) {
        for (const asio::const_buffer& b : item.batch->gather) add(b.data(), b.size());
      } else {
        add(&item.header, kHeaderBytes);
        add(item.payload.data(), item.payload.size());
        add(item.message.data(), item.message.size());
      }
      ++write_items_;
    }
    writing_ = true;
    if (!writeQueued()) return;
  }
}

bool Connection::writeQueued() {
  while (iov_pos_ < iov_.size()) {
    msghdr msg{};
    msg.msg_iov = &iov_[iov_pos_];
    msg.msg_iovlen = std::min(iov_.size() - iov_pos_, kMaxWriteBuffers);
    const ssize_t sent = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        socket_.async_wait(tcp::socket::wait_write,
                           [self = shared_from_this()](const boost::system::error_code& ec) {
                             if (ec) return self->onIoError(ec, "send");
                             if (self->closed_ || !self->writeQueued()) return;
                             self->flush();
                           });
        return false;
      }
      onIoError(boost::system::error_code(errno, boost::system::system_category()), "send");
      return false;
    }
    for (size_t left = static_cast<size_t>(sent); left > 0;) {
      iovec& v = iov_[iov_pos_];
      if (left < v.iov_len) {
        v.iov_base = static_cast<uint8_t*>(v.iov_base) + left;
        v.iov_len -= left;
        break;
      }
      left -= v.iov_len;
      ++iov_pos_;
    }
  }
  // Every item of the write is on the wire.
  writing_ = false;
  for (size_t i = 0; i < write_items_ && !queue_.empty(); ++i) queue_.pop_front();
  write_items_ = 0;
  if (close_after_flush_ && queue_.empty()) {
    close();
    return false;
  }
  return true;
}

void Connection::onIoError(const boost::system::error_code& ec, const char* what) {
  if (closed_) return;
  if (role_ == Role::kInitiator) {
    owner_.failPeer(
        peer_, unavailable("connection to " + remote_ + " lost (" + what + "): " + ec.message()));
  } else {
    if (ec != asio::error::eof) {
      spdlog::debug("tcp transport: connection from {} closed ({}): {}", remote_, what,
                    ec.message());
    }
    close();
  }
}

// ---------------------------------------------------------------------------------------------
// Connection: receiving. A state machine over the staging buffer: header, then payload, which
// is copied from staging or (when large and wanted) read straight into its destination.

void Connection::readMore() {
  const size_t leftover = rx_end_ - rx_begin_;
  if (leftover > 0 && rx_begin_ > 0) std::memmove(staging_.data(), &staging_[rx_begin_], leftover);
  rx_begin_ = 0;
  rx_end_ = leftover;
  socket_.async_read_some(
      asio::buffer(staging_.data() + rx_end_, staging_.size() - rx_end_),
      [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
        if (ec) return self->onIoError(ec, "receive");
        self->rx_end_ += n;
        self->process();
      });
}

void Connection::process() {
  deferring_ = true;
  processFrames();
  deferring_ = false;
  flush();
}

void Connection::processFrames() {
  while (!closed_) {
    if (!in_payload_) {
      if (rx_end_ - rx_begin_ < kHeaderBytes) return readMore();
      std::memcpy(&rx_header_, &staging_[rx_begin_], kHeaderBytes);
      rx_begin_ += kHeaderBytes;
      rx_dest_ = nullptr;
      rx_region_ = false;
      rx_device_ = false;
      rx_done_ = 0;
      rx_left_ = rx_header_.length;
      if (rx_header_.magic != wire::kFrameMagic) {
        return onIoError(asio::error::make_error_code(asio::error::invalid_argument),
                         "bad frame magic");
      }
      if (Status s = onHeader(); !s.isOk()) {
        spdlog::warn("tcp transport: protocol error from {}: {}", remote_, s.toString());
        return onIoError(asio::error::make_error_code(asio::error::invalid_argument),
                         "protocol error");
      }
      in_payload_ = true;
      continue;
    }
    if (rx_left_ > 0 && rx_device_) {
      if (!receiveToDevice()) return;  // a read, a wake-up or a failure resumes (or ends) it
      continue;
    }
    if (rx_left_ > 0) {
      const size_t avail = rx_end_ - rx_begin_;
      if (avail > 0) {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(avail, rx_left_));
        if (rx_region_) {
          streamCopy(rx_dest_ + rx_done_, &staging_[rx_begin_], take);
        } else if (rx_dest_ != nullptr) {
          std::memcpy(rx_dest_ + rx_done_, &staging_[rx_begin_], take);
        }
        rx_begin_ += take;
        rx_done_ += take;
        rx_left_ -= take;
        continue;
      }
      // What is left of a payload this large is read straight into its place; a smaller one
      // through staging and streamCopy(), which is quicker than the kernel's copy into a cold
      // place of a large pool.
      const bool direct = rx_dest_ != nullptr && rx_left_ >= owner_.config().direct_receive_bytes;
      if (direct && rx_batch_ && !rx_in_table_) {
        scatterRead();
        return;
      }
      if (direct) {
        asio::async_read(
            socket_, asio::buffer(rx_dest_ + rx_done_, rx_left_),
            [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
              if (ec) return self->onIoError(ec, "receive");
              self->rx_done_ += n;
              self->rx_left_ = 0;
              self->process();
            });
        return;
      }
      return readMore();
    }
    if (rx_batch_) {
      if (Status s = nextBatchPart(); !s.isOk()) {
        spdlog::warn("tcp transport: protocol error from {}: {}", remote_, s.toString());
        return onIoError(asio::error::make_error_code(asio::error::invalid_argument),
                         "protocol error");
      }
      if (rx_batch_) continue;  // the next op of the batch
    }
    in_payload_ = false;
    if (!drainAtFrameEnd()) return;  // onReceiveCopied() finishes the frame and resumes
    finishFrame();
  }
}

Status Connection::nextBatchPart() {
  const size_t ops = rx_table_.size();
  if (rx_in_table_) {
    rx_in_table_ = false;
    rx_op_dest_.assign(ops, nullptr);
    rx_op_device_.assign(ops, false);
    uint64_t total = 0;
    for (size_t i = 0; i < ops; ++i) {
      const wire::WriteOp& op = rx_table_[i];
      if (op.length > UINT64_MAX - total) return invalidArgument("write batch: lengths overflow");
      total += op.length;
      Status ok = batch_pins_.add(owner_.regions(), op.region, op.offset, op.length, "write");
      if (!ok.isOk()) {
        if (batch_error_.isOk()) batch_error_ = ok;  // refused: its bytes are read and dropped
        continue;
      }
      rx_op_dest_[i] = batch_pins_.data(batch_pins_.size() - 1);
      rx_op_device_[i] = batch_pins_.kind(batch_pins_.size() - 1).type == MemoryKind::Type::kCuda;
    }
    const uint64_t carried = rx_header_.length - ops * sizeof(wire::WriteOp);
    if (total != carried) {
      return invalidArgument("write batch: its ops hold " + std::to_string(total) +
                             " bytes, the frame carries " + std::to_string(carried));
    }
    rx_op_ = 0;
  } else {
    ++rx_op_;
  }
  while (rx_op_ < ops && rx_table_[rx_op_].length == 0) ++rx_op_;
  if (rx_op_ == ops) {
    rx_batch_ = false;  // every op arrived: the frame ends
    return Status::ok();
  }
  rx_dest_ = rx_op_dest_[rx_op_];
  rx_region_ = rx_dest_ != nullptr;
  rx_device_ = rx_op_device_[rx_op_];
  rx_done_ = 0;
  rx_left_ = rx_table_[rx_op_].length;
  return Status::ok();
}

void Connection::scatterRead() {
  scatter_.clear();
  scatter_.emplace_back(rx_dest_ + rx_done_, rx_left_);
  for (size_t i = rx_op_ + 1; i < rx_table_.size() && scatter_.size() < kMaxScatterOps; ++i) {
    if (rx_op_dest_[i] == nullptr || rx_op_device_[i]) break;
    if (rx_table_[i].length > 0) scatter_.emplace_back(rx_op_dest_[i], rx_table_[i].length);
  }
  socket_.async_read_some(
      scatter_, [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
        if (ec) return self->onIoError(ec, "receive");
        // The bytes filled the ops in order; each op completed on the way is moved past.
        while (n > 0) {
          const size_t take = static_cast<size_t>(std::min<uint64_t>(n, self->rx_left_));
          self->rx_done_ += take;
          self->rx_left_ -= take;
          n -= take;
          if (n == 0 || !self->rx_batch_) break;
          self->nextBatchPart().ignoreError();  // past the table it cannot fail
        }
        self->process();
      });
}

void Connection::finishFrame() {
  if (closed_) return;
  streamFence();  // the frame's bytes are in its regions before its ack or immediate says so
  Status s = onFrameEnd();
  if (!s.isOk()) {
    spdlog::warn("tcp transport: protocol error from {}: {}", remote_, s.toString());
    onIoError(asio::error::make_error_code(asio::error::invalid_argument), "protocol error");
  }
}

Status Connection::onHeader() {
  return role_ == Role::kTarget ? onTargetHeader() : onInitiatorHeader();
}
Status Connection::onFrameEnd() {
  return role_ == Role::kTarget ? onTargetFrameEnd() : onInitiatorFrameEnd();
}

void Connection::replyStatus(Opcode opcode, uint64_t request_id, uint32_t op_index,
                             const Status& status) {
  FrameHeader h;
  h.opcode = opcode;
  h.request_id = request_id;
  h.op_index = op_index;
  h.status = static_cast<uint16_t>(status.code());
  std::string text = status.isOk() ? std::string() : status.message();
  if (text.size() > wire::kMaxMessageBytes) text.resize(wire::kMaxMessageBytes);
  h.length = text.size();
  sendFrame(h, {}, std::nullopt, std::move(text));
}

Status Connection::onTargetHeader() {
  const FrameHeader& h = rx_header_;
  if (!hello_done_) {
    if (h.opcode != Opcode::kHello || h.length != 0) return invalidArgument("expected a hello");
    hello_done_ = true;
    source_id_ = h.request_id;
    Status verdict;
    if (h.region != wire::kProtocolVersion) {
      verdict =
          failedPrecondition("protocol version " + std::to_string(h.region) +
                             ", this endpoint speaks " + std::to_string(wire::kProtocolVersion));
    } else if (h.offset != owner_.endpointId()) {
      // The endpoint id is the capability only the blob carries (and the orchestrator hands
      // out): never tell it to a caller who does not have it.
      verdict = failedPrecondition(
          "stale endpoint blob: it names endpoint " + std::to_string(h.offset) +
          ", not this one (the peer restarted, or the caller was never introduced to it)");
    }
    if (!verdict.isOk()) {
      spdlog::warn("tcp transport: refused a connection from endpoint {}: {}", source_id_,
                   verdict.message());
    }
    replyStatus(Opcode::kHelloAck, 0, 0, verdict);
    if (!verdict.isOk()) close_after_flush_ = true;
    return Status::ok();
  }
  switch (h.opcode) {
    case Opcode::kWriteBatch: {
      const uint64_t ops = h.op_index;
      if (ops == 0 || ops > config::kMaxBatchOps || h.length < ops * sizeof(wire::WriteOp)) {
        return invalidArgument("write batch of " + std::to_string(ops) + " ops in " +
                               std::to_string(h.length) + " bytes");
      }
      // The table first (into rx_table_); nextBatchPart() then takes the ops one by one.
      rx_table_.resize(ops);
      rx_dest_ = reinterpret_cast<uint8_t*>(rx_table_.data());
      rx_left_ = ops * sizeof(wire::WriteOp);
      rx_batch_ = true;
      rx_in_table_ = true;
      return Status::ok();
    }
    case Opcode::kReadRequest: {
      rx_left_ = 0;  // a read request carries no payload: its length is the size wanted
      Result<RegionTable::Pin> pin = owner_.regions().pin(h.region, h.offset, h.length, "read");
      if (!pin.isOk()) {
        replyStatus(Opcode::kReadResponse, h.request_id, h.op_index, pin.status());
        return Status::ok();
      }
      FrameHeader resp;
      resp.opcode = Opcode::kReadResponse;
      resp.request_id = h.request_id;
      resp.op_index = h.op_index;
      resp.length = h.length;
      asio::const_buffer payload(pin->data, h.length);
      sendFrame(resp, payload, std::move(pin).value(), {});
      return Status::ok();
    }
    default:
      return invalidArgument("unexpected opcode " + std::to_string(static_cast<int>(h.opcode)) +
                             " at a target");
  }
}

Status Connection::onTargetFrameEnd() {
  const FrameHeader& h = rx_header_;
  if (h.opcode != Opcode::kWriteBatch) return Status::ok();
  // The whole batch is in the region (or refused): deliver the immediate, then acknowledge.
  if (batch_error_.isOk() && (h.flags & wire::kFlagImm)) owner_.deliverImmediate(source_id_, h.imm);
  replyStatus(Opcode::kAck, h.request_id, 0, batch_error_);
  batch_error_ = Status::ok();
  batch_pins_.clear();
  return Status::ok();
}

Status Connection::onInitiatorHeader() {
  const FrameHeader& h = rx_header_;
  switch (h.opcode) {
    case Opcode::kAck:
      return receiveMessage(h, rx_message_, rx_dest_);
    case Opcode::kReadResponse: {
      if (h.status != 0) return receiveMessage(h, rx_message_, rx_dest_);
      ASSIGN_OR_RETURN(ReadDestination dest,
                       owner_.readDestination(h.request_id, h.op_index, h.length));
      rx_dest_ = dest.data;
      rx_region_ = true;
      rx_device_ = dest.device;
      return Status::ok();
    }
    default:
      return invalidArgument("unexpected opcode " + std::to_string(static_cast<int>(h.opcode)) +
                             " at an initiator");
  }
}

Status Connection::onInitiatorFrameEnd() {
  const FrameHeader& h = rx_header_;
  Status status = h.status == 0 ? Status::ok() : Status(wire::statusCodeOf(h.status), rx_message_);
  if (!status.isOk()) status = status.withContext("target " + remote_);
  const bool known = h.opcode == Opcode::kAck ? owner_.completeRequest(h.request_id, status)
                                              : owner_.readResponseDone(h.request_id, status);
  if (!known) return internalError("answer for unknown request " + std::to_string(h.request_id));
  return Status::ok();
}

}  // namespace kvferry::rdma::tcp_backend
