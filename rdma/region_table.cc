#include "rdma/region_table.h"

#include <string>
#include <thread>

namespace kvferry::rdma {

Status checkRange(RegionId id, uint64_t region_bytes, uint64_t offset, uint64_t length,
                  std::string_view what) {
  if (fitsRegion(region_bytes, offset, length)) return Status::ok();
  if (length == 0) {
    return invalidArgument(std::string(what) + " of 0 bytes to region " + std::to_string(id));
  }
  return outOfRange(std::string(what) + " of " + std::to_string(length) + " bytes at offset " +
                    std::to_string(offset) + " exceeds region " + std::to_string(id) + " (" +
                    std::to_string(region_bytes) + " bytes)");
}

Result<RegionId> RegionTable::add(void* base, size_t bytes, MemoryKind kind, Keys keys) {
  if (base == nullptr || bytes == 0) {
    return invalidArgument("cannot register an empty region (base " +
                           std::string(base ? "set" : "null") + ", " + std::to_string(bytes) +
                           " bytes)");
  }
  std::lock_guard lock(mu_);
  auto entry = std::make_shared<Entry>();
  entry->id = next_id_++;
  entry->base = static_cast<uint8_t*>(base);
  entry->bytes = bytes;
  entry->kind = kind;
  entry->keys = keys;
  entries_.emplace(entry->id, entry);
  return entry->id;
}

Status RegionTable::remove(RegionId id, std::chrono::milliseconds wait) {
  std::shared_ptr<const Entry> entry;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end())
      return notFound("region " + std::to_string(id) + " is not registered");
    entry = std::move(it->second);
    entries_.erase(it);
  }
  // New pins are impossible now; wait for the live ones to end. The only other owners of
  // `entry` are Pins, so a use count of 1 means no access is in progress.
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (entry.use_count() > 1) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::lock_guard lock(mu_);
      entries_.emplace(id, std::move(entry));
      return deadlineExceeded("region " + std::to_string(id) +
                              " still has transfers in progress; not deregistered");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return Status::ok();
}

Result<RegionTable::Pin> RegionTable::pin(RegionId id, uint64_t offset, uint64_t length,
                                          std::string_view what) const {
  std::shared_ptr<const Entry> entry;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) {
      return notFound(std::string(what) + " to region " + std::to_string(id) +
                      ", which is not registered");
    }
    entry = it->second;
  }
  RETURN_IF_ERROR(checkRange(id, entry->bytes, offset, length, what));
  uint8_t* data = entry->base + offset;
  return Pin{std::move(entry), data};
}

Status BatchPins::addSlow(const RegionTable& table, RegionId id, uint64_t offset, uint64_t length,
                          std::string_view what) {
  for (size_t r = 0; r < regions_.size(); ++r) {
    const RegionTable::Pin& pin = regions_[r];
    if (pin.entry->id == id) {
      RETURN_IF_ERROR(checkRange(id, pin.entry->bytes, offset, length, what));
      record(static_cast<uint32_t>(r), *pin.entry, offset);
      return Status::ok();
    }
  }
  ASSIGN_OR_RETURN(RegionTable::Pin pin, table.pin(id, offset, length, what));
  record(static_cast<uint32_t>(regions_.size()), *pin.entry, offset);
  regions_.push_back(std::move(pin));
  return Status::ok();
}

std::vector<RemoteRegion> RegionTable::describe() const {
  std::lock_guard lock(mu_);
  std::vector<RemoteRegion> out;
  out.reserve(entries_.size());
  for (const auto& [id, entry] : entries_) {
    RemoteRegion r{id, entry->bytes, reinterpret_cast<uint64_t>(entry->base), entry->keys.remote};
    if (entry->kind.type == MemoryKind::Type::kCuda) {
      r.gpu_memory = true;
      r.flush_domain = static_cast<uint32_t>(entry->kind.device) + 1;  // ordinal 0 → domain 1
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace kvferry::rdma
