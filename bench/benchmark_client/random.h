// Deterministic random numbers for benchmark_client. The engine is std::mt19937_64, whose output
// sequence the C++ standard fixes; the distributions are written here because std::*_distribution
// differ between standard libraries. So one --seed gives the same workload on any platform.
// Not thread-safe: one Rng per user.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>

namespace kvferry::bench {

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  // An independent stream's seed from a parent seed and a label (SplitMix64 finaliser over both),
  // so that e.g. the arrival stream does not shift when a dataset draws one more number.
  static uint64_t derive(uint64_t seed, uint64_t label) {
    uint64_t x = seed ^ (label + 0x9e3779b97f4a7c15ULL + (seed << 6) + (seed >> 2));
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }

  uint64_t next() { return engine_(); }

  // Uniform in [0, 1) with 53 random bits.
  double uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  // Uniform in [0, n) without modulo bias; n > 0.
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // largest multiple of n
    uint64_t x = next();
    while (x >= limit) x = next();
    return x % n;
  }

  // Uniform in [lo, hi], lo <= hi.
  uint64_t between(uint64_t lo, uint64_t hi) {
    return hi - lo == UINT64_MAX ? next() : lo + below(hi - lo + 1);
  }

  // Exponential with mean 1/rate.
  double exponential(double rate) { return -std::log1p(-uniform01()) / rate; }

  // Standard normal (Box–Muller; the second value is dropped to keep the stream simple).
  double normal() {
    const double u1 = 1.0 - uniform01();  // (0, 1]
    const double u2 = uniform01();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * 3.14159265358979323846 * u2);
  }

  // Gamma(shape k, scale θ): mean kθ (Marsaglia & Tsang 2000; shape < 1 by the boost
  // Gamma(k) = Gamma(k + 1)·U^(1/k)).
  double gamma(double shape, double scale) {
    if (shape < 1.0) {
      const double u = 1.0 - uniform01();  // (0, 1]
      return gamma(shape + 1.0, scale) * std::pow(u, 1.0 / shape);
    }
    const double d = shape - 1.0 / 3.0;
    const double c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      double x = 0;
      double v = 0;
      do {
        x = normal();
        v = 1.0 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const double u = 1.0 - uniform01();  // (0, 1]
      if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v * scale;
    }
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace kvferry::bench
