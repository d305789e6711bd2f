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

}  // namespace

OpScope::OpScope(const char* op, Device device) {
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  counted_ = true;
  if (t_depth++ > 0) return;  // inside another op: counted there
  device_ = device;
  t_op = op;
  if (device == Device::CPU) {
    t0_ = now_ms();
    op_ = op;
  } else if (const DeviceMemoryHooks* h = device_memory_hooks(device)) {
    try {
      mark_ = h->mark();
      op_ = op;
    } catch (...) {
      // the device is failing: the op itself will say so; this one goes untimed
    }
  }
}

OpScope::~OpScope() {
  if (counted_ && --t_depth == 0) t_op = nullptr;
  if (!op_) return;
  Profile& p = profile();
  if (device_ == Device::CPU) {
    const double ms = now_ms() - t0_;
    std::lock_guard<std::mutex> lock(p.mu);
    auto& t = p.totals[{op_, device_}];
    t.first += 1;
    t.second += ms;
    return;
  }
  const DeviceMemoryHooks* h = device_memory_hooks(device_);
  if (!h || !mark_) return;
  void* end = nullptr;
  try {
    end = h->mark();
  } catch (...) {
    h->release_mark(mark_);
    return;
  }
  std::lock_guard<std::mutex> lock(p.mu);
  p.pending.push_back({op_, device_, mark_, end});
}

OpPart::OpPart(const char* part, Device device) {
  if (!g_enabled.load(std::memory_order_relaxed) || t_depth != 1 || !t_op) return;
  device_ = device;
  if (device == Device::CPU) {
    t0_ = now_ms();
  } else if (const DeviceMemoryHooks* h = device_memory_hooks(device)) {
    try {
      mark_ = h->mark();
    } catch (...) {
      return;
    }
  } else {
    return;
  }
  name_ = std::string(t_op) + "/" + part;
}

OpPart::~OpPart() {
  if (name_.empty()) return;
  Profile& p = profile();
  if (device_ == Device::CPU) {
    const double ms = now_ms() - t0_;
    std::lock_guard<std::mutex> lock(p.mu);
    auto& t = p.totals[{name_, device_}];
    t.first += 1;
    t.second += ms;
    return;
  }
  const DeviceMemoryHooks* h = device_memory_hooks(device_);
  void* end = nullptr;
  try {
    end = h->mark();
  } catch (...) {
    h->release_mark(mark_);
    return;
  }
  std::lock_guard<std::mutex> lock(p.mu);
  p.pending.push_back({std::move(name_), device_, mark_, end});
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
