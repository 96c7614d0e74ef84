// Deterministic GID selection, kept free of <infiniband/verbs.h> so it is tested everywhere.
// Wrong GID selection is the most reported RoCE set-up failure: the rule is fixed and logged.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvferry::rdma {

enum class GidType { kIb, kRoceV1, kRoceV2 };

struct GidEntry {
  uint32_t index = 0;
  std::array<uint8_t, 16> gid{};
  GidType type = GidType::kIb;
  std::string netdev;  // the interface the GID belongs to ("" when unknown)
};

// "::ffff:192.168.77.1" for IPv4-mapped GIDs, else the full IPv6 text.
std::string gidToString(const std::array<uint8_t, 16>& gid);
bool isIpv4Mapped(const std::array<uint8_t, 16>& gid);

// Picks the GID to use. `override_index` >= 0 wins if it names an entry. Otherwise, among the
// entries (only those of `netdev` when it is non-empty; all-zero GIDs never count), the first
// rank that has any entries decides, lowest index first:
//   1. RoCE v2, IPv4-mapped   2. RoCE v2   3. RoCE v1, IPv4-mapped   4. RoCE v1   5. IB
// NOT_FOUND when nothing qualifies, naming what was there.
Result<GidEntry> selectGid(const std::vector<GidEntry>& table, int32_t override_index,
                           const std::string& netdev);

}  // namespace kvferry::rdma
