// Helpers shared by the tests: seeded random data and error measures.
#pragma once

#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace fulgur::test {

inline std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// ||a - b|| / ||b||, in double.
template <class A, class B>
double rel_l2(const A& a, const B& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    num += d * d;
    den += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

// Index of the largest absolute difference, for failure messages.
template <class A, class B>
std::string first_mismatch(const A& a, const B& b, double tol) {
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (d > tol * (1.0 + std::abs(static_cast<double>(b[i])))) {
      return "first mismatch at " + std::to_string(i) + ": got " + std::to_string(a[i]) + ", want " +
             std::to_string(b[i]);
    }
  }
  return "no element mismatch above tolerance";
}

// A fresh directory under /tmp, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/fulgur_test_XXXXXX";
    path_ = mkdtemp(tmpl) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace fulgur::test
