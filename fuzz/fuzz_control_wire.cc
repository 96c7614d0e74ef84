// libFuzzer target: the control plane's JSON bodies (common/control_wire.h), each message type
// both sides decode, and the base64 of endpoint blobs. The first byte picks the type; a decoded
// message must encode and decode to itself again.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/control_wire.h"

namespace {

using namespace kvferry::wire;

template <typename T>
void roundTrip(std::string_view json) {
  auto first = decode<T>(json);
  if (!first.isOk()) return;
  auto again = decode<T>(encode(*first));
  if (!again.isOk()) std::abort();  // what we encode, we must read
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view json(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 14) {
    case 0:
      roundTrip<RegisterRequest>(json);
      break;
    case 1:
      roundTrip<RegisterResponse>(json);
      break;
    case 2:
      roundTrip<HeartbeatRequest>(json);
      break;
    case 3:
      roundTrip<HeartbeatResponse>(json);
      break;
    case 4:
      roundTrip<LeaveRequest>(json);
      break;
    case 5:
      roundTrip<ReserveRequest>(json);
      break;
    case 6:
      roundTrip<ReserveResponse>(json);
      break;
    case 7:
      roundTrip<PrefillRequest>(json);
      break;
    case 8:
      roundTrip<PrefillResponse>(json);
      break;
    case 9:
      roundTrip<DecodeRequest>(json);
      break;
    case 10:
      roundTrip<GenerateRequest>(json);
      break;
    case 11:
      roundTrip<StreamLine>(json);
      break;
    case 12:
      roundTrip<ReleaseRequest>(json);
      break;
    default:
      (void)base64Decode(json);
      break;
  }
  return 0;
}
