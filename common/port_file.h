// --port-file for binaries that listen on port 0: the bound port, written atomically (a temporary
// file renamed into place) so a reader never sees a partial number.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "common/status.h"

namespace kvferry {

inline Status writePortFile(const std::string& path, uint16_t port) {
  std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return ioError("fopen(" + tmp + ")", errno);
  std::fprintf(f, "%u\n", static_cast<unsigned>(port));
  if (std::fclose(f) != 0) return ioError("fclose(" + tmp + ")", errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return ioError("rename to " + path, errno);
  return Status::ok();
}

}  // namespace kvferry
