// rope on CUDA (ops/rope.h): f32 activations one thread per (token, head, i < D/2) pair; θ is the
// f32 product p·inv_freq[i] as on the CPU, cos/sin with the accurate sincosf
// (no fast-math), backward = the same rotation with sin negated. In place is
// safe: each pair (i, i+D/2) is read and written by one thread.
// bf16 activations: one CTA per token computes its D/2 angles' cos and sin once into shared memory and rotates all
// H heads with them (rope_token_kernel). The same θ, the same sincosf, the same products: the same bits. (`rope_token`,
// that kernel for f32 activations too, was taken out after run 17: 1 f32 ulp off the verified kernel in runs 14–16.)
// INSTILL_CUDA_NEXT `rope_qk` (promoted by run 17): the model's q and k in one call (ops/rope.h's x2), one pass
// with each token's angles made once and two elements a thread (rope_qk_kernel): 32 launches a 1B step fewer.
// INSTILL_CUDA_NEXT `rope_rows` (with rope_qk, waiting for a GPU): that pass a warp a token, 8 tokens a block
// (rope_qk_rows_kernel). A block a token made its angles in half of its threads, then waited twice at barriers, for
// 10 KB of q and k a 1B token (run 23: 14–16 µs a call, ~4x its bytes' time). Here each lane rotates four elements
// of a head at a time (8-byte loads), always the same four columns, so it makes their four angles once, in
// registers: the same θ, sincosf and rotation, so the same bits.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/gemm.h"  // pack_bf16
#include "ops/rope.h"

namespace instill {
namespace cuda {

namespace {
// The rotation with every product and sum rounded on its own (__fmul_rn, __fadd_rn: never contracted into an FMA),
// so that both kernels, whichever way the compiler would contract each, give the same f32 bits (and the CPU's on
// x86, where cpu/rope.cpp is built without FMA). Run 16 saw the two kernels 1 ulp apart on ~15% of the elements (FMAs
// placed differently), and so the bf16 kernel's rounding off the f32 kernel's on 1–2 elements in 77056.
__device__ __forceinline__ float rotated_first(float x1, float x2, float c, float s) {
  return __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
}
__device__ __forceinline__ float rotated_second(float x1, float x2, float c, float s) {
  return __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
}

__global__ void rope_kernel(const float* x, const int32_t* pos, const float* inv_freq, int64_t N, int64_t H,
                            int64_t half, float sign, float* out) {  // x, out (N, H, 2·half); pos (N); inv_freq (half)
  pdl_enter();
  const int64_t total = N * H * half;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = k % half, nh = k / half, n = nh / H;
    const float th = static_cast<float>(pos[n]) * inv_freq[i];
    float s, c;
    sincosf(th, &s, &c);
    s *= sign;
    const float* xr = x + nh * 2 * half;
    float* o = out + nh * 2 * half;
    const float x1 = xr[i], x2 = xr[i + half];
    o[i] = rotated_first(x1, x2, c, s);
    o[i + half] = rotated_second(x1, x2, c, s);
  }
}

// Token n's angles into shared memory, by the block: cs[i] = cos θ_i, cs[half + i] = sign·sin θ_i; the syncs
// around them let the previous token's reads finish first and this token's writes land before its reads.
__device__ __forceinline__ void token_angles(float* cs, const int32_t* pos, const float* inv_freq, int64_t n, int half,
                                             float sign) {
  __syncthreads();
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float th = static_cast<float>(pos[n]) * inv_freq[i];
    float sn, c;
    sincosf(th, &sn, &c);
    cs[i] = c;
    cs[half + i] = sn * sign;
  }
  __syncthreads();
}

// Tokens n = blockIdx.x, blockIdx.x + gridDim.x, …: cs[i] = cos θ_i, cs[half + i] = sign·sin θ_i in shared
// memory, then every (head, i) pair of the token. half <= 128 (D <= 256: ops/rope.cpp checks D is even;
// the launcher checks the bound).
// T: __nv_bfloat16 (bf16 activations: the same f32 math on the widened x, outputs rounded once; f32 activations take
// rope_kernel).
template <typename T>
__global__ void rope_token_kernel(const T* x, const int32_t* pos, const float* inv_freq, int64_t N, int H, int half,
                                  float sign, T* out) {
  pdl_enter();
  __shared__ float cs[2 * 128];
  const int pairs = H * half;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    token_angles(cs, pos, inv_freq, n, half, sign);
    const T* xr = x + n * pairs * 2;
    T* o = out + n * pairs * 2;
    for (int k = threadIdx.x; k < pairs; k += blockDim.x) {
      const int h = k / half, i = k - h * half;
      const float c = cs[i], sn = cs[half + i];
      const float x1 = load1(xr + h * 2 * half + i), x2 = load1(xr + h * 2 * half + i + half);
      store1(o + h * 2 * half + i, rotated_first(x1, x2, c, sn));
      store1(o + h * 2 * half + i + half, rotated_second(x1, x2, c, sn));
    }
  }
}

// INSTILL_CUDA_NEXT `rope_qk`: q and k (x, x2, bf16) in one pass. Tokens as above; each token's angles once, then
// q's and k's pairs two at a time (work item k: elements i, i + 1 and i + half, i + half + 1 of one head, i even:
// bf16x2 loads and stores where rope_token_kernel moves one element at a time). The same θ, sincosf, rotation and
// rounding as rope_token_kernel<bf16>: the same bits.
// out's and out2's rows are ldo and ldo2 elements apart (H·D and H2·D, or a packed dy's ld: ops/rope.h's out_packed).
__global__ void rope_qk_kernel(const __nv_bfloat16* x, int H, const __nv_bfloat16* x2, int H2, const int32_t* pos,
                               const float* inv_freq, int64_t N, int half, float sign, __nv_bfloat16* out,
                               __nv_bfloat16* out2, int64_t ldo, int64_t ldo2) {
  pdl_enter();
  __shared__ float cs[2 * 128];
  const int per_head = half / 2, first = H * per_head, total = (H + H2) * per_head;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    token_angles(cs, pos, inv_freq, n, half, sign);
    for (int k = threadIdx.x; k < total; k += blockDim.x) {
      const bool kk = k >= first;  // a head of x2 (k), else of x (q)
      const int item = kk ? k - first : k, h = item / per_head, i = 2 * (item - h * per_head);
      const int64_t row = (n * (kk ? H2 : H) + h) * 2 * half;
      const __nv_bfloat16* xr = (kk ? x2 : x) + row;
      __nv_bfloat16* o = kk ? out2 + n * ldo2 + h * 2 * half : out + n * ldo + h * 2 * half;
      const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(xr + i));
      const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(xr + i + half));
      const float c0 = cs[i], c1 = cs[i + 1], s0 = cs[half + i], s1 = cs[half + i + 1];
      *reinterpret_cast<__nv_bfloat162*>(o + i) =
          __floats2bfloat162_rn(rotated_first(a.x, b.x, c0, s0), rotated_first(a.y, b.y, c1, s1));
      *reinterpret_cast<__nv_bfloat162*>(o + i + half) =
          __floats2bfloat162_rn(rotated_second(a.x, b.x, c0, s0), rotated_second(a.y, b.y, c1, s1));
    }
  }
}

// rope_rows (above): token n = 8·blockIdx.x + warp; lane l rotates columns i..i+3 (and i+half..) of heads
// l / per + j·(32 / per), i = 4·(l % per), per = half / 4 (a power of two ≤ 32: the launcher checks).
__global__ void __launch_bounds__(256) rope_qk_rows_kernel(const __nv_bfloat16* x, int H, const __nv_bfloat16* x2, int H2,
                                                          const int32_t* pos, const float* inv_freq, int64_t N, int half,
                                                          float sign, __nv_bfloat16* out, __nv_bfloat16* out2,
                                                          int64_t ldo, int64_t ldo2) {
  pdl_enter();
  const int64_t n = static_cast<int64_t>(blockIdx.x) * 8 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  const int per = half / 4, i = 4 * (lane % per);
  float c[4], sn[4];
  const float p = static_cast<float>(pos[n]);
#pragma unroll
  for (int t = 0; t < 4; ++t) {  // token_angles' θ and values
    const float th = p * inv_freq[i + t];
    float s1, c1;
    sincosf(th, &s1, &c1);
    c[t] = c1;
    sn[t] = s1 * sign;
  }
#pragma unroll 4
  for (int hh = lane / per; hh < H + H2; hh += 32 / per) {
    const bool kk = hh >= H;  // a head of x2 (k), else of x (q)
    const int h = kk ? hh - H : hh;
    const __nv_bfloat16* xr = kk ? x2 + (n * H2 + h) * 2 * half : x + (n * H + h) * 2 * half;
    __nv_bfloat16* o = kk ? out2 + n * ldo2 + h * 2 * half : out + n * ldo + h * 2 * half;
    const float4 a = load4(xr + i), b = load4(xr + i + half);
    store4(o + i, make_float4(rotated_first(a.x, b.x, c[0], sn[0]), rotated_first(a.y, b.y, c[1], sn[1]),
                              rotated_first(a.z, b.z, c[2], sn[2]), rotated_first(a.w, b.w, c[3], sn[3])));
    store4(o + i + half, make_float4(rotated_second(a.x, b.x, c[0], sn[0]), rotated_second(a.y, b.y, c[1], sn[1]),
                                     rotated_second(a.z, b.z, c[2], sn[2]), rotated_second(a.w, b.w, c[3], sn[3])));
  }
}

template <typename T>
void launch_token(const RopeArgs& p, float sign) {
  const int64_t N = p.x->dim(0), H = p.x->dim(1), half = p.x->dim(2) / 2;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(N, 65535 * 8));
  launch("rope_token_kernel", rope_token_kernel<T>, grid, 256, 0, stream(), p.x->data_as<T>(),
         p.positions->data_as<int32_t>(), p.inv_freq->data_as<float>(), N, static_cast<int>(H), static_cast<int>(half),
         sign, p.out->data_as<T>());
}

void rope(const RopeArgs& p, float sign) {
  if (p.x2) {
    const int64_t N = p.x->dim(0), H = p.x->dim(1), H2 = p.x2->dim(1), half = p.x->dim(2) / 2;
    // out and out2, or their columns of out_packed (ops/rope.h), with their rows' strides
    __nv_bfloat16* const o1 = p.out_packed ? p.out_packed->data_as<__nv_bfloat16>() + p.out_col : p.out->data_as<__nv_bfloat16>();
    __nv_bfloat16* const o2 = p.out_packed ? p.out_packed->data_as<__nv_bfloat16>() + p.out2_col : p.out2->data_as<__nv_bfloat16>();
    const int64_t ldo = p.out_packed ? p.out_packed->dim(1) : 2 * H * half, ldo2 = p.out_packed ? p.out_packed->dim(1) : 2 * H2 * half;
    // (bf16x2 needs every row 4-byte aligned: the bases, half even, and the rows' strides)
    const bool one_pass = p.x->dtype() == DType::BF16 && next_kernels(Next::RopeQK) && half % 2 == 0 && half <= 128 &&
                          (H + H2) * half <= (int64_t{1} << 30) && aligned(p.x->data(), 4) && aligned(p.x2->data(), 4) &&
                          aligned(o1, 4) && aligned(o2, 4) && ldo % 2 == 0 && ldo2 % 2 == 0;
    // rope_rows: 8-byte rows (half a multiple of 4, the bases and strides aligned) and half / 4 a power of two ≤ 32
    const bool rows = one_pass && next_kernels(Next::RopeRows) && half % 4 == 0 && (32 % (half / 4)) == 0 &&
                      aligned(p.x->data(), 8) && aligned(p.x2->data(), 8) && aligned(o1, 8) && aligned(o2, 8) &&
                      ldo % 4 == 0 && ldo2 % 4 == 0;
    if (rows && N * (H + H2) > 0) {
      const OpPart part("q and k in one pass, a warp a token (next)", Device::CUDA);
      launch("rope_qk_rows_kernel", rope_qk_rows_kernel, static_cast<unsigned>((N + 7) / 8), 256, 0, stream(),
             p.x->data_as<__nv_bfloat16>(), static_cast<int>(H), p.x2->data_as<__nv_bfloat16>(), static_cast<int>(H2),
             p.positions->data_as<int32_t>(), p.inv_freq->data_as<float>(), N, static_cast<int>(half), sign, o1, o2, ldo,
             ldo2);
      return;
    }
    if (one_pass && N * (H + H2) > 0) {
      const OpPart part("q and k in one pass (next)", Device::CUDA);
      const unsigned grid = static_cast<unsigned>(std::min<int64_t>(N, 65535 * 8));
      launch("rope_qk_kernel", rope_qk_kernel, grid, 256, 0, stream(), p.x->data_as<__nv_bfloat16>(),
             static_cast<int>(H), p.x2->data_as<__nv_bfloat16>(), static_cast<int>(H2), p.positions->data_as<int32_t>(),
             p.inv_freq->data_as<float>(), N, static_cast<int>(half), sign, o1, o2, ldo, ldo2);
      return;
    }
    RopeArgs a, b;  // two passes, as two calls
    rope_pair_parts(p, a, b);
    rope(a, sign);
    return rope(b, sign);
  }
  const int64_t N = p.x->dim(0), H = p.x->dim(1), half = p.x->dim(2) / 2;
  const int64_t total = N * H * half;
  if (total == 0) return;
  if (p.out_packed) {  // into a bf16 (N, H, D), then copied into out_packed's columns (the same bf16 values)
    Tensor out = Tensor::empty(p.x->shape(), DType::BF16, Device::CUDA);
    RopeArgs a = p;
    a.out = &out;
    a.out_packed = nullptr;
    rope(a, sign);
    return pack_bf16(out.data(), Elem::BF16, H * 2 * half, 1.f, N, H * 2 * half,
                     p.out_packed->data_as<__nv_bfloat16>() + p.out_col, p.out_packed->dim(1));
  }
  const bool fits = half <= 128 && H * half <= (int64_t{1} << 30);  // the per-token kernel's bounds
  if (p.x->dtype() == DType::BF16) {  // bf16 activations (ops/rope.h): the per-token kernel, new with them
    if (!fits) fail(ErrorCode::Unsupported, "rope on CUDA: bf16 activations need D <= 256 and H·D/2 <= 2^30");
    return launch_token<__nv_bfloat16>(p, sign);
  }
  launch("rope_kernel", rope_kernel, grid_1d(total, 256), 256, 0, stream(), p.x->data_as<float>(),
         p.positions->data_as<int32_t>(), p.inv_freq->data_as<float>(), N, H, half, sign, p.out->data_as<float>());
}
}  // namespace

void rope_forward(const RopeArgs& p) { rope(p, 1.f); }
void rope_backward(const RopeArgs& p) { rope(p, -1.f); }

}  // namespace cuda
}  // namespace instill
