// The flash attention kernels' shared device code (attention_flash.cu, the verified kernels and the ones
// waiting behind INSTILL_CUDA_NEXT; attention_lean.cu): mma.sync fragments and their shared-memory addressing,
// the tile loads (synchronous f32, cp.async bf16), the quad reductions, and the launch helpers. Fragment
// layouts and conventions: attention_flash.cu's header comment. Internal linkage (an anonymous namespace):
// each .cu that includes it has its own copy, as when it lived in attention_flash.cu.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/attention_kernels.cuh"
#include "cuda/common.cuh"
#include "cuda/mma.cuh"

namespace instill {
namespace cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 128;  // 4 warps
constexpr int kRows = 64;      // queries (fwd, dq) or keys (dkv) per CTA, 16 per warp
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The A fragment of a 16-column k-slice made of the C fragments of its two n-tiles, columns 0..7 (lo)
// and 8..15 (hi), as bf16 (the layout note above): how P and dS feed the second product.
struct AFrag {
  uint32_t r[4];
};
__device__ __forceinline__ AFrag a_from_c(const float (&lo)[4], const float (&hi)[4]) {
  return {{pack_bf16(lo[0], lo[1]), pack_bf16(lo[2], lo[3]), pack_bf16(hi[0], hi[1]), pack_bf16(hi[2], hi[3])}};
}

// Lane offsets (in bf16 elements, row stride S) of the three ldmatrix patterns above.
template <int S>
__device__ __forceinline__ int lds_a(int lane) { return (lane & 15) * S + (lane >> 4) * 8; }
template <int S>
__device__ __forceinline__ int lds_b_nmajor(int lane) { return ((lane & 7) + ((lane >> 4) << 3)) * S + ((lane >> 3) & 1) * 8; }
template <int S>
__device__ __forceinline__ int lds_b_kmajor(int lane) { return ((lane & 7) + (((lane >> 3) & 1) << 3)) * S + (lane >> 4) * 8; }

// acc (D/8 n-tiles) += a · (the 16 × D k-slice at `tile` of a k-major bf16 tile, rows = k, stride S),
// the B fragments through ldmatrix.trans: the second product of every kernel (O += P·V, dQ += dS·K,
// dV += Pᵀ·dO, dK += dSᵀ·Q).
template <int D, int S>
__device__ __forceinline__ void mma_kslice_kmajor(float (*acc)[4], const AFrag& a, const bf16* tile, int lane) {
#pragma unroll
  for (int dn = 0; dn < D / 16; ++dn) {
    uint32_t b[4];
    ldsm_x4_trans(smem_addr(tile + dn * 16 + lds_b_kmajor<S>(lane)), b);
    mma_bf16(acc[2 * dn], a.r, b[0], b[1]);
    mma_bf16(acc[2 * dn + 1], a.r, b[2], b[3]);
  }
}

// Rows [r0, r0 + R) of head `head` of a (N, heads, D) f32 tensor into a bf16 tile of
// R rows of stride D + 8; rows >= N become zeros. r0 >= 0.
template <int D, int R>
__device__ __forceinline__ void load_rows(bf16* dst, const float* src, int64_t r0, int64_t N, int64_t heads,
                                          int64_t head) {
  constexpr int kVec = D / 4;  // float4 per row
  static_assert((R * kVec) % kThreads == 0, "tile not a multiple of the block");
#pragma unroll
  for (int it = 0; it < R * kVec / kThreads; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / kVec, c = (idx % kVec) * 4;
    const int64_t row = r0 + r;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row < N) x = __ldg(reinterpret_cast<const float4*>(src + (row * heads + head) * D + c));
    uint2 packed;
    packed.x = pack_bf16(x.x, x.y);
    packed.y = pack_bf16(x.z, x.w);
    *reinterpret_cast<uint2*>(dst + r * (D + 8) + c) = packed;
  }
}

// The pipelined kernels' loads: cp.async copies global → shared without registers and without
// waiting; a group is committed per tile and waited for (wait_group 0) just before the tile is used.
// src_size 0 zero-fills the destination (rows past N); the address is then only a valid dummy.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// load_rows from a bf16 copy of the tensor, asynchronously: 16-byte chunks (8 bf16), rows >= N zeros.
// The same tile as load_rows (which rounds the f32 rows the same way as the copy was made).
template <int D, int R>
__device__ __forceinline__ void load_rows_async(bf16* dst, const bf16* src, int64_t r0, int64_t N, int64_t heads,
                                                int64_t head) {
  constexpr int kChunks = D / 8;
  static_assert((R * kChunks) % kThreads == 0, "tile not a multiple of the block");
#pragma unroll
  for (int it = 0; it < R * kChunks / kThreads; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const int64_t row = r0 + r;
    const bool valid = row < N;
    cp_async16(dst + r * (D + 8) + c, valid ? src + (row * heads + head) * D + c : src, valid);
  }
}

// load_rows_async's copies with each thread's addresses from one offset, for the tile loops of the kernels behind
// INSTILL_CUDA_NEXT (load_rows_async, which the verified kernels keep, computes a 64-bit address per chunk). A
// thread's chunk x of each pass of kThreads is rows pr0 + kPass·it, columns pc .. pc + 7, as there. Rows
// r0 .. r0 + R − 1 of head `head` of (N, heads, D) bf16 tensors into tiles of row stride D + 8, rows >= N zeros;
// load2 takes two tensors of that layout at once (K and V, Q and dO), sharing the offsets. No commit.
template <int D, int R>
struct TileRows {
  static constexpr int kChunks = D / 8, kPass = kThreads / kChunks;
  static_assert(kThreads % kChunks == 0 && R % kPass == 0, "a tile is whole passes of the block");
  int pr0, pc;
  __device__ __forceinline__ TileRows()
      : pr0(static_cast<int>(threadIdx.x) / kChunks), pc(static_cast<int>(threadIdx.x) % kChunks * 8) {}
  __device__ __forceinline__ void load(bf16* ta, const bf16* a, int64_t r0, int64_t N, int64_t heads, int64_t head) const {
    copy<false>(ta, a, nullptr, nullptr, r0, N, heads, head);
  }
  __device__ __forceinline__ void load2(bf16* ta, const bf16* a, bf16* tb, const bf16* b, int64_t r0, int64_t N,
                                        int64_t heads, int64_t head) const {
    copy<true>(ta, a, tb, b, r0, N, heads, head);
  }

 private:
  template <bool kTwo>
  __device__ __forceinline__ void copy(bf16* ta, const bf16* a, bf16* tb, const bf16* b, int64_t r0, int64_t N,
                                       int64_t heads, int64_t head) const {
    const int64_t row = heads * D, at = (r0 + pr0) * row + head * D + pc, step = kPass * row;
    const int dst = pr0 * (D + 8) + pc;
    if (r0 + R <= N) {  // every row there (all tiles but a row's last): no zero-fill to decide per chunk
#pragma unroll
      for (int it = 0; it < R / kPass; ++it) {
        cp_async16(ta + dst + it * kPass * (D + 8), a + at + it * step, true);
        if constexpr (kTwo) cp_async16(tb + dst + it * kPass * (D + 8), b + at + it * step, true);
      }
    } else {
#pragma unroll
      for (int it = 0; it < R / kPass; ++it) {
        const bool valid = r0 + pr0 + it * kPass < N;
        cp_async16(ta + dst + it * kPass * (D + 8), valid ? a + at + it * step : a, valid);
        if constexpr (kTwo) cp_async16(tb + dst + it * kPass * (D + 8), valid ? b + at + it * step : b, valid);
      }
    }
  }
};

// The key / value tiles of the forward and dQ kernels: tile t at K0 + b·buf_stride, V0 + b·buf_stride
// with b = t % 2 when pipelined (buf_stride 0 otherwise). kv_first: once every warp holds its Q (and dO)
// fragments, where that tile was, the pipelined kernels start loading the first tile into buffer 0.
template <int D, int BN, bool kPipe>
__device__ __forceinline__ void kv_first(bf16* K0, bf16* V0, const AttnParams& p, int64_t first, int64_t g) {
  if constexpr (kPipe) {
    __syncthreads();
    load_rows_async<D, BN>(K0, p.k16, first, p.N, p.KVH, g);
    load_rows_async<D, BN>(V0, p.v16, first, p.N, p.KVH, g);
    cp_async_commit();
  }
}
// At the top of the iteration for tile ts (in buffer buf): makes it readable by every thread and frees
// the other buffer. Pipelined: waits for it and starts loading tile ts + BN (if <= last) into the other
// buffer; otherwise loads it now, once every warp is done with the previous tile.
template <int D, int BN, bool kPipe>
__device__ __forceinline__ void kv_tile(bf16* K0, bf16* V0, int buf_stride, int buf, const AttnParams& p, int64_t ts,
                                        int64_t last, int64_t g) {
  if constexpr (kPipe) {
    cp_async_wait_all();
    __syncthreads();
    if (ts + BN <= last) {
      load_rows_async<D, BN>(K0 + (buf ^ 1) * buf_stride, p.k16, ts + BN, p.N, p.KVH, g);
      load_rows_async<D, BN>(V0 + (buf ^ 1) * buf_stride, p.v16, ts + BN, p.N, p.KVH, g);
      cp_async_commit();
    }
  } else {
    __syncthreads();
    load_rows<D, BN>(K0, p.k, ts, p.N, p.KVH, g);
    load_rows<D, BN>(V0, p.v, ts, p.N, p.KVH, g);
    __syncthreads();
  }
}

// bf16 activations (p.io16): a tile loaded once per CTA straight from the bf16 tensor (waited for here; the
// caller's __syncthreads makes it visible), and the outputs' stores. kIo16 false: the f32 load_rows.
template <int D, int R, bool kIo16>
__device__ __forceinline__ void load_rows_once(bf16* dst, const float* src, const bf16* src16, int64_t r0, int64_t N,
                                               int64_t heads, int64_t head) {
  if constexpr (kIo16) {
    load_rows_async<D, R>(dst, src16, r0, N, heads, head);
    cp_async_commit();
    cp_async_wait_all();
  } else {
    load_rows<D, R>(dst, src, r0, N, heads, head);
  }
}
__device__ __forceinline__ void store2(bf16* p, float a, float b) { *reinterpret_cast<uint32_t*>(p) = pack_bf16(a, b); }

// Both are nondecreasing in their argument (segments are contiguous and ordered), so
// the smallest lo / largest hi of a run of rows is that of its first / last row.

__device__ __forceinline__ float quad_max(float v) {  // over the 4 lanes sharing a row (same gid)
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// A thread's query rows in its warp's m-tile (the verified forward and dQ kernels): ia = wi0 + gid and
// ib = ia + 8 (C rows gid, gid + 8), and the first key each sees. Rows past N see nothing (lo = INT64_MAX; they
// are computed on zeros and never written).
struct ThreadRows {
  int64_t ia, ib, lo_a, lo_b;
  __device__ __forceinline__ ThreadRows(const int32_t* seg_begin, int64_t window, int64_t N, int64_t wi0, int gid) {
    ia = wi0 + gid;
    ib = ia + 8;
    lo_a = ia < N ? key_lo(seg_begin, ia, window) : INT64_MAX;
    lo_b = ib < N ? key_lo(seg_begin, ib, window) : INT64_MAX;
  }
};

// A fragment row's visible columns in a mask (attention_lean.cu): element (n, e) of a C
// fragment row sees column col0 + 8n + 2·tig + (e & 1) iff lo <= column <= hi; with base = col0 + 2·tig, that is
// lo − base <= 8n + (e & 1) <= hi − base, a constant against two per-row values (32-bit: token indices fit).
struct Window {
  int32_t lo, hi;
  __device__ __forceinline__ bool sees(int off) const { return off >= lo && off <= hi; }
};

// ---------------------------------------------------------------- dK, dV

// blockIdx.y = unit u: heads [u·hpc, (u+1)·hpc) where hpc = heads per CTA (rep, or 1 in
// split mode); results go to row stride out_heads at head u of dk_out / dv_out.
// bf16 activations (kIo16) not split: dk_out / dv_out null, the results go to p.dk16 / p.dv16 in bf16.
struct DkvTarget {
  float* dk_out;
  float* dv_out;
  int64_t out_heads;
  int64_t hpc;
};

constexpr size_t tile_bytes(int D, int rows) { return sizeof(bf16) * static_cast<size_t>(rows) * (D + 8); }

// Dynamic shared memory above the default 48 KB must be opted into per kernel.
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes, const char* name, bool max_carveout = false) {
  if (max_carveout) {  // several CTAs an SM wanted: as much of the unified L1 as shared memory as it takes (a hint)
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                                 static_cast<int>(cudaSharedmemCarveoutMaxShared));
    if (err != cudaSuccess) throw_cuda_error(err, name, "cudaFuncSetAttribute", 0);
  }
  if (bytes <= 48 * 1024) return;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (err != cudaSuccess) throw_cuda_error(err, name, "cudaFuncSetAttribute", 0);
}

// CTAs of `per_cta` rows (kRows) over `rows`, times `units` heads.
inline dim3 grid_of(int64_t rows, int64_t units, int64_t per_cta = kRows) {
  if (units > 65535) fail(ErrorCode::Unsupported, "attention on CUDA: more than 65535 heads");
  return dim3(static_cast<unsigned>((rows + per_cta - 1) / per_cta), static_cast<unsigned>(units));
}

}  // namespace
}  // namespace cuda
}  // namespace instill
