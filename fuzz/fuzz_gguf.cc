// libFuzzer target: the GGUF reader (model/gguf.h) on untrusted bytes: header, metadata, tensor
// table, offsets and sizes all checked against the buffer.
#include <cstddef>
#include <cstdint>
#include <span>

#include "model/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = kvferry::model::GgufFile::parse(std::span<const uint8_t>(data, size));
  (void)file;
  return 0;
}
