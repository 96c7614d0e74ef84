#include "bench/benchmark_client/report.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string_view>

extern char** environ;  // NOLINT(readability-identifier-naming): POSIX's name

namespace kvferry::bench {
namespace {

std::string centered(std::string_view text, char fill) {
  constexpr size_t kWidth = 50;
  if (text.size() >= kWidth) return std::string(text);
  const size_t left = (kWidth - text.size()) / 2;
  return std::string(left, fill) + std::string(text) +
         std::string(kWidth - text.size() - left, fill);
}

void row(std::FILE* out, std::string_view label, double value) {
  std::fprintf(out, "%-40.*s %-10.2f\n", static_cast<int>(label.size()), label.data(), value);
}

void row(std::FILE* out, std::string_view label, uint64_t value) {
  std::fprintf(out, "%-40.*s %-10llu\n", static_cast<int>(label.size()), label.data(),
               static_cast<unsigned long long>(value));
}

void printDistribution(std::FILE* out, std::string_view header, std::string_view name,
                       const Distribution& d) {
  std::fprintf(out, "%s\n", centered(header, '-').c_str());
  row(out, "Mean " + std::string(name) + " (ms):", d.mean);
  row(out, "Median " + std::string(name) + " (ms):", d.median);
  for (const auto& [p, value] : d.percentiles) {
    row(out, "P" + percentileName(p) + " " + std::string(name) + " (ms):", value);
  }
}

void addDistribution(boost::json::object& doc, std::string_view metric, const Distribution& d) {
  const std::string m(metric);
  doc["mean_" + m + "_ms"] = d.mean;
  doc["median_" + m + "_ms"] = d.median;
  doc["std_" + m + "_ms"] = d.stddev;
  for (const auto& [p, value] : d.percentiles)
    doc["p" + percentileName(p) + "_" + m + "_ms"] = value;
}

// At most kMaxPoints (value, cumulative fraction) points of the sorted sample.
constexpr size_t kMaxPoints = 2000;
std::vector<std::pair<double, double>> cdf(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  std::vector<std::pair<double, double>> points;
  const size_t n = values.size();
  if (n == 0) return points;
  const size_t count = std::min(n, kMaxPoints);
  for (size_t k = 0; k < count; ++k) {
    const size_t i = count == 1 ? n - 1 : k * (n - 1) / (count - 1);
    points.emplace_back(values[i], static_cast<double>(i + 1) / static_cast<double>(n));
  }
  return points;
}

std::string gnuplotQuoted(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    out += c;
    if (c == '\'') out += '\'';  // '' is a quote inside a single-quoted gnuplot string
  }
  return out + "'";
}

}  // namespace

void printTable(std::FILE* out, const RunInfo& info, const Summary& s) {
  std::fprintf(out, "%s\n", centered(" Serving Benchmark Result ", '=').c_str());
  row(out, "Successful requests:", s.completed);
  row(out, "Failed requests:", s.failed);
  if (info.not_sent > 0) row(out, "Requests not sent:", info.not_sent);
  if (info.max_concurrency > 0) {
    row(out, "Maximum request concurrency:", uint64_t{info.max_concurrency});
  }
  if (std::isfinite(info.request_rate)) {
    row(out, "Request rate configured (RPS):", info.request_rate);
  }
  row(out, "Benchmark duration (s):", s.duration_s);
  row(out, "Total input tokens:", s.total_input_tokens);
  row(out, "Total generated tokens:", s.total_output_tokens);
  row(out, "Request throughput (req/s):", s.request_throughput);
  if (s.request_goodput) row(out, "Request goodput (req/s):", *s.request_goodput);
  row(out, "Output token throughput (tok/s):", s.output_throughput);
  row(out, "Total Token throughput (tok/s):", s.total_token_throughput);
  printDistribution(out, "Time to First Token", "TTFT", s.ttft_ms);
  printDistribution(out, "Time per Output Token (excl. 1st token)", "TPOT", s.tpot_ms);
  printDistribution(out, "Inter-token Latency", "ITL", s.itl_ms);
  printDistribution(out, "End-to-end Latency", "E2EL", s.e2el_ms);
  if (!s.errors_by_kind.empty()) {
    std::fprintf(out, "%s\n", centered("Errors", '-').c_str());
    for (const auto& [kind, count] : s.errors_by_kind) row(out, kind + ":", count);
  }
  std::fprintf(out, "%s\n", std::string(50, '=').c_str());
}

boost::json::object resultJson(const RunInfo& info, const Summary& s,
                               const std::vector<RequestResult>& results, const std::string& date) {
  boost::json::object doc;
  doc["date"] = date;
  doc["endpoint_type"] = info.backend;
  doc["backend"] = info.backend;
  doc["model_id"] = info.model_id;
  doc["tokenizer_id"] = info.tokenizer_id;
  doc["num_prompts"] = info.num_prompts;
  if (std::isnan(info.request_rate)) {
    doc["request_rate"] = nullptr;  // the trace's own timestamps
  } else if (std::isinf(info.request_rate)) {
    doc["request_rate"] = "inf";
  } else {
    doc["request_rate"] = info.request_rate;
  }
  doc["burstiness"] = info.burstiness;
  if (info.max_concurrency > 0) {
    doc["max_concurrency"] = info.max_concurrency;
  } else {
    doc["max_concurrency"] = nullptr;
  }
  doc["duration"] = s.duration_s;
  doc["completed"] = s.completed;
  doc["failed"] = s.failed;
  doc["total_input_tokens"] = s.total_input_tokens;
  doc["total_output_tokens"] = s.total_output_tokens;
  doc["request_throughput"] = s.request_throughput;
  if (s.request_goodput) {
    doc["request_goodput"] = *s.request_goodput;
  } else {
    doc["request_goodput"] = nullptr;
  }
  doc["output_throughput"] = s.output_throughput;
  doc["total_token_throughput"] = s.total_token_throughput;
  boost::json::array input_lens, output_lens, ttfts, itls, latencies, start_times, errors;
  for (const RequestResult& r : results) {
    input_lens.push_back(r.input_tokens);
    output_lens.push_back(r.success ? r.output_tokens : 0);
    ttfts.push_back(r.success ? r.ttft_s : 0.0);
    boost::json::array gaps;
    if (r.success) {
      for (double gap : r.itl_s) gaps.push_back(gap);
    }
    itls.push_back(std::move(gaps));
    latencies.push_back(r.success ? r.e2el_s : 0.0);
    start_times.push_back(r.start_s);
    errors.push_back(boost::json::string(r.success ? "" : r.error_kind + ": " + r.error));
  }
  doc["input_lens"] = std::move(input_lens);
  doc["output_lens"] = std::move(output_lens);
  doc["ttfts"] = std::move(ttfts);
  doc["itls"] = std::move(itls);
  doc["latencies"] = std::move(latencies);
  doc["start_times"] = std::move(start_times);
  doc["errors"] = std::move(errors);
  addDistribution(doc, "ttft", s.ttft_ms);
  addDistribution(doc, "tpot", s.tpot_ms);
  addDistribution(doc, "itl", s.itl_ms);
  addDistribution(doc, "e2el", s.e2el_ms);
  // kvferry's additions (not in vLLM's document).
  boost::json::object by_kind;
  for (const auto& [kind, count] : s.errors_by_kind) by_kind[kind] = count;
  doc["errors_by_type"] = std::move(by_kind);
  doc["not_sent"] = info.not_sent;
  doc["dataset"] = info.dataset;
  doc["seed"] = info.seed;
  doc["percentile_method"] = "nearest-rank";
  return doc;
}

Status writeJson(const std::string& path, const boost::json::object& document) {
  std::ofstream out(path);
  if (!out) return ioError("open " + path, errno);
  out << boost::json::serialize(document) << "\n";
  out.close();
  if (!out) return ioError("write " + path, errno);
  return Status::ok();
}

std::optional<std::string> findGnuplot() {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return std::nullopt;
  std::string_view rest = path;
  while (true) {
    const size_t colon = rest.find(':');
    std::string dir(rest.substr(0, colon));
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/gnuplot";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(colon + 1);
  }
}

Status plotCdfs(const std::string& gnuplot, const std::string& png_path,
                const std::vector<RequestResult>& results) {
  std::vector<double> ttft, tpot, itl, e2el;
  for (const RequestResult& r : results) {
    if (!r.success) continue;
    ttft.push_back(r.ttft_s * 1000);
    if (r.output_tokens > 1) tpot.push_back(r.tpotSeconds() * 1000);
    for (double gap : r.itl_s) itl.push_back(gap * 1000);
    e2el.push_back(r.e2el_s * 1000);
  }
  const std::string stem =
      png_path.ends_with(".png") ? png_path.substr(0, png_path.size() - 4) : png_path;
  const std::string data_path = stem + ".cdf.dat";
  const std::string script_path = stem + ".gp";
  std::ofstream data(data_path);
  if (!data) return ioError("open " + data_path, errno);
  struct Panel {
    std::string_view title;
    std::vector<double>* values;
  };
  Panel panels[] = {{"TTFT", &ttft}, {"TPOT", &tpot}, {"ITL", &itl}, {"E2E latency", &e2el}};
  std::string plots;
  int index = 0;
  for (const Panel& panel : panels) {
    const auto points = cdf(std::move(*panel.values));
    if (points.empty()) {
      plots += "# " + std::string(panel.title) + ": no data\n";
      continue;
    }
    data << "# " << panel.title << " (ms, cumulative fraction)\n";
    for (const auto& [x, y] : points) data << x << ' ' << y << '\n';
    data << "\n\n";
    plots += "set title " + gnuplotQuoted(panel.title) + "\nplot " + gnuplotQuoted(data_path) +
             " index " + std::to_string(index++) + " using 1:2 with lines lw 2 notitle\n";
  }
  data.close();
  if (!data) return ioError("write " + data_path, errno);
  std::ofstream script(script_path);
  if (!script) return ioError("open " + script_path, errno);
  script << "# benchmark_client latency CDFs; re-render with: gnuplot " << script_path << "\n"
         << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
         << "  set terminal pngcairo size 1400,1000\n"
         << "} else {\n"
         << "  set terminal png size 1400,1000\n"
         << "}\n"
         << "set output " << gnuplotQuoted(png_path) << "\n"
         << "set multiplot layout 2,2 title 'Latency CDFs'\n"
         << "set grid\nset xlabel 'ms'\nset ylabel 'cumulative fraction'\nset yrange [0:1]\n"
         << plots << "unset multiplot\n";
  script.close();
  if (!script) return ioError("write " + script_path, errno);

  pid_t pid = 0;
  const char* argv[] = {gnuplot.c_str(), script_path.c_str(), nullptr};
  if (int rc = ::posix_spawn(&pid, gnuplot.c_str(), nullptr, nullptr,
                             const_cast<char* const*>(argv), environ);
      rc != 0) {
    return ioError("spawn " + gnuplot, rc);
  }
  int wait_status = 0;
  if (::waitpid(pid, &wait_status, 0) < 0) return ioError("waitpid gnuplot", errno);
  if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0) {
    return internalError("gnuplot " + script_path + " failed (exit status " +
                         std::to_string(WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1) +
                         ")");
  }
  return Status::ok();
}

}  // namespace kvferry::bench
