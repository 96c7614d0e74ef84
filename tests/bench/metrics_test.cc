// Percentiles (nearest-rank), distributions, SLO parsing, goodput and the summary's arithmetic,
// and the result JSON's field names.
#include "bench/benchmark_client/metrics.h"

#include <gtest/gtest.h>

#include "bench/benchmark_client/report.h"

namespace kvferry::bench {
namespace {

TEST(PercentileTest, NearestRank) {
  const std::vector<double> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(percentile(v, 50), 5);
  EXPECT_EQ(percentile(v, 90), 9);
  EXPECT_EQ(percentile(v, 91), 10);
  EXPECT_EQ(percentile(v, 99), 10);
  EXPECT_EQ(percentile(v, 100), 10);
  EXPECT_EQ(percentile(v, 10), 1);
  EXPECT_EQ(percentile(v, 0.1), 1);
  EXPECT_EQ(percentile({42}, 99), 42);
  EXPECT_EQ(percentile({}, 50), 0);
  // 4 values: p50 is the 2nd (no interpolation), p75 the 3rd, p76 the 4th.
  const std::vector<double> four = {10, 20, 30, 40};
  EXPECT_EQ(percentile(four, 50), 20);
  EXPECT_EQ(percentile(four, 75), 30);
  EXPECT_EQ(percentile(four, 76), 40);
}

TEST(PercentileTest, DescribeSortsAndUsesPopulationStddev) {
  const Distribution d = describe({4, 2, 8, 6}, {50, 99});
  EXPECT_DOUBLE_EQ(d.mean, 5);
  EXPECT_DOUBLE_EQ(d.median, 4);
  EXPECT_DOUBLE_EQ(d.stddev, std::sqrt(5.0));  // deviations 1, 9, 9, 1 → 20/4
  ASSERT_EQ(d.percentiles.size(), 2u);
  EXPECT_EQ(d.percentiles[0], (std::pair<double, double>{50, 4}));
  EXPECT_EQ(d.percentiles[1], (std::pair<double, double>{99, 8}));
  const Distribution empty = describe({}, {50});
  EXPECT_EQ(empty.mean, 0);
  EXPECT_EQ(empty.percentiles[0].second, 0);
}

TEST(SloTest, Parses) {
  auto slo = parseSlo("ttft:500 tpot:50");
  ASSERT_TRUE(slo.isOk());
  EXPECT_EQ(slo->ttft_ms, 500);
  EXPECT_EQ(slo->tpot_ms, 50);
  EXPECT_FALSE(slo->e2el_ms);
  slo = parseSlo("e2el:2000,ttft:1.5");
  ASSERT_TRUE(slo.isOk());
  EXPECT_EQ(slo->e2el_ms, 2000);
  EXPECT_EQ(slo->ttft_ms, 1.5);
  EXPECT_FALSE(parseSlo("").isOk());
  EXPECT_FALSE(parseSlo("itl:5").isOk());
  EXPECT_FALSE(parseSlo("ttft").isOk());
  EXPECT_FALSE(parseSlo("ttft:-1").isOk());
  EXPECT_FALSE(parseSlo("ttft:abc").isOk());
}

TEST(SloTest, PercentileLists) {
  auto ps = parsePercentiles("50,90,99.9");
  ASSERT_TRUE(ps.isOk());
  EXPECT_EQ(*ps, (std::vector<double>{50, 90, 99.9}));
  EXPECT_FALSE(parsePercentiles("0").isOk());
  EXPECT_FALSE(parsePercentiles("101").isOk());
  EXPECT_FALSE(parsePercentiles("").isOk());
  EXPECT_EQ(percentileName(99), "99");
  EXPECT_EQ(percentileName(99.9), "99.9");
  EXPECT_EQ(percentileName(50.0), "50");
}

RequestResult ok(double ttft_s, double e2el_s, uint32_t output_tokens, uint32_t input_tokens = 10) {
  RequestResult r;
  r.success = true;
  r.ttft_s = ttft_s;
  r.e2el_s = e2el_s;
  r.output_tokens = output_tokens;
  r.input_tokens = input_tokens;
  for (uint32_t i = 1; i < output_tokens; ++i) {
    r.itl_s.push_back((e2el_s - ttft_s) / (output_tokens - 1));
  }
  return r;
}

RequestResult failed(std::string kind) {
  RequestResult r;
  r.error_kind = std::move(kind);
  r.error = "detail";
  return r;
}

TEST(SummaryTest, TpotAndGoodput) {
  // TPOT = (E2E − TTFT) / (n − 1).
  EXPECT_DOUBLE_EQ(ok(0.1, 1.1, 11).tpotSeconds(), 0.1);
  EXPECT_DOUBLE_EQ(ok(0.1, 0.1, 1).tpotSeconds(), 0.0);

  Slo slo;
  slo.ttft_ms = 250;
  slo.tpot_ms = 62.5;
  // Binary fractions, so "exactly at the objective" is exact: TTFT 0.25 s, TPOT 0.0625 s.
  EXPECT_TRUE(meetsSlo(ok(0.25, 0.25 + 9 * 0.0625, 10), slo));     // at both: met
  EXPECT_FALSE(meetsSlo(ok(0.2505, 0.5, 10), slo));                // TTFT over
  EXPECT_FALSE(meetsSlo(ok(0.125, 0.125 + 9 * 0.0626, 10), slo));  // TPOT over
  EXPECT_TRUE(meetsSlo(ok(0.125, 5.0, 1), slo));                   // one token: TPOT counts as 0
  EXPECT_FALSE(meetsSlo(failed("timeout"), slo));
  slo.ttft_ms = 200;
  slo.tpot_ms = 150;

  const std::vector<RequestResult> results = {ok(0.1, 1.0, 10, 100), ok(0.3, 1.0, 10, 100),
                                              ok(0.1, 0.1, 1, 50),   failed("timeout"),
                                              failed("http_503"),    failed("http_503")};
  const Summary s = summarize(results, 2.0, {50, 99}, slo);
  EXPECT_EQ(s.completed, 3u);
  EXPECT_EQ(s.failed, 3u);
  EXPECT_EQ(s.total_input_tokens, 250u);
  EXPECT_EQ(s.total_output_tokens, 21u);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  ASSERT_TRUE(s.request_goodput);
  EXPECT_DOUBLE_EQ(*s.request_goodput, 1.0);  // the first and the one-token one, over 2 s
  EXPECT_DOUBLE_EQ(s.output_throughput, 10.5);
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 135.5);
  EXPECT_NEAR(s.ttft_ms.mean, (100 + 300 + 100) / 3.0, 1e-9);
  EXPECT_NEAR(s.tpot_ms.mean, (100 + 700.0 / 9) / 2, 1e-9);  // only requests with > 1 token
  EXPECT_EQ(s.itl_ms.percentiles.size(), 2u);
  EXPECT_EQ(s.errors_by_kind.at("http_503"), 2u);
  EXPECT_EQ(s.errors_by_kind.at("timeout"), 1u);

  const Summary no_slo = summarize(results, 2.0, {50}, Slo{});
  EXPECT_FALSE(no_slo.request_goodput);
}

TEST(ReportTest, ResultJsonUsesVllmFieldNames) {
  const std::vector<RequestResult> results = {ok(0.1, 1.0, 10, 100), failed("timeout")};
  Slo slo;
  slo.e2el_ms = 5000;
  const Summary s = summarize(results, 2.0, {50, 90, 99.9}, slo);
  RunInfo info;
  info.backend = "openai";
  info.model_id = "m";
  info.num_prompts = 2;
  info.request_rate = std::numeric_limits<double>::infinity();
  const boost::json::object doc = resultJson(info, s, results, "20250101-000000");
  for (const char* key : {"date",
                          "backend",
                          "model_id",
                          "tokenizer_id",
                          "num_prompts",
                          "request_rate",
                          "burstiness",
                          "max_concurrency",
                          "duration",
                          "completed",
                          "failed",
                          "total_input_tokens",
                          "total_output_tokens",
                          "request_throughput",
                          "request_goodput",
                          "output_throughput",
                          "total_token_throughput",
                          "input_lens",
                          "output_lens",
                          "ttfts",
                          "itls",
                          "latencies",
                          "errors",
                          "mean_ttft_ms",
                          "median_ttft_ms",
                          "std_ttft_ms",
                          "p50_ttft_ms",
                          "p90_ttft_ms",
                          "p99.9_ttft_ms",
                          "mean_tpot_ms",
                          "p99.9_tpot_ms",
                          "mean_itl_ms",
                          "std_itl_ms",
                          "p90_itl_ms",
                          "mean_e2el_ms",
                          "median_e2el_ms",
                          "p50_e2el_ms"}) {
    EXPECT_TRUE(doc.contains(key)) << key;
  }
  EXPECT_EQ(doc.at("request_rate"), "inf");
  EXPECT_TRUE(doc.at("max_concurrency").is_null());
  EXPECT_DOUBLE_EQ(doc.at("request_goodput").as_double(), 0.5);
  EXPECT_EQ(doc.at("ttfts").as_array().size(), 2u);
  EXPECT_EQ(doc.at("ttfts").as_array()[1].as_double(), 0.0);  // failed: 0, as vLLM
  EXPECT_EQ(doc.at("itls").as_array()[0].as_array().size(), 9u);
  EXPECT_EQ(doc.at("errors").as_array()[0], "");
  EXPECT_EQ(doc.at("errors").as_array()[1], "timeout: detail");
  EXPECT_EQ(doc.at("output_lens").as_array()[1], 0);
}

}  // namespace
}  // namespace kvferry::bench
