// What the checks of test/cuda_host share.
#pragma once

#include <cstdio>
#include <exception>
#include <vector>

namespace instill {
namespace cuda {
namespace fake {

// The checks' main loop: each case run (a throw counts as a failure), a line a case, the failures in `failures`
// (the cases' own checks add to it), then the closing line scripts/cuda-host-check.sh and its test look for.
template <typename Case, typename Run>
int run_cases(const std::vector<Case>& cases, int& failures, Run run) {
  for (const Case& c : cases) {
    const int before = failures;
    try {
      run(c);
    } catch (const std::exception& e) {
      std::printf("    FAIL threw: %s\n", e.what());
      ++failures;
    }
    std::printf("%s %s\n", failures == before ? "ok  " : "FAIL", c.name);
  }
  std::printf("%s: %d failure(s) in %zu cases\n", failures ? "FAILED" : "passed", failures, cases.size());
  return failures ? 1 : 0;
}

}  // namespace fake
}  // namespace cuda
}  // namespace instill
