// Devices and the memory that lives on them.
//
// A Buffer owns bytes on one device. CPU buffers are 64-byte aligned (one cache
// line, one AVX-512 register) and refused up front when larger than the
// machine's physical memory, so an absurd size is an E_ALLOC error rather than
// an overcommitted allocation that the kernel kills later.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace instill {

enum class Device : int32_t { CPU = 0, CUDA = 1 };

const char* device_name(Device d);
// Parses 'cpu' | 'cuda'; throws E_DEVICE.
Device parse_device(const std::string& name);

class Buffer {
 public:
  Buffer(size_t bytes, Device device);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::CPU;
};

// Physical memory of this machine in bytes (0 if unknown).
uint64_t physical_memory_bytes();

}  // namespace instill
