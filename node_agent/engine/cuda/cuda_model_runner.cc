// The CUDA ModelRunner (node_agent/engine/cuda_runner.h). One stream; every forward pass is one
// metadata upload (batch_plan.h), the layers' kernels, and one download of logits or tokens.
// Decode steps replay a CUDA graph captured per DecodeShape; prefill passes run eagerly and,
// with a per-layer callback, record an event after each layer's K/V writes and call back as those
// events complete while later layers still compute.
#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <type_traits>
#include <utility>
#include <vector>

#include "node_agent/engine/cuda/attention.h"
#include "node_agent/engine/cuda/batch_plan.h"
#include "node_agent/engine/cuda/cuda_util.h"
#include "node_agent/engine/cuda/device_weights.h"
#include "node_agent/engine/cuda/kernels.h"
#include "node_agent/engine/cuda/sampling.h"
#include "node_agent/engine/cuda_runner.h"

namespace kvferry::engine {
namespace {

using cuda::bf16;

std::string str(uint64_t value) { return std::to_string(value); }
std::string gib(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f GiB", static_cast<double>(bytes) / (1u << 30));
  return text;
}

constexpr uint64_t kCublasWorkspaceBytes = uint64_t{32} << 20;
constexpr uint64_t kMarginBytes = uint64_t{512} << 20;  // CUDA context, cuBLAS, fragmentation
constexpr size_t kMaxGraphs = 64;

// A few tokens (decode steps) stream the weights through our GEMV; batches go to cuBLAS.
bool useGemv(uint32_t tokens, uint32_t cols) {
  return tokens <= cuda::kGemvMaxTokens && cols % 8 == 0;
}

class CublasHandle {
 public:
  CublasHandle() = default;
  static Result<CublasHandle> create() {
    cublasHandle_t handle = nullptr;
    CUBLAS_CHECK(cublasCreate(&handle));
    return CublasHandle(handle);
  }
  CublasHandle(CublasHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  CublasHandle& operator=(CublasHandle&& other) noexcept {
    std::swap(handle_, other.handle_);
    return *this;
  }
  ~CublasHandle() {
    if (handle_ != nullptr) cublasDestroy(handle_);
  }
  cublasHandle_t get() const { return handle_; }

 private:
  explicit CublasHandle(cublasHandle_t handle) : handle_(handle) {}
  cublasHandle_t handle_ = nullptr;
};

// Thread ownership: one thread (the engine's) calls forward(); the KV pools are also read and
// written by the transfer engine, in blocks no pass in flight touches (model_runner.h).
class CudaModelRunner final : public ModelRunner {
 public:
  static Result<std::unique_ptr<ModelRunner>> create(const model::LlamaParams& params,
                                                     const model::LlamaTensors& tensors,
                                                     const CudaRunnerConfig& config);

  const model::LlamaParams& params() const override { return params_; }
  const KvGeometry& kvGeometry() const override { return geometry_; }
  uint32_t maxBatchTokens() const override { return limits_.max_tokens; }
  uint32_t maxBatchSequences() const override { return limits_.max_rows; }
  uint32_t maxSequenceTokens() const override { return limits_.max_sequence_tokens; }
  KvPoolRegion keyPool(uint32_t layer) override {
    return {keyPoolOf(layer), geometry_.poolBytes(), device_};
  }
  KvPoolRegion valuePool(uint32_t layer) override {
    return {valuePoolOf(layer), geometry_.poolBytes(), device_};
  }
  Status forward(std::span<const SequenceChunk> chunks, std::span<float> logits,
                 const LayerDoneCallback& on_layer_done = nullptr) override;
  Status forwardSampled(std::span<const SequenceChunk> chunks, std::span<const TokenDraw> draws,
                        std::span<model::TokenId> tokens,
                        const LayerDoneCallback& on_layer_done = nullptr) override;

 private:
  CudaModelRunner() = default;
  Status allocate(const model::LlamaTensors& tensors, const CudaRunnerConfig& config,
                  const cuda::DeviceInfo& info);

  bf16* keyPoolOf(uint32_t layer) const {
    return kv_.as<bf16>() + (2 * uint64_t{layer}) * pool_elements_;
  }
  bf16* valuePoolOf(uint32_t layer) const {
    return kv_.as<bf16>() + (2 * uint64_t{layer} + 1) * pool_elements_;
  }
  template <typename T>
  T* staged(uint64_t offset) const {
    return reinterpret_cast<T*>(metadata_.as<uint8_t>() + offset);
  }

  Status run(std::span<const SequenceChunk> chunks, std::span<const TokenDraw> draws,
             std::span<float> logits, std::span<model::TokenId> tokens,
             const LayerDoneCallback& on_layer_done);
  // Enqueues the whole model for `plan` on stream_ (captured into a graph for decode shapes).
  Status enqueueModel(const cuda::BatchPlan& plan, bool layer_events);
  // y (tokens × rows, bfloat16 or float) = x (tokens × cols) · wᵀ: our GEMV for a few tokens,
  // cuBLAS otherwise.
  template <typename Out>
  Status matmul(const bf16* x, uint32_t tokens, const bf16* w, uint32_t rows, uint32_t cols,
                Out* y);
  Status attention(const cuda::BatchPlan& plan, uint32_t layer);

  model::LlamaParams params_;
  KvGeometry geometry_;
  int device_ = 0;
  bool graphs_enabled_ = true;
  uint32_t q_dim_ = 0;
  uint32_t kv_dim_ = 0;
  uint32_t qkv_dim_ = 0;
  uint64_t pool_elements_ = 0;  // one pool's allocation: num_blocks + 1 (scratch) blocks
  cuda::PlanLimits limits_;
  cuda::AttentionShape shape_;
  bool fast_attention_ = false;

  // Members are destroyed in reverse order: graphs and handles before the memory they use.
  cuda::Stream stream_;
  cuda::DeviceWeights weights_;
  cuda::DeviceBuffer kv_;
  cuda::DeviceBuffer activations_;
  cuda::DeviceBuffer metadata_;   // the staging image's device copy
  cuda::DeviceBuffer logits_;     // float [max_rows × vocab]
  cuda::DeviceBuffer sampled_;    // int32 [max_rows]
  cuda::DeviceBuffer workspace_;  // decode attention partials
  cuda::DeviceBuffer cublas_workspace_;
  cuda::DeviceBuffer inv_freq_;
  cuda::PinnedBuffer staging_;  // the staging image
  cuda::PinnedBuffer host_tokens_;
  std::vector<cuda::Event> layer_events_;
  CublasHandle cublas_;
  std::map<cuda::DecodeShape, cuda::GraphExec> graphs_;
  // Activation buffers (views into activations_).
  bf16* x_ = nullptr;
  bf16* xn_ = nullptr;
  bf16* qkv_ = nullptr;
  bf16* q_ = nullptr;
  bf16* attn_ = nullptr;
  bf16* proj_ = nullptr;
  bf16* gate_up_ = nullptr;
  bf16* hidden_ = nullptr;
  bf16* logit_xn_ = nullptr;
};

Result<std::unique_ptr<ModelRunner>> CudaModelRunner::create(const model::LlamaParams& params,
                                                             const model::LlamaTensors& tensors,
                                                             const CudaRunnerConfig& config) {
  if (config.block_tokens == 0) return invalidArgument("block_tokens must be positive");
  if (config.max_batch_tokens == 0) return invalidArgument("max_batch_tokens must be positive");
  if (config.max_batch_sequences == 0) {
    return invalidArgument("max_batch_sequences must be positive");
  }
  if (!(config.memory_fraction > 0.0f && config.memory_fraction <= 1.0f)) {
    return invalidArgument("gpu memory_fraction must be in (0, 1]");
  }
  ASSIGN_OR_RETURN(cuda::DeviceInfo info, cuda::selectDevice(config.device));
  if (info.major < 8) {
    return invalidArgument("GPU " + str(info.index) + " (" + info.name + ", compute capability " +
                           str(info.major) + "." + str(info.minor) +
                           ") is older than Ampere (8.0), which the kernels need");
  }
  std::unique_ptr<CudaModelRunner> runner(new CudaModelRunner());
  runner->params_ = params;
  runner->device_ = config.device;
  runner->graphs_enabled_ = config.cuda_graphs;
  RETURN_IF_ERROR(runner->allocate(tensors, config, info));
  return std::unique_ptr<ModelRunner>(std::move(runner));
}

Status CudaModelRunner::allocate(const model::LlamaTensors& tensors, const CudaRunnerConfig& config,
                                 const cuda::DeviceInfo& info) {
  const model::LlamaParams& p = params_;
  const uint32_t head_dim = p.headDim();
  q_dim_ = p.head_count * head_dim;
  kv_dim_ = p.kvDim();
  qkv_dim_ = q_dim_ + 2 * kv_dim_;
  const uint64_t tokens = config.max_batch_tokens;
  const uint64_t rows = std::min<uint64_t>(config.max_batch_sequences, config.max_batch_tokens);
  const uint64_t dim = p.embedding_length;
  const uint64_t ff = p.feed_forward_length;
  const uint64_t activation_elements =
      tokens * (3 * dim + qkv_dim_ + 2 * q_dim_ + 3 * ff) + rows * dim;
  const uint64_t weight_bytes = cuda::DeviceWeights::bytesFor(tensors);
  const uint64_t logits_bytes = rows * p.vocab_size * sizeof(float);

  limits_.vocab_size = p.vocab_size;
  limits_.block_tokens = config.block_tokens;
  limits_.max_tokens = config.max_batch_tokens;
  limits_.max_rows = static_cast<uint32_t>(rows);
  limits_.kv_heads = p.head_count_kv;
  limits_.prefill_tile_queries = cuda::kPrefillTiling.queries;
  int multiprocessors = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device_));
  limits_.multiprocessors = static_cast<uint32_t>(multiprocessors);
  shape_ = {p.head_count, p.head_count_kv, head_dim, config.block_tokens,
            1.0f / std::sqrt(static_cast<float>(head_dim))};
  fast_attention_ = cuda::fastAttentionSupports(head_dim) && p.queryGroupSize() <= 8;

  // The decode workspace for the largest shape any batch can take (splits shrink as rows grow).
  const auto workspace_for = [&](uint32_t max_sequence_tokens) {
    uint64_t floats = 0;
    const uint32_t blocks = (max_sequence_tokens + config.block_tokens - 1) / config.block_tokens;
    for (uint32_t r = 1;; r *= 2) {
      cuda::PlanLimits l = limits_;
      l.max_sequence_tokens = max_sequence_tokens;
      const cuda::DecodeShape s =
          cuda::decodeShapeFor(l, std::min<uint32_t>(r, l.max_rows), blocks, false);
      floats =
          std::max(floats, cuda::decodeWorkspaceFloats(s.rows, p.head_count, head_dim, s.splits));
      if (r >= l.max_rows) break;
    }
    return floats * sizeof(float);
  };

  // KV capacity: what the memory fraction leaves after everything else.
  const uint64_t block_bytes = uint64_t{config.block_tokens} * kv_dim_ * 2;
  const uint64_t kv_bytes_per_block = 2 * uint64_t{p.block_count} * block_bytes;
  const uint64_t fixed = weight_bytes + activation_elements * 2 + logits_bytes +
                         kCublasWorkspaceBytes + workspace_for(p.context_length) + kMarginBytes;
  const uint64_t allowed =
      static_cast<uint64_t>(config.memory_fraction * static_cast<double>(info.total_bytes));
  const uint64_t usable = std::min(allowed, info.free_bytes);
  const std::string where = "GPU " + str(info.index) + " (" + info.name + ") has " +
                            gib(info.free_bytes) + " free of " + gib(info.total_bytes) +
                            " and memory_fraction " + std::to_string(config.memory_fraction);
  if (fixed + 2 * kv_bytes_per_block > usable) {
    return resourceExhausted("the model needs " + gib(weight_bytes) + " of weights and " +
                             gib(fixed - weight_bytes) + " of working memory; " + where);
  }
  uint64_t num_blocks = config.num_blocks;
  const uint64_t fitting = (usable - fixed) / kv_bytes_per_block - 1;  // one scratch block
  if (num_blocks == 0) {
    num_blocks = fitting;
  } else if (num_blocks > fitting) {
    return resourceExhausted(str(num_blocks) + " KV blocks need " +
                             gib((num_blocks + 1) * kv_bytes_per_block) + " beside the model's " +
                             gib(fixed) + "; " + where + " (at most " + str(fitting) +
                             " blocks fit)");
  }
  num_blocks = std::min<uint64_t>(num_blocks, (uint64_t{UINT32_MAX} / config.block_tokens) - 1);
  geometry_ = {p.block_count,
               config.block_tokens,
               p.head_count_kv,
               head_dim,
               static_cast<uint32_t>(num_blocks),
               KvDtype::kBF16};
  pool_elements_ = (num_blocks + 1) * config.block_tokens * kv_dim_;
  limits_.num_blocks = geometry_.num_blocks;
  limits_.max_sequence_tokens =
      static_cast<uint32_t>(std::min<uint64_t>(p.context_length, num_blocks * config.block_tokens));

  ASSIGN_OR_RETURN(stream_, cuda::Stream::create());
  ASSIGN_OR_RETURN(weights_, cuda::DeviceWeights::load(tensors, stream_.get()));
  ASSIGN_OR_RETURN(kv_,
                   cuda::DeviceBuffer::allocate(2 * uint64_t{p.block_count} * pool_elements_ * 2));
  CUDA_CHECK(cudaMemsetAsync(kv_.data(), 0, kv_.bytes(), stream_.get()));
  ASSIGN_OR_RETURN(activations_, cuda::DeviceBuffer::allocate(activation_elements * 2));
  bf16* cursor = activations_.as<bf16>();
  const auto take = [&](uint64_t elements) {
    bf16* at = cursor;
    cursor += elements;
    return at;
  };
  x_ = take(tokens * dim);
  xn_ = take(tokens * dim);
  proj_ = take(tokens * dim);
  qkv_ = take(tokens * qkv_dim_);
  q_ = take(tokens * q_dim_);
  attn_ = take(tokens * q_dim_);
  gate_up_ = take(tokens * 2 * ff);
  hidden_ = take(tokens * ff);
  logit_xn_ = take(rows * dim);
  ASSIGN_OR_RETURN(logits_, cuda::DeviceBuffer::allocate(logits_bytes));
  ASSIGN_OR_RETURN(sampled_, cuda::DeviceBuffer::allocate(rows * sizeof(int32_t)));
  ASSIGN_OR_RETURN(workspace_,
                   cuda::DeviceBuffer::allocate(workspace_for(limits_.max_sequence_tokens)));
  ASSIGN_OR_RETURN(cublas_workspace_, cuda::DeviceBuffer::allocate(kCublasWorkspaceBytes));
  const std::vector<float> inv_freq = model::ropeInverseFrequencies(p);
  ASSIGN_OR_RETURN(inv_freq_, cuda::DeviceBuffer::allocate(inv_freq.size() * sizeof(float)));
  CUDA_CHECK(cudaMemcpyAsync(inv_freq_.data(), inv_freq.data(), inv_freq.size() * sizeof(float),
                             cudaMemcpyHostToDevice, stream_.get()));
  const uint64_t staging_bytes = cuda::maxPlanBytes(limits_);
  ASSIGN_OR_RETURN(staging_, cuda::PinnedBuffer::allocate(staging_bytes));
  ASSIGN_OR_RETURN(metadata_, cuda::DeviceBuffer::allocate(staging_bytes));
  ASSIGN_OR_RETURN(host_tokens_, cuda::PinnedBuffer::allocate(rows * sizeof(int32_t)));
  for (uint32_t layer = 0; layer < p.block_count; ++layer) {
    ASSIGN_OR_RETURN(cuda::Event event, cuda::Event::create());
    layer_events_.push_back(std::move(event));
  }
  ASSIGN_OR_RETURN(cublas_, CublasHandle::create());
  CUBLAS_CHECK(cublasSetStream(cublas_.get(), stream_.get()));
  CUBLAS_CHECK(cublasSetWorkspace(cublas_.get(), cublas_workspace_.data(), kCublasWorkspaceBytes));
  // float32 accumulation all the way: no bfloat16 partial sums when cuBLAS splits a reduction.
  CUBLAS_CHECK(cublasSetMathMode(
      cublas_.get(), static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                               CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  return cuda::cudaStatus(cudaStreamSynchronize(stream_.get()), "cudaStreamSynchronize");
}

template <typename Out>
Status CudaModelRunner::matmul(const bf16* x, uint32_t tokens, const bf16* w, uint32_t rows,
                               uint32_t cols, Out* y) {
  constexpr bool kFloatOut = std::is_same_v<Out, float>;
  if (useGemv(tokens, cols)) {
    const cudaError_t error =
        kFloatOut
            ? cuda::launchGemvF32(w, rows, cols, x, tokens, reinterpret_cast<float*>(y),
                                  stream_.get())
            : cuda::launchGemv(w, rows, cols, x, tokens, reinterpret_cast<bf16*>(y), stream_.get());
    return cuda::cudaStatus(error, "gemv");
  }
  const float one = 1.0f;
  const float zero = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(cublas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows),
                            static_cast<int>(tokens), static_cast<int>(cols), &one, w, CUDA_R_16BF,
                            static_cast<int>(cols), x, CUDA_R_16BF, static_cast<int>(cols), &zero,
                            y, kFloatOut ? CUDA_R_32F : CUDA_R_16BF, static_cast<int>(rows),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::ok();
}

Status CudaModelRunner::attention(const cuda::BatchPlan& plan, uint32_t layer) {
  const auto* tables = staged<int32_t>(plan.tables_at);
  cudaError_t error;
  const char* what;
  if (!fast_attention_) {
    what = "generic attention";
    error = cuda::launchGenericAttention(
        q_, keyPoolOf(layer), valuePoolOf(layer), tables, staged<int32_t>(plan.table_offsets_at),
        staged<int32_t>(plan.positions_at), plan.tokens, shape_, attn_, stream_.get());
  } else if (plan.decode) {
    what = "decode attention";
    error = cuda::launchDecodeAttention(q_, keyPoolOf(layer), valuePoolOf(layer), tables,
                                        plan.shape.stride, staged<int32_t>(plan.lengths_at),
                                        plan.shape.rows, plan.shape.splits, plan.shape.partition,
                                        shape_, workspace_.as<float>(), attn_, stream_.get());
  } else {
    what = "prefill attention";
    error = cuda::launchPrefillAttention(q_, keyPoolOf(layer), valuePoolOf(layer), tables,
                                         staged<cuda::PrefillChunk>(plan.chunks_at),
                                         staged<cuda::PrefillTile>(plan.tiles_at), plan.tile_count,
                                         cuda::kPrefillTiling, shape_, attn_, stream_.get());
  }
  return cuda::cudaStatus(error, what);
}

Status CudaModelRunner::enqueueModel(const cuda::BatchPlan& plan, bool layer_events) {
  const model::LlamaParams& p = params_;
  const uint32_t t = plan.tokens;
  const uint32_t dim = p.embedding_length;
  const uint32_t ff = p.feed_forward_length;
  const float eps = p.rms_epsilon;
  cudaStream_t stream = stream_.get();
  const auto check = [](cudaError_t error, const char* what) {
    return cuda::cudaStatus(error, what);
  };

  RETURN_IF_ERROR(check(
      cuda::launchEmbed(staged<int32_t>(plan.tokens_at), t, weights_.embedding(), dim, x_, stream),
      "embedding"));
  cuda::QkvParams qkv;
  qkv.tokens = t;
  qkv.heads = p.head_count;
  qkv.kv_heads = p.head_count_kv;
  qkv.head_dim = p.headDim();
  qkv.rope_dims = p.rope_dimension_count;
  // GGUF llama: llama.cpp permuted Q and K for adjacent pairs; Hugging Face and qwen: halves.
  qkv.rope_neox = p.rope_neox;
  qkv.eps = eps;
  qkv.inv_freq = inv_freq_.as<float>();
  qkv.positions = staged<int32_t>(plan.positions_at);
  qkv.slots = staged<uint32_t>(plan.slots_at);
  for (uint32_t layer = 0; layer < p.block_count; ++layer) {
    const cuda::DeviceLayer& w = weights_.layer(layer);
    qkv.bias = w.qkv_bias;
    qkv.q_norm = w.q_norm;
    qkv.k_norm = w.k_norm;
    // The previous layer's MLP output joins the residual stream here.
    RETURN_IF_ERROR(check(cuda::launchRmsNorm(x_, layer == 0 ? nullptr : proj_, w.attn_norm, t, dim,
                                              eps, xn_, stream),
                          "attention norm"));
    RETURN_IF_ERROR(matmul(xn_, t, w.wqkv, qkv_dim_, dim, qkv_));
    RETURN_IF_ERROR(
        check(cuda::launchQkvRopeStore(qkv_, qkv, q_, keyPoolOf(layer), valuePoolOf(layer), stream),
              "qkv/rope"));
    if (layer_events) {
      RETURN_IF_ERROR(
          check(cudaEventRecord(layer_events_[layer].get(), stream), "cudaEventRecord"));
    }
    RETURN_IF_ERROR(attention(plan, layer));
    RETURN_IF_ERROR(matmul(attn_, t, w.wo, dim, q_dim_, proj_));
    RETURN_IF_ERROR(
        check(cuda::launchRmsNorm(x_, proj_, w.ffn_norm, t, dim, eps, xn_, stream), "ffn norm"));
    RETURN_IF_ERROR(matmul(xn_, t, w.w_gate_up, 2 * ff, dim, gate_up_));
    RETURN_IF_ERROR(check(cuda::launchSiluMul(gate_up_, t, ff, hidden_, stream), "silu"));
    RETURN_IF_ERROR(matmul(hidden_, t, w.w_down, dim, ff, proj_));
  }
  if (plan.logit_rows == 0) return Status::ok();
  RETURN_IF_ERROR(check(
      cuda::launchGatherRmsNorm(x_, proj_, staged<int32_t>(plan.logit_rows_at), plan.logit_rows,
                                weights_.outputNorm(), dim, eps, logit_xn_, stream),
      "output norm"));
  RETURN_IF_ERROR(matmul(logit_xn_, plan.logit_rows, weights_.output(), p.vocab_size, dim,
                         logits_.as<float>()));
  if (plan.shape.sampled) {
    RETURN_IF_ERROR(check(cuda::launchSample(logits_.as<float>(), p.vocab_size,
                                             staged<cuda::DeviceDraw>(plan.draws_at),
                                             plan.logit_rows, sampled_.as<int32_t>(), stream),
                          "sampling"));
  }
  return Status::ok();
}

Status CudaModelRunner::forward(std::span<const SequenceChunk> chunks, std::span<float> logits,
                                const LayerDoneCallback& on_layer_done) {
  return run(chunks, {}, logits, {}, on_layer_done);
}

Status CudaModelRunner::forwardSampled(std::span<const SequenceChunk> chunks,
                                       std::span<const TokenDraw> draws,
                                       std::span<model::TokenId> tokens,
                                       const LayerDoneCallback& on_layer_done) {
  if (draws.size() != tokens.size()) {
    return invalidArgument(str(draws.size()) + " draws but " + str(tokens.size()) + " tokens");
  }
  size_t wanted = 0;
  for (const SequenceChunk& chunk : chunks) wanted += chunk.want_logits ? 1 : 0;
  if (draws.size() != wanted) {
    return invalidArgument(str(draws.size()) + " draws for " + str(wanted) +
                           " chunks that want logits");
  }
  if (wanted == 0) return run(chunks, {}, {}, {}, on_layer_done);
  return run(chunks, draws, {}, tokens, on_layer_done);
}

Status CudaModelRunner::run(std::span<const SequenceChunk> chunks, std::span<const TokenDraw> draws,
                            std::span<float> logits, std::span<model::TokenId> tokens,
                            const LayerDoneCallback& on_layer_done) {
  CUDA_CHECK(cudaSetDevice(device_));
  const bool sampled = !draws.empty();
  const std::span<uint8_t> image(staging_.as<uint8_t>(), staging_.bytes());
  ASSIGN_OR_RETURN(cuda::BatchPlan plan,
                   cuda::planBatch(chunks, draws, on_layer_done == nullptr, limits_, image));
  if (!sampled && logits.size() != uint64_t{plan.real_rows} * params_.vocab_size) {
    return invalidArgument("logits hold " + str(logits.size()) + " floats, the batch makes " +
                           str(plan.real_rows) + " × " + str(params_.vocab_size));
  }
  cudaStream_t stream = stream_.get();
  CUDA_CHECK(cudaMemcpyAsync(metadata_.data(), staging_.data(), plan.bytes, cudaMemcpyHostToDevice,
                             stream));
  if (plan.decode && graphs_enabled_) {
    auto graph = graphs_.find(plan.shape);
    if (graph == graphs_.end() && graphs_.size() < kMaxGraphs) {
      CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      const Status captured = enqueueModel(plan, false);
      Result<cuda::GraphExec> exec = cuda::GraphExec::endCapture(stream);
      RETURN_IF_ERROR(captured);
      RETURN_IF_ERROR(exec.status());
      graph = graphs_.emplace(plan.shape, std::move(exec).value()).first;
    }
    if (graph != graphs_.end()) {
      CUDA_CHECK(cudaGraphLaunch(graph->second.get(), stream));
    } else {
      RETURN_IF_ERROR(enqueueModel(plan, false));
    }
  } else {
    cuda::BatchPlan eager = plan;
    eager.shape.sampled = sampled;  // prefill passes sample through the same flag
    RETURN_IF_ERROR(enqueueModel(eager, on_layer_done != nullptr));
  }
  if (sampled) {
    CUDA_CHECK(cudaMemcpyAsync(host_tokens_.data(), sampled_.data(),
                               plan.real_rows * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
  } else if (plan.real_rows > 0) {
    CUDA_CHECK(cudaMemcpyAsync(logits.data(), logits_.data(), logits.size() * sizeof(float),
                               cudaMemcpyDeviceToHost, stream));
  }
  if (on_layer_done) {
    for (uint32_t layer = 0; layer < params_.block_count; ++layer) {
      CUDA_CHECK(cudaEventSynchronize(layer_events_[layer].get()));
      on_layer_done(layer);
    }
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  if (sampled) {
    const auto* host = host_tokens_.as<int32_t>();
    for (uint32_t i = 0; i < plan.real_rows; ++i) tokens[i] = host[i];
  }
  return Status::ok();
}

}  // namespace

bool cudaRuntimeBuilt() { return true; }

Result<GpuInfo> describeGpu(int device) {
  ASSIGN_OR_RETURN(cuda::DeviceInfo info, cuda::selectDevice(device));
  return GpuInfo{info.index, info.name, info.total_bytes, info.free_bytes};
}

Result<std::unique_ptr<ModelRunner>> createCudaModelRunner(const model::LlamaParams& params,
                                                           const model::LlamaTensors& tensors,
                                                           const CudaRunnerConfig& config) {
  return CudaModelRunner::create(params, tensors, config);
}

}  // namespace kvferry::engine
