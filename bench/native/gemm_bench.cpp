// Standalone GEMM benchmark: instill's CPU GEMM against OpenBLAS's cblas_sgemm,
// alternating in one process, medians of repeats. OpenBLAS is loaded with
// dlopen at run time (Debian: libopenblas0-pthread) and never linked into the
// addon. Build: cmake --build build --target gemm_bench (see CMakeLists.txt).
//
//   gemm_bench M N K [transA transB threads repeats dtype]
//   prints one JSON line: {"M":..,"ours_s":..,"blas_s":..,"ours_gflops":..,"blas_gflops":..}
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cpu/gemm.h"
#include "runtime/thread_pool.h"

using namespace instill;

using sgemm_fn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
using set_threads_fn = void (*)(int);

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: gemm_bench M N K [transA transB threads repeats dtype(f32|bf16|bf16x2)]\n");
    return 2;
  }
  const int m = std::atoi(argv[1]), n = std::atoi(argv[2]), k = std::atoi(argv[3]);
  const bool ta = argc > 4 && std::atoi(argv[4]);
  const bool tb = argc > 5 && std::atoi(argv[5]);
  const int threads = argc > 6 ? std::atoi(argv[6]) : 2;
  const int repeats = argc > 7 ? std::atoi(argv[7]) : 7;
  // bf16: B (the weight) in bf16; bf16x2: both operands in bf16, as PyTorch's bf16 matmul
  const bool bf16x2 = argc > 8 && std::string(argv[8]) == "bf16x2";
  const bool bf16 = bf16x2 || (argc > 8 && std::string(argv[8]) == "bf16");
  set_num_threads(threads);

  // OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each call, taking the
  // cores from whatever is timed next; the shortest timeout makes alternation fair.
  setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0);
  // GEMM_BENCH_OURS_ONLY=1 skips OpenBLAS (for whole-process A/B timings of two builds of ours).
  void* lib = std::getenv("GEMM_BENCH_OURS_ONLY") ? nullptr : dlopen("libopenblas.so.0", RTLD_NOW);
  sgemm_fn sgemm = lib ? reinterpret_cast<sgemm_fn>(dlsym(lib, "cblas_sgemm")) : nullptr;
  if (lib) {
    auto set = reinterpret_cast<set_threads_fn>(dlsym(lib, "openblas_set_num_threads"));
    if (set) set(threads);
  }

  std::mt19937 gen(42);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> a(size_t(m) * k), b(size_t(k) * n), c(size_t(m) * n), c2(size_t(m) * n);
  for (auto& x : a) x = dist(gen);
  for (auto& x : b) x = dist(gen);
  std::vector<uint16_t> b16(b.size()), a16(a.size());
  for (size_t i = 0; i < b.size(); ++i) b16[i] = f32_to_bf16(b[i]);
  for (size_t i = 0; i < a.size(); ++i) a16[i] = f32_to_bf16(a[i]);

  const int lda = ta ? m : k, ldb = tb ? k : n;
  auto ours = [&] {
    cpu::GemmOperand A{bf16x2 ? static_cast<const void*>(a16.data()) : a.data(), bf16x2 ? DType::BF16 : DType::F32, lda, ta};
    cpu::GemmOperand B{bf16 ? static_cast<const void*>(b16.data()) : b.data(), bf16 ? DType::BF16 : DType::F32, ldb, tb};
    cpu::gemm(m, n, k, 1.0f, A, B, 0.0f, c.data(), n);
  };
  auto blas = [&] {
    // CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
    sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c2.data(), n);
  };
  ours();
  if (sgemm) blas();
  std::vector<double> to, tbl;
  for (int r = 0; r < repeats; ++r) {
    double t0 = now();
    ours();
    to.push_back(now() - t0);
    if (sgemm) {
      t0 = now();
      blas();
      tbl.push_back(now() - t0);
    }
  }
  double maxdiff = 0, maxref = 0;
  if (sgemm && !bf16) {
    for (size_t i = 0; i < c.size(); ++i) {
      maxdiff = std::max(maxdiff, double(std::abs(c[i] - c2[i])));
      maxref = std::max(maxref, double(std::abs(c2[i])));
    }
  }
  const double flop = 2.0 * m * n * k;
  const double mo = median(to), mb = sgemm ? median(tbl) : 0;
  std::printf(
      "{\"M\":%d,\"N\":%d,\"K\":%d,\"transA\":%d,\"transB\":%d,\"threads\":%d,\"dtype\":\"%s\",\"ours_s\":%.6f,"
      "\"blas_s\":%.6f,\"ours_gflops\":%.1f,\"blas_gflops\":%.1f,\"ratio\":%.3f,\"rel_diff\":%.2e}\n",
      m, n, k, ta, tb, threads, bf16x2 ? "bf16x2" : bf16 ? "bf16" : "f32", mo, mb, flop / mo / 1e9, sgemm ? flop / mb / 1e9 : 0.0,
      sgemm ? mb / mo : 0.0, maxref > 0 ? maxdiff / maxref : 0.0);
  return 0;
}
