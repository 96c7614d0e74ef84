#include "bench/benchmark_client/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "bench/percentile.h"

namespace kvferry::bench {
namespace {

Result<double> parseNumber(std::string_view what, std::string_view text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    return invalidArgument(std::string(what) + ": '" + std::string(text) + "' is not a number");
  }
  return value;
}

// Splits on spaces and commas, dropping empty pieces.
std::vector<std::string_view> splitList(std::string_view text) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == ' ' || text[i] == ',') {
      if (i > start) out.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

}  // namespace

double percentile(const std::vector<double>& sorted, double p) {
  return nearestRankPercentile(sorted, p);
}

Distribution describe(std::vector<double> values, const std::vector<double>& ps) {
  Distribution d;
  std::sort(values.begin(), values.end());
  for (double p : ps) d.percentiles.emplace_back(p, percentile(values, p));
  if (values.empty()) return d;
  double sum = 0;
  for (double v : values) sum += v;
  d.mean = sum / static_cast<double>(values.size());
  double squares = 0;
  for (double v : values) squares += (v - d.mean) * (v - d.mean);
  d.stddev = std::sqrt(squares / static_cast<double>(values.size()));
  d.median = percentile(values, 50);
  return d;
}

Result<Slo> parseSlo(std::string_view text) {
  Slo slo;
  for (std::string_view pair : splitList(text)) {
    const size_t colon = pair.find(':');
    if (colon == std::string_view::npos) {
      return invalidArgument("--goodput: '" + std::string(pair) + "' is not KEY:MILLISECONDS");
    }
    const std::string_view key = pair.substr(0, colon);
    ASSIGN_OR_RETURN(double ms,
                     parseNumber("--goodput " + std::string(key), pair.substr(colon + 1)));
    if (ms < 0) return invalidArgument("--goodput: " + std::string(key) + " must be >= 0");
    if (key == "ttft") {
      slo.ttft_ms = ms;
    } else if (key == "tpot") {
      slo.tpot_ms = ms;
    } else if (key == "e2el") {
      slo.e2el_ms = ms;
    } else {
      return invalidArgument("--goodput: unknown objective '" + std::string(key) +
                             "' (ttft, tpot, e2el)");
    }
  }
  if (!slo.any()) return invalidArgument("--goodput: no objective given");
  return slo;
}

bool meetsSlo(const RequestResult& r, const Slo& slo) {
  if (!r.success) return false;
  if (slo.ttft_ms && r.ttft_s * 1000.0 > *slo.ttft_ms) return false;
  if (slo.tpot_ms && r.tpotSeconds() * 1000.0 > *slo.tpot_ms) return false;
  if (slo.e2el_ms && r.e2el_s * 1000.0 > *slo.e2el_ms) return false;
  return true;
}

Result<std::vector<double>> parsePercentiles(std::string_view text) {
  std::vector<double> out;
  for (std::string_view piece : splitList(text)) {
    ASSIGN_OR_RETURN(double p, parseNumber("--percentiles", piece));
    if (!(p > 0 && p <= 100)) {
      return invalidArgument("--percentiles: " + std::string(piece) + " is not in (0, 100]");
    }
    out.push_back(p);
  }
  if (out.empty()) return invalidArgument("--percentiles: empty list");
  return out;
}

std::string percentileName(double p) {
  if (p == std::floor(p)) return std::to_string(static_cast<int64_t>(p));
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%g", p);
  return buffer;
}

Summary summarize(const std::vector<RequestResult>& results, double duration_s,
                  const std::vector<double>& ps, const Slo& slo) {
  Summary s;
  s.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2el;
  uint64_t good = 0;
  for (const RequestResult& r : results) {
    if (!r.success) {
      ++s.failed;
      ++s.errors_by_kind[r.error_kind];
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.input_tokens;
    s.total_output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_s * 1000.0);
    if (r.output_tokens > 1) tpot.push_back(r.tpotSeconds() * 1000.0);
    for (double gap : r.itl_s) itl.push_back(gap * 1000.0);
    e2el.push_back(r.e2el_s * 1000.0);
    if (slo.any() && meetsSlo(r, slo)) ++good;
  }
  const double d = duration_s > 0 ? duration_s : 1.0;
  s.request_throughput = static_cast<double>(s.completed) / d;
  if (slo.any()) s.request_goodput = static_cast<double>(good) / d;
  s.output_throughput = static_cast<double>(s.total_output_tokens) / d;
  s.total_token_throughput = static_cast<double>(s.total_input_tokens + s.total_output_tokens) / d;
  s.ttft_ms = describe(std::move(ttft), ps);
  s.tpot_ms = describe(std::move(tpot), ps);
  s.itl_ms = describe(std::move(itl), ps);
  s.e2el_ms = describe(std::move(e2el), ps);
  return s;
}

}  // namespace kvferry::bench
