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
// owner finishes before work queued with the new one. The exception is the side
// stream (SideWork, INSTILL_CUDA_NEXT `side_grads`): a block its work reads or was
// allocated for carries that SideWork's fence (an event recorded after its work),
// and the cache hands it out again only once the event has completed (queried,
// never waited for: another block, or a new one, serves meanwhile). And side
// work takes only a block freed before its fork: another thread (the JS thread,
// while the model's pass runs on a worker) may have queued main-stream work on a
// block after the fork and freed it, and the side stream does not wait for that
// work (block_cache.h). When
// cudaMalloc fails, the cache is released (after a device sync) and the
// allocation retried once.
// Stats (bytes in use, their peak, bytes held from the driver) serve the
// benchmarks' peak-memory numbers (like torch.cuda.max_memory_allocated).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/block_cache.h"
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
  cudaStream_t stream = nullptr;  // the main stream, at the device's highest priority
  int low_priority = 0;           // the side stream's (the device's lowest)
  std::once_flag side_once;
  cudaStream_t side = nullptr;  // SideWork's, created on first use
  cudaEvent_t fork = nullptr;   // recorded on the main stream where a SideWork opens, waited for by the side stream
  DeviceProperties props;       // GPU 0's, as cudaGetDeviceProperties gave them
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
    s.props.name = prop.name;
    s.props.cc_major = prop.major;
    s.props.cc_minor = prop.minor;
    s.props.multiprocessors = prop.multiProcessorCount;
    s.props.memory_bytes = prop.totalGlobalMem;
    int high = 0;
    if (cudaDeviceGetStreamPriorityRange(&s.low_priority, &high) != cudaSuccess) {
      s.low_priority = high = 0;
      cudaGetLastError();
    }
    if (cudaSetDevice(0) != cudaSuccess ||
        cudaStreamCreateWithPriority(&s.stream, cudaStreamNonBlocking, high) != cudaSuccess) {
      s.reason = std::string("could not create a CUDA stream: ") + cudaGetErrorString(cudaGetLastError());
      return;
    }
    s.ok = true;
  });
  return s;
}

bool hook_available() { return state().ok; }
std::string hook_reason() { return state().ok ? std::string() : state().reason; }

// CUDA events of one kind (`flags`), given back to be reused: the op profiler's marks (timed) and SideWorks' fences
// (untimed; a 1B step opens ~64 SideWorks). One given back may still be pending: recording it again leaves the waits
// already queued on its last record as they were.
class EventPool {
 public:
  explicit EventPool(unsigned flags) : flags_(flags) {}
  cudaEvent_t take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        cudaEvent_t ev = free_.back();
        free_.pop_back();
        return ev;
      }
    }
    cudaEvent_t ev = nullptr;
    INSTILL_CUDA_CHECK(cudaEventCreateWithFlags(&ev, flags_));
    return ev;
  }
  void give(cudaEvent_t ev) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(ev);
  }

 private:
  unsigned flags_;
  std::mutex mu_;
  std::vector<cudaEvent_t> free_;
};
// (never destroyed: no CUDA calls from static destructors at exit)
EventPool& mark_events() {
  static EventPool* p = new EventPool(cudaEventDefault);
  return *p;
}
EventPool& fence_events() {
  static EventPool* p = new EventPool(cudaEventDisableTiming);
  return *p;
}

// A SideWork's fence: its event, recorded on the side stream when it closes (until then no block it marks is
// handed out); its event goes back to the pool with the last block (or list entry) that refers to it.
struct Fence {
  cudaEvent_t ev = nullptr;
  uint64_t fork = 0;      // its SideWork's fork: Cache::forks just after it (block_cache.h's side_fork)
  bool recorded = false;  // read and set under the cache's lock
  ~Fence() {
    if (ev) fence_events().give(ev);
  }
};
using FenceRef = std::shared_ptr<Fence>;

thread_local FenceRef t_open;  // the open SideWork's fence on this thread: its work goes to the side stream
std::atomic<uint64_t> launches_all{0}, launches_pdl{0};  // count_launch(): kernels launched, and programmatically

// Whether the side work behind f has run (no fence: nothing to wait for). Caller holds the cache's lock.
bool fence_passed(const FenceRef& f) {
  if (!f) return true;
  if (!f->recorded) return false;
  const cudaError_t err = cudaEventQuery(f->ev);
  if (err == cudaSuccess) return true;
  cudaGetLastError();  // (not ready is no error to report later; a real one shows at the next launch or sync)
  return false;
}

struct Cache {
  std::mutex mu;
  BlockCache<FenceRef> blocks;  // live and freed blocks by rounded size, each with its side work's fence
  size_t in_use = 0, peak = 0, reserved = 0;
  uint64_t forks = 0;  // SideWorks forked from the main stream so far (their fork events are recorded under the lock)
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: blocks may be freed during process exit
  return *c;
}

size_t round_size(size_t bytes) {
  const size_t step = bytes < (1u << 20) ? 512 : (2u << 20);
  return (bytes + step - 1) / step * step;
}

// Gives every cached block back to the driver, but those an open SideWork still marks. Caller holds the lock.
void release_cache(Cache& c) {
  if (state().ok) cudaDeviceSynchronize();  // (both streams: every recorded fence has passed after it)
  c.blocks.release([&c](void* p, size_t size, const FenceRef& fence) {
    if (fence && !fence->recorded) return false;
    cudaFree(p);
    c.reserved -= size;
    return true;
  });
}

void* hook_alloc(size_t bytes) {
  const size_t size = round_size(bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  // the latest freed block whose side work (if any) has run; for side work, one freed before its fork
  void* p = c.blocks.take(size, fence_passed, t_open ? t_open->fork : 0);
  if (!p) {
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
  c.blocks.add_live(p, size, t_open);  // (allocated for side work: marked by it)
  c.in_use += size;
  if (c.in_use > c.peak) c.peak = c.in_use;
  return p;
}

void hook_free(void* p) {
  if (!p) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  // (0 for a block not ours: never happens; ignored rather than a crash)
  c.in_use -= c.blocks.free(p, c.forks);
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
  pdl_barrier();
}

// INSTILL_CUDA_NEXT `async_upload`: a host-to-device copy of up to kStageBytes, outside side work, is copied into one of
// kStageSlots slots of pinned host memory and queued from there on the main stream, and the call returns: later work
// on the stream, and any read back, comes after it, and the caller's buffer may change at once. A slot is written
// again only after the copy that used it last has run (its event, waited for where the ring comes round to it before
// the GPU has). Without the piece, or where pinned memory cannot be had, every copy waits for the stream, as the
// pageable copies (which may anyway) did. Removes the pass's waits for its input uploads, the loss's kept rows and the
// optimizer's chunk tables (~8 a step, each leaving the GPU idle while the host catches up).
constexpr size_t kStageBytes = 256u << 10;
constexpr int kStageSlots = 16;

struct Staging {
  std::mutex mu;
  char* base = nullptr;  // kStageSlots × kStageBytes, pinned (cudaHostAlloc), made on first use, kept for the process
  cudaEvent_t done[kStageSlots] = {};  // recorded after each slot's last copy
  bool used[kStageSlots] = {};
  int next = 0;
  bool unavailable = false;  // no pinned memory or events: every copy waits
};

// Whether the copy was queued through a staging slot (else the caller copies and waits).
bool staged_upload(void* dst, const void* src, size_t bytes) {
  if (t_open || bytes > kStageBytes || !next_kernels(Next::AsyncUpload)) return false;
  static Staging& s = *new Staging();  // (never destroyed: no CUDA calls from static destructors at exit)
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.unavailable) return false;
  if (!s.base) {
    bool ok = cudaHostAlloc(reinterpret_cast<void**>(&s.base), kStageSlots * kStageBytes, cudaHostAllocDefault) == cudaSuccess;
    for (int k = 0; ok && k < kStageSlots; ++k) ok = cudaEventCreateWithFlags(&s.done[k], cudaEventDisableTiming) == cudaSuccess;
    if (!ok) {  // (what was made stays: a few events, at most the pinned block)
      cudaGetLastError();
      s.unavailable = true;
      return false;
    }
  }
  const int k = s.next;
  if (s.used[k]) INSTILL_CUDA_CHECK(cudaEventSynchronize(s.done[k]));  // its last copy has read it
  char* const slot = s.base + static_cast<size_t>(k) * kStageBytes;
  std::memcpy(slot, src, bytes);
  INSTILL_CUDA_CHECK(cudaMemcpyAsync(dst, slot, bytes, cudaMemcpyHostToDevice, main_stream()));
  pdl_barrier();
  const cudaError_t err = cudaEventRecord(s.done[k], main_stream());
  if (err != cudaSuccess) {  // (no event to wait for: the copy is waited for here, so nothing overwrites the slot early)
    cudaStreamSynchronize(main_stream());
    s.used[k] = false;
    throw_cuda_error(err, "cudaEventRecord (a staged upload)", __FILE__, __LINE__);
  }
  s.used[k] = true;
  s.next = (k + 1) % kStageSlots;
  return true;
}

void hook_copy(void* dst, bool dst_dev, const void* src, bool src_dev, size_t bytes) {
  if (!t_open) join_side();  // what the host reads or writes, side work included, is in its final state
  if (dst_dev && !src_dev && staged_upload(dst, src, bytes)) return;
  cudaMemcpyKind kind = dst_dev ? (src_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                : (src_dev ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  INSTILL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream()));
  sync("copy");
}

// Op profiler marks: CUDA events from a pool, recorded on the stream.
void* hook_mark() {
  cudaEvent_t ev = mark_events().take();
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
  if (m) mark_events().give(static_cast<cudaEvent_t>(m));
}

std::string pdl_state();  // below

void hook_launch_counts(uint64_t* launches, uint64_t* programmatic, std::string* pdl) {
  *launches = launches_all.load();
  *programmatic = launches_pdl.load();
  *pdl = pdl_state();
}

uint64_t hook_release_cached() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  const size_t before = c.reserved;
  release_cache(c);
  return before - c.reserved;
}

DeviceProperties hook_properties() {
  DeviceProperties p = gpu_properties();
  p.gemm = gemm_library();  // (loads cuBLASLt where the first product has not yet)
  return p;
}

}  // namespace

const DeviceMemoryHooks& memory_hooks() {
  static const DeviceMemoryHooks hooks = {hook_available,  hook_reason,       hook_alloc,           hook_free,
                                         hook_fill,       hook_copy,         hook_stats,           hook_available_bytes,
                                         hook_mark,       hook_elapsed_ms,   hook_release_mark,    hook_properties,
                                         hook_release_cached, hook_launch_counts};
  return hooks;
}

cudaStream_t main_stream() {
  State& s = state();
  if (!s.ok) fail(ErrorCode::Device, "device 'cuda' is not available: ", s.reason);
  return s.stream;
}

cudaStream_t stream() {
  const cudaStream_t m = main_stream();
  return t_open ? state().side : m;
}

namespace {
std::mutex side_mu;
// closed SideWorks' fences, oldest first, that the main stream has not waited for (never destroyed: no CUDA calls
// from static destructors at exit)
std::deque<std::pair<uint64_t, FenceRef>>& side_closed = *new std::deque<std::pair<uint64_t, FenceRef>>();
uint64_t side_closes = 0;  // SideWorks closed so far (side_count), under side_mu
}  // namespace

// INSTILL_CUDA_SIDE_DELAY_US (a test's knob, 0 or unset: none): each SideWork's work waits that many microseconds on
// the side stream before it starts, so that it runs as late as the model's joins allow, as the fake device runs it
// (test/cuda_host): a missing join, or a block handed out again too early, then gives other results on a GPU too,
// where a small model's side work would otherwise be done long before anything overwrote what it reads.
namespace {
__global__ void side_delay_kernel(unsigned long long ns) {
  pdl_enter();
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

unsigned long long side_delay_ns() {
  const char* v = std::getenv("INSTILL_CUDA_SIDE_DELAY_US");
  if (!v || !*v) return 0;
  char* end = nullptr;
  const double us = std::strtod(v, &end);
  if (*end || !(us >= 0) || us > 1e6)
    fail(ErrorCode::Arg, "INSTILL_CUDA_SIDE_DELAY_US must be microseconds from 0 to 1e6, got '", v, "'");
  return static_cast<unsigned long long>(us * 1000.0);
}
}  // namespace

SideWork::SideWork(bool on) : on_(on) {
  if (!on_) return;
  if (t_open) fail(ErrorCode::Internal, "SideWork opened inside another");
  State& s = state();
  const cudaStream_t m = main_stream();
  std::call_once(s.side_once, [&s] {
    if (cudaStreamCreateWithPriority(&s.side, cudaStreamNonBlocking, s.low_priority) != cudaSuccess ||
        cudaEventCreateWithFlags(&s.fork, cudaEventDisableTiming) != cudaSuccess) {
      s.side = nullptr;
      cudaGetLastError();
    }
  });
  if (!s.side) fail(ErrorCode::Device, "could not create the CUDA side stream (INSTILL_CUDA_NEXT side_grads)");
  auto fence = std::make_shared<Fence>();
  fence->ev = fence_events().take();
  {  // (one fork event for every SideWork: the wait takes the record just made. Under the cache's lock, so that a
     // block freed before the count went up was freed before the record: its main-stream work is behind the fork)
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    INSTILL_CUDA_CHECK(cudaEventRecord(s.fork, m));
    INSTILL_CUDA_CHECK(cudaStreamWaitEvent(s.side, s.fork, 0));
    fence->fork = ++c.forks;
  }
  if (const unsigned long long ns = side_delay_ns()) {
    launch("side_delay_kernel", side_delay_kernel, 1, 1, 0, s.side, ns);
  }
  t_open = std::move(fence);
}

SideWork::~SideWork() {
  if (!on_ || !t_open) return;
  FenceRef fence = std::move(t_open);
  t_open = nullptr;
  const bool ok = cudaEventRecord(fence->ev, state().side) == cudaSuccess;  // (else its blocks stay out of use)
  if (!ok) cudaGetLastError();
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    fence->recorded = ok;
  }
  std::lock_guard<std::mutex> lock(side_mu);
  ++side_closes;
  if (ok) side_closed.emplace_back(side_closes, std::move(fence));
}

void SideWork::uses(const Tensor& t) const {
  if (!on_ || !t.defined() || t.device() != Device::CUDA || !t.data()) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.blocks.mark(t.data(), t_open);
}

uint64_t side_count() {
  std::lock_guard<std::mutex> lock(side_mu);
  return side_closes;
}

void join_side(uint64_t upto) {
  if (t_open) fail(ErrorCode::Internal, "join_side inside a SideWork");
  std::lock_guard<std::mutex> lock(side_mu);
  size_t n = 0;  // the closed SideWorks up to `upto` not waited for yet: the first n (the side stream runs in order,
                 // so waiting for the last of them waits for all)
  while (n < side_closed.size() && side_closed[n].first <= upto) ++n;
  if (n == 0) return;
  INSTILL_CUDA_CHECK(cudaStreamWaitEvent(main_stream(), side_closed[n - 1].second->ev, 0));
  pdl_barrier();
  side_closed.erase(side_closed.begin(), side_closed.begin() + static_cast<std::ptrdiff_t>(n));
}


namespace {
std::atomic<bool> pdl_held{false};  // pdl_barrier() was called since the last launch
std::atomic<bool> pdl_refused{false};  // the driver refused a programmatic launch once: none since

__global__ void pdl_probe_kernel() { pdl_enter(); }

// Whether the kernels that run are the sm_90a code, the one with pdl_enter()'s wait: not where the driver compiled the
// compute_80 PTX instead (CUDA_FORCE_PTX_JIT=1, say), which has none.
bool sm90a_code_runs() {
  static const bool runs = [] {
    cudaFuncAttributes attr{};
    if (cudaFuncGetAttributes(&attr, pdl_probe_kernel) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return attr.ptxVersion >= 90;
  }();
  return runs;
}

// Why a launch on the main stream would not be programmatic now (None: it would): the one ladder pdl_launch and
// deviceLaunchCounts read. It wants a GPU of compute capability 9.0 exactly, running the sm_90a code (the one with
// pdl_enter()'s wait): a later GPU runs the compute_80 PTX, compiled without the wait (griddepcontrol is sm_90's), and
// a programmatic launch there would race. The device is checked first (cheap), the variable only on a 9.0 GPU, the
// probe (once) last.
enum class PdlOff { None, NoGpu, Capability, Variable, Refused, Ptx };
PdlOff pdl_off() {
  const State& st = state();
  if (!st.ok) return PdlOff::NoGpu;
  if (st.props.cc_major != 9 || st.props.cc_minor != 0) return PdlOff::Capability;
  if (!next_kernels(Next::Pdl)) return PdlOff::Variable;
  if (pdl_refused.load()) return PdlOff::Refused;
  if (!sm90a_code_runs()) return PdlOff::Ptx;
  return PdlOff::None;
}

// Whether a launch on the main stream now would be programmatic ("on"), or why not (deviceLaunchCounts).
std::string pdl_state() {
  const State& st = state();
  switch (pdl_off()) {
    case PdlOff::None: return "on";
    case PdlOff::NoGpu: return "no GPU";
    case PdlOff::Capability:
      return "not used: compute capability " + std::to_string(st.props.cc_major) + "." +
             std::to_string(st.props.cc_minor) + " (the sm_90a code, with the wait, runs on 9.0 only)";
    case PdlOff::Variable: return "off (INSTILL_CUDA_NEXT)";
    case PdlOff::Refused: return "not used: the driver refused a programmatic launch";
    case PdlOff::Ptx: return "not used: the driver runs the compute_80 PTX (no wait in it)";
  }
  return "?";
}
}  // namespace

bool pdl_launch(cudaStream_t s) {
  if (s != state().stream || pdl_off() != PdlOff::None) return false;
  // (the flag's test and reset are one step, so that one thread's barrier is not lost to another's launch. Where two
  // host threads queue work on the stream at once, the launch that takes the flag is an ordinary one, so it starts after
  // the copy or fill in full, and every later kernel waits for it; a programmatic launch that slips in between another
  // thread's copy and its flag reads nothing that copy writes, or the threads would have had to order the two)
  return !pdl_held.exchange(false);
}

void pdl_barrier() { pdl_held.store(true); }

void pdl_refused_once() { pdl_refused.store(true); }

void count_launch(bool programmatic) {
  launches_all.fetch_add(1, std::memory_order_relaxed);
  if (programmatic) launches_pdl.fetch_add(1, std::memory_order_relaxed);
}

void check_launch(const char* kernel) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda_error(err, kernel, "launch", 0);
}

const DeviceProperties& gpu_properties() {
  const State& s = state();
  if (!s.ok) fail(ErrorCode::Device, "device 'cuda' is not available: ", s.reason);
  return s.props;
}

int sm_count() { return gpu_properties().multiprocessors; }


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
