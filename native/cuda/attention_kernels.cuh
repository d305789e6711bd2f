// The attention kernels' launchers (native/cuda/attention*.cu only), on raw device
// pointers so that attention.cu (the op: argument checks, segments, scratch, the
// choice of path) and the two kernel families stay apart:
//   attention_simple.cu  f32 on the CUDA cores, any D <= 128 (the fallback and the
//                        exact reference on the GPU)
//   attention_flash.cu   bf16 tensor cores (mma.sync m16n8k16), f32 accumulation,
//                        D in {64, 128}, 16-byte aligned tensors
//   attention_lean.cu    the same with leaner inner loops (INSTILL_CUDA_NEXT `flash_lean`)
// Both compute the same thing (ops/attention.h) and write every output (=).
// Every launcher checks its launches (check_launch) and throws instill::Error.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace instill {
namespace cuda {

// The visibility rule both kernel families apply (ops/attention.h): key j is seen
// from query i iff seg_begin[i] <= j <= i and, with a window, i − j < window.
// First key visible from query i (i < N).
__device__ __forceinline__ int64_t key_lo(const int32_t* seg_begin, int64_t i, int64_t window) {
  int64_t lo = seg_begin[i];
  if (window > 0) lo = max(lo, i - window + 1);
  return lo;
}
// Last query that sees key j (j < N).
__device__ __forceinline__ int64_t query_hi(const int32_t* seg_end, int64_t j, int64_t window) {
  int64_t hi = static_cast<int64_t>(seg_end[j]) - 1;
  if (window > 0) hi = min(hi, j + window - 1);
  return hi;
}

struct AttnParams {
  const float* q;              // (N, H, D)
  const float* k;              // (N, KVH, D)
  const float* v;              // (N, KVH, D)
  const int32_t* seg_begin;    // (N) first token of token i's segment
  const int32_t* seg_end;      // (N) one past its last token
  int64_t N, H, KVH, D, window;
  float scale;
  // forward outputs
  float* out;                  // (N, H, D)
  float* lse;                  // (N, H) natural log of Σ_j exp(scale · q_i·k_j)
  // backward inputs (out and lse of the forward) and outputs
  const float* dout;           // (N, H, D)
  const float* out_in;         // (N, H, D)
  const float* lse_in;         // (N, H)
  float* delta;                // (N, H) scratch: Δ_i = dout_i · out_i
  float* dq;                   // (N, H, D)
  float* dk;                   // (N, KVH, D)
  float* dv;                   // (N, KVH, D)
  // flash backward only: per-query-head dK/dV partials (N, H, D) each, or null
  // (attention_flash_dkv_split says when they are needed)
  float* dk_part;
  float* dv_part;
  // The pipelined flash kernels only (attention.cu's path_choice): bf16 copies of the inputs
  // they stream tile by tile (forward: k16, v16; backward: all four), else null.
  const __nv_bfloat16* q16;
  const __nv_bfloat16* k16;
  const __nv_bfloat16* v16;
  const __nv_bfloat16* do16;
  // bf16 activations (io16, pipelined flash kernels only): q16, k16, v16 (and do16) ARE the inputs (q, k, v,
  // dout unused), out16_in the forward's output (for Δ), and the outputs go to out16 / dq16 / dk16 / dv16.
  bool io16 = false;
  const __nv_bfloat16* out16_in = nullptr;
  __nv_bfloat16* out16 = nullptr;
  __nv_bfloat16* dq16 = nullptr;
  __nv_bfloat16* dk16 = nullptr;
  __nv_bfloat16* dv16 = nullptr;
  // io16: the elements between two tokens' rows of out16 / out16_in, or 0 for H·D (contiguous). More where out is
  // written into o_proj's packed x (ops/attention.h's out_packed; INSTILL_CUDA_NEXT=attn_pack).
  int64_t ldo16 = 0;
  // io16: the same for dv16, or 0 for KVH·D: more where dv is written into the q/k/v group's packed dy
  // (ops/attention.h's dv_packed; INSTILL_CUDA_NEXT=dqkv_pack).
  int64_t lddv16 = 0;
};

// out16's / out16_in's row stride, and dv16's.
__host__ __device__ __forceinline__ int64_t out16_ld(const AttnParams& p) { return p.ldo16 ? p.ldo16 : p.H * p.D; }
__host__ __device__ __forceinline__ int64_t dv16_ld(const AttnParams& p) { return p.lddv16 ? p.lddv16 : p.KVH * p.D; }

// Δ_i = dout_i · out_i for every (i, h): the first step of both backwards (io16: from do16 and out16_in), timed as the
// op's part "delta = rowsum(dO * O)" (", a warp a row (next)" where INSTILL_CUDA_NEXT `delta_rows` takes it).
void attention_delta(const AttnParams& p, cudaStream_t s);

void attention_simple_forward(const AttnParams& p, cudaStream_t s);
void attention_simple_backward(const AttnParams& p, cudaStream_t s);  // after attention_delta

// Whether the tensor-core path takes this problem (head dim, pointer alignment).
bool attention_flash_supported(const AttnParams& p);
// Whether the flash dK/dV kernel should split the query heads of a group over CTAs
// (more parallelism for short rows; needs dk_part / dv_part): fewer CTAs than 4 per SM without.
bool attention_flash_dkv_split(const AttnParams& p);
// pipelined: the kernels stream K/V (forward, dQ) and Q/dO/lse/Δ (dK/dV) tiles from the bf16 copies in
// p (q16 …) with cp.async into double buffers, the next tile loading while the current one computes;
// otherwise they load f32 tiles synchronously. Same arithmetic, same results bit for bit.
void attention_flash_forward(const AttnParams& p, cudaStream_t s, bool pipelined = false);
void attention_flash_backward(const AttnParams& p, cudaStream_t s, bool pipelined = false);  // after attention_delta

// attention_lean.cu (INSTILL_CUDA_NEXT `flash_lean`, waiting for a GPU run): the flash kernels with a leaner inner
// loop, called by attention_flash.cu in place of its one-m-tile kernels where attention_lean_takes (scale > 0,
// D 64 or 128). The forward as attention_flash_forward's; dQ and dK/dV for the pipelined backward and bf16
// activations (p's bf16 tensors set), dK/dV into dk_out / dv_out at row stride out_heads (hpc query heads a
// CTA, a grid of grid_x key blocks × grid_y units; null outputs with io16: p.dk16 / p.dv16).
bool attention_lean_takes(const AttnParams& p);
void attention_lean_forward(const AttnParams& p, cudaStream_t s, bool pipelined);
void attention_lean_dq(const AttnParams& p, cudaStream_t s);
void attention_lean_dkv(const AttnParams& p, float* dk_out, float* dv_out, int64_t out_heads, int64_t hpc,
                        unsigned grid_x, unsigned grid_y, cudaStream_t s);

// attention_wgmma.cu (INSTILL_CUDA_NEXT `flash_wgmma`, waiting for a GPU run): the forward on Hopper's warpgroup
// products, called by attention_flash_forward in place of the lean forward where attention_wgmma_takes (its
// conditions, bf16 K and V (bf16 activations or the pipelined copies), and compute capability 9.0).
bool attention_wgmma_takes(const AttnParams& p);
void attention_wgmma_forward(const AttnParams& p, cudaStream_t s);
// INSTILL_CUDA_NEXT `dq_wgmma`: the dQ kernel likewise, in place of the lean one (D 64 only), after attention_delta.
bool attention_wgmma_takes_dq(const AttnParams& p);
void attention_wgmma_dq(const AttnParams& p, cudaStream_t s);
// INSTILL_CUDA_NEXT `dkv_wgmma`: the dK/dV kernel likewise, in place of the lean one (D 64 only; the arguments as
// attention_lean_dkv's, and the name of its op-profile part).
bool attention_wgmma_takes_dkv(const AttnParams& p);
void attention_wgmma_dkv(const AttnParams& p, float* dk_out, float* dv_out, int64_t out_heads, int64_t hpc,
                         unsigned grid_x, unsigned grid_y, const char* part_name, cudaStream_t s);

}  // namespace cuda
}  // namespace instill
