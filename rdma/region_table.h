// The registered regions of one transport, and the one place where every local or remote access
// is bounds-checked. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

inline bool fitsRegion(uint64_t region_bytes, uint64_t offset, uint64_t length) {
  return length != 0 && length <= region_bytes && offset <= region_bytes - length;
}

class RegionTable {
 public:
  // Backend keys of a registration (verbs: the MR's lkey and rkey); 0 where unused.
  struct Keys {
    uint32_t local = 0;
    uint32_t remote = 0;
  };
  struct Entry {
    RegionId id = 0;
    uint8_t* base = nullptr;
    uint64_t bytes = 0;
    MemoryKind kind;
    Keys keys;
  };

  // A checked, pinned span of a region: while any Pin of a region lives, deregistration waits.
  struct Pin {
    std::shared_ptr<const Entry> entry;
    uint8_t* data = nullptr;  // entry->base + offset
  };

  Result<RegionId> add(void* base, size_t bytes, MemoryKind kind, Keys keys);
  Result<RegionId> add(void* base, size_t bytes, MemoryKind kind) {
    return add(base, bytes, kind, Keys{});
  }
  // Removes the region once no Pin of it is alive; gives up after `wait` and keeps it.
  Status remove(RegionId id, std::chrono::milliseconds wait);

  // Checks [offset, offset + length) against the region and pins it. `what` ("write", "read")
  // goes into the error message. NOT_FOUND for an unknown id, OUT_OF_RANGE past its end.
  Result<Pin> pin(RegionId id, uint64_t offset, uint64_t length, std::string_view what) const;

  // The table as peers see it (for the endpoint blob).
  std::vector<RemoteRegion> describe() const;

 private:
  mutable std::mutex mu_;
  std::map<RegionId, std::shared_ptr<const Entry>> entries_;
  RegionId next_id_ = 1;
};

// The memory of one batch's ops on one side: each distinct region is looked up and pinned once
// per batch (not once per op: the table's lock and refcount would dominate small blocks), and
// every op is still bounds-checked. Reused across batches, so it stops allocating once grown.
class BatchPins {
 public:
  void clear() {
    last_ = 0;
    regions_.clear();
    data_.clear();
    local_keys_.clear();
    op_region_.clear();
  }
  // Checks [offset, offset + length) of region `id` and records the op's address. Inline for
  // an op in the region of the op before (a layer's blocks share one pool): it runs per block.
  Status add(const RegionTable& table, RegionId id, uint64_t offset, uint64_t length,
             std::string_view what) {
    if (last_ < regions_.size()) {
      const RegionTable::Entry& entry = *regions_[last_].entry;
      if (entry.id == id && fitsRegion(entry.bytes, offset, length)) {
        record(last_, entry, offset);
        return Status::ok();
      }
    }
    return addSlow(table, id, offset, length, what);
  }
  void reserve(size_t ops) {
    data_.reserve(ops);
    local_keys_.reserve(ops);
    op_region_.reserve(ops);
  }
  uint8_t* data(size_t op) const { return data_[op]; }
  // The region of the last op added (pinned while this holds it).
  const RegionTable::Entry& lastRegion() const { return *regions_[last_].entry; }
  uint32_t localKey(size_t op) const { return local_keys_[op]; }
  // Where op `op`'s memory lives (tcp stages CUDA regions through pinned host memory).
  const MemoryKind& kind(size_t op) const { return regions_[op_region_[op]].entry->kind; }
  bool anyCuda() const {
    for (const RegionTable::Pin& pin : regions_) {
      if (pin.entry->kind.type == MemoryKind::Type::kCuda) return true;
    }
    return false;
  }
  size_t size() const { return data_.size(); }
  bool empty() const { return data_.empty(); }

 private:
  Status addSlow(const RegionTable& table, RegionId id, uint64_t offset, uint64_t length,
                 std::string_view what);
  // Records an op at `offset` of regions_[region] (already checked), which becomes last_.
  void record(uint32_t region, const RegionTable::Entry& entry, uint64_t offset) {
    last_ = region;
    data_.push_back(entry.base + offset);
    local_keys_.push_back(entry.keys.local);
    op_region_.push_back(region);
  }

  uint32_t last_ = 0;                      // the region of the last op added
  std::vector<RegionTable::Pin> regions_;  // one per distinct region
  std::vector<uint8_t*> data_;             // one per op
  std::vector<uint32_t> local_keys_;       // one per op
  std::vector<uint32_t> op_region_;        // one per op: its index in regions_
};

// The bounds rule shared by local tables and a peer's advertised regions: `length` bytes at
// `offset` fit in a region of `region_bytes`, with no overflow. fitsRegion() is the test (inline:
// it runs for every op), checkRange() the same test with the error that says why.
Status checkRange(RegionId id, uint64_t region_bytes, uint64_t offset, uint64_t length,
                  std::string_view what);

}  // namespace kvferry::rdma
