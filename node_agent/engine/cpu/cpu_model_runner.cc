#include "node_agent/engine/cpu/cpu_model_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>

namespace kvferry::engine::cpu {
namespace {

constexpr size_t kAlignment = 64;
// Matrix rows handed out per task: a multiple of every kernel tile (4 and 2 rows).
constexpr size_t kRowTile = 16;
// Below this many multiply-adds a matmul runs on the calling thread: waking a worker costs more.
constexpr uint64_t kMinParallelMacs = uint64_t{1} << 15;
// Per-token work (norms, RoPE, SwiGLU) is split over the pool from this many tokens on.
constexpr uint32_t kMinParallelTokens = 8;

std::string str(uint64_t value) { return std::to_string(value); }

}  // namespace

AlignedFloats::AlignedFloats(uint64_t count)
    : data_(static_cast<float*>(::operator new[](std::max<uint64_t>(count, 1) * sizeof(float),
                                                 std::align_val_t{kAlignment}))),
      size_(count) {
  std::memset(data_.get(), 0, count * sizeof(float));
}

void AlignedFloats::Free::operator()(float* p) const {
  ::operator delete[](p, std::align_val_t{kAlignment});
}

Result<std::unique_ptr<CpuModelRunner>> CpuModelRunner::create(
    std::shared_ptr<const LlamaWeights> weights, const RunnerConfig& config) {
  if (weights == nullptr) return invalidArgument("no weights");
  if (config.block_tokens == 0) return invalidArgument("block_tokens must be positive");
  if (config.num_blocks == 0) return invalidArgument("num_blocks must be positive");
  if (config.max_batch_tokens == 0) return invalidArgument("max_batch_tokens must be positive");
  const model::LlamaParams& p = weights->params();
  // Pools are addressed with 64-bit offsets, sequence positions with 32-bit ones.
  const uint64_t pool_floats =
      uint64_t{config.num_blocks} * config.block_tokens * p.head_count_kv * p.headDim();
  if (uint64_t{config.num_blocks} * config.block_tokens > UINT32_MAX ||
      pool_floats > (uint64_t{1} << 40)) {
    return invalidArgument(str(config.num_blocks) + " blocks of " + str(config.block_tokens) +
                           " tokens are too many to address");
  }
  return std::unique_ptr<CpuModelRunner>(new CpuModelRunner(std::move(weights), config));
}

CpuModelRunner::CpuModelRunner(std::shared_ptr<const LlamaWeights> weights,
                               const RunnerConfig& config)
    : weights_(std::move(weights)),
      params_(weights_->params()),
      geometry_{params_.block_count, config.block_tokens, params_.head_count_kv, params_.headDim(),
                config.num_blocks},
      max_batch_tokens_(config.max_batch_tokens),
      max_sequence_tokens_(static_cast<uint32_t>(std::min<uint64_t>(
          params_.context_length, uint64_t{config.num_blocks} * config.block_tokens))),
      q_dim_(params_.head_count * params_.headDim()),
      kv_dim_(params_.kvDim()),
      qkv_dim_(q_dim_ + 2 * kv_dim_),
      isa_(detectIsa()),
      token_ids_(max_batch_tokens_),
      token_positions_(max_batch_tokens_),
      token_block_tables_(max_batch_tokens_),
      x_(uint64_t{max_batch_tokens_} * params_.embedding_length),
      xn_(uint64_t{max_batch_tokens_} * params_.embedding_length),
      qkv_(uint64_t{max_batch_tokens_} * qkv_dim_),
      attn_(uint64_t{max_batch_tokens_} * q_dim_),
      proj_(uint64_t{max_batch_tokens_} * params_.embedding_length),
      gate_up_(uint64_t{max_batch_tokens_} * 2 * params_.feed_forward_length),
      hidden_(uint64_t{max_batch_tokens_} * params_.feed_forward_length),
      rope_cos_(uint64_t{max_batch_tokens_} * params_.rope_dimension_count / 2),
      rope_sin_(uint64_t{max_batch_tokens_} * params_.rope_dimension_count / 2),
      sampler_(params_.vocab_size),
      pool_(config.threads) {
  logit_tokens_.reserve(max_batch_tokens_);
  const uint64_t pool_floats = geometry_.poolBytes() / sizeof(float);
  for (uint32_t layer = 0; layer < geometry_.layers; ++layer) {
    key_pools_.emplace_back(pool_floats);
    value_pools_.emplace_back(pool_floats);
  }
  // As llama2.c computes it: 1 / base^(2k / rope_dims), in float (over the Llama 3 factors).
  inv_freq_ = model::ropeInverseFrequencies(params_);
  for (uint32_t worker = 0; worker < pool_.size(); ++worker) {
    scores_.emplace_back(max_sequence_tokens_);
  }
}

KvPoolRegion CpuModelRunner::keyPool(uint32_t layer) {
  return {key_pools_[layer].data(), geometry_.poolBytes(), -1};
}

KvPoolRegion CpuModelRunner::valuePool(uint32_t layer) {
  return {value_pools_[layer].data(), geometry_.poolBytes(), -1};
}

Result<uint32_t> CpuModelRunner::prepare(std::span<const SequenceChunk> chunks,
                                         size_t logits_floats) {
  uint32_t tokens = 0;
  uint64_t wanted = 0;
  for (const SequenceChunk& chunk : chunks) {
    const uint64_t count = chunk.tokens.size();
    if (count == 0) return invalidArgument("a chunk without tokens");
    if (count > max_batch_tokens_ - tokens) {
      return invalidArgument("the batch holds more than " + str(max_batch_tokens_) + " tokens");
    }
    const uint64_t end = uint64_t{chunk.start_position} + count;
    if (end > max_sequence_tokens_) {
      return outOfRange("positions up to " + str(end) + " exceed the " + str(max_sequence_tokens_) +
                        " a sequence may hold");
    }
    const uint64_t blocks = (end + geometry_.block_tokens - 1) / geometry_.block_tokens;
    if (chunk.block_table.size() < blocks) {
      return invalidArgument("a block table of " + str(chunk.block_table.size()) + " blocks for " +
                             str(end) + " positions");
    }
    for (uint64_t b = 0; b < blocks; ++b) {
      if (chunk.block_table[b] >= geometry_.num_blocks) {
        return outOfRange("block " + str(chunk.block_table[b]) + " past the pool's " +
                          str(geometry_.num_blocks));
      }
    }
    for (model::TokenId token : chunk.tokens) {
      if (token < 0 || static_cast<uint32_t>(token) >= params_.vocab_size) {
        return invalidArgument("token " + std::to_string(token) + " outside the vocabulary of " +
                               str(params_.vocab_size));
      }
    }
    tokens += static_cast<uint32_t>(count);
    wanted += chunk.want_logits ? 1 : 0;
  }
  if (logits_floats != wanted * params_.vocab_size) {
    return invalidArgument("logits hold " + str(logits_floats) + " floats, the batch makes " +
                           str(wanted) + " × " + str(params_.vocab_size));
  }
  logit_tokens_.clear();
  attended_positions_ = 0;
  uint32_t t = 0;
  for (const SequenceChunk& chunk : chunks) {
    for (size_t i = 0; i < chunk.tokens.size(); ++i, ++t) {
      token_ids_[t] = chunk.tokens[i];
      token_positions_[t] = chunk.start_position + static_cast<uint32_t>(i);
      token_block_tables_[t] = chunk.block_table.data();
      attended_positions_ += token_positions_[t] + 1;
    }
    if (chunk.want_logits) logit_tokens_.push_back(t - 1);
  }
  return tokens;
}

template <typename Fn>
void CpuModelRunner::forEachToken(uint32_t tokens, Fn&& fn) {
  const auto range = [&](size_t begin, size_t end, uint32_t) {
    for (size_t t = begin; t < end; ++t) fn(static_cast<uint32_t>(t));
  };
  if (tokens < kMinParallelTokens) {
    range(0, tokens, 0);
  } else {
    pool_.run(tokens, range);
  }
}

void CpuModelRunner::matmul(const float* x, uint32_t tokens, const Matrix& w, float* y) {
  const auto range = [&](size_t begin, size_t end, uint32_t) {
    matmulRows(isa_, x, tokens, w.cols(), w.data(), begin * kRowTile,
               std::min<size_t>(end * kRowTile, w.rows()), y, w.rows());
  };
  const size_t tiles = (w.rows() + kRowTile - 1) / kRowTile;
  if (uint64_t{tokens} * w.size() < kMinParallelMacs) {
    range(0, tiles, 0);
  } else {
    pool_.run(tiles, range);
  }
}

void CpuModelRunner::attentionLayer(uint32_t layer, uint32_t tokens) {
  const uint32_t head_dim = params_.headDim();
  const uint32_t half_rope = params_.rope_dimension_count / 2;
  const uint32_t block_tokens = geometry_.block_tokens;
  float* const key_pool = key_pools_[layer].data();
  float* const value_pool = value_pools_[layer].data();
  const auto slot = [&](uint32_t t, uint32_t position) {
    const uint32_t block = token_block_tables_[t][position / block_tokens];
    return (uint64_t{block} * block_tokens + position % block_tokens) * kv_dim_;
  };

  const LlamaLayerWeights& w = weights_->layer(layer);
  const float* const bias = w.qkv_bias.size() != 0 ? w.qkv_bias.data() : nullptr;
  const bool qk_norm = w.q_norm.size() != 0;
  const auto rotate = params_.rope_neox ? ropeNeox : rope;
  // Add the biases, normalize each head (qwen3), rotate this batch's queries and keys, and store
  // its keys and values in their slots first: a token attends to the tokens before it in its own
  // chunk too.
  forEachToken(tokens, [&](uint32_t t) {
    float* q = qkv_.data() + uint64_t{t} * qkv_dim_;
    float* k = q + q_dim_;
    const float* v = k + kv_dim_;
    if (bias != nullptr) {
      for (uint32_t i = 0; i < qkv_dim_; ++i) q[i] += bias[i];
    }
    if (qk_norm) {
      for (uint32_t h = 0; h < params_.head_count; ++h) {
        float* head = q + uint64_t{h} * head_dim;
        rmsNorm(head, w.q_norm.data(), head_dim, params_.rms_epsilon, head);
      }
      for (uint32_t h = 0; h < params_.head_count_kv; ++h) {
        float* head = k + uint64_t{h} * head_dim;
        rmsNorm(head, w.k_norm.data(), head_dim, params_.rms_epsilon, head);
      }
    }
    const float* cos = rope_cos_.data() + uint64_t{t} * half_rope;
    const float* sin = rope_sin_.data() + uint64_t{t} * half_rope;
    rotate(q, params_.head_count, head_dim, params_.rope_dimension_count, cos, sin);
    rotate(k, params_.head_count_kv, head_dim, params_.rope_dimension_count, cos, sin);
    const uint64_t at = slot(t, token_positions_[t]);
    std::memcpy(key_pool + at, k, kv_dim_ * sizeof(float));
    std::memcpy(value_pool + at, v, kv_dim_ * sizeof(float));
  });

  const uint32_t heads = params_.head_count;
  const uint32_t group = params_.queryGroupSize();
  const float scale_divisor = std::sqrt(static_cast<float>(head_dim));
  const auto range = [&](size_t begin, size_t end, uint32_t thread) {
    float* scores = scores_[thread].data();
    for (size_t item = begin; item < end; ++item) {
      const uint32_t t = static_cast<uint32_t>(item / heads);
      const uint32_t head = static_cast<uint32_t>(item % heads);
      const uint64_t kv_offset = uint64_t{head / group} * head_dim;
      const float* q = qkv_.data() + uint64_t{t} * qkv_dim_ + uint64_t{head} * head_dim;
      const uint32_t length = token_positions_[t] + 1;
      for (uint32_t p = 0; p < length; ++p) {
        scores[p] = dot(q, key_pool + slot(t, p) + kv_offset, head_dim) / scale_divisor;
      }
      softmax(scores, length);
      float* out = attn_.data() + uint64_t{t} * q_dim_ + uint64_t{head} * head_dim;
      std::fill(out, out + head_dim, 0.0f);
      for (uint32_t p = 0; p < length; ++p) {
        axpy(scores[p], value_pool + slot(t, p) + kv_offset, out, head_dim);
      }
    }
  };
  const uint64_t items = uint64_t{tokens} * heads;
  if (attended_positions_ * heads * head_dim < kMinParallelMacs) {
    range(0, items, 0);
  } else {
    pool_.run(items, range);
  }
}

Status CpuModelRunner::forward(std::span<const SequenceChunk> chunks, std::span<float> logits,
                               const LayerDoneCallback& on_layer_done) {
  ASSIGN_OR_RETURN(const uint32_t tokens, prepare(chunks, logits.size()));
  const uint32_t dim = params_.embedding_length;
  const uint32_t ff = params_.feed_forward_length;
  const float eps = params_.rms_epsilon;
  const uint32_t half_rope = params_.rope_dimension_count / 2;
  float* const x = x_.data();
  float* const xn = xn_.data();

  forEachToken(tokens, [&](uint32_t t) {
    std::memcpy(x + uint64_t{t} * dim, weights_->tokenEmbedding().row(token_ids_[t]),
                dim * sizeof(float));
    // The RoPE angles of this token's position, shared by every layer and head.
    const float position = static_cast<float>(token_positions_[t]);
    for (uint32_t k = 0; k < half_rope; ++k) {
      const float angle = position * inv_freq_[k];
      rope_cos_.data()[uint64_t{t} * half_rope + k] = std::cos(angle);
      rope_sin_.data()[uint64_t{t} * half_rope + k] = std::sin(angle);
    }
  });

  for (uint32_t layer = 0; layer < params_.block_count; ++layer) {
    const LlamaLayerWeights& w = weights_->layer(layer);
    forEachToken(tokens, [&](uint32_t t) {
      rmsNorm(x + uint64_t{t} * dim, w.attn_norm.data(), dim, eps, xn + uint64_t{t} * dim);
    });
    matmul(xn, tokens, w.wqkv, qkv_.data());
    attentionLayer(layer, tokens);
    // The layer's K/V were stored at the start of attentionLayer(); the rest only reads them.
    if (on_layer_done) on_layer_done(layer);
    matmul(attn_.data(), tokens, w.wo, proj_.data());  // q_dim → dim
    forEachToken(tokens, [&](uint32_t t) {
      float* row = x + uint64_t{t} * dim;
      const float* add = proj_.data() + uint64_t{t} * dim;
      for (uint32_t i = 0; i < dim; ++i) row[i] += add[i];
      rmsNorm(row, w.ffn_norm.data(), dim, eps, xn + uint64_t{t} * dim);
    });
    matmul(xn, tokens, w.w_gate_up, gate_up_.data());
    forEachToken(tokens, [&](uint32_t t) {
      const float* gate = gate_up_.data() + uint64_t{t} * 2 * ff;
      siluMul(gate, gate + ff, ff, hidden_.data() + uint64_t{t} * ff);
    });
    matmul(hidden_.data(), tokens, w.w_down, proj_.data());
    forEachToken(tokens, [&](uint32_t t) {
      float* row = x + uint64_t{t} * dim;
      const float* add = proj_.data() + uint64_t{t} * dim;
      for (uint32_t i = 0; i < dim; ++i) row[i] += add[i];
    });
  }

  // Only the tokens whose logits are wanted go through the final norm and the output matrix.
  const auto wanted = static_cast<uint32_t>(logit_tokens_.size());
  for (uint32_t i = 0; i < wanted; ++i) {
    rmsNorm(x + uint64_t{logit_tokens_[i]} * dim, weights_->outputNorm().data(), dim, eps,
            xn + uint64_t{i} * dim);
  }
  if (wanted > 0) matmul(xn, wanted, weights_->output(), logits.data());
  return Status::ok();
}

Status CpuModelRunner::forwardSampled(std::span<const SequenceChunk> chunks,
                                      std::span<const TokenDraw> draws,
                                      std::span<model::TokenId> tokens,
                                      const LayerDoneCallback& on_layer_done) {
  size_t wanted = 0;
  for (const SequenceChunk& chunk : chunks) wanted += chunk.want_logits ? 1 : 0;
  if (draws.size() != wanted || tokens.size() != wanted) {
    return invalidArgument(str(draws.size()) + " draws and " + str(tokens.size()) + " tokens for " +
                           str(wanted) + " chunks that want logits");
  }
  const size_t vocab = params_.vocab_size;
  sampled_logits_.resize(wanted * vocab);
  RETURN_IF_ERROR(forward(chunks, sampled_logits_, on_layer_done));
  for (size_t i = 0; i < wanted; ++i) {
    tokens[i] = sampler_.pick({sampled_logits_.data() + i * vocab, vocab}, draws[i]);
  }
  return Status::ok();
}

}  // namespace kvferry::engine::cpu
