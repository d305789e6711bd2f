// The CUDA backend's runtime: device memory hooks for native/runtime's Buffer,
// the backend's one stream, error translation and small host<->device helpers.
//
// Device 0 only. available() is false (never an error) where the driver or a
// GPU is missing, so a CUDA build loads and runs CPU work on a machine with no
// GPU; unavailable_reason() says which.
//
// Memory: plain cudaMalloc (never managed memory), behind a caching allocator
// as PyTorch's: a freed block goes to a free list keyed by its rounded size
// (512 B steps below 1 MiB, 2 MiB steps above) and is handed out again for the
// same rounded size without a cudaMalloc/cudaFree (each of which costs tens of
// microseconds and cudaFree synchronises the device). Reuse is safe without any
// event because every kernel runs on the one stream: work queued with the old
// owner finishes before work queued with the new one. When cudaMalloc fails, the
// cache is released (after a stream sync) and the allocation retried once.
// Stats (bytes in use, their peak, bytes held from the driver) serve the
// benchmarks' peak-memory numbers (like torch.cuda.max_memory_allocated).
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda/common.cuh"
#include "runtime/device.h"

namespace instill {
namespace cuda {

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  const bool sticky = err == cudaErrorIllegalAddress || err == cudaErrorLaunchFailure ||
                      err == cudaErrorMisalignedAddress || err == cudaErrorIllegalInstruction ||
                      err == cudaErrorHardwareStackError || err == cudaErrorAssert;
  const ErrorCode code = err == cudaErrorMemoryAllocation ? ErrorCode::Alloc : ErrorCode::Device;
  fail(code, "CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") in ", what, " at ", file, ":",
       line, sticky ? "; the GPU context is no longer usable: restart the process" : "");
}

namespace {

struct State {
  std::once_flag once;
  bool ok = false;
  std::string reason;
  cudaStream_t stream = nullptr;
};

State& state() {
  static State s;  // process-wide: the CUDA context is per process anyway
  std::call_once(s.once, [] {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      s.reason = std::string("no usable CUDA driver or GPU (") + cudaGetErrorName(err) + ": " + cudaGetErrorString(err) + ")";
      cudaGetLastError();
      return;
    }
    if (count == 0) {
      s.reason = "no CUDA GPU is present";
      return;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major < 8) {
      s.reason = std::string("GPU 0 (") + prop.name + ") has compute capability " + std::to_string(prop.major) + "." +
                 std::to_string(prop.minor) + "; instill's CUDA kernels need 8.0 (A100) or newer";
      cudaGetLastError();
      return;
    }
    if (cudaSetDevice(0) != cudaSuccess || cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking) != cudaSuccess) {
      s.reason = std::string("could not create a CUDA stream: ") + cudaGetErrorString(cudaGetLastError());
      return;
    }
    s.ok = true;
  });
  return s;
}

bool hook_available() { return state().ok; }
std::string hook_reason() { return state().ok ? std::string() : state().reason; }

struct Cache {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;  // rounded size -> blocks
  std::unordered_map<void*, size_t> live;           // block -> rounded size
  size_t in_use = 0, peak = 0, reserved = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: blocks may be freed during process exit
  return *c;
}

size_t round_size(size_t bytes) {
  const size_t step = bytes < (1u << 20) ? 512 : (2u << 20);
  return (bytes + step - 1) / step * step;
}

// Gives every cached block back to the driver. Caller holds the lock.
void release_cache(Cache& c) {
  if (state().ok) cudaStreamSynchronize(state().stream);
  for (auto& [size, blocks] : c.free_blocks) {
    for (void* p : blocks) {
      cudaFree(p);
      c.reserved -= size;
    }
  }
  c.free_blocks.clear();
}

void* hook_alloc(size_t bytes) {
  const size_t size = round_size(bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  void* p = nullptr;
  auto it = c.free_blocks.find(size);
  if (it != c.free_blocks.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
  } else {
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      release_cache(c);
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      // in_use: what live tensors hold, some of it perhaps tensors JS no longer refers to, whose memory Node gives
      // back only once the event loop turns (tensor.dispose() gives it back at once)
      fail(ErrorCode::Alloc, "cannot allocate ", bytes, " bytes on the GPU (", free_b, " of ", total_b,
           " bytes free, ", c.in_use, " held by tensors): ", cudaGetErrorString(err),
           ". Tensors no longer referenced are freed only when the event loop turns: in a long synchronous loop, "
           "dispose() them or pass out tensors");
    }
    c.reserved += size;
  }
  c.live[p] = size;
  c.in_use += size;
  if (c.in_use > c.peak) c.peak = c.in_use;
  return p;
}

void hook_free(void* p) {
  if (!p) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.live.find(p);
  if (it == c.live.end()) return;  // not ours: never happens; ignore rather than crash
  c.in_use -= it->second;
  c.free_blocks[it->second].push_back(p);
  c.live.erase(it);
}

void hook_stats(uint64_t* in_use, uint64_t* peak, uint64_t* reserved, bool reset_peak) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (reset_peak) c.peak = c.in_use;
  *in_use = c.in_use;
  *peak = c.peak;
  *reserved = c.reserved;
}

uint64_t hook_available_bytes() {
  size_t free_b = 0, total_b = 0;
  INSTILL_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return static_cast<uint64_t>(free_b) + (c.reserved - c.in_use);  // idle cached blocks come back on demand
}

// Queued on the stream like a kernel: later work on the stream sees the bytes, and the
// host reads device memory only through hook_copy, which waits.
void hook_fill(void* p, int byte, size_t bytes) {
  INSTILL_CUDA_CHECK(cudaMemsetAsync(p, byte, bytes, stream()));
}

void hook_copy(void* dst, bool dst_dev, const void* src, bool src_dev, size_t bytes) {
  cudaMemcpyKind kind = dst_dev ? (src_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                : (src_dev ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  INSTILL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream()));
  sync("copy");
}

// Op profiler marks: CUDA events from a pool, recorded on the stream.
struct EventPool {
  std::mutex mu;
  std::vector<cudaEvent_t> free;
};

EventPool& event_pool() {
  static EventPool* p = new EventPool();
  return *p;
}

void* hook_mark() {
  cudaEvent_t ev = nullptr;
  {
    EventPool& p = event_pool();
    std::lock_guard<std::mutex> lock(p.mu);
    if (!p.free.empty()) {
      ev = p.free.back();
      p.free.pop_back();
    }
  }
  if (!ev) INSTILL_CUDA_CHECK(cudaEventCreate(&ev));
  INSTILL_CUDA_CHECK(cudaEventRecord(ev, stream()));
  return ev;
}

double hook_elapsed_ms(void* a, void* b) {
  INSTILL_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(b)));
  float ms = 0;
  INSTILL_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(a), static_cast<cudaEvent_t>(b)));
  return ms;
}

void hook_release_mark(void* m) {
  if (!m) return;
  EventPool& p = event_pool();
  std::lock_guard<std::mutex> lock(p.mu);
  p.free.push_back(static_cast<cudaEvent_t>(m));
}

}  // namespace

const DeviceMemoryHooks& memory_hooks() {
  static const DeviceMemoryHooks hooks = {hook_available,  hook_reason,       hook_alloc,           hook_free,
                                         hook_fill,       hook_copy,         hook_stats,           hook_available_bytes,
                                         hook_mark,       hook_elapsed_ms,   hook_release_mark};
  return hooks;
}

cudaStream_t stream() {
  State& s = state();
  if (!s.ok) fail(ErrorCode::Device, "device 'cuda' is not available: ", s.reason);
  return s.stream;
}

void check_launch(const char* kernel) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda_error(err, kernel, "launch", 0);
}

int sm_count() {
  static const int n = [] {
    int dev = 0, sms = 0;
    INSTILL_CUDA_CHECK(cudaGetDevice(&dev));
    INSTILL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return sms;
  }();
  return n;
}


void sync(const char* what) {
  cudaError_t err = cudaStreamSynchronize(stream());
  if (err != cudaSuccess) throw_cuda_error(err, what, "cudaStreamSynchronize", 0);
}

std::vector<int32_t> to_host_i32(const Tensor& t) {
  std::vector<int32_t> v(static_cast<size_t>(t.numel()));
  copy_bytes(v.data(), Device::CPU, t.data(), t.device(), v.size() * sizeof(int32_t));
  return v;
}

Tensor to_device_i32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::I32, Device::CUDA);
  copy_bytes(t.data(), Device::CUDA, v.data(), Device::CPU, v.size() * sizeof(int32_t));
  return t;
}

Elem elem_of(const Tensor& t) {
  switch (t.dtype()) {
    case DType::F32: return Elem::F32;
    case DType::BF16: return Elem::BF16;
    case DType::F16: return Elem::F16;
    default: fail(ErrorCode::DType, "CUDA kernels read f32, bf16 or f16 here, got ", dtype_name(t.dtype()));
  }
}

}  // namespace cuda
}  // namespace instill
