// Paths and small helpers shared by the model tests.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "model/gguf_writer.h"

namespace kvferry::model::testing {

// The real model fixture: Karpathy's stories260K (see its PROVENANCE.md).
inline std::string storiesPath() {
  return std::string(KVFERRY_SOURCE_DIR) + "/tests/data/models/stories260K/stories260K.gguf";
}

// A file name unique to the running test, in gtest's temporary directory.
inline std::string tempPath(const std::string& suffix) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return ::testing::TempDir() + "kvferry_" + info->test_suite_name() + "_" + info->name() + "_" +
         suffix;
}

// A small valid shape; tests vary one field at a time.
inline LlamaParams smallLlama() {
  LlamaParams p;
  p.vocab_size = 300;
  p.embedding_length = 64;
  p.feed_forward_length = 128;
  p.block_count = 2;
  p.head_count = 8;
  p.head_count_kv = 2;
  p.rope_dimension_count = 8;
  p.rope_freq_base = 10000.0f;
  p.rms_epsilon = 1e-5f;
  p.context_length = 256;
  return p;
}

}  // namespace kvferry::model::testing
