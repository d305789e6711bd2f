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

// What a non-CPU device is: its name, compute capability (CUDA: "major.minor"), multiprocessors, memory, and what runs
// its matrix products (CUDA: cuBLASLt and where it was found, or the fallback kernel and why).
struct DeviceProperties {
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int multiprocessors = 0;
  uint64_t memory_bytes = 0;
  std::string gemm;
};

// Memory of a non-CPU device, as a function table the device's backend fills
// (native/cuda/runtime.cu for CUDA), so that native/runtime never includes a
// GPU toolkit's headers. Every function throws instill::Error (E_DEVICE /
// E_ALLOC) instead of aborting; free never throws.
struct DeviceMemoryHooks {
  bool (*available)();                  // a usable device is present (driver + GPU)
  std::string (*unavailable_reason)();  // why not, when available() is false
  void* (*alloc)(size_t bytes);
  void (*free)(void* p);
  void (*fill)(void* p, int byte, size_t bytes);  // memset, queued (later work and copies see it)
  // Copies between this device and the host (or within the device): the host's side may be reused, and a read back
  // has the bytes, when it returns. A host-to-device copy may still be queued then (CUDA's async_upload): work queued
  // on the device's stream after it sees the bytes, and so does side work opened after it.
  void (*copy)(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes);
  // Bytes held by live buffers, their peak since the last reset, bytes held from
  // the driver (live + cached); reset_peak first sets the peak to what is in use.
  void (*stats)(uint64_t* in_use, uint64_t* peak, uint64_t* reserved, bool reset_peak);
  // Bytes new buffers could still get: the driver's free memory plus this process's cached idle blocks.
  uint64_t (*available_bytes)();
  // Timing marks for the op profiler (runtime/op_profile.h): mark() queues a point in
  // the device's work; elapsed_ms(a, b) waits for b and returns the device time from a
  // to b; release_mark() gives a mark back (it may be reused).
  void* (*mark)();
  double (*elapsed_ms)(void* a, void* b);
  void (*release_mark)(void* m);
  // The device in use (runtime.info().cuda).
  DeviceProperties (*properties)();
  // Gives the blocks cached for reuse back to the driver, once the queued work is done (live tensors keep theirs;
  // a block side work may still read stays): the bytes given back.
  uint64_t (*release_cached)();
  // Kernels launched so far in this process, how many of them as programmatic dependent launches (CUDA's
  // INSTILL_CUDA_NEXT `pdl`), and whether a launch now would be one ("on") or why not: for tests and benchmarks. Null
  // where a device has no such count.
  void (*launch_counts)(uint64_t* launches, uint64_t* programmatic, std::string* pdl);
};

// The hooks of a device, or null when this build has none for it (CPU: always null).
const DeviceMemoryHooks* device_memory_hooks(Device d);
// Whether tensors can live on d in this build, on this machine.
bool device_available(Device d);
// Why not (empty when available).
std::string device_unavailable_reason(Device d);
// memcpy between any two devices (as DeviceMemoryHooks::copy: the host's side done with when it returns, a small
// upload perhaps still queued on the stream); fill_bytes: memset on any device (on a GPU queued on the backend's
// stream, like a kernel: a copy after it sees it).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void fill_bytes(void* p, Device device, int byte, size_t bytes);
// Bytes new tensors on d could still get (DeviceMemoryHooks::available_bytes); the CPU: physical memory
// (0 if unknown). E_DEVICE when d is not available.
uint64_t device_available_bytes(Device d);
// What d is (DeviceMemoryHooks::properties); E_DEVICE when d is the CPU or not available.
DeviceProperties device_properties(Device d);
// Gives d's cached idle blocks back to the driver (DeviceMemoryHooks::release_cached): the bytes given back.
// E_DEVICE when d is the CPU (host_cache_release is its counterpart) or not available.
uint64_t device_release_cached(Device d);
// Kernels launched on d so far, how many as programmatic dependent launches, and whether one would be now or why not
// (DeviceMemoryHooks::launch_counts; zeros and "not counted" where the device keeps no count). E_DEVICE when d is the
// CPU or not available.
void device_launch_counts(Device d, uint64_t* launches, uint64_t* programmatic, std::string* pdl);

}  // namespace instill
