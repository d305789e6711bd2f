#include "runtime/host_cache.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/device.h"

namespace instill {

namespace {

constexpr size_t kMinBytes = size_t{1} << 20;  // below this glibc's own heap reuses blocks well
constexpr size_t kAlign = 64;

// The size class of a block of at least kMinBytes.
size_t size_class(size_t bytes) {
  size_t p = kMinBytes;
  while (p <= bytes / 2) p *= 2;  // largest power of two <= bytes
  const size_t step = p / 8;
  return (bytes + step - 1) / step * step;
}

struct Cache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;  // class size -> blocks, most recent last
  uint64_t held = 0;
  uint64_t limit = 0;

  Cache() {
    const uint64_t phys = physical_memory_bytes();
    limit = std::min<uint64_t>(phys ? phys / 8 : (uint64_t{1} << 30), uint64_t{2} << 30);
    if (const char* env = std::getenv("INSTILL_HOST_CACHE_MB")) {
      char* end = nullptr;
      const unsigned long long mb = std::strtoull(env, &end, 10);
      if (end != env && *end == '\0') limit = static_cast<uint64_t>(mb) << 20;
    }
  }

  uint64_t release_locked() {
    const uint64_t n = held;
    for (auto& kv : free_blocks)
      for (void* p : kv.second) std::free(p);
    free_blocks.clear();
    held = 0;
    return n;
  }
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: buffers may be freed during static destruction
  return *c;
}

}  // namespace

void* host_alloc(size_t bytes) {
  if (bytes < kMinBytes) return std::aligned_alloc(kAlign, (std::max<size_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign);
  const size_t cls = size_class(bytes);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free_blocks.find(cls);
    if (it != c.free_blocks.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.held -= cls;
      return p;
    }
  }
  void* p = std::aligned_alloc(kAlign, cls);
  if (p == nullptr) {
    {
      std::lock_guard<std::mutex> lock(c.mu);
      c.release_locked();
    }
    p = std::aligned_alloc(kAlign, cls);
  }
  return p;
}

void host_free(void* p, size_t bytes) {
  if (p == nullptr) return;
  if (bytes < kMinBytes) {
    std::free(p);
    return;
  }
  const size_t cls = size_class(bytes);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.held + cls <= c.limit) {
      c.free_blocks[cls].push_back(p);
      c.held += cls;
      return;
    }
  }
  std::free(p);
}

uint64_t host_cache_release() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.release_locked();
}

uint64_t host_cache_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.held;
}

uint64_t host_cache_limit() { return cache().limit; }

}  // namespace instill
