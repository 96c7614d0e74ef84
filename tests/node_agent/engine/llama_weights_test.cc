#include "node_agent/engine/llama_weights.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "tests/node_agent/engine/engine_test_util.h"

namespace kvferry::engine {
namespace {

// Rows of `matrix` from `first_row` on equal the tensor's rows, converted to float.
void expectRows(const Matrix& matrix, uint32_t first_row, const model::GgufTensor* tensor) {
  ASSERT_NE(tensor, nullptr);
  Result<std::vector<float>> values = model::tensorToFloat(*tensor);
  ASSERT_TRUE(values.isOk());
  ASSERT_EQ(matrix.cols(), tensor->rowLength());
  ASSERT_LE(first_row + tensor->rowCount(), matrix.rows());
  EXPECT_EQ(std::memcmp(matrix.row(first_row), values->data(), values->size() * sizeof(float)), 0)
      << tensor->name;
}

// GGUF stores W as {in, out}: a row of `in` floats per output, which is the runtime's layout.
TEST(LlamaWeightsTest, StoriesLoadsAsRowPerOutputWithFusedProjections) {
  Result<model::GgufFile> file = model::GgufFile::open(testing::storiesPath());
  ASSERT_TRUE(file.isOk());
  Result<std::shared_ptr<const LlamaWeights>> loaded = LlamaWeights::load(*file);
  ASSERT_TRUE(loaded.isOk()) << loaded.status().toString();
  const LlamaWeights& w = **loaded;
  EXPECT_EQ(w.params().embedding_length, 64u);
  EXPECT_FALSE(w.tiedOutput());
  EXPECT_EQ(w.tokenEmbedding().rows(), 512u);
  EXPECT_EQ(w.tokenEmbedding().cols(), 64u);
  const LlamaLayerWeights& layer = w.layer(4);
  EXPECT_EQ(layer.wqkv.rows(), 64u + 32u + 32u);
  EXPECT_EQ(layer.wqkv.cols(), 64u);
  EXPECT_EQ(layer.w_gate_up.rows(), 2u * 172u);
  EXPECT_EQ(layer.w_down.rows(), 64u);
  EXPECT_EQ(layer.w_down.cols(), 172u);
  expectRows(layer.wqkv, 0, file->findTensor("blk.4.attn_q.weight"));
  expectRows(layer.wqkv, 64, file->findTensor("blk.4.attn_k.weight"));
  expectRows(layer.wqkv, 96, file->findTensor("blk.4.attn_v.weight"));
  expectRows(layer.w_gate_up, 0, file->findTensor("blk.4.ffn_gate.weight"));
  expectRows(layer.w_gate_up, 172, file->findTensor("blk.4.ffn_up.weight"));
  expectRows(layer.w_down, 0, file->findTensor("blk.4.ffn_down.weight"));
  expectRows(w.output(), 0, file->findTensor("output.weight"));

  uint64_t file_parameters = 0;
  for (const model::GgufTensor& tensor : file->tensors()) file_parameters += tensor.element_count;
  EXPECT_EQ(w.parameterCount(), file_parameters);
}

TEST(LlamaWeightsTest, TiedOutputUsesTheTokenEmbeddingAndQuantizedTypesDequantize) {
  for (model::GgmlType type :
       {model::GgmlType::kQ8_0, model::GgmlType::kF16, model::GgmlType::kBF16}) {
    std::unique_ptr<testing::RandomModel> model =
        testing::randomModel(testing::q8Params(1, 4, 2), 3, type, /*tied=*/true);
    ASSERT_NE(model, nullptr);
    const LlamaWeights& w = *model->weights;
    EXPECT_TRUE(w.tiedOutput());
    EXPECT_EQ(&w.output(), &w.tokenEmbedding());
    expectRows(w.layer(0).wqkv, w.params().embedding_length,
               model->file.findTensor("blk.0.attn_k.weight"));
    expectRows(w.layer(0).w_down, 0, model->file.findTensor("blk.0.ffn_down.weight"));
  }
}

TEST(LlamaWeightsTest, AMissingFileNamesThePath) {
  Result<std::shared_ptr<const LlamaWeights>> weights = LlamaWeights::loadFile("/no/such.gguf");
  EXPECT_FALSE(weights.isOk());
  EXPECT_NE(weights.status().message().find("/no/such.gguf"), std::string::npos)
      << weights.status().toString();
}

}  // namespace
}  // namespace kvferry::engine
