#include "rdma/verbs/gid_select.h"

#include <arpa/inet.h>

#include <algorithm>

namespace kvferry::rdma {

bool isIpv4Mapped(const std::array<uint8_t, 16>& gid) {
  return std::all_of(gid.begin(), gid.begin() + 10, [](uint8_t b) { return b == 0; }) &&
         gid[10] == 0xff && gid[11] == 0xff;
}

std::string gidToString(const std::array<uint8_t, 16>& gid) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, gid.data(), text, sizeof text);
  return text;
}

namespace {

int rank(const GidEntry& e) {
  const bool v4 = isIpv4Mapped(e.gid);
  switch (e.type) {
    case GidType::kRoceV2:
      return v4 ? 1 : 2;
    case GidType::kRoceV1:
      return v4 ? 3 : 4;
    case GidType::kIb:
      return 5;
  }
  return 6;
}

const char* typeName(GidType t) {
  switch (t) {
    case GidType::kIb:
      return "IB";
    case GidType::kRoceV1:
      return "RoCE v1";
    case GidType::kRoceV2:
      return "RoCE v2";
  }
  return "?";
}

}  // namespace

Result<GidEntry> selectGid(const std::vector<GidEntry>& table, int32_t override_index,
                           const std::string& netdev) {
  if (override_index >= 0) {
    for (const GidEntry& e : table) {
      if (e.index == static_cast<uint32_t>(override_index)) return e;
    }
    return notFound("gid_index " + std::to_string(override_index) +
                    " is not in the port's GID table");
  }
  const GidEntry* best = nullptr;
  std::string seen;
  for (const GidEntry& e : table) {
    const bool zero = std::all_of(e.gid.begin(), e.gid.end(), [](uint8_t b) { return b == 0; });
    if (zero) continue;
    seen += (seen.empty() ? "" : "; ") + std::to_string(e.index) + ": " + gidToString(e.gid) + " " +
            typeName(e.type) + (e.netdev.empty() ? "" : " on " + e.netdev);
    if (!netdev.empty() && e.netdev != netdev) continue;
    if (best == nullptr || rank(e) < rank(*best) ||
        (rank(e) == rank(*best) && e.index < best->index)) {
      best = &e;
    }
  }
  if (best == nullptr) {
    return notFound("no usable GID" + (netdev.empty() ? std::string() : " on netdev " + netdev) +
                    " (table: " + (seen.empty() ? "empty" : seen) + ")");
  }
  return *best;
}

}  // namespace kvferry::rdma
