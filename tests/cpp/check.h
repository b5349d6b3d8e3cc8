// Minimal test harness for the ctest executables: CHECK(cond) records a failure with its
// location and goes on; CHECK_THROWS(expr, Type) expects that exception type; main returns
// check_summary(), which prints "N passed, M failed" and gives ctest the exit code.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

namespace ddrt_test {
inline int& n_pass() { static int n = 0; return n; }
inline int& n_fail() { static int n = 0; return n; }
inline void record(bool ok, const char* what, const char* file, int line) {
  if (ok) { ++n_pass(); return; }
  ++n_fail();
  std::fprintf(stderr, "FAIL %s:%d: %s\n", file, line, what);
}
inline int check_summary() {
  std::printf("%d passed, %d failed\n", n_pass(), n_fail());
  return n_fail() == 0 ? 0 : 1;
}
// Normalised mean squared error: sum (a-b)^2 / sum b^2 (b the reference).
inline double nmse(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * (double)b[i];
  }
  if (std::isnan(num)) return INFINITY;
  return den > 0 ? num / den : num;
}
}  // namespace ddrt_test

#define CHECK(cond) ::ddrt_test::record((cond), #cond, __FILE__, __LINE__)
#define CHECK_MSG(cond, msg) ::ddrt_test::record((cond), (std::string(#cond) + ": " + (msg)).c_str(), __FILE__, __LINE__)
#define CHECK_THROWS(expr, Type)                                              \
  do {                                                                        \
    bool ok_ = false;                                                         \
    try { expr; } catch (const Type&) { ok_ = true; } catch (...) {}          \
    ::ddrt_test::record(ok_, "throws " #Type ": " #expr, __FILE__, __LINE__); \
  } while (0)
