// TokenId: one vocabulary entry's index, shared by the tokenizer, the block-hash chain and the
// engine. 32-bit signed like llama.cpp's llama_token, so ids cross the wire and GGUF unchanged.
#pragma once

#include <cstdint>

namespace kvferry::model {

using TokenId = int32_t;

}  // namespace kvferry::model
