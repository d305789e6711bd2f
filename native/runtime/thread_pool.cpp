#include "runtime/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

#include "runtime/error.h"

namespace instill {
namespace {

thread_local bool t_inside_task = false;

int default_threads() {
  if (const char* env = std::getenv("INSTILL_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1 && v <= 1024) return static_cast<int>(v);
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? static_cast<int>(hc) : 1;
}

class Pool {
 public:
  explicit Pool(int n) : size_(n) {
    for (int i = 1; i < n; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      stop_flag_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int size() const { return size_; }

  void run(int64_t n, const std::function<void(int64_t)>& fn) {
    if (n <= 0) return;
    if (size_ == 1 || n == 1 || t_inside_task) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    std::lock_guard<std::mutex> caller(call_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      n_ = n;
      next_.store(0);
      pending_.store(static_cast<int>(workers_.size()));
      error_ = nullptr;
      generation_.store(generation_.load() + 1, std::memory_order_release);
    }
    cv_.notify_all();
    work();
    if (!spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [this] { return pending_.load() == 0; });
    }
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void work() {
    t_inside_task = true;
    for (;;) {
      int64_t i = next_.fetch_add(1);
      if (i >= n_) break;
      try {
        (*fn_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
    t_inside_task = false;
  }

  // Spins briefly (kernels issue parallel regions back to back: a GEMM has a few per K
  // block), then lets the caller block. Returns whether `ready` became true while spinning.
  template <typename Ready>
  static bool spin_until(Ready&& ready) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
    for (int i = 0;; ++i) {
      if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return false;
    }
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      if (!spin_until([&] { return stop_flag_.load(std::memory_order_acquire) ||
                                    generation_.load(std::memory_order_acquire) != seen; })) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
      }
      if (stop_flag_.load()) return;
      seen = generation_.load(std::memory_order_acquire);
      work();
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);  // pairs with the caller's predicate check
        done_cv_.notify_one();
      }
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  std::atomic<bool> stop_flag_{false};
  std::exception_ptr error_;
};

std::mutex g_pool_mu;
std::shared_ptr<Pool> g_pool;

std::shared_ptr<Pool> pool() {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (!g_pool) g_pool = std::make_shared<Pool>(default_threads());
  return g_pool;
}

}  // namespace

int num_threads() { return pool()->size(); }

void set_num_threads(int n) {
  if (n < 1 || n > 1024) fail(ErrorCode::Arg, "threads must be an integer between 1 and 1024, got ", n);
  std::shared_ptr<Pool> fresh = std::make_shared<Pool>(n);
  std::lock_guard<std::mutex> lock(g_pool_mu);
  g_pool = fresh;  // a call in flight keeps the old pool alive through its shared_ptr
}

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) { pool()->run(n, fn); }

void parallel_range(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int64_t parts = std::min<int64_t>(n, num_threads());
  parallel_for(parts, [&](int64_t p) { fn(n * p / parts, n * (p + 1) / parts); });
}

}  // namespace instill
