// The one percentile definition of kvferry's benchmark tools (routesim, benchmark_client,
// transfer_bench):
// nearest rank — the smallest sample with at least p % of the sample at or below it. It never
// interpolates, so every reported value is one that was measured.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace kvferry::bench {

// `sorted` ascending; p in [0, 100]; 0 for an empty sample.
inline double nearestRankPercentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace kvferry::bench
