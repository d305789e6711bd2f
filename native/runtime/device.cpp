#include "runtime/device.h"

#include <cstdlib>
#include <new>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "runtime/error.h"

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

Buffer::Buffer(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device != Device::CPU) {
    fail(ErrorCode::Device, "device '", device_name(device), "' is not available in this build of instill");
  }
  uint64_t phys = physical_memory_bytes();
  if (phys != 0 && bytes > phys) {
    fail(ErrorCode::Alloc, "cannot allocate ", bytes, " bytes: larger than this machine's memory (", phys,
         " bytes)");
  }
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  data_ = std::aligned_alloc(64, rounded);
  if (!data_) fail(ErrorCode::Alloc, "out of memory allocating ", bytes, " bytes");
}

Buffer::~Buffer() { std::free(data_); }

}  // namespace instill
