#include "runtime/op_profile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <utility>

namespace instill {

namespace {

std::atomic<bool> g_enabled{false};
thread_local int t_depth = 0;
thread_local const char* t_op = nullptr;  // the op being timed on this thread (depth 1)

struct Pending {
  std::string op;
  Device device;
  void* a;
  void* b;
};

struct Profile {
  std::mutex mu;
  std::map<std::pair<std::string, Device>, std::pair<int64_t, double>> totals;  // calls, ms
  std::vector<Pending> pending;                                                  // device marks not read yet
};

Profile& profile() {
  static Profile* p = new Profile();  // never destroyed: marks may be released during exit
  return *p;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Drops every pending mark. Caller holds the lock.
void release_pending(Profile& p) {
  for (const Pending& x : p.pending) {
    if (const DeviceMemoryHooks* h = device_memory_hooks(x.device)) {
      h->release_mark(x.a);
      h->release_mark(x.b);
    }
  }
  p.pending.clear();
}

// The start of a timed interval: host time on the CPU, a mark queued on a device's stream. False when
// the device cannot be timed (no hooks, or it is failing: the op itself will say so).
bool start(Device device, double* t0, void** mark) {
  if (device == Device::CPU) {
    *t0 = now_ms();
    return true;
  }
  const DeviceMemoryHooks* h = device_memory_hooks(device);
  if (!h) return false;
  try {
    *mark = h->mark();
    return true;
  } catch (...) {
    return false;
  }
}

// The end of an interval begun by start(): added to the CPU totals now, or kept as a pair of device
// marks that take_op_profile() reads (nothing waits for the device here).
void record(std::string name, Device device, double t0, void* mark) {
  Profile& p = profile();
  if (device == Device::CPU) {
    const double ms = now_ms() - t0;
    std::lock_guard<std::mutex> lock(p.mu);
    auto& t = p.totals[{std::move(name), device}];
    t.first += 1;
    t.second += ms;
    return;
  }
  const DeviceMemoryHooks* h = device_memory_hooks(device);  // there since start() used it
  void* end = nullptr;
  try {
    end = h->mark();
  } catch (...) {
    h->release_mark(mark);
    return;
  }
  std::lock_guard<std::mutex> lock(p.mu);
  p.pending.push_back({std::move(name), device, mark, end});
}

}  // namespace

OpScope::OpScope(const char* op, Device device) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  counted_ = true;
  if (t_depth++ > 0) return;  // inside another op: counted there
  device_ = device;
  t_op = op;
  if (start(device, &t0_, &mark_)) op_ = op;
}

OpScope::~OpScope() {
  if (counted_ && --t_depth == 0) t_op = nullptr;
  if (op_) record(op_, device_, t0_, mark_);
}

OpPart::OpPart(const char* part, Device device) {
  if (!g_enabled.load(std::memory_order_relaxed) || t_depth != 1 || !t_op) return;
  device_ = device;
  if (start(device, &t0_, &mark_)) name_ = std::string(t_op) + "/" + part;
}

OpPart::~OpPart() {
  if (!name_.empty()) record(std::move(name_), device_, t0_, mark_);
}

void set_op_profile(bool on) {
  Profile& p = profile();
  std::lock_guard<std::mutex> lock(p.mu);
  release_pending(p);
  p.totals.clear();
  g_enabled.store(on, std::memory_order_relaxed);
}

bool op_profile_enabled() { return g_enabled.load(std::memory_order_relaxed); }

std::vector<OpProfileRow> take_op_profile() {
  Profile& p = profile();
  std::lock_guard<std::mutex> lock(p.mu);
  for (const Pending& x : p.pending) {
    const DeviceMemoryHooks* h = device_memory_hooks(x.device);
    if (!h) continue;
    auto& t = p.totals[{x.op, x.device}];
    t.first += 1;
    t.second += h->elapsed_ms(x.a, x.b);
  }
  release_pending(p);
  std::vector<OpProfileRow> rows;
  for (const auto& [key, t] : p.totals) rows.push_back({key.first, key.second, t.first, t.second});
  p.totals.clear();
  std::sort(rows.begin(), rows.end(), [](const OpProfileRow& a, const OpProfileRow& b) { return a.ms > b.ms; });
  return rows;
}

}  // namespace instill
