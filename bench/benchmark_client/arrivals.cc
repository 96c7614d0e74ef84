#include "bench/benchmark_client/arrivals.h"

#include <cmath>
#include <string>

namespace kvferry::bench {

Result<std::vector<double>> arrivalTimes(uint64_t count, double rate_per_s, double burstiness,
                                         Rng& rng) {
  if (!(rate_per_s > 0)) {
    return invalidArgument("request rate must be > 0 (or inf), got " + std::to_string(rate_per_s));
  }
  if (!(burstiness > 0) || !std::isfinite(burstiness)) {
    return invalidArgument("burstiness must be a positive finite number, got " +
                           std::to_string(burstiness));
  }
  std::vector<double> times(count, 0.0);
  if (std::isinf(rate_per_s)) return times;
  const double scale = 1.0 / (rate_per_s * burstiness);
  for (uint64_t i = 1; i < count; ++i) {
    const double gap =
        burstiness == 1.0 ? rng.exponential(rate_per_s) : rng.gamma(burstiness, scale);
    times[i] = times[i - 1] + gap;
  }
  return times;
}

}  // namespace kvferry::bench
