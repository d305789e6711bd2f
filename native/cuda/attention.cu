// attention on CUDA (ops/attention.h): causal GQA over packed rows, optional
// sliding window, flash-attention style (online softmax over key tiles; no
// (T, T) matrix; the backward recomputes probabilities from the saved lse).
//
// Layout: q, out, dout, dq (N, H, D); k, v, dk, dv (N, KVH, D); lse (N, H); all f32.
// Kernels read seg_begin / seg_end per token (cu_seqlens expanded, N int32 each),
// so a kernel tests "j is visible from i" as seg_begin[i] <= j <= i (and
// i − j < W with a window) without searching. The model hands them in once per
// pass (seg_bounds); a direct call has them built on the host and uploaded. No
// call waits for the GPU: scratch is freed into the stream-ordered block cache
// (runtime.cu), where only work queued after it can reuse it.
//
// Two kernel families (attention_kernels.cuh):
//   attention_flash.cu   bf16 tensor cores (mma.sync), f32 accumulation, for D = 64
//                        and 128 with 16-byte aligned tensors: the default there.
//                        Results carry bf16 operand rounding (~1e-2 relative).
//   attention_simple.cu  f32 CUDA cores, any D <= 128: everything else, and every
//                        problem when INSTILL_CUDA_ATTENTION=simple — the exact f32
//                        path, for tests and comparisons.
// Pipelined: the flash kernels stream bf16 copies of their inputs (made here, once
// per call) through cp.async double buffers; same results bit for bit. The
// backward's default; INSTILL_CUDA_ATTENTION=flash|pipelined picks one for both.
// Both write every output (=), deterministically (no atomics). D > 128 is E_UNSUPPORTED.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/attention_kernels.cuh"
#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "ops/attention.h"

namespace instill {
namespace cuda {

namespace {

constexpr int64_t kMaxD = 128;

struct Segs {
  Tensor owned;  // the bounds built here, when the caller gave none
  const int32_t* begin;  // (N) on the device
  const int32_t* end;
};

Segs segments(const Tensor& cu_seqlens, const Tensor* seg_bounds, int64_t N) {
  if (seg_bounds) {
    const int32_t* b = seg_bounds->data_as<int32_t>();
    return {Tensor(), b, b + N};
  }
  const std::vector<int32_t> cu = to_host_i32(cu_seqlens);  // validated by the op's front
  std::vector<int32_t> bounds(static_cast<size_t>(2 * N));
  for (size_t s = 0; s + 1 < cu.size(); ++s)
    for (int32_t i = cu[s]; i < cu[s + 1]; ++i) {
      bounds[static_cast<size_t>(i)] = cu[s];
      bounds[static_cast<size_t>(N + i)] = cu[s + 1];
    }
  Segs segs{to_device_i32(bounds), nullptr, nullptr};
  segs.begin = segs.owned.data_as<int32_t>();
  segs.end = segs.begin + N;
  return segs;
}

void need_d(int64_t D) {
  if (D > kMaxD) fail(ErrorCode::Unsupported, "attention on CUDA supports head dimensions up to ", kMaxD, ", got ", D);
}

// INSTILL_CUDA_ATTENTION: 'simple' forces the f32 kernels; 'flash' the flash kernels reading the f32
// inputs per tile (synchronous loads); 'pipelined' the flash kernels on bf16 copies of their streamed
// inputs with cp.async double buffering (attention_flash.cu). Unset: the forward synchronous, the
// backward pipelined — what a 1B step measured fastest (bench/RESULTS.md, cuda run 10: backward 8.09
// against 8.73 ms, forward 2.98 against 2.80). With INSTILL_CUDA_NEXT `flash_lean` the forward is pipelined
// too: the verified pipelined forward lost by its loop (864 instructions a tile against the synchronous one's
// 759, attention_lean.cu's SASS counts), and the lean loop is the same either way (305 / 308) while the
// synchronous one also issues its loads (~200 instructions a tile, against ~140 of cp.async and control);
// bench/gpu/instill_bench.mjs ops times both kinds), where the lean kernels take the problem (lean_forward:
// attention_lean_takes). Read on every call, so a test can compare the paths in one process.
enum class Path { Flash, Pipelined, Simple };
Path path_choice(bool backward, bool lean_forward = false) {
  const char* e = std::getenv("INSTILL_CUDA_ATTENTION");
  if (e && std::strcmp(e, "simple") == 0) return Path::Simple;
  if (e && std::strcmp(e, "pipelined") == 0) return Path::Pipelined;
  if (e && std::strcmp(e, "flash") == 0) return Path::Flash;
  return backward || (lean_forward && next_kernels(Next::FlashLean)) ? Path::Pipelined : Path::Flash;
}

// A bf16 copy of an (rows, D) f32 tensor, rounded as the flash kernels round their f32 tiles.
Tensor bf16_copy(const float* src, int64_t rows, int64_t D) {
  Tensor t = Tensor::empty({rows, D}, DType::BF16, Device::CUDA);
  pack_bf16(src, Elem::F32, D, 1.f, rows, D, t.data_as<__nv_bfloat16>(), D);
  return t;
}

// bf16 activations (ops/attention.h): the flash kernels read and write the bf16 tensors themselves (AttnParams'
// io16); where they do not apply, f32 copies (gemm.h's widened) go through the f32 kernels and the outputs are
// rounded back (narrow_into).
const __nv_bfloat16* bf16_of(const Tensor* t) { return t->data_as<__nv_bfloat16>(); }

void need_heads(int64_t H, int64_t KVH) {
  if (H > 65535) fail(ErrorCode::Unsupported, "attention on CUDA: more than 65535 heads");
  if (KVH <= 0 || H % KVH != 0) fail(ErrorCode::Shape, "attention: H = ", H, " is not a multiple of KVH = ", KVH);
}

}  // namespace

void attention_forward(const AttentionForwardArgs& p) {
  const int64_t N = p.q->dim(0), H = p.q->dim(1), D = p.q->dim(2), KVH = p.k->dim(1);
  need_d(D);
  if (N == 0 || H == 0 || D == 0) return;
  need_heads(H, KVH);
  const Segs segs = segments(*p.cu_seqlens, p.seg_bounds, N);
  AttnParams a{};
  a.seg_begin = segs.begin; a.seg_end = segs.end;
  a.N = N; a.H = H; a.KVH = KVH; a.D = D; a.window = p.window; a.scale = p.scale;
  a.lse = p.lse->data_as<float>();
  if (p.q->dtype() == DType::BF16) {  // bf16 activations: the pipelined flash kernels on the tensors themselves
    a.io16 = true;
    a.q16 = bf16_of(p.q); a.k16 = bf16_of(p.k); a.v16 = bf16_of(p.v);
    // out_packed: out's rows into o_proj's packed x, ld apart (ops/attention.h)
    a.out16 = p.out_packed ? p.out_packed->data_as<__nv_bfloat16>() : p.out->data_as<__nv_bfloat16>();
    a.ldo16 = p.out_packed ? p.out_packed->dim(1) : 0;
    if (path_choice(false) != Path::Simple && attention_flash_supported(a)) return attention_flash_forward(a, stream(), true);
    const OpPart part("f32 copies (bf16 activations, f32 kernels)", Device::CUDA);
    const Tensor q = widened(*p.q), k = widened(*p.k), v = widened(*p.v);
    Tensor out = Tensor::empty(p.q->shape(), DType::F32, Device::CUDA);
    AttentionForwardArgs f = p;
    f.q = &q; f.k = &k; f.v = &v; f.out = &out; f.out_packed = nullptr;
    cuda::attention_forward(f);
    if (!p.out_packed) return narrow_into(out, *p.out);
    return pack_bf16(out.data(), Elem::F32, H * D, 1.f, N, H * D, p.out_packed->data_as<__nv_bfloat16>(), a.ldo16);
  }
  a.q = p.q->data_as<float>(); a.k = p.k->data_as<float>(); a.v = p.v->data_as<float>();
  a.out = p.out->data_as<float>();
  const Path path = path_choice(false, attention_lean_takes(a));
  if (path == Path::Simple || !attention_flash_supported(a)) return attention_simple_forward(a, stream());
  Tensor k16, v16;
  if (path == Path::Pipelined) {
    const OpPart part("bf16 copies of k, v", Device::CUDA);
    k16 = bf16_copy(a.k, N * KVH, D);
    v16 = bf16_copy(a.v, N * KVH, D);
    a.k16 = k16.data_as<__nv_bfloat16>();
    a.v16 = v16.data_as<__nv_bfloat16>();
  }
  attention_flash_forward(a, stream(), path == Path::Pipelined);
}

void attention_backward(const AttentionBackwardArgs& p) {
  const int64_t N = p.q->dim(0), H = p.q->dim(1), D = p.q->dim(2), KVH = p.k->dim(1);
  need_d(D);
  if (N == 0 || H == 0 || D == 0) return;
  need_heads(H, KVH);
  const Segs segs = segments(*p.cu_seqlens, p.seg_bounds, N);
  Tensor delta = Tensor::empty({N, H}, DType::F32, Device::CUDA);
  AttnParams a{};
  a.seg_begin = segs.begin; a.seg_end = segs.end;
  a.N = N; a.H = H; a.KVH = KVH; a.D = D; a.window = p.window; a.scale = p.scale;
  a.lse_in = p.lse->data_as<float>();
  a.delta = delta.data_as<float>();
  const Path path = path_choice(true);
  if (p.q->dtype() == DType::BF16) {  // bf16 activations, as the forward
    a.io16 = true;
    a.q16 = bf16_of(p.q); a.k16 = bf16_of(p.k); a.v16 = bf16_of(p.v); a.do16 = bf16_of(p.dout);
    a.out16_in = p.out_packed ? bf16_of(p.out_packed) : bf16_of(p.out);  // out_packed: the forward's, ld apart
    a.ldo16 = p.out_packed ? p.out_packed->dim(1) : 0;
    a.dq16 = p.dq->data_as<__nv_bfloat16>(); a.dk16 = p.dk->data_as<__nv_bfloat16>();
    // dv_packed: dv into the q/k/v group's packed dy, ld apart (ops/attention.h)
    a.dv16 = p.dv_packed ? p.dv_packed->data_as<__nv_bfloat16>() + p.dv_col : p.dv->data_as<__nv_bfloat16>();
    a.lddv16 = p.dv_packed ? p.dv_packed->dim(1) : 0;
    if (path == Path::Simple || !attention_flash_supported(a)) {
      const OpPart part("f32 copies (bf16 activations, f32 kernels)", Device::CUDA);
      const Tensor dout = widened(*p.dout), q = widened(*p.q), k = widened(*p.k), v = widened(*p.v);
      Tensor out = p.out_packed ? Tensor::empty(p.q->shape(), DType::F32, Device::CUDA) : widened(*p.out);
      if (p.out_packed) pack_f32(bf16_of(p.out_packed), Elem::BF16, a.ldo16, 1.f, N, H * D, out.data_as<float>(), H * D);
      Tensor dq = Tensor::empty(p.dq->shape(), DType::F32, Device::CUDA), dk = Tensor::empty(p.dk->shape(), DType::F32, Device::CUDA),
             dv = Tensor::empty(p.k->shape(), DType::F32, Device::CUDA);
      AttentionBackwardArgs f = p;
      f.dout = &dout; f.q = &q; f.k = &k; f.v = &v; f.out = &out; f.dq = &dq; f.dk = &dk; f.dv = &dv;
      f.out_packed = nullptr;
      f.dv_packed = nullptr;
      cuda::attention_backward(f);
      narrow_into(dq, *p.dq);
      narrow_into(dk, *p.dk);
      if (!p.dv_packed) return narrow_into(dv, *p.dv);
      return pack_bf16(dv.data(), Elem::F32, KVH * D, 1.f, N, KVH * D, a.dv16, a.lddv16);
    }
  } else {
    a.q = p.q->data_as<float>(); a.k = p.k->data_as<float>(); a.v = p.v->data_as<float>();
    a.dout = p.dout->data_as<float>(); a.out_in = p.out->data_as<float>();
    a.dq = p.dq->data_as<float>(); a.dk = p.dk->data_as<float>(); a.dv = p.dv->data_as<float>();
  }
  const bool flash = path != Path::Simple && attention_flash_supported(a);  // io16: always, by now
  attention_delta(a, stream());  // (a part of the op's profile of its own, naming its kernel)
  if (!flash) return attention_simple_backward(a, stream());
  Tensor dk_part, dv_part;  // per-query-head partials when the dK/dV kernel splits groups
  if (attention_flash_dkv_split(a)) {
    dk_part = Tensor::empty({N, H, D}, DType::F32, Device::CUDA);
    dv_part = Tensor::empty({N, H, D}, DType::F32, Device::CUDA);
    a.dk_part = dk_part.data_as<float>();
    a.dv_part = dv_part.data_as<float>();
  }
  Tensor q16, k16, v16, do16;
  if (!a.io16 && path == Path::Pipelined) {  // bf16 activations are the copies already
    const OpPart part("bf16 copies of q, k, v, dO", Device::CUDA);
    q16 = bf16_copy(a.q, N * H, D);
    k16 = bf16_copy(a.k, N * KVH, D);
    v16 = bf16_copy(a.v, N * KVH, D);
    do16 = bf16_copy(a.dout, N * H, D);
    a.q16 = q16.data_as<__nv_bfloat16>();
    a.k16 = k16.data_as<__nv_bfloat16>();
    a.v16 = v16.data_as<__nv_bfloat16>();
    a.do16 = do16.data_as<__nv_bfloat16>();
  }
  attention_flash_backward(a, stream(), a.io16 || path == Path::Pipelined);
}

}  // namespace cuda
}  // namespace instill
