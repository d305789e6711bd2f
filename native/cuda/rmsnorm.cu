// rmsnorm on CUDA (ops/rmsnorm.h).
//
// Forward: one block (256 threads) per row (float4 loads where C % 4 == 0); Σx² in f32 per thread then a block
// reduction (the CPU sums in double; f32 over C ≤ 16k terms of one sign stays
// within ~1e-6 relative). y may alias x: the row is fully reduced before any
// thread writes, and each element is read and written by the same thread.
// Backward: dw first (one thread per column, rows split across blocks, f32
// atomics to combine the blocks' partial sums), then dx, one block per row;
// so dx may alias dy (dw has read dy before dx overwrites it).
#include "cuda/common.cuh"
#include "ops/rmsnorm.h"

namespace instill {
namespace cuda {

namespace {
constexpr int kThreads = 256;

// kVec: C % 4 == 0 and x, w, y 16-byte aligned: float4 loads and stores (every row then starts aligned).
// Y: float, or __nv_bfloat16 (the same f32 math, each output rounded once: common.cuh's store1 / store4).
// ldy: y's row stride (C, or a packed buffer's: ops/rmsnorm.h's y_packed; kVec then needs ldy % 4 == 0).
template <bool kVec, typename Y = float>
__global__ void rmsnorm_forward_kernel(const float* x, const float* w, float eps, int64_t C, Y* y, int64_t ldy,
                                       float* rstd) {  // x (N, C), y (N, ldy); w (C); rstd (N)
  pdl_enter();
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * C;
  Y* yr = y + row * ldy;
  float ss = 0.f;
  if (kVec) {
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * blockDim.x) {
      const float4 v = *reinterpret_cast<const float4*>(xr + c);
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
  }
  ss = block_sum(ss, red);
  const float r = rsqrtf(ss / static_cast<float>(C) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  if (kVec) {
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * blockDim.x) {
      const float4 v = *reinterpret_cast<const float4*>(xr + c), g = *reinterpret_cast<const float4*>(w + c);
      store4(yr + c, make_float4(v.x * r * g.x, v.y * r * g.y, v.z * r * g.z, v.w * r * g.w));
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store1(yr + c, xr[c] * r * w[c]);
  }
}

__global__ void rmsnorm_dw_kernel(const float* dy, const float* x, const float* rstd, int64_t N, int64_t C,
                                  int64_t rows_per_block, float* dw) {  // dw (C) +=
  pdl_enter();
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const int64_t r0 = blockIdx.y * rows_per_block;
  const int64_t r1 = min(N, r0 + rows_per_block);
  float acc = 0.f;
  for (int64_t r = r0; r < r1; ++r) acc += dy[r * C + c] * x[r * C + c] * rstd[r];
  atomicAdd(dw + c, acc);
}

// kVec: C % 4 == 0 and dy, x, w, dx 16-byte aligned.
// dxp (or null): dx's final values also rounded to bf16 into row·ldp of it (ops/rmsnorm.h, dx_packed); kVec
// there needs ldp % 4 == 0 and dxp 8-byte aligned, checked with the rest on the host.
template <bool kVec>
__global__ void rmsnorm_dx_kernel(const float* dy, const float* x, const float* w, const float* rstd, int64_t C,
                                  bool accumulate, float* dx, __nv_bfloat16* dxp, int64_t ldp) {
  pdl_enter();
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const float* dyr = dy + row * C;
  const float* xr = x + row * C;
  float* dxr = dx + row * C;
  float s = 0.f;
  if (kVec) {
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * blockDim.x) {
      const float4 g = *reinterpret_cast<const float4*>(w + c), d = *reinterpret_cast<const float4*>(dyr + c),
                   v = *reinterpret_cast<const float4*>(xr + c);
      s += g.x * d.x * v.x + g.y * d.y * v.y + g.z * d.z * v.z + g.w * d.w * v.w;
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += w[c] * dyr[c] * xr[c];
  }
  s = block_sum(s, red);
  const float r = rstd[row];
  const float mean_gx = s / static_cast<float>(C);
  const float r3 = r * r * r;
  if (kVec) {
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * blockDim.x) {
      const float4 g = *reinterpret_cast<const float4*>(w + c), d = *reinterpret_cast<const float4*>(dyr + c),
                   v = *reinterpret_cast<const float4*>(xr + c);
      float4 o = make_float4(r * g.x * d.x - v.x * r3 * mean_gx, r * g.y * d.y - v.y * r3 * mean_gx,
                             r * g.z * d.z - v.z * r3 * mean_gx, r * g.w * d.w - v.w * r3 * mean_gx);
      if (accumulate) {
        const float4 a = *reinterpret_cast<const float4*>(dxr + c);
        o = make_float4(a.x + o.x, a.y + o.y, a.z + o.z, a.w + o.w);
      }
      *reinterpret_cast<float4*>(dxr + c) = o;
      if (dxp) store4(dxp + row * ldp + c, o);
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = r * w[c] * dyr[c] - xr[c] * r3 * mean_gx;
      const float o = accumulate ? dxr[c] + v : v;
      dxr[c] = o;
      if (dxp) dxp[row * ldp + c] = __float2bfloat16_rn(o);
    }
  }
}

// y (f32, or bf16 with bf16 activations), rows ldy apart: the block kernel's vector path, else its scalar one
template <typename Y>
void launch_forward(const float* x, const float* w, float eps, int64_t N, int64_t C, Y* y, int64_t ldy, float* rstd) {
  const unsigned grid = static_cast<unsigned>(N);
  const bool vec = C % 4 == 0 && ldy % 4 == 0 && aligned16({x, w, y});
  if (vec) {
    launch("rmsnorm_forward_kernel", rmsnorm_forward_kernel<true, Y>, grid, kThreads, 0, stream(), x, w, eps, C, y, ldy,
           rstd);
  } else {
    launch("rmsnorm_forward_kernel", rmsnorm_forward_kernel<false, Y>, grid, kThreads, 0, stream(), x, w, eps, C, y, ldy,
           rstd);
  }
}
}  // namespace

void rmsnorm_forward(const RmsnormForwardArgs& p) {
  const int64_t N = p.x->dim(0), C = p.x->dim(1);
  if (N == 0) return;
  if (N > 0x7fffffffll) fail(ErrorCode::Unsupported, "rmsnorm on CUDA: too many rows (", N, ")");
  const float *x = p.x->data_as<float>(), *w = p.w->data_as<float>();
  float* rstd = p.rstd->data_as<float>();
  const Tensor& yt = p.y_packed ? *p.y_packed : *p.y;
  const int64_t ldy = p.y_packed ? p.y_packed->dim(1) : C;  // the packed buffer's row stride (ops/rmsnorm.h)
  if (yt.dtype() == DType::BF16) {  // the model's norm outputs with bf16 activations (ops/rmsnorm.h)
    launch_forward(x, w, p.eps, N, C, yt.data_as<__nv_bfloat16>(), ldy, rstd);
  } else {
    launch_forward(x, w, p.eps, N, C, yt.data_as<float>(), ldy, rstd);
  }
}

void rmsnorm_backward(const RmsnormBackwardArgs& p) {
  const int64_t N = p.x->dim(0), C = p.x->dim(1);
  if (N == 0) return;
  if (N > 0x7fffffffll) fail(ErrorCode::Unsupported, "rmsnorm on CUDA: too many rows (", N, ")");
  if (p.dw && C > 0) {
    const int64_t rows_per_block = 64;
    const int64_t gy = (N + rows_per_block - 1) / rows_per_block;
    if (gy > 65535) fail(ErrorCode::Unsupported, "rmsnorm backward on CUDA: too many rows (", N, ")");
    dim3 grid(static_cast<unsigned>((C + kThreads - 1) / kThreads), static_cast<unsigned>(gy));
    launch("rmsnorm_dw_kernel", rmsnorm_dw_kernel, grid, kThreads, 0, stream(), p.dy->data_as<float>(),
           p.x->data_as<float>(), p.rstd->data_as<float>(), N, C, rows_per_block, p.dw->data_as<float>());
  }
  const float *dy = p.dy->data_as<float>(), *x = p.x->data_as<float>(), *w = p.w->data_as<float>();
  const float* rstd = p.rstd->data_as<float>();
  float* dx = p.dx->data_as<float>();
  __nv_bfloat16* dxp = p.dx_packed ? p.dx_packed->data_as<__nv_bfloat16>() : nullptr;
  const int64_t ldp = p.dx_packed ? p.dx_packed->dim(1) : 0;
  const unsigned rows = static_cast<unsigned>(N);
  const bool vec = C % 4 == 0 && aligned16({dy, x, w, dx}) && (!dxp || (ldp % 4 == 0 && aligned(dxp, 8)));
  if (vec) launch("rmsnorm_dx_kernel", rmsnorm_dx_kernel<true>, rows, kThreads, 0, stream(), dy, x, w, rstd, C,
                  p.accumulate_dx, dx, dxp, ldp);
  else launch("rmsnorm_dx_kernel", rmsnorm_dx_kernel<false>, rows, kThreads, 0, stream(), dy, x, w, rstd, C,
              p.accumulate_dx, dx, dxp, ldp);
}

}  // namespace cuda
}  // namespace instill
