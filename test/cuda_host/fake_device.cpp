// A stand-in for the CUDA backend's device layer, on the host, so that the CUDA ops' HOST code (native/cuda/*.cu
// files without kernels of their own: lora_linear.cu, lora_group.cu) runs on a machine without a GPU: "device"
// memory is host memory, and the few device routines they call are done here on the CPU, to the contracts
// native/cuda/gemm.h writes down:
// - gemm(): C = alpha · Σ_s op(A_s)·op(B_s) + bias + beta · C_in, each operand element scaled and, unless every
//   operand is f32, rounded to bf16 (round to nearest even), sums in double, C written in f32 or rounded once to
//   bf16 (c16); beta = 0 never reads C.
// - pack_bf16 / pack_f32 / pack_bf16_jobs / pack_f32_jobs / pack_bf16_table: element copies with the scale
//   and rounding, each counted as the one launch it is on a GPU (fake_packs).
// - fill_bytes, copies: memset / memcpy. New "device" buffers come poisoned (0xff bytes: NaN in f32 and bf16), so
//   an element read before it was written shows up as NaN in the results.
// - SideWork (INSTILL_CUDA_NEXT side_grads): the side stream as late as it could run. The products and
//   packs queued inside one are kept and done only when join_side() reaches it (or a copy, which joins everything).
//   Blocks are kept in runtime.cu's own book (cuda/block_cache.h), with a fence per SideWork that passes when its work
//   has run: a block it reads or writes (uses()) or allocated is handed out again only after that, and every other
//   block is poisoned as it is freed (and a block handed out again, as a new one). So a caller that rewrites or frees
//   what side work reads before it joins it gets other bits than the pass without side work.
// What this checks is the host code's operands, offsets, leading dimensions and flags (where a blind change
// breaks), not the kernels: those only a GPU runs (bench/gpu-check.sh). test/cuda_host/README.md says more.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "cuda/block_cache.h"
#include "cuda/gemm.h"
#include "ops/add.h"
#include "runtime/device.h"
#include "runtime/dtype.h"
#include "test/cuda_host/fake_device.h"

namespace instill {
namespace cuda {

namespace {

// The device's bf16 and f16 elements through runtime/dtype.h's conversions (round to nearest even, as the GPU).
float bf16_round(float v) { return bf16_to_f32(f32_to_bf16(v)); }
float bf16_value(const __nv_bfloat16& h) {
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return bf16_to_f32(b);
}
__nv_bfloat16 to_bf16(float v) {
  const uint16_t b = f32_to_bf16(v);
  __nv_bfloat16 h;
  std::memcpy(&h, &b, 2);
  return h;
}
float half_value(const __half& h) {
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return f16_to_f32(b);
}

float load(const void* p, Elem e, int64_t i) {
  switch (e) {
    case Elem::BF16: return bf16_value(static_cast<const __nv_bfloat16*>(p)[i]);
    case Elem::F16: return half_value(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// Operand element as the product sees it: scaled, then rounded to bf16 unless the product is all f32.
double element(const GemmOperand& o, int64_t r, int64_t c, bool round) {
  const float v = load(o.p, o.e, r * o.ld + c) * o.scale;
  return round ? bf16_round(v) : v;
}

void* host_alloc(size_t bytes) {
  void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  if (!p) fail(ErrorCode::Alloc, "fake device: out of host memory for ", bytes, " bytes");
  std::memset(p, 0xff, bytes + 256);
  return p;
}

// SideWork's state (the header comment). One thread uses the fake device at a time.
struct FakeFence {
  bool ran = false;  // its SideWork's work has been done (join_side)
};
using FakeFenceRef = std::shared_ptr<FakeFence>;
struct SideScope {
  uint64_t seq = 0;  // its number (side_count() once it closed); 0 while open
  uint64_t fork = 0;  // its fork's number (block_cache.h's side_fork)
  std::vector<std::function<void()>> work;
  FakeFenceRef fence = std::make_shared<FakeFence>();
};
std::deque<SideScope> side_scopes;  // not yet run, oldest first; the last one may be open
bool side_open = false;
uint64_t side_closes = 0;
uint64_t side_forks = 0;
BlockCache<FakeFenceRef> blocks;  // every block, as runtime.cu keeps them (never given back to the host)

size_t round_block(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

std::atomic<int> fake_side_work{0};  // products and packs queued in SideWorks (run later, at a join)

namespace {
// A product or pack: queued in the open SideWork (counted in fake_side_work), or done now.
void run_or_queue(std::function<void()> f) {
  if (!side_open) return f();
  side_scopes.back().work.push_back(std::move(f));
  ++fake_side_work;
}
}  // namespace

SideWork::SideWork(bool on) : on_(on) {
  if (!on_) return;
  if (side_open) fail(ErrorCode::Internal, "SideWork opened inside another");
  side_scopes.emplace_back();
  side_scopes.back().fork = ++side_forks;
  side_open = true;
}

SideWork::~SideWork() {
  if (!on_ || !side_open) return;
  side_open = false;
  side_scopes.back().seq = ++side_closes;
}

void SideWork::uses(const Tensor& t) const {
  if (!on_ || !side_open || !t.defined() || t.device() != Device::CUDA) return;
  blocks.mark(t.data(), side_scopes.back().fence);
}

uint64_t side_count() { return side_closes; }

void join_side(uint64_t upto) {
  if (side_open) fail(ErrorCode::Internal, "join_side inside a SideWork");
  while (!side_scopes.empty() && side_scopes.front().seq != 0 && side_scopes.front().seq <= upto) {
    SideScope& sc = side_scopes.front();
    for (auto& f : sc.work) f();
    sc.fence->ran = true;
    side_scopes.pop_front();
  }
}

Elem elem_of(const Tensor& t) {
  switch (t.dtype()) {
    case DType::F32: return Elem::F32;
    case DType::BF16: return Elem::BF16;
    case DType::F16: return Elem::F16;
    default: fail(ErrorCode::DType, "fake device: no Elem for ", dtype_name(t.dtype()));
  }
}

// The packs the CUDA backend would queue (one a launch): the explicit ones below, and those cuBLASLt's path makes
// inside a product (cublaslt.cu's plan_side: a side that is not one unscaled operand of the product's type; a bf16
// C with beta or a bias, through f32 scratch). What a check counts to see a change queue fewer.
std::atomic<int> fake_packs{0};

namespace {
void packs_of(const GemmArgs& g) {
  for (const GemmOperand* side : {g.a, g.b})
    if (!side_as_is(g, side)) ++fake_packs;
  if (g.c16 && (g.beta != 0.f || g.bias)) fake_packs += g.beta != 0.f ? 2 : 1;  // (C widened, the result rounded)
}
}  // namespace

namespace {
void gemm_now(const GemmArgs& g) {
  const bool round = !all_f32(g);
  const int segs = g.K[1] > 0 ? 2 : 1;
  for (int64_t m = 0; m < g.M; ++m) {
    for (int64_t n = 0; n < g.N; ++n) {
      double acc = 0;
      for (int s = 0; s < segs; ++s) {
        const GemmOperand &a = g.a[s], &b = g.b[s];
        for (int64_t k = 0; k < g.K[s]; ++k) {
          const double av = a.trans ? element(a, k, m, round) : element(a, m, k, round);
          const double bv = b.trans ? element(b, n, k, round) : element(b, k, n, round);
          acc += av * bv;
        }
      }
      double v = g.alpha * acc + (g.bias ? g.bias[n] : 0.0);
      if (g.beta != 0.f) {
        const double old = g.c16 ? bf16_value(g.c16[m * g.ldc + n]) : (g.c_in ? g.c_in : g.c)[m * g.ldc + n];
        v += g.beta * old;
      }
      if (g.c16) g.c16[m * g.ldc + n] = to_bf16(static_cast<float>(v));
      else g.c[m * g.ldc + n] = static_cast<float>(v);
    }
  }
}
}  // namespace

std::atomic<int> fake_products{0};  // gemm() calls with work (a product each on a GPU)

void gemm(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  ++fake_products;
  packs_of(g);
  run_or_queue([g] { gemm_now(g); });
}

namespace {
void to_bf16_block(const void* src, Elem e, int64_t lds, float scale, int64_t rows, int64_t cols, __nv_bfloat16* dst,
                   int64_t ldd) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * ldd + c] = to_bf16(load(src, e, r * lds + c) * scale);
}
void to_f32_block(const void* src, Elem e, int64_t lds, float scale, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * ldd + c] = load(src, e, r * lds + c) * scale;
}
// bf16 jobs (pack_bf16_jobs, pack_bf16_table), copied for a queued run
void bf16_jobs(const PackJob* jobs, int64_t n) {
  const std::vector<PackJob> js(jobs, jobs + n);
  run_or_queue([js] {
    for (const PackJob& j : js) to_bf16_block(j.src, Elem::F32, j.lds, 1.f, j.rows, j.cols, j.dst, j.ldd);
  });
}
}  // namespace

// Each done now, or queued in the open SideWork (run_or_queue).
void pack_bf16(const void* src, Elem e, int64_t lds, float scale, int64_t rows, int64_t cols, __nv_bfloat16* dst,
               int64_t ldd) {
  if (rows > 0 && cols > 0) ++fake_packs;
  run_or_queue([=] { to_bf16_block(src, e, lds, scale, rows, cols, dst, ldd); });
}

void pack_f32(const void* src, Elem e, int64_t lds, float scale, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  if (rows > 0 && cols > 0) ++fake_packs;
  run_or_queue([=] { to_f32_block(src, e, lds, scale, rows, cols, dst, ldd); });
}

void pack_bf16_jobs(const PackJob* jobs, int n) {
  if (n < 0 || n > kMaxPackJobs) fail(ErrorCode::Internal, "pack_bf16_jobs: ", n, " jobs");
  ++fake_packs;
  bf16_jobs(jobs, n);
}

void pack_f32_jobs(const PackJobF32* jobs, int n) {
  if (n < 0 || n > kMaxPackJobs) fail(ErrorCode::Internal, "pack_f32_jobs: ", n, " jobs");
  ++fake_packs;
  const std::vector<PackJobF32> js(jobs, jobs + n);
  run_or_queue([js] {
    for (const PackJobF32& j : js) to_f32_block(j.src, Elem::F32, j.lds, 1.f, j.rows, j.cols, j.dst, j.ldd);
  });
}

void pack_bf16_table(const PackJob* jobs, int64_t n) {
  ++fake_packs;  // (one launch on a GPU)
  bf16_jobs(jobs, n);
}

void add(const AddArgs& p) {  // f32 or bf16 elementwise, out may alias a or b
  const int64_t n = p.out->numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = load(p.a->data(), elem_of(*p.a), i) + load(p.b->data(), elem_of(*p.b), i);
    if (p.out->dtype() == DType::BF16) p.out->data_as<__nv_bfloat16>()[i] = to_bf16(v);
    else p.out->data_as<float>()[i] = v;
  }
}

const DeviceMemoryHooks& memory_hooks() {
  static const DeviceMemoryHooks h = {
      []() { return true; },
      []() { return std::string(); },
      [](size_t bytes) {
        const size_t size = round_block(bytes);
        void* p = blocks.take(size, [](const FakeFenceRef& f) { return f->ran; },
                              side_open ? side_scopes.back().fork : 0);  // (for side work: freed before its fork)
        if (p) std::memset(p, 0xff, size);  // (handed out again: poisoned as a new one)
        else p = host_alloc(size);
        blocks.add_live(p, size, side_open ? side_scopes.back().fence : nullptr);  // (allocated for side work)
        return p;
      },
      [](void* p) {
        if (!p) return;
        const FakeFenceRef* f = blocks.fence_of(p);
        const bool pending = f && *f && !(*f)->ran;  // side work still to read or write it: it keeps its bytes
        const size_t size = blocks.free(p, side_forks);
        if (!pending) std::memset(p, 0xff, size);
      },
      [](void* p, int byte, size_t bytes) { std::memset(p, byte, bytes); },
      [](void* dst, bool, const void* src, bool, size_t bytes) {
        if (!side_open) join_side();  // (as runtime.cu's: a copy sees the side work done)
        std::memcpy(dst, src, bytes);
      },
      [](uint64_t* in_use, uint64_t* peak, uint64_t* reserved, bool) {
        if (in_use) *in_use = 0;
        if (peak) *peak = 0;
        if (reserved) *reserved = 0;
      },
      []() -> uint64_t { return uint64_t{1} << 34; },
      []() -> void* { return nullptr; },
      [](void*, void*) { return 0.0; },
      [](void*) {},
      []() { return DeviceProperties{"fake device (host memory)", 0, 0, 1, uint64_t{1} << 34, "the CPU (double sums)"}; },
      []() -> uint64_t { return 0; },  // (its blocks are kept for the process)
      nullptr,                         // (it launches no kernels)
  };
  return h;
}

}  // namespace cuda
}  // namespace instill
