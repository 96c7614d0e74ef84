#include "rdma/endpoint_blob.h"

#include "common/format.h"

namespace kvferry::rdma {
namespace {

constexpr uint32_t kBlobMagic = 0x4246564B;  // "KVFB"
constexpr size_t kMaxBackendName = 32;
constexpr uint8_t kRegionGpuMemory = 1;  // v2 region flags

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void bytes(const uint8_t* p, size_t n) { out_.insert(out_.end(), p, p + n); }

 private:
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t>& out_;
};

class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& in) : in_(in) {}
  bool u8(uint8_t& v) { return get(v, 1); }
  bool u16(uint16_t& v) { return get(v, 2); }
  bool u32(uint32_t& v) { return get(v, 4); }
  bool u64(uint64_t& v) { return get(v, 8); }
  bool bytes(size_t n, std::vector<uint8_t>& v) {
    if (in_.size() - pos_ < n) return false;
    v.assign(in_.begin() + static_cast<std::ptrdiff_t>(pos_),
             in_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
    pos_ += n;
    return true;
  }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  template <typename T>
  bool get(T& v, size_t n) {
    if (in_.size() - pos_ < n) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; ++i) x |= static_cast<uint64_t>(in_[pos_ + i]) << (8 * i);
    pos_ += n;
    v = static_cast<T>(x);
    return true;
  }
  const std::vector<uint8_t>& in_;
  size_t pos_ = 0;
};

}  // namespace

const RemoteRegion* EndpointInfo::findRegion(RegionId id) const {
  for (const RemoteRegion& r : regions) {
    if (r.id == id) return &r;
  }
  return nullptr;
}

Result<EndpointBlob> encodeEndpoint(const EndpointInfo& info, uint16_t version) {
  if (info.backend.empty() || info.backend.size() > kMaxBackendName) {
    return invalidArgument("backend name must be 1.." + std::to_string(kMaxBackendName) +
                           " characters");
  }
  if (version < kOldestEndpointBlobVersion || version > kEndpointBlobVersion) {
    return invalidArgument("cannot write endpoint blob version " + std::to_string(version));
  }
  for (const RemoteRegion& r : info.regions) {
    if (version < 2 && r.gpu_memory) {
      return invalidArgument("endpoint blob version 1 cannot describe GPU region " +
                             std::to_string(r.id));
    }
  }
  EndpointBlob blob;
  Writer w(blob);
  w.u32(kBlobMagic);
  w.u16(version);
  w.u8(static_cast<uint8_t>(info.backend.size()));
  w.bytes(reinterpret_cast<const uint8_t*>(info.backend.data()), info.backend.size());
  w.u64(info.endpoint_id);
  w.u32(static_cast<uint32_t>(info.regions.size()));
  for (const RemoteRegion& r : info.regions) {
    w.u32(r.id);
    w.u64(r.bytes);
    w.u64(r.remote_base);
    w.u32(r.remote_key);
    if (version >= 2) {
      w.u8(r.gpu_memory ? kRegionGpuMemory : 0);
      w.u32(r.flush_domain);
    }
  }
  w.u32(static_cast<uint32_t>(info.address.size()));
  w.bytes(info.address.data(), info.address.size());
  if (blob.size() > kMaxEndpointBlobBytes) {
    return resourceExhausted("endpoint blob of " + std::to_string(blob.size()) +
                             " bytes exceeds the limit of " +
                             std::to_string(kMaxEndpointBlobBytes) + " (too many regions?)");
  }
  return blob;
}

Result<EndpointInfo> decodeEndpoint(const EndpointBlob& blob) {
  auto bad = [](const std::string& what) { return invalidArgument("endpoint blob: " + what); };
  if (blob.size() > kMaxEndpointBlobBytes) return bad("larger than the limit");
  Reader r(blob);
  uint32_t magic = 0;
  uint16_t version = 0;
  uint8_t name_len = 0;
  if (!r.u32(magic) || magic != kBlobMagic) return bad("not a kvferry endpoint blob");
  if (!r.u16(version) || version < kOldestEndpointBlobVersion || version > kEndpointBlobVersion) {
    return bad("version " + std::to_string(version) + " (this build reads " +
               std::to_string(kOldestEndpointBlobVersion) + ".." +
               std::to_string(kEndpointBlobVersion) + ")");
  }
  EndpointInfo info;
  std::vector<uint8_t> name;
  if (!r.u8(name_len) || name_len == 0 || name_len > kMaxBackendName || !r.bytes(name_len, name)) {
    return bad("truncated backend name");
  }
  info.backend.assign(name.begin(), name.end());
  uint32_t n_regions = 0;
  if (!r.u64(info.endpoint_id) || !r.u32(n_regions)) return bad("truncated header");
  const size_t region_bytes = 4 + 8 + 8 + 4 + (version >= 2 ? 1 + 4 : 0);
  if (n_regions > r.remaining() / region_bytes) return bad("region count past the end");
  info.regions.resize(n_regions);
  for (RemoteRegion& reg : info.regions) {
    if (!r.u32(reg.id) || !r.u64(reg.bytes) || !r.u64(reg.remote_base) || !r.u32(reg.remote_key)) {
      return bad("truncated region table");
    }
    if (version >= 2) {
      uint8_t flags = 0;
      if (!r.u8(flags) || !r.u32(reg.flush_domain)) return bad("truncated region table");
      if ((flags & ~kRegionGpuMemory) != 0) {
        return bad("unknown flags " + std::to_string(flags) + " on region " +
                   std::to_string(reg.id));
      }
      reg.gpu_memory = (flags & kRegionGpuMemory) != 0;
      if (reg.gpu_memory != (reg.flush_domain != 0)) {
        return bad("region " + std::to_string(reg.id) +
                   ": GPU memory needs a flush domain, host memory has none");
      }
    }
  }
  uint32_t addr_len = 0;
  if (!r.u32(addr_len) || !r.bytes(addr_len, info.address)) return bad("truncated address");
  if (r.remaining() != 0) return bad(std::to_string(r.remaining()) + " trailing bytes");
  return info;
}

uint64_t newEndpointId() { return randomNonZeroId(); }

}  // namespace kvferry::rdma
