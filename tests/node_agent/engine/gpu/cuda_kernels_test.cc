// The CUDA kernels against CPU references (DESIGN.md §5: a CPU reference for every kernel's
// test). References mirror the kernels' bfloat16 rounding points, so the norms and RoPE agree
// within one bfloat16 unit; GEMV and attention within their accumulation order's error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <vector>

#include "node_agent/engine/cuda/attention.h"
#include "node_agent/engine/cuda/kernels.h"
#include "node_agent/engine/cuda/sampling.h"
#include "tests/node_agent/engine/gpu/gpu_test_util.h"

namespace kvferry::engine::cuda {
namespace {

using testing::download;
using testing::downloadBf16;
using testing::randomValues;
using testing::roundBf16;
using testing::upload;
using testing::uploadBf16;

// One bfloat16 unit in the last place of `value`, the tolerance of a mirrored rounding.
float bf16Ulp(float value) {
  const float magnitude = std::max(std::fabs(value), 1e-30f);
  return std::ldexp(1.0f, std::ilogb(magnitude) - 7);
}

TEST(CudaKernelsTest, GemvMatchesAFloat64DotProduct) {
  const uint32_t rows = 301;
  const uint32_t cols = 4096 + 8 * 3;  // not a multiple of the unrolled step
  const std::vector<float> w = randomValues(uint64_t{rows} * cols, 1, 0.05f);
  for (uint32_t tokens : {1u, 3u, 8u}) {
    const std::vector<float> x = randomValues(uint64_t{tokens} * cols, 2 + tokens);
    DeviceBuffer dw = uploadBf16(w);
    DeviceBuffer dx = uploadBf16(x);
    Result<DeviceBuffer> y16 = DeviceBuffer::allocate(uint64_t{tokens} * rows * 2);
    Result<DeviceBuffer> y32 = DeviceBuffer::allocate(uint64_t{tokens} * rows * 4);
    ASSERT_TRUE(y16.isOk() && y32.isOk());
    ASSERT_EQ(
        launchGemv(dw.as<bf16>(), rows, cols, dx.as<bf16>(), tokens, y16->as<bf16>(), nullptr),
        cudaSuccess);
    ASSERT_EQ(
        launchGemvF32(dw.as<bf16>(), rows, cols, dx.as<bf16>(), tokens, y32->as<float>(), nullptr),
        cudaSuccess);
    const std::vector<float> got16 = downloadBf16(*y16, uint64_t{tokens} * rows);
    const std::vector<float> got32 = download<float>(*y32, uint64_t{tokens} * rows);
    for (uint32_t t = 0; t < tokens; ++t) {
      for (uint32_t r = 0; r < rows; ++r) {
        double ref = 0;
        double magnitude = 0;
        for (uint32_t c = 0; c < cols; ++c) {
          ref += double{w[uint64_t{r} * cols + c]} * x[uint64_t{t} * cols + c];
          magnitude += std::fabs(double{w[uint64_t{r} * cols + c]} * x[uint64_t{t} * cols + c]);
        }
        const size_t i = uint64_t{t} * rows + r;
        EXPECT_NEAR(got32[i], ref, 1e-6 * magnitude + 1e-6) << "f32 t=" << t << " r=" << r;
        EXPECT_NEAR(got16[i], ref, bf16Ulp(static_cast<float>(ref)) + 1e-6 * magnitude)
            << "bf16 t=" << t << " r=" << r;
      }
    }
  }
}

// 2048: the 16-byte path; 2044: rows that are not whole 16-byte pieces, one value at a time.
class CudaRmsNormTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(CudaRmsNormTest, RoundsAsTransformersDoes) {
  const uint32_t rows = 5;
  const uint32_t dim = GetParam();
  const float eps = 1e-5f;
  std::vector<float> x = randomValues(uint64_t{rows} * dim, 3, 2.0f);
  const std::vector<float> add = randomValues(uint64_t{rows} * dim, 4, 0.5f);
  const std::vector<float> w = randomValues(dim, 5, 1.5f);
  DeviceBuffer dx = uploadBf16(x);
  DeviceBuffer dadd = uploadBf16(add);
  DeviceBuffer dw = uploadBf16(w);
  Result<DeviceBuffer> out = DeviceBuffer::allocate(uint64_t{rows} * dim * 2);
  ASSERT_TRUE(out.isOk());
  ASSERT_EQ(launchRmsNorm(dx.as<bf16>(), dadd.as<bf16>(), dw.as<bf16>(), rows, dim, eps,
                          out->as<bf16>(), nullptr),
            cudaSuccess);
  const std::vector<float> got = downloadBf16(*out, uint64_t{rows} * dim);
  const std::vector<float> residual = downloadBf16(dx, uint64_t{rows} * dim);
  for (uint32_t r = 0; r < rows; ++r) {
    double squares = 0;
    std::vector<float> v(dim);
    for (uint32_t i = 0; i < dim; ++i) {
      v[i] = roundBf16(x[r * dim + i] + add[r * dim + i]);
      squares += double{v[i]} * v[i];
      ASSERT_EQ(residual[r * dim + i], v[i]) << "the residual add is written back";
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(squares / dim) + eps);
    for (uint32_t i = 0; i < dim; ++i) {
      const float ref = roundBf16(w[i] * roundBf16(v[i] * scale));
      EXPECT_NEAR(got[r * dim + i], ref, bf16Ulp(ref) * 1.01f) << r << "," << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dims, CudaRmsNormTest, ::testing::Values(2048u, 2044u));

// 14336 (Llama-8B's): the 16-byte path; 1000: a row of ff values is not whole 16-byte pieces.
class CudaSiluMulTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(CudaSiluMulTest, MatchesTheBf16Mlp) {
  const uint32_t rows = 3;
  const uint32_t ff = GetParam();
  const std::vector<float> gate_up = randomValues(uint64_t{rows} * 2 * ff, 6, 4.0f);
  DeviceBuffer din = uploadBf16(gate_up);
  Result<DeviceBuffer> out = DeviceBuffer::allocate(uint64_t{rows} * ff * 2);
  ASSERT_TRUE(out.isOk());
  ASSERT_EQ(cudaMemset(out->data(), 0xff, uint64_t{rows} * ff * 2), cudaSuccess);  // NaN: unwritten
  ASSERT_EQ(launchSiluMul(din.as<bf16>(), rows, ff, out->as<bf16>(), nullptr), cudaSuccess);
  const std::vector<float> got = downloadBf16(*out, uint64_t{rows} * ff);
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint32_t i = 0; i < ff; ++i) {
      const float g = roundBf16(gate_up[uint64_t{r} * 2 * ff + i]);
      const float u = roundBf16(gate_up[uint64_t{r} * 2 * ff + ff + i]);
      const float ref = roundBf16(roundBf16(g / (1.0f + std::exp(-g))) * u);
      // expf and std::exp may differ in the last float bit, which can move the rounded silu by
      // one bfloat16 unit: two units of the product at most.
      ASSERT_NEAR(got[uint64_t{r} * ff + i], ref, bf16Ulp(ref) * 2.01f) << r << "," << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Widths, CudaSiluMulTest, ::testing::Values(14336u, 1000u));

// CPU mirror of launchQkvRopeStore for one token row.
void qkvReference(const std::vector<float>& row, const QkvParams& p, const std::vector<float>& inv,
                  float position, std::vector<float>& q, std::vector<float>& k,
                  std::vector<float>& v) {
  const uint32_t hd = p.head_dim;
  const uint32_t half = p.rope_dims / 2;
  const auto rotate = [&](const float* in, float* out) {
    for (uint32_t d = 0; d < hd; ++d) out[d] = in[d];
    for (uint32_t j = 0; j < half; ++j) {
      const uint32_t i0 = p.rope_neox ? j : 2 * j;
      const uint32_t i1 = p.rope_neox ? j + half : 2 * j + 1;
      const float angle = position * inv[j];
      const float c = roundBf16(std::cos(angle));
      const float s = roundBf16(std::sin(angle));
      out[i0] = roundBf16(roundBf16(in[i0] * c) + roundBf16(-in[i1] * s));
      out[i1] = roundBf16(roundBf16(in[i1] * c) + roundBf16(in[i0] * s));
    }
  };
  q.assign(uint64_t{p.heads} * hd, 0);
  k.assign(uint64_t{p.kv_heads} * hd, 0);
  v.assign(uint64_t{p.kv_heads} * hd, 0);
  for (uint32_t h = 0; h < p.heads; ++h) rotate(row.data() + h * hd, q.data() + h * hd);
  for (uint32_t h = 0; h < p.kv_heads; ++h) {
    rotate(row.data() + (p.heads + h) * hd, k.data() + h * hd);
    for (uint32_t d = 0; d < hd; ++d) v[h * hd + d] = row[(p.heads + p.kv_heads + h) * hd + d];
  }
}

TEST(CudaKernelsTest, QkvRopeStoreWritesRotatedQueriesAndCacheSlots) {
  for (bool neox : {false, true}) {
    QkvParams p;
    p.tokens = 3;
    p.heads = 4;
    p.kv_heads = 2;
    p.head_dim = 64;
    p.rope_dims = 48;  // partial rotation: the last 16 dims pass through
    p.rope_neox = neox;
    const uint32_t q_dim = p.heads * p.head_dim;
    const uint32_t kv_dim = p.kv_heads * p.head_dim;
    const uint32_t width = q_dim + 2 * kv_dim;
    const std::vector<float> qkv = randomValues(uint64_t{p.tokens} * width, 6);
    std::vector<float> inv(p.rope_dims / 2);
    for (uint32_t j = 0; j < inv.size(); ++j) {
      inv[j] = 1.0f / std::pow(500000.0f, 2.0f * j / p.rope_dims) / (j % 3 == 0 ? 8.0f : 1.0f);
    }
    const std::vector<int32_t> positions = {0, 17, 8191};
    const std::vector<uint32_t> slots = {5, 0, 9};
    const uint32_t pool_slots = 10;
    DeviceBuffer dqkv = uploadBf16(qkv);
    DeviceBuffer dinv = upload(inv);
    DeviceBuffer dpos = upload(positions);
    DeviceBuffer dslots = upload(slots);
    p.inv_freq = dinv.as<float>();
    p.positions = dpos.as<int32_t>();
    p.slots = dslots.as<uint32_t>();
    DeviceBuffer dq = uploadBf16(std::vector<float>(uint64_t{p.tokens} * q_dim, 0.0f));
    DeviceBuffer dk = uploadBf16(std::vector<float>(uint64_t{pool_slots} * kv_dim, 0.0f));
    DeviceBuffer dv = uploadBf16(std::vector<float>(uint64_t{pool_slots} * kv_dim, 0.0f));
    ASSERT_EQ(launchQkvRopeStore(dqkv.as<bf16>(), p, dq.as<bf16>(), dk.as<bf16>(), dv.as<bf16>(),
                                 nullptr),
              cudaSuccess);
    const std::vector<float> q = downloadBf16(dq, uint64_t{p.tokens} * q_dim);
    const std::vector<float> k = downloadBf16(dk, uint64_t{pool_slots} * kv_dim);
    const std::vector<float> v = downloadBf16(dv, uint64_t{pool_slots} * kv_dim);
    for (uint32_t t = 0; t < p.tokens; ++t) {
      std::vector<float> row(qkv.begin() + uint64_t{t} * width,
                             qkv.begin() + uint64_t{t + 1} * width);
      std::vector<float> rq, rk, rv;
      qkvReference(row, p, inv, static_cast<float>(positions[t]), rq, rk, rv);
      for (uint32_t i = 0; i < q_dim; ++i) {
        EXPECT_NEAR(q[t * q_dim + i], rq[i], bf16Ulp(rq[i]) * 2.01f)
            << neox << " q " << t << "," << i;
      }
      for (uint32_t i = 0; i < kv_dim; ++i) {
        EXPECT_NEAR(k[slots[t] * kv_dim + i], rk[i], bf16Ulp(rk[i]) * 2.01f) << neox << " k " << t;
        EXPECT_EQ(v[slots[t] * kv_dim + i], rv[i]) << neox << " v " << t;
      }
    }
  }
}

// Attention over a paged pool: the fast kernels and the generic one against float64.
class AttentionTest : public ::testing::TestWithParam<std::pair<uint32_t, uint32_t>> {};

TEST_P(AttentionTest, PrefillDecodeAndGenericMatchFloat64) {
  const auto [head_dim, group] = GetParam();
  AttentionShape shape;
  shape.kv_heads = 2;
  shape.heads = shape.kv_heads * group;
  shape.head_dim = head_dim;
  shape.block_tokens = 16;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const uint32_t q_dim = shape.heads * head_dim;
  const uint32_t kv_dim = shape.kv_heads * head_dim;
  const uint32_t num_blocks = 64;
  // Three sequences: 150 new tokens after a 37-token cached prefix, 5 tokens, and 300 after 100
  // (several tiles of every tiling, the last one partial).
  struct Seq {
    uint32_t start;
    uint32_t length;
    std::vector<int32_t> table;
  };
  std::vector<Seq> seqs = {{37, 150, {}}, {0, 5, {}}, {100, 300, {}}};
  uint32_t next_block = num_blocks - 1;
  for (Seq& s : seqs) {
    for (uint32_t b = 0; b * 16 < s.start + s.length; ++b)
      s.table.push_back(static_cast<int32_t>(next_block--));
  }
  const std::vector<float> k_pool = randomValues(uint64_t{num_blocks} * 16 * kv_dim, 11);
  const std::vector<float> v_pool = randomValues(uint64_t{num_blocks} * 16 * kv_dim, 12);
  uint32_t tokens = 0;
  for (const Seq& s : seqs) tokens += s.length;
  const std::vector<float> q = randomValues(uint64_t{tokens} * q_dim, 13, 2.0f);

  // Reference: every query of every sequence.
  std::vector<double> ref(uint64_t{tokens} * q_dim);
  std::vector<int32_t> positions;
  std::vector<int32_t> table_offsets;
  std::vector<int32_t> tables;
  std::vector<PrefillChunk> chunks;
  uint32_t row = 0;
  for (uint32_t c = 0; c < seqs.size(); ++c) {
    const Seq& s = seqs[c];
    chunks.push_back({row, s.length, s.start, static_cast<uint32_t>(tables.size())});
    for (uint32_t i = 0; i < s.length; ++i, ++row) {
      const uint32_t pos = s.start + i;
      positions.push_back(static_cast<int32_t>(pos));
      table_offsets.push_back(static_cast<int32_t>(tables.size()));
      for (uint32_t h = 0; h < shape.heads; ++h) {
        const uint32_t kvh = h / group;
        std::vector<double> scores(pos + 1);
        double max = -1e300;
        for (uint32_t key = 0; key <= pos; ++key) {
          const uint64_t slot = uint64_t(s.table[key / 16]) * 16 + key % 16;
          double dot = 0;
          for (uint32_t d = 0; d < head_dim; ++d) {
            dot += double{q[uint64_t{row} * q_dim + h * head_dim + d]} *
                   k_pool[slot * kv_dim + kvh * head_dim + d];
          }
          scores[key] = dot * shape.scale;
          max = std::max(max, scores[key]);
        }
        double sum = 0;
        for (double& sc : scores) sum += (sc = std::exp(sc - max));
        for (uint32_t d = 0; d < head_dim; ++d) {
          double out = 0;
          for (uint32_t key = 0; key <= pos; ++key) {
            const uint64_t slot = uint64_t(s.table[key / 16]) * 16 + key % 16;
            out += scores[key] / sum * v_pool[slot * kv_dim + kvh * head_dim + d];
          }
          ref[uint64_t{row} * q_dim + h * head_dim + d] = out;
        }
      }
    }
    tables.insert(tables.end(), s.table.begin(), s.table.end());
  }
  DeviceBuffer dq = uploadBf16(q);
  DeviceBuffer dk = uploadBf16(k_pool);
  DeviceBuffer dv = uploadBf16(v_pool);
  DeviceBuffer dtables = upload(tables);
  DeviceBuffer doffsets = upload(table_offsets);
  DeviceBuffer dpositions = upload(positions);
  DeviceBuffer dchunks = upload(chunks);
  const auto check = [&](const std::vector<float>& got, const char* what, uint32_t first_row,
                         uint32_t rows) {
    double worst = 0;
    for (uint32_t r = first_row; r < first_row + rows; ++r) {
      for (uint32_t i = 0; i < q_dim; ++i) {
        worst =
            std::max(worst, std::fabs(got[uint64_t{r} * q_dim + i] - ref[uint64_t{r} * q_dim + i]));
      }
    }
    EXPECT_LT(worst, 1.5e-2) << what << " head_dim " << head_dim << " group " << group;
  };

  DeviceBuffer generic = uploadBf16(std::vector<float>(uint64_t{tokens} * q_dim, 0));
  ASSERT_EQ(
      launchGenericAttention(dq.as<bf16>(), dk.as<bf16>(), dv.as<bf16>(), dtables.as<int32_t>(),
                             doffsets.as<int32_t>(), dpositions.as<int32_t>(), tokens, shape,
                             generic.as<bf16>(), nullptr),
      cudaSuccess);
  check(downloadBf16(generic, uint64_t{tokens} * q_dim), "generic", 0, tokens);

  for (const PrefillTiling tiling : kPrefillTilings) {
    std::vector<PrefillTile> tiles;
    for (uint32_t c = 0; c < seqs.size(); ++c) {
      for (uint32_t tile = 0; tile * tiling.queries < seqs[c].length; ++tile)
        tiles.push_back({c, tile});
    }
    DeviceBuffer dtiles = upload(tiles);
    DeviceBuffer prefill = uploadBf16(std::vector<float>(uint64_t{tokens} * q_dim, 0));
    ASSERT_EQ(launchPrefillAttention(dq.as<bf16>(), dk.as<bf16>(), dv.as<bf16>(),
                                     dtables.as<int32_t>(), dchunks.as<PrefillChunk>(),
                                     dtiles.as<PrefillTile>(), static_cast<uint32_t>(tiles.size()),
                                     tiling, shape, prefill.as<bf16>(), nullptr),
              cudaSuccess);
    const std::string what = "prefill (" + std::to_string(tiling.queries) + " queries over " +
                             std::to_string(tiling.warps) + " warps, " +
                             std::to_string(tiling.keys) + " keys a step)";
    check(downloadBf16(prefill, uint64_t{tokens} * q_dim), what.c_str(), 0, tokens);
  }

  // Decode: the last query of each sequence as a batch of two, with several split counts.
  std::vector<float> last_q;
  std::vector<int32_t> lengths;
  std::vector<int32_t> decode_tables;
  const uint32_t stride = 16;
  std::vector<uint32_t> last_rows;
  row = 0;
  for (const Seq& s : seqs) {
    row += s.length;
    last_rows.push_back(row - 1);
    last_q.insert(last_q.end(), q.begin() + uint64_t{row - 1} * q_dim,
                  q.begin() + uint64_t{row} * q_dim);
    lengths.push_back(static_cast<int32_t>(s.start + s.length));
    std::vector<int32_t> padded = s.table;
    padded.resize(stride, 0);
    decode_tables.insert(decode_tables.end(), padded.begin(), padded.end());
  }
  DeviceBuffer dlast = uploadBf16(last_q);
  DeviceBuffer dlengths = upload(lengths);
  DeviceBuffer ddecode_tables = upload(decode_tables);
  for (const auto& [splits, partition] :
       {std::pair{1u, 256u}, std::pair{4u, 64u}, std::pair{16u, 16u}}) {
    Result<DeviceBuffer> workspace = DeviceBuffer::allocate(
        decodeWorkspaceFloats(2, shape.heads, head_dim, splits) * sizeof(float));
    ASSERT_TRUE(workspace.isOk());
    DeviceBuffer out = uploadBf16(std::vector<float>(2 * q_dim, 0));
    ASSERT_EQ(launchDecodeAttention(dlast.as<bf16>(), dk.as<bf16>(), dv.as<bf16>(),
                                    ddecode_tables.as<int32_t>(), stride, dlengths.as<int32_t>(), 2,
                                    splits, partition, shape, workspace->as<float>(),
                                    out.as<bf16>(), nullptr),
              cudaSuccess);
    const std::vector<float> got = downloadBf16(out, 2 * q_dim);
    for (uint32_t b = 0; b < 2; ++b) {
      double worst = 0;
      for (uint32_t i = 0; i < q_dim; ++i) {
        worst = std::max(worst,
                         std::fabs(got[b * q_dim + i] - ref[uint64_t{last_rows[b]} * q_dim + i]));
      }
      EXPECT_LT(worst, 1.5e-2) << "decode splits " << splits << " sequence " << b;
    }
  }
}

// Not a check: the prefill attention's rate on an 8K causal prompt at Llama-3-8B's head shape,
// per tiling, printed for the record (kPrefillTiling is the engine's).
TEST(AttentionRateTest, PrefillAttentionRateAt8K) {
  AttentionShape shape{32, 8, 128, 16, 1.0f / std::sqrt(128.0f)};
  const uint32_t length = 8192;
  const uint32_t blocks = length / 16;
  std::vector<int32_t> table(blocks);
  std::iota(table.begin(), table.end(), 0);
  DeviceBuffer dq = uploadBf16(randomValues(uint64_t{length} * 32 * 128, 21));
  DeviceBuffer dk = uploadBf16(randomValues(uint64_t{length} * 8 * 128, 22));
  DeviceBuffer dv = uploadBf16(randomValues(uint64_t{length} * 8 * 128, 23));
  DeviceBuffer dtable = upload(table);
  const std::vector<PrefillChunk> chunks = {{0, length, 0, 0}};
  DeviceBuffer dchunks = upload(chunks);
  DeviceBuffer out = uploadBf16(std::vector<float>(uint64_t{length} * 32 * 128, 0));
  cudaEvent_t start, stop;
  ASSERT_EQ(cudaEventCreate(&start), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&stop), cudaSuccess);
  for (const PrefillTiling tiling : kPrefillTilings) {
    std::vector<PrefillTile> tiles;
    for (uint32_t tile = length / tiling.queries; tile-- > 0;) tiles.push_back({0, tile});
    DeviceBuffer dtiles = upload(tiles);
    float best = 1e30f;
    for (int run = 0; run < 6; ++run) {
      ASSERT_EQ(cudaEventRecord(start), cudaSuccess);
      ASSERT_EQ(launchPrefillAttention(
                    dq.as<bf16>(), dk.as<bf16>(), dv.as<bf16>(), dtable.as<int32_t>(),
                    dchunks.as<PrefillChunk>(), dtiles.as<PrefillTile>(),
                    static_cast<uint32_t>(tiles.size()), tiling, shape, out.as<bf16>(), nullptr),
                cudaSuccess);
      ASSERT_EQ(cudaEventRecord(stop), cudaSuccess);
      ASSERT_EQ(cudaEventSynchronize(stop), cudaSuccess);
      float ms = 0;
      ASSERT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
      if (run > 0) best = std::min(best, ms);
    }
    const double flops = 4.0 * 32 * 128 * (double{length} * (length + 1) / 2);
    std::printf(
        "[ prefill attention, 8192 causal, 32 heads × 128, %u queries over %u warps, %u keys a "
        "step: %.3f ms, %.0f TFLOP/s ]\n",
        tiling.queries, tiling.warps, tiling.keys, best, flops / (best / 1e3) / 1e12);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(std::pair{64u, 1u}, std::pair{64u, 4u},
                                           std::pair{128u, 4u}, std::pair{128u, 8u},
                                           std::pair{128u, 2u}),
                         [](const auto& param_info) {
                           return "Dim" + std::to_string(param_info.param.first) + "Group" +
                                  std::to_string(param_info.param.second);
                         });

// Runs the sampling kernel over `rows` logits rows with one draw each.
std::vector<int32_t> sample(const std::vector<float>& logits, uint32_t vocab,
                            const std::vector<DeviceDraw>& draws) {
  DeviceBuffer dlogits = upload(logits);
  DeviceBuffer ddraws = upload(draws);
  Result<DeviceBuffer> out = DeviceBuffer::allocate(draws.size() * sizeof(int32_t));
  EXPECT_TRUE(out.isOk());
  EXPECT_EQ(launchSample(dlogits.as<float>(), vocab, ddraws.as<DeviceDraw>(),
                         static_cast<uint32_t>(draws.size()), out->as<int32_t>(), nullptr),
            cudaSuccess);
  return download<int32_t>(*out, draws.size());
}

TEST(CudaSamplingTest, GreedyTakesTheLowestIdAmongTiesAndIgnoresNaN) {
  const uint32_t vocab = 128256;
  std::vector<float> logits(2 * vocab, -1.0f);
  logits[70000] = 5.0f;
  logits[90000] = 5.0f;  // tie: 70000 wins
  logits[100] = NAN;
  logits[vocab + 3] = -INFINITY;
  logits[vocab + 127000] = 0.5f;
  const std::vector<int32_t> got = sample(logits, vocab, {DeviceDraw{}, DeviceDraw{}});
  EXPECT_EQ(got[0], 70000);
  EXPECT_EQ(got[1], 127000);
}

TEST(CudaSamplingTest, DrawsFollowTheSoftmaxInIdOrder) {
  const uint32_t vocab = 1000;
  std::vector<float> logits(vocab);
  for (uint32_t i = 0; i < vocab; ++i) logits[i] = std::sin(0.37f * i) * 3.0f;
  const float temperature = 0.7f;
  double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(vocab);
  double total = 0;
  for (uint32_t i = 0; i < vocab; ++i) total += (p[i] = std::exp((logits[i] - max) / temperature));
  const uint32_t draws = 4000;
  std::vector<float> rows;
  std::vector<DeviceDraw> params;
  for (uint32_t d = 0; d < draws; ++d) {
    rows.insert(rows.end(), logits.begin(), logits.end());
    params.push_back({temperature, 1.0f, (d + 0.5f) / draws, 0});
  }
  const std::vector<int32_t> got = sample(rows, vocab, params);
  // Evenly spaced uniforms walk the id-ordered CDF: chosen ids never decrease, and each token is
  // chosen in proportion to its probability (within one draw's step).
  std::map<int32_t, uint32_t> counts;
  for (uint32_t d = 0; d < draws; ++d) {
    if (d > 0) {
      EXPECT_LE(got[d - 1], got[d]) << "draw " << d;
    }
    ++counts[got[d]];
  }
  for (uint32_t i = 0; i < vocab; ++i) {
    const double expected = p[i] / total * draws;
    EXPECT_NEAR(counts[static_cast<int32_t>(i)], expected, 1.0 + 1e-3 * draws) << "token " << i;
  }
  // Same draw, same token.
  EXPECT_EQ(sample(logits, vocab, {params[1234]})[0], got[1234]);
}

TEST(CudaSamplingTest, TopPKeepsTheMostLikelyTokens) {
  const uint32_t vocab = 50000;
  std::vector<float> logits(vocab, 0.0f);
  logits[7] = 10.0f;  // ~0.30 of the mass with the rest flat at e^0 = 1 each
  logits[49999] = 10.0f;
  // The two peaks hold 0.47 of the mass; top_p 0.3 needs both of them and nothing else.
  std::vector<float> rows;
  std::vector<DeviceDraw> params;
  for (uint32_t d = 0; d < 200; ++d) {
    rows.insert(rows.end(), logits.begin(), logits.end());
    params.push_back({1.0f, 0.3f, d / 200.0f, 0});
  }
  const std::vector<int32_t> got = sample(rows, vocab, params);
  uint32_t first = 0;
  for (int32_t token : got) {
    EXPECT_TRUE(token == 7 || token == 49999) << token;
    first += token == 7 ? 1 : 0;
  }
  EXPECT_EQ(first, 100u);  // equal peaks split the uniform range in half
  // A tiny top_p keeps the most likely token alone (and every token tied with it).
  logits[49999] = 9.0f;
  EXPECT_EQ(sample(logits, vocab, {{1.0f, 1e-6f, 0.99f, 0}})[0], 7);
}

}  // namespace
}  // namespace kvferry::engine::cuda
