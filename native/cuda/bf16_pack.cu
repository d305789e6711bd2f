// pack_bf16 (gemm.h): f32 | bf16 | f16 row-major block → bf16 block with its own
// row stride, scale applied before rounding (round to nearest even, as
// __float2bfloat16 and the WMMA kernel round).
//
// Why a kernel of its own: the GEMM operands of lora_linear and
// linear_cross_entropy are f32 activations of hundreds of MB (dy in the LoRA
// benchmark is 256 MB), so this pass runs at memory speed or the op is slow.
// The earlier flat-index pack did an int64 division and modulo per element and
// a dtype switch per load. Here the launch is 2-D: blockIdx.y/threadIdx.y walk
// rows (one multiply per row, none per element), threadIdx.x walks columns 4 at
// a time with one 16-byte load (f32) or 8-byte load (bf16/f16) and one 8-byte
// store, and the dtype is a template parameter. Narrow blocks (the (N, 16) LoRA
// factors) put several rows in one block so threads are not left idle.
// gather_bf16 is the same pass over a list of source rows (linear CE's kept rows).
// pack_f32 / gather_f32 are the same passes into an f32 destination (the exact
// path: products whose operands are all f32 run in TF32 and are stacked in f32).
#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "cuda/gemm.h"

namespace instill {
namespace cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

// (load4 of f32, bf16 and f16: cuda/common.cuh)


// kVec: src + r·lds and dst + r·ldd are 4-element aligned for every row (checked
// on the host), so columns 0, 4, 8, … are vector-aligned; the cols % 4 tail is
// scalar.
// row_index: destination row r reads source row row_index[r] (null: row r).
template <typename T, typename D, bool kVec>
__global__ void __launch_bounds__(kThreads) pack_kernel(const T* __restrict__ src, int64_t lds, float scale,
                                                        const int32_t* __restrict__ row_index, int64_t rows,
                                                        int64_t cols, D* __restrict__ dst, int64_t ldd) {
  pdl_enter();
  const int64_t col_threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t c_first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    const T* s = src + (row_index ? static_cast<int64_t>(row_index[r]) : r) * lds;
    D* d = dst + r * ldd;
    if (kVec) {
      const int64_t c4 = cols & ~int64_t{3};
      for (int64_t c = c_first * 4; c < c4; c += col_threads * 4) {
        float4 v = load4(s + c);
        v.x *= scale;
        v.y *= scale;
        v.z *= scale;
        v.w *= scale;
        store4(d + c, v);
      }
      for (int64_t c = c4 + c_first; c < cols; c += col_threads) store1(d + c, to_f32(s[c]) * scale);
    } else {
      for (int64_t c = c_first; c < cols; c += col_threads) store1(d + c, to_f32(s[c]) * scale);
    }
  }
}

// dst[r·ldd + c] = src[r·lds + c] in 16-byte units (a bf16 block whose widths are multiples of 8).
__global__ void __launch_bounds__(kThreads) copy16_kernel(const uint4* __restrict__ src, int64_t lds, int64_t rows,
                                                          int64_t cols, uint4* __restrict__ dst, int64_t ldd) {
  pdl_enter();
  for (int64_t r = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.y) * blockDim.y)
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x)
      dst[r * ldd + c] = __ldcs(src + r * lds + c);
}

template <typename T, typename D>
void launch_pack(const T* src, int64_t lds, float scale, const int32_t* row_index, int64_t rows, int64_t cols,
                 D* dst, int64_t ldd) {
  const bool vec = aligned(src, 4 * sizeof(T)) && lds % 4 == 0 && aligned(dst, 4 * sizeof(D)) &&
                   ldd % 4 == 0 && cols >= 4;
  const int64_t per_thread = vec ? 4 : 1;
  const int64_t col_work = (cols + per_thread - 1) / per_thread;  // threads one row could use
  int tx = 32;
  while (tx < kThreads && tx < col_work) tx *= 2;
  const int ty = kThreads / tx;
  const int64_t gx = std::min<int64_t>((col_work + tx - 1) / tx, 1024);  // the column loop covers the rest
  const int64_t gy = std::min<int64_t>((rows + ty - 1) / ty, 65535);     // the row loop covers the rest
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), block(static_cast<unsigned>(tx),
                                                                                 static_cast<unsigned>(ty));
  if (vec) {
    launch("pack_kernel", pack_kernel<T, D, true>, grid, block, 0, stream(), src, lds, scale, row_index, rows, cols,
           dst, ldd);
  } else {
    launch("pack_kernel", pack_kernel<T, D, false>, grid, block, 0, stream(), src, lds, scale, row_index, rows, cols,
           dst, ldd);
  }
}

}  // namespace

template <typename D>
void gather_to(const void* src, Elem e, int64_t lds, float scale, const int32_t* row_index, int64_t rows, int64_t cols,
               D* dst, int64_t ldd) {
  if (rows <= 0 || cols <= 0) return;
  switch (e) {
    case Elem::BF16:
      launch_pack(static_cast<const __nv_bfloat16*>(src), lds, scale, row_index, rows, cols, dst, ldd);
      break;
    case Elem::F16:
      launch_pack(static_cast<const __half*>(src), lds, scale, row_index, rows, cols, dst, ldd);
      break;
    default:
      launch_pack(static_cast<const float*>(src), lds, scale, row_index, rows, cols, dst, ldd);
      break;
  }
}

void gather_bf16(const void* src, Elem e, int64_t lds, float scale, const int32_t* row_index, int64_t rows,
                 int64_t cols, __nv_bfloat16* dst, int64_t ldd) {
  gather_to(src, e, lds, scale, row_index, rows, cols, dst, ldd);
}

void pack_bf16(const void* src, Elem e, int64_t lds, float scale, int64_t rows, int64_t cols, __nv_bfloat16* dst,
               int64_t ldd) {
  if (e == Elem::BF16 && scale == 1.f && rows > 0 && cols > 0 && cols % 8 == 0 && lds % 8 == 0 && ldd % 8 == 0 &&
      aligned(src, 16) && aligned(dst, 16)) {  // a plain copy of a frozen bf16 weight: 16 bytes a thread
    // (cudaMemcpy2DAsync did the same copies 1.5x slower in a 1B step: 3.1 vs 2.1 ms)
    const int64_t per_row = cols / 8;
    int tx = 32;
    while (tx < kThreads && tx < per_row) tx *= 2;
    const int ty = kThreads / tx;
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>((per_row + tx - 1) / tx, 1024)),
                    static_cast<unsigned>(std::min<int64_t>((rows + ty - 1) / ty, 65535)));
    launch("copy16_kernel", copy16_kernel, grid, dim3(static_cast<unsigned>(tx), static_cast<unsigned>(ty)), 0,
           stream(), static_cast<const uint4*>(src), lds / 8, rows, per_row, reinterpret_cast<uint4*>(dst), ldd / 8);
    return;
  }
  gather_to(src, e, lds, scale, nullptr, rows, cols, dst, ldd);
}

Tensor widened(const Tensor& t) {
  Tensor f = Tensor::empty(t.shape(), DType::F32, Device::CUDA);
  const int64_t D = t.ndim() ? t.dim(-1) : 1, rows = D ? t.numel() / D : 0;
  pack_f32(t.data(), elem_of(t), D, 1.f, rows, D, f.data_as<float>(), D);
  return f;
}

void narrow_into(const Tensor& f, const Tensor& t) {
  const int64_t D = t.ndim() ? t.dim(-1) : 1, rows = D ? t.numel() / D : 0;
  pack_bf16(f.data(), Elem::F32, D, 1.f, rows, D, t.data_as<__nv_bfloat16>(), D);
}

namespace {
template <typename D>
struct PackJobs {
  PackJobOf<D> j[kMaxPackJobs];
};
// blockIdx.y: the job; a grid-stride loop over its elements (a division per element: these blocks are small)
template <typename D>
__global__ void __launch_bounds__(kThreads) pack_jobs_kernel(const __grid_constant__ PackJobs<D> jobs) {
  pdl_enter();
  const PackJobOf<D>& jb = jobs.j[blockIdx.y];
  const int64_t total = jb.rows * jb.cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / jb.cols, c = i - r * jb.cols;
    store1(jb.dst + r * jb.ldd + c, jb.src[r * jb.lds + c]);
  }
}

template <typename D>
void pack_jobs(const PackJobOf<D>* jobs, int n, const char* name) {
  if (n < 0 || n > kMaxPackJobs) fail(ErrorCode::Internal, name, ": ", n, " jobs, at most ", kMaxPackJobs);
  PackJobs<D> all{};
  int64_t most = 0;
  for (int i = 0; i < n; ++i) {
    all.j[i] = jobs[i];
    if (jobs[i].rows > 0 && jobs[i].cols > 0) most = std::max(most, jobs[i].rows * jobs[i].cols);
  }
  if (most == 0) return;
  const int64_t gx = std::min<int64_t>((most + kThreads - 1) / kThreads, 1024);
  launch(name, pack_jobs_kernel<D>, dim3(static_cast<unsigned>(gx), static_cast<unsigned>(n)), kThreads, 0, stream(),
         all);
}
}  // namespace

void pack_bf16_jobs(const PackJob* jobs, int n) { pack_jobs(jobs, n, "pack_bf16_jobs"); }

namespace {
// blockIdx.y: the job, read from the device table; a grid-stride loop over its elements in 32 bits (the host
// checks every job has fewer than 2^31)
__global__ void __launch_bounds__(kThreads) pack_table_kernel(const PackJob* __restrict__ jobs) {
  pdl_enter();
  const PackJob jb = jobs[blockIdx.y];
  const uint32_t cols = static_cast<uint32_t>(jb.cols), total = static_cast<uint32_t>(jb.rows * jb.cols);
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t r = i / cols, c = i - r * cols;
    store1(jb.dst + static_cast<int64_t>(r) * jb.ldd + c, jb.src[static_cast<int64_t>(r) * jb.lds + c]);
  }
}

// The last table uploaded (host copy to compare, device copy to read), kept for the process (never freed: a
// static's destructor could run after the CUDA runtime is gone). One stream: an upload over a table that a queued
// launch still reads runs after that launch.
struct Table {
  std::mutex mu;
  std::vector<PackJob> host;
  Tensor* dev = nullptr;
};
}  // namespace

void pack_bf16_table(const PackJob* jobs, int64_t n) {
  int64_t most = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = jobs[i].rows > 0 && jobs[i].cols > 0 ? jobs[i].rows * jobs[i].cols : 0;
    if (e >= (int64_t{1} << 31)) {  // (not a LoRA factor: each job a launch of its own, as pack_bf16 would)
      for (int64_t j = 0; j < n; ++j) pack_bf16(jobs[j].src, Elem::F32, jobs[j].lds, 1.f, jobs[j].rows, jobs[j].cols, jobs[j].dst, jobs[j].ldd);
      return;
    }
    most = std::max(most, e);
  }
  if (most == 0) return;
  static Table& table = *new Table();
  std::lock_guard<std::mutex> lock(table.mu);
  const size_t bytes = static_cast<size_t>(n) * sizeof(PackJob);
  if (table.host.size() != static_cast<size_t>(n) || std::memcmp(table.host.data(), jobs, bytes) != 0) {
    static_assert(sizeof(PackJob) % sizeof(int32_t) == 0, "the table is held as int32s");
    if (!table.dev || table.dev->nbytes() < bytes) {
      delete table.dev;
      table.dev = nullptr;
      table.dev = new Tensor(Tensor::empty({static_cast<int64_t>(bytes / sizeof(int32_t))}, DType::I32, Device::CUDA));
    }
    copy_bytes(table.dev->data(), Device::CUDA, jobs, Device::CPU, bytes);
    table.host.assign(jobs, jobs + n);
  }
  const unsigned gx = static_cast<unsigned>(std::min<int64_t>((most + kThreads - 1) / kThreads, 64));
  const PackJob* const dev = static_cast<const PackJob*>(table.dev->data());
  for (int64_t j0 = 0; j0 < n; j0 += 65535) {  // (grid.y is at most 65535 jobs a launch)
    const unsigned gy = static_cast<unsigned>(std::min<int64_t>(n - j0, 65535));
    launch("pack_table_kernel", pack_table_kernel, dim3(gx, gy), kThreads, 0, stream(), dev + j0);
  }
}
void pack_f32_jobs(const PackJobF32* jobs, int n) { pack_jobs(jobs, n, "pack_f32_jobs"); }

void gather_f32(const void* src, Elem e, int64_t lds, float scale, const int32_t* row_index, int64_t rows,
                int64_t cols, float* dst, int64_t ldd) {
  gather_to(src, e, lds, scale, row_index, rows, cols, dst, ldd);
}

void pack_f32(const void* src, Elem e, int64_t lds, float scale, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  gather_to(src, e, lds, scale, nullptr, rows, cols, dst, ldd);
}

}  // namespace cuda
}  // namespace instill
