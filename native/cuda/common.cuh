// Shared helpers of the CUDA backend (native/cuda/*.cu only).
//
// Rules every kernel file keeps:
// - One device (ordinal 0) and one stream (cuda::stream()): ops are ordered on it,
//   so no op synchronises unless it hands a value back to the host (a loss) or
//   reads index data (ids, targets, cu_seqlens) that it validates on the host.
//   The one exception is a SideWork (below): work the caller chose to run beside
//   the main stream, on a second one, and joins before it depends on it.
// - Every CUDA call goes through INSTILL_CUDA_CHECK, and every kernel is launched
//   through launch() (below), which checks the launch: an error becomes
//   instill::Error(E_DEVICE) naming the kernel, never an abort. (An illegal address
//   inside a kernel is sticky: the context is unusable afterwards, which the message
//   says.)
// - Every kernel begins with pdl_enter() (below), before it touches global memory:
//   launch() may start it before the kernel ahead of it on the stream has finished.
//   test/cuda_host/launch_rules.test.ts holds every file here to both rules.
// - Scratch memory is a Tensor on Device::CUDA (RAII, E_ALLOC when it fails). Freed
//   blocks go back to a cache (runtime.cu) that hands them out again only to work
//   queued after the free on the same stream: scratch may be freed while the
//   kernels that use it are still queued, without waiting for them.
// - The parts of an op worth timing apart (its packs, products, kernels) are
//   scoped with an OpPart (runtime/op_profile.h): free while the profile is off.
// - Activations are f32 (the op interface), frozen weights f32 | bf16 | f16;
//   load_f32() converts any of them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/next.h"
#include "runtime/op_profile.h"
#include "runtime/tensor.h"

namespace instill {
namespace cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);

#define INSTILL_CUDA_CHECK(call)                                                         \
  do {                                                                                   \
    cudaError_t instill_err_ = (call);                                                   \
    if (instill_err_ != cudaSuccess) ::instill::cuda::throw_cuda_error(instill_err_, #call, __FILE__, __LINE__); \
  } while (0)

// The stream ops queue their work on now (created on first use): the backend's main stream, or its side stream
// while a SideWork is open on this thread.
cudaStream_t stream();
// The main stream, whatever is open (cuBLASLt's workspace is the main stream's, the side stream has its own).
cudaStream_t main_stream();

// INSTILL_CUDA_NEXT `side_grads`: while a SideWork lives (on this thread), work goes to the side stream, a stream of
// lower priority than the main one (its kernels take the multiprocessors the main stream's leave idle), after
// everything queued on the main stream before it. The main stream does not wait for it until join_side(): what
// the side work writes (LoRA's dA and dB) is for the caller to read after that, and what it reads the caller must
// not overwrite before it. Memory is safe without waiting: a block the side work reads (uses()) or that was
// allocated while it was open is handed out again only once the side work queued so far has run (an event per
// SideWork, queried by the allocator, never waited for). SideWorks do not nest. With `on` false it does nothing.
class SideWork {
 public:
  explicit SideWork(bool on);
  ~SideWork();
  SideWork(const SideWork&) = delete;
  SideWork& operator=(const SideWork&) = delete;
  // t's memory block is not reused (once freed) before the side work queued by this SideWork has run: every tensor
  // the side work reads or writes that the caller might free before joining it.
  void uses(const Tensor& t) const;
  bool on() const { return on_; }

 private:
  bool on_;
};
// SideWorks closed so far in this process (with work or not): a mark join_side() takes.
uint64_t side_count();
// The main stream waits for the side work of the first `upto` SideWorks (side_count() then; by default all).
void join_side(uint64_t upto = UINT64_MAX);
// After a launch: turns a launch error into instill::Error.
void check_launch(const char* kernel);
// Waits for the stream; errors become instill::Error.
void sync(const char* what);
// GPU 0's properties, as the runtime read them once (runtime.info().cuda); E_DEVICE where it is not usable.
const DeviceProperties& gpu_properties();
// Whether GPU 0 has compute capability 9.0 exactly (H100, H200): the one the sm_90a code (wgmma) runs on.
inline bool is_sm90() { return gpu_properties().cc_major == 9 && gpu_properties().cc_minor == 0; }
// The device's multiprocessors: how kernels size their grids.
int sm_count();
// What runs the products (cublaslt.cu): "cuBLASLt (the library loaded)", or the WMMA kernel and why cuBLASLt is not
// used. Loads cuBLASLt where no product has yet.
std::string gemm_library();
// INSTILL_CUDA_NEXT (runtime/next.h): whether a kernel waiting for a GPU run replaces the verified one.
inline bool next_kernels(Next which) { return next_enabled(which); }

// Programmatic dependent launch (INSTILL_CUDA_NEXT `pdl`; compute capability 9.0: H100, H200): a kernel launched with
// it may be placed on the multiprocessors while the kernel ahead of it on the stream still runs its last wave, so that
// its launch and its blocks' start overlap that tail instead of following it (many of a 1B step's kernels take 2-30 µs:
// run 18's op profile). pdl_enter(), every kernel's first statement: lets the kernel behind this one be launched as
// soon as every block of this one has started (griddepcontrol.launch_dependents), then waits until the kernels this one
// depends on have finished and their writes are visible (griddepcontrol.wait). Without a programmatic launch both
// return at once; the wait is what keeps the bits the same with the piece on. Nothing on sm_80 (no such instructions),
// where launch() never asks for it.
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Whether launch() asks for a programmatic dependent launch on `s` (runtime.cu): the piece on, a GPU of compute
// capability 9.0 (where the sm_90a code runs: a later GPU runs the compute_80 PTX, which has no wait), and `s` the
// main stream (side work waits for events, and stays as it was).
bool pdl_launch(cudaStream_t s);
// The next launch on the main stream is an ordinary one. Called after each queued copy, fill or event wait there, work
// a kernel behind it may read: programmatic launches are documented between kernels, and what one does right after
// another kind of work is not, so such a kernel waits for that work in full, as without the piece. (Not needed after
// an event record, which writes nothing a kernel reads, nor after a copy the host waits for.)
void pdl_barrier();
// A programmatic launch failed where the same launch without it went (an old driver, a tool that refuses it): none is
// asked for again in this process (deviceLaunchCounts says so).
void pdl_refused_once();
// Counts a launch (native().deviceLaunchCounts, for tests and benchmarks).
void count_launch(bool programmatic);

// kernel<<<grid, block, smem, s>>>(args...), then check_launch(name); with pdl_launch(s) as a programmatic dependent
// launch. The arguments are converted to the kernel's parameter types as <<<>>> converts them.
template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
            const Args&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1] = {};
  const bool programmatic = pdl_launch(s);
  if (programmatic) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, args...);
  if (err != cudaSuccess && programmatic) {  // once more as an ordinary launch; where that one goes, none asked again
    cudaGetLastError();
    cfg.attrs = nullptr;
    cfg.numAttrs = 0;
    err = cudaLaunchKernelEx(&cfg, kernel, args...);
    if (err == cudaSuccess) pdl_refused_once();
  }
  if (err != cudaSuccess) {
    cudaGetLastError();  // (thrown here, not left behind for the next check)
    throw_cuda_error(err, name, "launch", 0);
  }
  check_launch(name);
  count_launch(cfg.numAttrs == 1);
}

// Copies an i32 tensor (CPU or CUDA) to the host.
std::vector<int32_t> to_host_i32(const Tensor& t);
// A device copy of host ints (a scratch tensor).
Tensor to_device_i32(const std::vector<int32_t>& v);

// Alignment checks on the host before a vector path: p is `bytes`-aligned; every p is 16-byte aligned
// (float4 / 16-byte loads and stores). A null pointer counts as aligned.
inline bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }
inline bool aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (!aligned(p, 16)) return false;
  return true;
}

inline unsigned grid_1d(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > 65535ll * 32) blocks = 65535ll * 32;  // grid-stride loops cover the rest
  return static_cast<unsigned>(blocks);
}

// dtype codes as kernels see them (DType's own values are not assumed).
enum class Elem : int { F32 = 0, BF16 = 1, F16 = 2 };
Elem elem_of(const Tensor& t);  // throws E_DTYPE for i32

__device__ __forceinline__ float load_f32(const void* p, Elem e, int64_t i) {
  switch (e) {
    case Elem::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case Elem::F16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// One element (float or bf16) as f32, or four (f32, bf16 or f16; 8-byte aligned for the 16-bit ones); an f32 into
// one, or four into four, rounded to nearest even: the kernels that take f32 or bf16 activations (and the packs)
// load and store through these.
__device__ __forceinline__ float load1(const float* p) { return *p; }
__device__ __forceinline__ float load1(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}
__device__ __forceinline__ float4 load4(const __half* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
  const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}
__device__ __forceinline__ void store1(float* p, float v) { *p = v; }
__device__ __forceinline__ void store1(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ void store4(__nv_bfloat16* p, float4 v) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 raw;
  raw.x = *reinterpret_cast<const uint32_t*>(&lo);
  raw.y = *reinterpret_cast<const uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(p) = raw;
}

// Eight bf16 (one 16-byte uint4) as f32.
__device__ __forceinline__ void unpack8(const uint4& w, float (&f)[8]) {
  const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {  // (a bf16 is an f32's high half: exact)
    f[2 * k] = __uint_as_float(u[k] << 16);
    f[2 * k + 1] = __uint_as_float(u[k] & 0xffff0000u);
  }
}

// log2(e): exp(x) as exp2(x·log2(e)), one FMA before the hardware's exp2.
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum of one float per thread; blockDim.x a multiple of 32, <= 1024.
// `shared` holds 32 floats. Every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // shared may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float r = lane < warps ? shared[lane] : 0.f;
  return warp_sum(r);
}
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float r = lane < warps ? shared[lane] : -INFINITY;
  return warp_max(r);
}

}  // namespace cuda
}  // namespace instill
