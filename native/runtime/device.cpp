#include "runtime/device.h"

#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "runtime/error.h"
#include "runtime/host_cache.h"

namespace instill {

const char* device_name(Device d) {
  switch (d) {
    case Device::CPU: return "cpu";
    case Device::CUDA: return "cuda";
  }
  return "?";
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda") return Device::CUDA;
  fail(ErrorCode::Device, "unknown device '", name, "': expected 'cpu' or 'cuda'");
}

uint64_t physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  long pages = sysconf(_SC_PHYS_PAGES);
  long page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
#endif
  return 0;
}

// The one place (besides ops/backend.cpp's backend registry) that knows which
// device backends were built: a declaration only, no GPU headers.
#ifdef INSTILL_CUDA
namespace cuda {
const DeviceMemoryHooks& memory_hooks();
}
#endif

const DeviceMemoryHooks* device_memory_hooks(Device d) {
#ifdef INSTILL_CUDA
  if (d == Device::CUDA) return &cuda::memory_hooks();
#endif
  (void)d;
  return nullptr;
}

bool device_available(Device d) {
  if (d == Device::CPU) return true;
  const DeviceMemoryHooks* h = device_memory_hooks(d);
  return h != nullptr && h->available();
}

std::string device_unavailable_reason(Device d) {
  if (d == Device::CPU) return "";
  const DeviceMemoryHooks* h = device_memory_hooks(d);
  if (h == nullptr) return cat("this build of instill has no ", device_name(d), " backend (rebuild with INSTILL_CUDA=on)");
  return h->available() ? std::string() : h->unavailable_reason();
}

static const DeviceMemoryHooks& need_hooks(Device d) {
  const DeviceMemoryHooks* h = device_memory_hooks(d);
  if (h == nullptr || !h->available()) {
    fail(ErrorCode::Device, "device '", device_name(d), "' is not available: ", device_unavailable_reason(d));
  }
  return *h;
}

uint64_t device_available_bytes(Device d) {
  if (d == Device::CPU) return physical_memory_bytes();
  return need_hooks(d).available_bytes();
}

DeviceProperties device_properties(Device d) {
  if (d == Device::CPU) fail(ErrorCode::Device, "device_properties: the CPU has none");
  return need_hooks(d).properties();
}

uint64_t device_release_cached(Device d) {
  if (d == Device::CPU) fail(ErrorCode::Device, "device_release_cached: the CPU's cache is the host cache");
  return need_hooks(d).release_cached();
}

void device_launch_counts(Device d, uint64_t* launches, uint64_t* programmatic, std::string* pdl) {
  if (d == Device::CPU) fail(ErrorCode::Device, "device_launch_counts: the CPU launches no kernels");
  *launches = *programmatic = 0;
  *pdl = "not counted";
  const DeviceMemoryHooks& h = need_hooks(d);
  if (h.launch_counts) h.launch_counts(launches, programmatic, pdl);
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const Device gpu = dst_device != Device::CPU ? dst_device : src_device;
  if (dst_device != Device::CPU && src_device != Device::CPU && dst_device != src_device) {
    fail(ErrorCode::Device, "copies between two different GPU devices are not supported");
  }
  need_hooks(gpu).copy(dst, dst_device != Device::CPU, src, src_device != Device::CPU, bytes);
}

void fill_bytes(void* p, Device device, int byte, size_t bytes) {
  if (bytes == 0) return;
  if (device == Device::CPU) {
    std::memset(p, byte, bytes);
    return;
  }
  need_hooks(device).fill(p, byte, bytes);
}

Buffer::Buffer(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device != Device::CPU) {
    data_ = need_hooks(device).alloc(bytes == 0 ? 256 : bytes);
    return;
  }
  uint64_t phys = physical_memory_bytes();
  if (phys != 0 && bytes > phys) {
    fail(ErrorCode::Alloc, "cannot allocate ", bytes, " bytes: larger than this machine's memory (", phys,
         " bytes)");
  }
  data_ = host_alloc(bytes);  // large blocks come from (and go back to) a cache: no page faults per step
  if (!data_) fail(ErrorCode::Alloc, "out of memory allocating ", bytes, " bytes");
}

Buffer::~Buffer() {
  if (device_ == Device::CPU) {
    host_free(data_, bytes_);
  } else if (const DeviceMemoryHooks* h = device_memory_hooks(device_)) {
    h->free(data_);
  }
}

}  // namespace instill
