#include "node_agent/engine/cuda/device_weights.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "model/float16.h"

namespace kvferry::engine::cuda {
namespace {

constexpr uint64_t kAlignment = 256;
constexpr uint64_t kStagingBytes = uint64_t{64} << 20;  // per buffer; two alternate

uint64_t aligned(uint64_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

uint64_t elementsOf(std::initializer_list<const model::GgufTensor*> parts) {
  uint64_t elements = 0;
  for (const model::GgufTensor* part : parts) elements += part->element_count;
  return elements;
}

// Converts tensors to bfloat16 into pinned buffers and copies them to the device, alternating two
// buffers so the conversion of one overlaps the copy of the other.
class Uploader {
 public:
  static Result<Uploader> create(cudaStream_t stream) {
    Uploader uploader(stream);
    for (int i = 0; i < 2; ++i) {
      ASSIGN_OR_RETURN(uploader.staging_[i], PinnedBuffer::allocate(kStagingBytes));
      ASSIGN_OR_RETURN(uploader.done_[i], Event::create());
      CUDA_CHECK(cudaEventRecord(uploader.done_[i].get(), stream));
    }
    return uploader;
  }

  // Appends `tensor`'s elements, as bfloat16, at `dst` (advanced past them).
  Status upload(const model::GgufTensor& tensor, bf16*& dst) {
    const uint64_t row = tensor.rowLength();
    const uint64_t rows_per_chunk = std::max<uint64_t>(1, kStagingBytes / 2 / row);
    std::vector<float> floats;
    for (uint64_t first = 0; first < tensor.rowCount(); first += rows_per_chunk) {
      const uint64_t rows = std::min(rows_per_chunk, tensor.rowCount() - first);
      const uint64_t count = rows * row;
      if (count * 2 > kStagingBytes) {
        return invalidArgument("tensor '" + model::printable(tensor.name) + "' has rows of " +
                               std::to_string(row) + " elements, too long to stage");
      }
      CUDA_CHECK(cudaEventSynchronize(done_[next_].get()));  // the buffer's last copy is done
      auto* out = staging_[next_].as<uint16_t>();
      if (tensor.type == model::GgmlType::kBF16) {
        std::memcpy(out, tensor.data.data() + first * row * 2, count * 2);
      } else {
        floats.resize(count);
        ASSIGN_OR_RETURN(const uint64_t row_bytes, model::ggmlByteSize(tensor.type, row));
        RETURN_IF_ERROR(model::toFloat(tensor.type,
                                       tensor.data.subspan(first * row_bytes, rows * row_bytes),
                                       floats)
                            .withContext("tensor '" + model::printable(tensor.name) + "'"));
        for (uint64_t i = 0; i < count; ++i) out[i] = model::floatToBf16(floats[i]);
      }
      CUDA_CHECK(cudaMemcpyAsync(dst, out, count * 2, cudaMemcpyHostToDevice, stream_));
      CUDA_CHECK(cudaEventRecord(done_[next_].get(), stream_));
      next_ ^= 1;
      dst += count;
    }
    return Status::ok();
  }

  Status finish() { return cudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

 private:
  explicit Uploader(cudaStream_t stream) : stream_(stream) {}
  cudaStream_t stream_;
  PinnedBuffer staging_[2];
  Event done_[2];
  int next_ = 0;
};

}  // namespace

uint64_t DeviceWeights::bytesFor(const model::LlamaTensors& t) {
  uint64_t bytes =
      aligned(t.token_embd->element_count * 2) + aligned(t.output_norm->element_count * 2);
  if (!t.tied_output) bytes += aligned(t.output->element_count * 2);
  for (const model::LlamaLayerTensors& l : t.layers) {
    bytes += aligned(l.attn_norm->element_count * 2) +
             aligned(elementsOf({l.attn_q, l.attn_k, l.attn_v}) * 2) +
             aligned(l.attn_output->element_count * 2) + aligned(l.ffn_norm->element_count * 2) +
             aligned(elementsOf({l.ffn_gate, l.ffn_up}) * 2) +
             aligned(l.ffn_down->element_count * 2);
    if (l.attn_q_bias != nullptr) {
      bytes += aligned(elementsOf({l.attn_q_bias, l.attn_k_bias, l.attn_v_bias}) * 2);
    }
    if (l.attn_q_norm != nullptr) {
      bytes +=
          aligned(l.attn_q_norm->element_count * 2) + aligned(l.attn_k_norm->element_count * 2);
    }
  }
  return bytes;
}

Result<DeviceWeights> DeviceWeights::load(const model::LlamaTensors& t, cudaStream_t stream) {
  DeviceWeights weights;
  ASSIGN_OR_RETURN(weights.memory_, DeviceBuffer::allocate(bytesFor(t)));
  ASSIGN_OR_RETURN(Uploader uploader, Uploader::create(stream));
  auto* base = weights.memory_.as<uint8_t>();
  uint64_t offset = 0;
  // Places `parts` one after another from the next aligned offset; returns where they start.
  const auto place = [&](std::initializer_list<const model::GgufTensor*> parts) -> Result<bf16*> {
    bf16* start = reinterpret_cast<bf16*>(base + offset);
    bf16* cursor = start;
    for (const model::GgufTensor* part : parts) RETURN_IF_ERROR(uploader.upload(*part, cursor));
    offset += aligned(elementsOf(parts) * 2);
    return start;
  };
  ASSIGN_OR_RETURN(bf16 * embedding, place({t.token_embd}));
  ASSIGN_OR_RETURN(bf16 * output_norm, place({t.output_norm}));
  weights.embedding_ = embedding;
  weights.output_norm_ = output_norm;
  if (t.tied_output) {
    weights.output_ = embedding;
  } else {
    ASSIGN_OR_RETURN(bf16 * output, place({t.output}));
    weights.output_ = output;
  }
  uint64_t matrix_elements = t.output->element_count;
  for (const model::LlamaLayerTensors& l : t.layers) {
    DeviceLayer layer;
    ASSIGN_OR_RETURN(layer.attn_norm, place({l.attn_norm}));
    ASSIGN_OR_RETURN(layer.wqkv, place({l.attn_q, l.attn_k, l.attn_v}));
    if (l.attn_q_bias != nullptr) {  // one row, as the fused QKV GEMM's output is laid out
      ASSIGN_OR_RETURN(layer.qkv_bias, place({l.attn_q_bias, l.attn_k_bias, l.attn_v_bias}));
    }
    if (l.attn_q_norm != nullptr) {
      ASSIGN_OR_RETURN(layer.q_norm, place({l.attn_q_norm}));
      ASSIGN_OR_RETURN(layer.k_norm, place({l.attn_k_norm}));
    }
    ASSIGN_OR_RETURN(layer.wo, place({l.attn_output}));
    ASSIGN_OR_RETURN(layer.ffn_norm, place({l.ffn_norm}));
    ASSIGN_OR_RETURN(layer.w_gate_up, place({l.ffn_gate, l.ffn_up}));
    ASSIGN_OR_RETURN(layer.w_down, place({l.ffn_down}));
    weights.layers_.push_back(layer);
    matrix_elements +=
        elementsOf({l.attn_q, l.attn_k, l.attn_v, l.attn_output, l.ffn_gate, l.ffn_up, l.ffn_down});
  }
  weights.matrix_bytes_per_token_ = matrix_elements * 2;
  RETURN_IF_ERROR(uploader.finish());
  return weights;
}

}  // namespace kvferry::engine::cuda
