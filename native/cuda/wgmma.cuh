// Hopper's warpgroup products (wgmma.mma_async, sm_90a) for the kernels that use them (attention_wgmma.cu): the
// shared-memory matrix descriptor, the fences, and m64nNk16 bf16 products with A in registers and B in shared memory.
//
// A warpgroup is 4 consecutive warps (128 threads). One product computes a 64 × N tile: warp w of the group holds
// rows 16w .. 16w + 15, and within them the same fragments as mma.sync.m16n8k16 (attention_flash.cu's layout note):
//   A (64 × 16, registers, 4 × bf16x2 a thread): a[0] = (gid, 2tig..2tig+1), a[1] = (gid + 8, 2tig..),
//     a[2] = (gid, 2tig + 8..), a[3] = (gid + 8, 2tig + 8..) of the warp's 16 rows: mma.sync's A fragment, so
//     ldmatrix's A loads and a_from_c's conversion of C fragments feed it as they feed mma.sync.
//   D (64 × N, f32): d[n][0..1] = (gid, 8n + 2tig + {0, 1}), d[n][2..3] = (gid + 8, ...): mma.sync's C fragment
//     of n-tile n.
//   B (N × 16 "K-major": each of the N rows has its 16 k contiguous), from shared memory through a descriptor, in
//     core matrices: 8 rows × 8 k (16 bytes a row, 128 bytes contiguous). Row r, k of the product's B lives in the
//     core matrix (r / 8, k / 8), at byte (r % 8)·16 + (k % 8)·2 in it. The descriptor gives the first core
//     matrix's address, the bytes between the two core matrices of a row group along k (LBO, "leading dimension
//     byte offset") and between row groups (SBO, "stride dimension byte offset"); no swizzle.
//   B "MN-major" (kTransB, the instruction's imm-trans-b = 1; the pieces' no-swizzle form until stop 34): each of the 16 k has its
//     N values contiguous, in core matrices of 8 k × 8 n (16 bytes a k, 128 bytes contiguous): n, k at byte
//     (n / 8)·SBO + (k / 8)·LBO + (k % 8)·16 + (n % 8)·2 (the PTX ISA's canonical MN-major layout without swizzle,
//     ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)), and its bf16 example). A row-major (k, n) tile stored as K-major core
//     matrices of its own rows is that: the attention's V, K, Q, dO tiles read as they are.
//   The 128-byte swizzle (wg_desc_sw128: the descriptor's layout type 1; the attention kernels' tiles since stop 34):
//     the operand lies in atoms of 8 rows × 128 bytes (1024 bytes, 1024-aligned), and the hardware reads byte address
//     a at a ^ (((a >> 7) & 7) << 4): 16-byte chunk c of the atom's row r is stored at chunk c ^ r. A tile whose rows
//     are 64 bf16 (one 128-byte row each, r = the row mod 8) is both
//       K-major (rows = n, their 64 elements = k): the canonical ((8, m), (T, 2k)) : ((8T, SBO), (1, T)), SBO the
//       bytes between 8-row groups (1024 here), LBO unused; k-slice kk of 16 starts kk·32 bytes into the row, before
//       the swizzle (the hardware swizzles the address it computes);
//       and MN-major (rows = k, their 64 elements = n): ((T, 8, m), (8, k)) : ((1, T, LBO), (8T, SBO)), SBO the bytes
//       between 8-row groups (1024), LBO between 64-element column blocks (n ≥ 64: a second block of rows).
// The products are asynchronous: a batch is fenced (wg_fence: the registers it reads were written by ordinary
// instructions), issued, committed (wg_commit) and waited for (wg_wait), and only then are its D registers read;
// wg_hold keeps the compiler from moving those reads above the wait.
// Built for sm_90a only: elsewhere (sm_80, compute_80 PTX) every helper traps, and the host never launches a kernel
// that uses them (attention_wgmma_takes asks for compute capability 9.0).
#pragma once

#include <cstdint>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define INSTILL_WGMMA 1
#else
#define INSTILL_WGMMA 0
#endif

namespace instill {
namespace cuda {
namespace {

__device__ __forceinline__ void wgmma_unavailable() {
#ifdef __CUDA_ARCH__
  __trap();
#endif
}

// The descriptor of a no-swizzle K-major operand whose first core matrix is at `smem` (16-byte aligned).
__device__ __forceinline__ uint64_t wg_desc(const void* smem, uint32_t lbo, uint32_t sbo) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((lbo & 0x3FFFF) >> 4) << 16) |
         (static_cast<uint64_t>((sbo & 0x3FFFF) >> 4) << 32);
}

// The descriptor of a 128-byte-swizzled operand (the header comment): `smem` is the start before the swizzle (an
// atom's 1024-aligned base, plus kk·32 bytes for a K-major k-slice within the atom's rows).
__device__ __forceinline__ uint64_t wg_desc_sw128(const void* smem, uint32_t lbo, uint32_t sbo) {
  return wg_desc(smem, lbo, sbo) | (static_cast<uint64_t>(1) << 62);
}

__device__ __forceinline__ void wg_fence() {
#if INSTILL_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  wgmma_unavailable();
#endif
}
__device__ __forceinline__ void wg_commit() {
#if INSTILL_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  wgmma_unavailable();
#endif
}
// Waits until at most N committed batches are still running.
template <int N>
__device__ __forceinline__ void wg_wait() {
#if INSTILL_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#else
  wgmma_unavailable();
#endif
}
// After wg_wait: the accumulators' later reads stay below it (an empty asm the compiler must run first).
template <int T>
__device__ __forceinline__ void wg_hold(float (&d)[T][4]) {
#pragma unroll
  for (int n = 0; n < T; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[n][e])::"memory");
}
// Shared memory written by ordinary stores or cp.async, visible to the products' reads (the async proxy): each
// thread after its own writes land, before the barrier that publishes them.
__device__ __forceinline__ void fence_proxy_async() {
#if INSTILL_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#else
  wgmma_unavailable();
#endif
}

// d = a · B (kAcc false) or d += a · B (kAcc true), m64n64k16: d's 8 n-tiles of C fragments; d is read
// (its registers must hold values, any: a product with kAcc false ignores them). kTransB: B is MN-major (the header comment).
template <bool kAcc, bool kTransB = false>
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[8][4], const uint32_t (&a)[4], uint64_t b) {
#if INSTILL_WGMMA
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n"
      "}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
        "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
        "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
        "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
        "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(kAcc ? 1 : 0), "n"(kTransB ? 1 : 0));
#else
  wgmma_unavailable();
#endif
}

// d = a · B (kAcc false) or d += a · B (kAcc true), m64n128k16: d's 16 n-tiles of C fragments; d is read
// (its registers must hold values, any: a product with kAcc false ignores them). kTransB: B is MN-major (the header comment).
template <bool kAcc, bool kTransB = false>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[16][4], const uint32_t (&a)[4], uint64_t b) {
#if INSTILL_WGMMA
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n"
      "}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
        "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
        "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
        "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
        "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
        "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
        "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
        "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]),
        "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
        "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
        "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
        "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
        "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(kAcc ? 1 : 0), "n"(kTransB ? 1 : 0));
#else
  wgmma_unavailable();
#endif
}

}  // namespace
}  // namespace cuda
}  // namespace instill
