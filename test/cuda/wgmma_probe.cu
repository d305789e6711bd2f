// The wgmma pieces' primitive alone on a Hopper GPU (test/cuda/wgmma_probe.test.ts runs it): wgmma.cuh's products,
// descriptors and fences on each B layout the attention kernels (native/cuda/attention_wgmma.cu) give them, against
// the same products done exactly on the host. Small integers in, so every sum is exact in f32: a wrong element is a
// wrong layout, not rounding.
//
// What it closes: test/cuda_host/wgmma_layout.test.ts (CPU, in CI) shows that the kernels' copies, tile loads and
// descriptors put each B element where wgmma.cuh's layout formulas say. This program shows that the hardware reads
// those formulas' layouts as the math needs, with A from registers in the documented fragments and D read back in
// them. If the attention pieces' GPU tests fail and this passes, the fault is in the kernels' own logic (masks,
// softmax, pipelining); if this fails, its line names the layout and which other reading of the same shared memory
// the GPU's result matches.
//
// Each case: one CTA of one warpgroup (128 threads). The host lays B out in shared memory's image by the formula
// (no swizzle, k-slice kk's k = 0..15 from the slice's start: K-major: (n, k) at (n/8)·SBO + (k/8)·LBO + (n%8)·16 +
// (k%8)·2; MN-major: (n/8)·SBO + (k/8)·LBO + (k%8)·16 + (n%8)·2); the kernel copies the image in with cp.async as
// the kernels load tiles, waits, fences the async proxy, and runs K/16 products d (+)= A·B (the first with the
// accumulator ignored: d starts as NaN), k-slice kk's descriptor at the start the kernels give it.
//
// The 128-byte-swizzled cases (wg_desc_sw128; the kernels' tiles since stop 34: 64 rows of D bf16 as D/64 blocks of
// 64 rows × 128 bytes, 8192 bytes apart, 16-byte chunk c of row r at r·128 + (c ^ r%8)·16) take CUTLASS's canonical
// layouts (T = 8 bf16 = 16 bytes), the address before the swizzle being the slice's start plus
//   K-major ((8,m),(T,2k)):((8T,SBO),(1,T)): (n/8)·SBO + (n%8)·128 + k·2 (LBO unused; the slices start
//     (kk/4)·8192 + (kk%4)·32 bytes in: 4 slices of 32 bytes across a block's 128-byte rows, then the next block);
//   MN-major ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)): (n/64)·LBO + (n%64)·2 + (k%8)·128 + (k/8)·SBO (slices 2048 apart);
// and the byte read is that address a, from the 1024-aligned image base, at a ^ (((a >> 7) & 7) << 4): the slice's
// start is part of the address the hardware swizzles (--host holds these images to the kernels' store rule, so the
// two descriptions are one layout). The no-swizzle cases stay, the reference that tells the two faults apart: if they
// pass and a swizzled case fails, the fault is the swizzle (the layout type, the XOR, the image's alignment), not the
// descriptor's addresses, strides or major. A wrong swizzled case's line also says whether its result is the product
// read without the swizzle, or swizzled from the slice's start and not the address.
//
// The "rescaled" cases do what the kernels' O += P·V (and dQ's, dK's, dV's sums) do between key tiles: d starts as
// C(m, n), set by ordinary code; a first batch adds the first half of the slices; ordinary code doubles d (the
// softmax's rescale of O); a second batch adds the rest: 2·(C + A·B₁) + A·B₂, which holds only if each batch's
// wgmma.fence orders the registers ordinary code wrote before the products read them.
// Output: a line a case, "ok" or what differs; exit 0 when every case is exact, 1 when one is not, 2 without a Hopper
// GPU or on a CUDA error.
//
//   nvcc -std=c++17 -O2 -Inative -gencode=arch=compute_90a,code=sm_90a test/cuda/wgmma_probe.cu -o wgmma_probe
//   ./wgmma_probe           on a Hopper GPU
//   ./wgmma_probe --host    the probe's own arithmetic, no GPU (test/cuda_host/wgmma_probe.test.ts, in CI)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/wgmma.cuh"

namespace {

using instill::cuda::fence_proxy_async;
using instill::cuda::wg_commit;
using instill::cuda::wg_desc;
using instill::cuda::wg_desc_sw128;
using instill::cuda::wg_fence;
using instill::cuda::wg_hold;
using instill::cuda::wg_wait;
using instill::cuda::wgmma_m64n128k16;
using instill::cuda::wgmma_m64n64k16;

constexpr int kM = 64, kThreads = 128;

// A product's layout: N outputs a row, K summed; B's major, its LBO and SBO in bytes; k-slice kk's start (the
// descriptor's address, from the image base) `slice` bytes further along per kk, or with `block` set, 4 slices
// `slice` apart within a block and the next 4 in the next block, `block` bytes on (slice_start()); sw128: the
// 128-byte swizzle (wg_desc_sw128).
struct Layout {
  const char* name;
  int N, K;
  bool mn;
  uint32_t lbo, sbo, slice;
  bool rescaled = false;  // d = 2·(C + Σ of the first half of the slices) + Σ of the rest, C set by ordinary code
  bool sw128 = false;
  uint32_t block = 0;
};

// k-slice kk's start in bytes from the image base, on the host and in the kernel alike. A swizzled K-major tile's
// slices are 32 bytes apart within a 128-byte row, and its elements 64..127 (D 128) are the next 64-row block:
// (kk/4)·block + (kk%4)·slice. Without `block`, kk·slice (the no-swizzle cases, unchanged).
__host__ __device__ inline uint32_t slice_start(int kk, uint32_t slice, uint32_t block) {
  return block ? static_cast<uint32_t>(kk / 4) * block + static_cast<uint32_t>(kk % 4) * slice
               : static_cast<uint32_t>(kk) * slice;
}

// The rescaled cases' C(m, n): small integers, made alike on the host and the GPU.
__host__ __device__ inline float preset_c(int m, int n) { return static_cast<float>((m * 7 + n * 3) % 11 - 5); }

// A reading of the image: how a product's descriptor is taken (the case's own, or another that report() names).
// The swizzle: none; the 128-byte one on the address (the slice's start plus the canonical offset, from the
// 1024-aligned image base: the hardware's rule); or the same XOR on the canonical offset alone, as if the hardware
// swizzled from the descriptor's start and not the address (an alternative only).
enum class Swizzle { kNone, k128, k128FromStart };
struct Alt {
  const char* what;
  uint32_t lbo, sbo;
  bool mn;
  Swizzle sw;
};
Alt own_reading(const Layout& L) { return {"", L.lbo, L.sbo, L.mn, L.sw128 ? Swizzle::k128 : Swizzle::kNone}; }

// The 128-byte swizzle of a byte address (from a 1024-aligned base): bits [4, 7) XORed with bits [7, 10).
size_t swizzle128(size_t a) { return a ^ (((a >> 7) & 7) << 4); }

// B(n, k)'s offset from its slice's start, k = 0..15 of the slice, before any swizzle (the formulas above).
size_t canonical(int n, int k, uint32_t lbo, uint32_t sbo, bool mn, bool swizzled) {
  if (swizzled)
    return mn ? static_cast<size_t>(n / 64) * lbo + (n % 64) * 2 + (k % 8) * 128 + static_cast<size_t>(k / 8) * sbo
              : static_cast<size_t>(n / 8) * sbo + (n % 8) * 128 + k * 2;
  return mn ? static_cast<size_t>(n / 8) * sbo + static_cast<size_t>(k / 8) * lbo + (k % 8) * 16 + (n % 8) * 2
            : static_cast<size_t>(n / 8) * sbo + static_cast<size_t>(k / 8) * lbo + (n % 8) * 16 + (k % 8) * 2;
}

// Byte offset from the image base of B(n, k), k = 0..K-1, under a reading of the case's layout: slice k / 16's start
// (the case's: the descriptors' addresses are the kernel's, whatever the reading) plus the canonical offset, then the
// reading's swizzle. (For the no-swizzle cases this is the old (n/8)·SBO + (k/8)·LBO + ... over the whole K, their
// slices being 2·LBO apart.)
size_t offset_of(const Layout& L, const Alt& r, int n, int k) {
  const size_t start = slice_start(k / 16, L.slice, L.block);
  const size_t c = canonical(n, k % 16, r.lbo, r.sbo, r.mn, r.sw != Swizzle::kNone);
  switch (r.sw) {
    case Swizzle::k128: return swizzle128(start + c);
    case Swizzle::k128FromStart: return start + swizzle128(c);
    default: return start + c;
  }
}

// Where the kernels store element e of a swizzled tile's row `row` (the header comment): block e / 64, 8192 bytes
// apart; 16-byte chunk c = (e % 64) / 8 of the row at row·128 + (c ^ row % 8)·16. The --host check holds the
// swizzled cases' own readings to it, so the canonical formulas above are the kernels' tiles, not only self-consistent.
size_t tile_offset(int row, int e) {
  return static_cast<size_t>(e / 64) * 8192 + static_cast<size_t>(row) * 128 + ((((e % 64) / 8) ^ (row % 8)) * 16) +
         (e % 8) * 2;
}

// The other readings report() names. Those whose every B(n, k) lands where the case's own reading, or an earlier
// alternative, puts it are left out: no result could tell them apart, so naming one would be a guess. That drops the
// swizzle-from-the-start reading in the MN-major swizzled cases (their slices start 2048·kk bytes in, a multiple of
// 1024: the XOR is the same either way); in the K-major ones (starts 32·kk into a 128-byte row) it stays. The others
// (in a swizzled case with its swizzle: the other major is the other canonical swizzled layout) differ in every case;
// so does "LBO and SBO swapped" in the K-major swizzled ones although that layout has no LBO: it is the hardware
// taking the descriptor's LBO field (16) as the 8-row stride. The --host check shows each that stays gives a product
// of its own.
std::vector<Alt> alternatives(const Layout& L) {
  const Swizzle sw = own_reading(L).sw;
  std::vector<Alt> all = {{"LBO and SBO swapped", L.sbo, L.lbo, L.mn, sw},
                          {"the other major (K-major <-> MN-major)", L.lbo, L.sbo, !L.mn, sw},
                          {"the other major, LBO and SBO swapped", L.sbo, L.lbo, !L.mn, sw}};
  if (L.sw128) {
    all.push_back({"without the swizzle", L.lbo, L.sbo, L.mn, Swizzle::kNone});
    all.push_back({"the swizzle from the slice's start, not the address", L.lbo, L.sbo, L.mn, Swizzle::k128FromStart});
  }
  std::vector<Alt> kept;
  const auto same = [&](const Alt& a, const Alt& b) {
    for (int n = 0; n < L.N; ++n)
      for (int k = 0; k < L.K; ++k)
        if (offset_of(L, a, n, k) != offset_of(L, b, n, k)) return false;
    return true;
  };
  for (const Alt& a : all) {
    bool dup = same(a, own_reading(L));
    for (const Alt& b : kept) dup = dup || same(a, b);
    if (!dup) kept.push_back(a);
  }
  return kept;
}

// The image's size: every byte the case's layout, or any other reading report() tries (alternatives()), can reach
// over the K / 16 slices, so that those readings see the image's zeros, on the GPU as on the host.
size_t image_bytes(const Layout& L) {
  std::vector<Alt> readings = alternatives(L);
  readings.push_back(own_reading(L));
  size_t end = 0;
  for (const Alt& r : readings)
    for (int n = 0; n < L.N; ++n)
      for (int k = 0; k < L.K; ++k) end = std::max(end, offset_of(L, r, n, k) + 2);
  return (end + 15) / 16 * 16;
}

bool cuda_ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::printf("CUDA error in %s: %s\n", what, cudaGetErrorString(e));
  return false;
}

#if defined(__CUDA_ARCH__)
__device__ __forceinline__ void cp16(void* dst, const void* src) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
}
#endif

// d = Σ_kk A_kk · B_kk over K / 16 slices. a: (64, K) row-major bf16; image: B's shared-memory image; out: (64, N) f32.
template <int N, int K, bool kMN>
__global__ void __launch_bounds__(kThreads) probe_kernel(const __nv_bfloat16* a, const uint4* image, int chunks,
                                                         uint32_t lbo, uint32_t sbo, uint32_t slice, uint32_t block,
                                                         bool sw128, bool rescaled, float* out) {
#if defined(__CUDA_ARCH__)
  // The image at a 1024-byte-aligned shared address (the launch asks for 1024 bytes more): the 128-byte swizzle XORs
  // the address's bits [7, 10) into [4, 7), so the image's offsets are the hardware's only from a base whose bits
  // [0, 10) are 0, as the kernels align their tiles. Aligned by hand, from the shared address: dynamic shared memory's
  // start is not promised to be 1024-aligned, and an __align__(1024) here would let the compiler assume it and fold
  // the rounding away. The no-swizzle cases lose nothing by it.
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* const smem =
      smem_raw + ((1024u - (static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) & 1023u)) & 1023u);
  for (int i = threadIdx.x; i < chunks; i += kThreads) cp16(smem + i * 16, image + i);
  asm volatile("cp.async.commit_group;\n" ::);
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  fence_proxy_async();
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int r0 = warp * 16 + gid;
  float d[N / 8][4];
#pragma unroll
  for (int n = 0; n < N / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {  // NaN: the first product must ignore it; or the rescaled cases' C
      const int m = r0 + (e >= 2 ? 8 : 0), col = n * 8 + 2 * tig + (e & 1);
      d[n][e] = rescaled ? preset_c(m, col) : __int_as_float(0x7fc00000);
    }
  const auto pair = [&](int r, int c) {  // A(r, c), A(r, c + 1) as one register, the lower column in the low half
    const uint16_t lo = __bfloat16_as_ushort(a[r * K + c]), hi = __bfloat16_as_ushort(a[r * K + c + 1]);
    return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  };
  uint32_t af[K / 16][4];
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    const int c = kk * 16 + 2 * tig;
    af[kk][0] = pair(r0, c);
    af[kk][1] = pair(r0 + 8, c);
    af[kk][2] = pair(r0, c + 8);
    af[kk][3] = pair(r0 + 8, c + 8);
  }
  // one batch of K / 16 products, as the kernels issue theirs (rescaled: two, d doubled by ordinary code between)
  const auto batch = [&](int kk0, int kk1, bool first_ignores_d) {
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < K / 16; ++kk) {
      if (kk < kk0 || kk >= kk1) continue;
      const unsigned char* const start = smem + slice_start(kk, slice, block);
      const uint64_t desc = sw128 ? wg_desc_sw128(start, lbo, sbo) : wg_desc(start, lbo, sbo);
      if constexpr (N == 64) {
        if (kk == kk0 && first_ignores_d) wgmma_m64n64k16<false, kMN>(d, af[kk], desc);
        else wgmma_m64n64k16<true, kMN>(d, af[kk], desc);
      } else {
        if (kk == kk0 && first_ignores_d) wgmma_m64n128k16<false, kMN>(d, af[kk], desc);
        else wgmma_m64n128k16<true, kMN>(d, af[kk], desc);
      }
    }
    wg_commit();
    wg_wait<0>();
    wg_hold(d);
  };
  if (!rescaled) {
    batch(0, K / 16, true);
  } else {
    batch(0, K / 32, false);
#pragma unroll
    for (int n = 0; n < N / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) d[n][e] *= 2.f;
    batch(K / 32, K / 16, false);
  }
#pragma unroll
  for (int n = 0; n < N / 8; ++n) {
    const int col = n * 8 + 2 * tig;
    out[r0 * N + col] = d[n][0];
    out[r0 * N + col + 1] = d[n][1];
    out[(r0 + 8) * N + col] = d[n][2];
    out[(r0 + 8) * N + col + 1] = d[n][3];
  }
#endif
}

// The kernel for a case's shape and major: launched on the image, its shared memory that size and 1024 bytes more
// (the kernel aligns the image's base up to 1024).
template <int N, int K, bool kMN>
bool launch(const __nv_bfloat16* a, const uint4* image, size_t bytes, const Layout& L, float* out) {
  const size_t shared = bytes + 1024;
  if (!cuda_ok(cudaFuncSetAttribute(probe_kernel<N, K, kMN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(shared)),
               "cudaFuncSetAttribute"))
    return false;
  probe_kernel<N, K, kMN><<<1, kThreads, shared>>>(a, image, static_cast<int>(bytes / 16), L.lbo, L.sbo, L.slice,
                                                   L.block, L.sw128, L.rescaled, out);
  return true;
}

uint32_t mix(uint32_t x) {  // a small hash: the inputs' pattern
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}
float small_int(uint32_t seed, int i) { return static_cast<float>(static_cast<int>(mix(seed * 2654435761U + i) % 7) - 3); }

// B(n, k) as the product reads the image under a reading r — the case's own layout, or another reading of it.
float read_b(const std::vector<float>& img, const Layout& L, int n, int k, const Alt& r) {
  const size_t at = offset_of(L, r, n, k);
  return at / 2 < img.size() ? img[at / 2] : NAN;
}

// The product on the host under a reading of the image: each slice kk from its own start, as the descriptors give it;
// for a rescaled case 2·(C + the first half's sum) + the second half's (the kernel's two batches).
std::vector<double> host_product(const std::vector<float>& A, const std::vector<float>& img, const Layout& L,
                                 const Alt& r) {
  std::vector<double> ref(static_cast<size_t>(kM) * L.N, 0.0);
  const int half = L.K / 32;
  for (int m = 0; m < kM; ++m)
    for (int n = 0; n < L.N; ++n) {
      double first = 0, second = 0;
      for (int kk = 0; kk < L.K / 16; ++kk)
        for (int k = 0; k < 16; ++k)
          (kk < half ? first : second) += static_cast<double>(A[m * L.K + kk * 16 + k]) * read_b(img, L, n, kk * 16 + k, r);
      ref[static_cast<size_t>(m) * L.N + n] = L.rescaled ? 2 * (preset_c(m, n) + first) + second : first + second;
    }
  return ref;
}

bool equal(const std::vector<float>& got, const std::vector<double>& want) {
  for (size_t i = 0; i < got.size(); ++i)
    if (!(static_cast<double>(got[i]) == want[i])) return false;
  return true;
}

// A case's inputs: A (64, K) and B (N, K) of small integers, B laid out into the shared-memory image by the formula,
// and the product the math wants, Σ_k A(m, k)·B(n, k).
struct Case {
  Layout L;
  size_t bytes;
  std::vector<float> A, img;  // img: the image as values (0 where no B element lands)
  std::vector<__nv_bfloat16> A16;
  std::vector<uint16_t> img16;
  std::vector<double> want;
};

Case make_case(const Layout& L, uint32_t seed) {
  Case c{L, image_bytes(L), {}, {}, {}, {}, {}};
  c.img.assign(c.bytes / 2, 0.f);
  c.img16.assign(c.bytes / 2, 0);
  std::vector<float> B(static_cast<size_t>(L.N) * L.K);
  for (int n = 0; n < L.N; ++n)
    for (int k = 0; k < L.K; ++k) {
      const float v = small_int(seed, n * L.K + k);
      B[static_cast<size_t>(n) * L.K + k] = v;
      const size_t at = offset_of(L, own_reading(L), n, k) / 2;
      c.img[at] = v;
      c.img16[at] = __bfloat16_as_ushort(__float2bfloat16(v));
    }
  c.A.resize(static_cast<size_t>(kM) * L.K);
  c.A16.resize(c.A.size());
  for (size_t i = 0; i < c.A.size(); ++i) {
    c.A[i] = small_int(seed + 1, static_cast<int>(i));
    c.A16[i] = __float2bfloat16(c.A[i]);
  }
  c.want.assign(static_cast<size_t>(kM) * L.N, 0.0);
  for (int m = 0; m < kM; ++m)
    for (int n = 0; n < L.N; ++n) {
      double first = 0, second = 0;
      for (int k = 0; k < L.K; ++k)
        (k < L.K / 2 ? first : second) += static_cast<double>(c.A[m * L.K + k]) * B[static_cast<size_t>(n) * L.K + k];
      c.want[static_cast<size_t>(m) * L.N + n] = L.rescaled ? 2 * (preset_c(m, n) + first) + second : first + second;
    }
  return c;
}

// The product on the GPU into got; false (said) on a CUDA error.
bool gpu_product(const Case& c, std::vector<float>& got) {
  const Layout& L = c.L;
  __nv_bfloat16* a_d = nullptr;
  uint4* img_d = nullptr;
  float* out_d = nullptr;
  got.assign(c.want.size(), 0.f);
  bool ok = cuda_ok(cudaMalloc(&a_d, c.A16.size() * 2), "cudaMalloc") && cuda_ok(cudaMalloc(&img_d, c.bytes), "cudaMalloc") &&
            cuda_ok(cudaMalloc(&out_d, got.size() * 4), "cudaMalloc") &&
            cuda_ok(cudaMemcpy(a_d, c.A16.data(), c.A16.size() * 2, cudaMemcpyHostToDevice), "upload") &&
            cuda_ok(cudaMemcpy(img_d, c.img16.data(), c.bytes, cudaMemcpyHostToDevice), "upload") &&
            cuda_ok(cudaMemset(out_d, 0xFF, got.size() * 4), "poison");  // NaN where nothing is written
  if (ok) {
    if (L.N == 64 && L.K == 64 && !L.mn) ok = launch<64, 64, false>(a_d, img_d, c.bytes, L, out_d);
    else if (L.N == 64 && L.K == 128 && !L.mn) ok = launch<64, 128, false>(a_d, img_d, c.bytes, L, out_d);
    else if (L.N == 128 && L.K == 64 && !L.mn) ok = launch<128, 64, false>(a_d, img_d, c.bytes, L, out_d);
    else if (L.N == 64 && L.K == 64 && L.mn) ok = launch<64, 64, true>(a_d, img_d, c.bytes, L, out_d);
    else if (L.N == 128 && L.K == 64 && L.mn) ok = launch<128, 64, true>(a_d, img_d, c.bytes, L, out_d);
    else {
      std::printf("case %s: no kernel for its shape\n", L.name);
      ok = false;
    }
    ok = cuda_ok(cudaGetLastError(), "launch") && ok && cuda_ok(cudaDeviceSynchronize(), "the probe kernel") &&
         cuda_ok(cudaMemcpy(got.data(), out_d, got.size() * 4, cudaMemcpyDeviceToHost), "download");
  }
  cudaFree(a_d);
  cudaFree(img_d);
  cudaFree(out_d);
  return ok;
}

// A as the products would read it if a thread's a[1] were (gid, 2tig + 8 ..) and a[2] (gid + 8, 2tig ..), the other
// order of mma.sync's A fragment: the 8 × 8 blocks (rows 8..15, columns 0..7) and (rows 0..7, columns 8..15) of each
// warp's 16 rows and each k-slice trade places.
constexpr const char* kSwappedA = "A's fragments a[1] and a[2] swapped";
std::vector<float> swapped_a(const std::vector<float>& A, int K) {
  std::vector<float> out(A);
  for (int w = 0; w < 4; ++w)
    for (int kk = 0; kk < K / 16; ++kk)
      for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 8; ++c) {
          const int top = w * 16 + r, col = kk * 16 + c;
          out[static_cast<size_t>(top + 8) * K + col] = A[static_cast<size_t>(top) * K + col + 8];
          out[static_cast<size_t>(top) * K + col + 8] = A[static_cast<size_t>(top + 8) * K + col];
        }
  return out;
}

// The product as it reads back if a thread's d[n][1] and d[n][2] traded places: (row g, column 2t + 1) and (row g + 8,
// column 2t) of each warp's 16 rows and each 8-column n-tile exchanged, the other order of the accumulator's fragment.
constexpr const char* kSwappedD = "D's fragments d[1] and d[2] swapped";
std::vector<double> swapped_d(const std::vector<double>& D, int N) {
  std::vector<double> out(D);
  for (int w = 0; w < 4; ++w)
    for (int g = 0; g < 8; ++g)
      for (int col = 0; col < N; col += 2) {
        const size_t a = static_cast<size_t>(w * 16 + g) * N + col + 1, b = static_cast<size_t>(w * 16 + g + 8) * N + col;
        out[a] = D[b];
        out[b] = D[a];
      }
  return out;
}

// A result against the case: "ok (...)", or what differs and which other reading it matches. Returns 0 exact, 1 not.
int report(const Case& c, const std::vector<float>& got, std::string& line) {
  const Layout& L = c.L;
  size_t wrong = 0, nan = 0;
  double worst = 0;
  std::string first;
  std::vector<bool> bad_row(kM, false), bad_col(static_cast<size_t>(L.N), false);
  for (int m = 0; m < kM; ++m)
    for (int n = 0; n < L.N; ++n) {
      const size_t i = static_cast<size_t>(m) * L.N + n;
      if (static_cast<double>(got[i]) == c.want[i]) continue;
      ++wrong;
      if (std::isnan(got[i])) ++nan;
      else worst = std::max(worst, std::fabs(got[i] - c.want[i]));
      bad_row[static_cast<size_t>(m)] = bad_col[static_cast<size_t>(n)] = true;
      if (wrong <= 3) {
        char b[96];
        std::snprintf(b, sizeof b, "%s(%d, %d) %g not %g", first.empty() ? "" : ", ", m, n, got[i], c.want[i]);
        first += b;
      }
    }
  char b[1024];
  if (wrong == 0) {
    std::snprintf(b, sizeof b, "case %s: ok (64 x %d x %d exact)", L.name, L.N, L.K);
    line = b;
    return 0;
  }
  int rows = 0, cols = 0;
  for (bool x : bad_row) rows += x;
  for (bool x : bad_col) cols += x;
  const std::vector<Alt> alts = alternatives(L);
  std::string matches = "none of: ";
  for (const Alt& alt : alts) matches += std::string(alt.what) + ", ";
  matches += std::string(kSwappedA) + ", " + kSwappedD;
  for (const Alt& alt : alts)
    if (equal(got, host_product(c.A, c.img, L, alt))) {
      matches = alt.what;
      break;
    }
  if (equal(got, host_product(swapped_a(c.A, L.K), c.img, L, own_reading(L)))) matches = kSwappedA;
  if (equal(got, swapped_d(c.want, L.N))) matches = kSwappedD;
  std::snprintf(b, sizeof b, "case %s: WRONG %zu of %d (NaN %zu, max |err| %g; rows %d, columns %d of them): %s; the "
                "result is the product under: %s", L.name, wrong, kM * L.N, nan, worst, rows, cols, first.c_str(),
                matches.c_str());
  line = b;
  return 1;
}

// --host: the probe's own arithmetic, without a GPU (test/cuda_host/wgmma_probe.test.ts). Each case's image read back
// through its own layout is the math's B (the image, the slices' starts and host_product agree), and each other
// reading gives another product, which report() names when handed it as a result.
int host_check(const Case& c) {
  // the report's line names `what` as the reading the result is: its end (not the "none of: ..." list, which names all)
  const auto names = [](const std::string& line, const char* what) {
    const std::string tail = std::string("product under: ") + what;
    return line.size() >= tail.size() && line.compare(line.size() - tail.size(), tail.size(), tail) == 0;
  };
  std::string line;
  std::vector<float> got(c.want.begin(), c.want.end());
  int bad = 0;
  if (!equal(got, host_product(c.A, c.img, c.L, own_reading(c.L))) || report(c, got, line) != 0) {
    std::printf("host: case %s: its own reading of the image is not the product\n", c.L.name);
    ++bad;
  }
  if (c.L.sw128) {  // K-major: the tile's rows are n, their elements k; MN-major: rows k, elements n
    bool tile = true;
    for (int n = 0; n < c.L.N; ++n)
      for (int k = 0; k < c.L.K; ++k)
        tile = tile && offset_of(c.L, own_reading(c.L), n, k) == (c.L.mn ? tile_offset(k, n) : tile_offset(n, k));
    if (!tile) {
      std::printf("host: case %s: its layout is not the kernels' swizzled tile\n", c.L.name);
      ++bad;
    }
  }
  for (const Alt& alt : alternatives(c.L)) {
    const std::vector<double> other = host_product(c.A, c.img, c.L, alt);
    got.assign(other.begin(), other.end());
    if (report(c, got, line) != 1 || !names(line, alt.what)) {
      std::printf("host: case %s: the reading with %s is not told apart: %s\n", c.L.name, alt.what, line.c_str());
      ++bad;
    }
  }
  {
    const std::vector<double> other = host_product(swapped_a(c.A, c.L.K), c.img, c.L, own_reading(c.L));
    got.assign(other.begin(), other.end());
    if (report(c, got, line) != 1 || !names(line, kSwappedA)) {
      std::printf("host: case %s: %s is not told apart: %s\n", c.L.name, kSwappedA, line.c_str());
      ++bad;
    }
  }
  {
    const std::vector<double> other = swapped_d(c.want, c.L.N);
    got.assign(other.begin(), other.end());
    if (report(c, got, line) != 1 || !names(line, kSwappedD)) {
      std::printf("host: case %s: %s is not told apart: %s\n", c.L.name, kSwappedD, line.c_str());
      ++bad;
    }
  }
  if (!bad)
    std::printf("host: case %s: ok (its reading is the product; %zu other readings named; image %zu bytes)\n",
                c.L.name, alternatives(c.L).size() + 2, c.bytes);
  return bad ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool host = argc > 1 && std::strcmp(argv[1], "--host") == 0;
  // The attention kernels' products (attention_wgmma.cu), D the head dim; first their no-swizzle layouts (the
  // reference: a swizzled case failing where these pass is the swizzle's fault):
  //   S = Q·Kᵀ: B = a K tile, rows = 64 keys, k = D dims (load_k_core): K-major, LBO 128, SBO D·16, slices 256 B apart;
  //   O += P·V on the transposed copy Vᵀ (load_vt_core): rows = D dims, k = 64 keys: K-major, LBO 128, SBO 1024;
  //   O += P·V with wgmma_mn, on V's own tile (rows = keys): MN-major, LBO D·16, SBO 128, slices 16·D·2 B apart.
  // then the 128-byte-swizzled tiles (64 rows, D/64 blocks of 64 rows × 128 bytes, 8192 bytes apart):
  //   S = Q·Kᵀ on a K tile: K-major, SBO 1024 (LBO unused: 16), slices 32 B apart in a block, blocks 8192 apart;
  //   O += P·V on V's tile: MN-major, LBO 8192 (the next 64 columns' block), SBO 1024, slices 2048 B apart.
  // (dQ's and dK/dV's products are these with K, Q or dO in V's place.)
  const Layout cases[] = {
      {"S = Q K^T, K-major, D 64 (n64)", 64, 64, false, 128, 64 * 16, 256},
      {"S = Q K^T, K-major, D 128 (n64)", 64, 128, false, 128, 128 * 16, 256},
      {"O += P V on V^T, K-major, D 64 (n64)", 64, 64, false, 128, 1024, 256},
      {"O += P V on V^T, K-major, D 128 (n128)", 128, 64, false, 128, 1024, 256},
      {"O += P V on V, MN-major (wgmma_mn), D 64 (n64)", 64, 64, true, 64 * 16, 128, 16 * 64 * 2},
      {"O += P V on V, MN-major (wgmma_mn), D 128 (n128)", 128, 64, true, 128 * 16, 128, 16 * 128 * 2},
      // the same P·V products onto an O that ordinary code set and rescaled between two batches
      {"O += P V on V^T, K-major, D 64 (n64), rescaled", 64, 64, false, 128, 1024, 256, true},
      {"O += P V on V^T, K-major, D 128 (n128), rescaled", 128, 64, false, 128, 1024, 256, true},
      {"O += P V on V, MN-major (wgmma_mn), D 64 (n64), rescaled", 64, 64, true, 64 * 16, 128, 16 * 64 * 2, true},
      {"O += P V on V, MN-major (wgmma_mn), D 128 (n128), rescaled", 128, 64, true, 128 * 16, 128, 16 * 128 * 2, true},
      // 128-byte swizzle (... rescaled, sw128, block)
      {"S = Q K^T, K-major, 128B swizzle, D 64 (n64)", 64, 64, false, 16, 1024, 32, false, true, 8192},
      {"S = Q K^T, K-major, 128B swizzle, D 128 (n64)", 64, 128, false, 16, 1024, 32, false, true, 8192},
      {"O += P V on V, MN-major, 128B swizzle, D 64 (n64)", 64, 64, true, 8192, 1024, 2048, false, true},
      {"O += P V on V, MN-major, 128B swizzle, D 128 (n128)", 128, 64, true, 8192, 1024, 2048, false, true},
      {"O += P V on V, MN-major, 128B swizzle, D 64 (n64), rescaled", 64, 64, true, 8192, 1024, 2048, true, true},
      {"O += P V on V, MN-major, 128B swizzle, D 128 (n128), rescaled", 128, 64, true, 8192, 1024, 2048, true, true},
  };
  const size_t count = sizeof cases / sizeof cases[0];
  if (host) {
    int bad = 0;
    uint32_t seed = 1;
    for (const Layout& L : cases) bad += host_check(make_case(L, seed += 7));
    std::printf("wgmma probe (host): %d of %zu cases wrong\n", bad, count);
    return bad ? 1 : 0;
  }
  int dev = 0;
  cudaDeviceProp prop;
  if (!cuda_ok(cudaGetDevice(&dev), "cudaGetDevice") || !cuda_ok(cudaGetDeviceProperties(&prop, dev), "properties"))
    return 2;
  if (prop.major != 9 || prop.minor != 0) {
    std::printf("no Hopper GPU: %s is compute capability %d.%d (wgmma needs 9.0)\n", prop.name, prop.major, prop.minor);
    return 2;
  }
  std::printf("device: %s\n", prop.name);
  int failed = 0;
  uint32_t seed = 1;
  for (const Layout& L : cases) {
    const Case c = make_case(L, seed += 7);
    std::vector<float> got;
    if (!gpu_product(c, got)) return 2;  // a CUDA error (said): the context may be gone
    std::string line;
    failed += report(c, got, line);
    std::printf("%s\n", line.c_str());
  }
  std::printf("wgmma probe: %d of %zu cases wrong\n", failed, count);
  return failed ? 1 : 0;
}
