// The engine's CPU thread pool.
//
// One pool per process, shared by every Node environment (main thread and
// worker threads): kernels are memory- and FLOP-bound, so two pools would only
// fight over the same cores. Its size is the number of CPUs this process may run
// on, or INSTILL_THREADS when set; set_num_threads() changes it at run time.
//
// parallel_for(n, fn) runs fn(i) for every i in [0, n) on the pool's threads and
// the calling thread, and returns when all are done. Calls from different
// threads are serialised; a call made from inside a task runs inline (serially),
// so nested parallelism cannot deadlock. The first exception a task throws is
// rethrown to the caller after every task has finished.
#pragma once

#include <cstdint>
#include <functional>

namespace instill {

int num_threads();
// n >= 1; throws E_ARG otherwise.
void set_num_threads(int n);

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

// Splits [0, n) into at most num_threads() contiguous ranges, calling fn(begin, end).
void parallel_range(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace instill
