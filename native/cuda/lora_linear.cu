// lora_linear on CUDA (ops/lora_linear.h), over the backend's GEMM (gemm.h).
//
// Forward   u = x·Aᵀ                          (N, R)
//           y = [x | s·u] · [W | B]ᵀ + bias   one product: the low-rank term is
//                                             K columns IN..IN+R of y's own tile
// Backward  g  = dy·B                          (N, R) scratch, once
//           dx = [dy | s·g] · [W ; A]           one product (= or += by accumulate_dx)
//           dA = s·gᵀ·x,  dB = s·dyᵀ·u          (= or += by beta)
// With a bf16/f16 frozen weight, all operands are rounded to bf16 (f32
// accumulation): bf16 tolerance of the CPU's f32 kernel. With an f32 weight (an
// f32 model) the products stay f32 (TF32 tensor cores): *_f32 below.
//
// Layout, and why: the activations arrive as f32 and every product rounds its
// operands to bf16. Each f32 activation is converted ONCE per call (pack_bf16)
// into a bf16 buffer laid out so that every later product reads it as a plain
// unscaled bf16 operand with a wide leading dimension — cuBLASLt then takes it
// without another pack (earlier, dy (256 MB f32 at N = 8192, OUT = 8192) was
// packed three times per backward and x twice per forward):
//   forward   Px (N, round8(IN+R)) bf16:  [:, :IN] = x,  [:, IN:IN+R] = s·u
//             WB (OUT, round8(IN+R)) bf16: [W | B]  (a copy of W per call:
//             ~32 MB at 8192×2048, microseconds, and the whole y is then one
//             product with the bias in its epilogue; 1.8 ms of run 12's 1B
//             step) — or the caller's kept [W | B] (p.wb: the model keeps one
//             per adapted linear where the GPU's memory allows,
//             INSTILL_CUDA_NEXT=wb_cache), into which only B is written
//   backward  Pd (N, round8(OUT+R)) bf16: [:, :OUT] = dy, [:, OUT:OUT+R] = s·g
//             WA (OUT+R, round8(IN)) bf16: [W ; A] — or W itself with A in the R
//             spare rows the model allocates after a bf16 W (reserve_lora_rows):
//             no copy of W (a copy of every frozen weight per step was 2 ms
//             of a 1B model's 52 ms step); in the model's training pass the
//             forward writes A there (stack_a) and the backward does not
//             (a_stacked)
//             (dA = s·gᵀ·x reads x itself: both f32, a TF32 product)
// The rounding is exactly the earlier one (scale applied in f32, then rounded
// once), only done once. Leading dimensions are multiples of 8 elements, so
// every row starts 16-byte aligned (what cuBLASLt and the vector pack need).
// The WMMA fallback (INSTILL_CUBLASLT=off) reads the same buffers: it takes any
// operand with its own dtype and leading dimension, element by element.
// The small operands (A, B, u, g in f32) are packed by the GEMM itself.
// bf16 activations (ops/lora_linear.h; the model's MLP on a GPU): a bf16 x or dy is copied into
// its packed buffer as it is (pack_bf16 reads bf16), a bf16 y or dx is the product's D in bf16
// (gemm.h's c16; dx += goes through f32 scratch there).
// (Tried: the packs of x and dy fused with u = x·Aᵀ and g = dy·B in one kernel.
// In a 1B step it was no faster than the three passes — 47.1 vs 46.6 ms; a first
// version that read the factor per warp from L2 was 3x slower — so it went. So did `narrow`, u, g, dA and dB
// on CUDA-core kernels: removed after losing to cuBLASLt in run 14.)
#include <vector>

#include "cuda/gemm.h"
#include "ops/add.h"
#include "ops/lora_linear.h"

namespace instill {
namespace cuda {

void add(const AddArgs& p);  // add.cu

namespace {

// Whether a bf16 W has the R spare rows after it that hold A for the backward's [W ; A] in place
// (LlamaModel::reserve_lora_rows), with 16-byte rows.
bool a_fits_below_w(const Tensor& w, int64_t R) {
  const int64_t OUT = w.dim(0), IN = w.dim(1);
  return elem_of(w) == Elem::BF16 && IN % 8 == 0 &&
         w.capacity_bytes() >= static_cast<size_t>((OUT + R) * IN) * sizeof(__nv_bfloat16);
}

// Where a forward with stack_a puts A in bf16 (the spare rows below W), or null.
__nv_bfloat16* a_below_w(const LoraLinearForwardArgs& p) {
  const Tensor& w = *p.w;
  const int64_t R = p.a->dim(0);
  return p.stack_a && a_fits_below_w(w, R) ? bf16_ptr(w) + w.dim(0) * w.dim(1) : nullptr;
}

// W rounded into the first IN columns of the caller's kept [W | B] (lora_linear's wb).
void copy_w_into_kept(const Tensor& w, const Tensor& wb) {
  pack_bf16(w.data(), elem_of(w), w.dim(1), 1.f, w.dim(0), w.dim(1), bf16_ptr(wb), wb.dim(1));
}

// An f32 frozen weight (an f32 model): every operand is f32, so the products are
// the plain two-segment ones, which gemm() runs in TF32 (cuBLASLt) or f32 (its
// fallback), stacking [x | s·u] and [W | B] in f32 itself. No bf16 rounding:
// the precision an f32 model asks for, as the CPU gives it.
void lora_linear_forward_f32(const LoraLinearForwardArgs& p) {
  const Tensor &x = *p.x, &w = *p.w, &a = *p.a, &b = *p.b;
  const int64_t N = x.dim(0), IN = x.dim(1), R = a.dim(0);
  if (IN == 0) fill_bytes(p.u->data(), Device::CUDA, 0, p.u->nbytes());
  else gemm(product(N, R, IN, operand(x, false), operand(a, true), p.u->data_as<float>(), R));  // u = x·Aᵀ
  gemm(lora_output_product(x, w, *p.u, b, p.scale, p.bias, *p.y));  // y = x·Wᵀ + s·u·Bᵀ + bias
}

void lora_linear_backward_f32(const LoraLinearBackwardArgs& p) {
  const Tensor &dy = *p.dy, &x = *p.x, &w = *p.w, &a = *p.a, &b = *p.b, &u = *p.u;
  const int64_t N = x.dim(0), IN = x.dim(1), OUT = w.dim(0), R = a.dim(0);
  Tensor gt = Tensor::empty({N, R}, DType::F32, Device::CUDA);
  if (OUT == 0) fill_bytes(gt.data(), Device::CUDA, 0, gt.nbytes());
  else gemm(product(N, R, OUT, operand(dy, false), operand(b, false), gt.data_as<float>(), R));  // g = dy·B
  if (p.dx) {  // dx = [dy | s·g]·[W ; A]
    GemmArgs g;
    g.M = N; g.N = IN; g.K[0] = OUT; g.K[1] = R;
    g.a[0] = operand(dy, false);
    g.a[1] = operand(gt, false, p.scale);
    g.b[0] = operand(w, false);
    g.b[1] = operand(a, false);
    g.c = p.dx->data_as<float>(); g.ldc = IN;
    g.beta = p.accumulate_dx ? 1.f : 0.f;
    gemm(g);
  }
  lora_weight_grads(gt, x, dy, u, p.scale, p.accumulate, *p.da, *p.db);  // dA = s·gᵀ·x, dB = s·dyᵀ·u
}

}  // namespace

// B into the kept [W | B]'s columns IN..IN+R, and, with stack_a, A into the rows below W (a_below_w): what a
// forward given wb writes (as pack_bf16 calls, one a job), or lora_pack_factors for it (lora_pack.cu).
void linear_factor_jobs(const LoraLinearForwardArgs& p, std::vector<PackJob>& jobs) {
  const int64_t IN = p.w->dim(1), OUT = p.w->dim(0), R = p.a->dim(0);
  jobs.push_back(PackJob{p.b->data_as<float>(), R, OUT, R, bf16_ptr(*p.wb) + IN, p.wb->dim(1)});
  if (__nv_bfloat16* const a16 = a_below_w(p)) jobs.push_back(PackJob{p.a->data_as<float>(), IN, R, IN, a16, IN});
}

void lora_linear_forward(const LoraLinearForwardArgs& p) {
  // x_packed (ops/lora_linear.h): x already in px's first IN columns (the model's SwiGLU wrote h there)
  const Tensor &x = p.x ? *p.x : *p.x_packed, &w = *p.w, &a = *p.a, &b = *p.b;
  const int64_t N = x.dim(0), IN = w.dim(1), OUT = w.dim(0), R = a.dim(0);
  if (N == 0) {  // no rows; a kept [W | B] still gets its W, as the caller was promised
    if (p.wb && !p.wb_has_w) copy_w_into_kept(w, *p.wb);
    return;
  }
  if (elem_of(w) == Elem::F32) {
    lora_linear_forward_f32(p);
    if (p.residual) cuda::add(AddArgs{p.y, p.residual, p.y});
    return;
  }
  const int64_t ldx = p.x_packed ? p.x_packed->dim(1) : round_up(IN + R, 8);
  Tensor px = p.x_packed ? *p.x_packed : Tensor::empty({N, ldx}, DType::BF16, Device::CUDA);  // [x | s·u]
  const int64_t ldwb = round_up(IN + R, 8);  // (= ldx but where px is the caller's x_packed)
  Tensor wb = p.wb ? Tensor() : Tensor::empty({OUT, ldwb}, DType::BF16, Device::CUDA);  // [W | B], unless kept
  if (!p.x_packed) {
    const OpPart part("pack x", Device::CUDA);
    pack_bf16(x.data(), elem_of(x), IN, 1.f, N, IN, bf16_ptr(px), ldx);
  }
  // [W | B]: the caller's kept one (p.wb: W already in it, or copied in now; B written each call), else a copy
  // of W made here
  __nv_bfloat16* wbp = p.wb ? bf16_ptr(*p.wb) : bf16_ptr(wb);
  const int64_t ldw = p.wb ? p.wb->dim(1) : ldwb;
  // stack_a (the model's training pass): A below W for the backward too
  __nv_bfloat16* const a16 = a_below_w(p);
  if (p.wb) {
    if (!p.wb_has_w) {
      const OpPart part("copy W into the kept [W | B]", Device::CUDA);
      copy_w_into_kept(w, *p.wb);
    }
    if (!p.factors_packed) {  // (factors_packed: lora_pack_factors wrote them, linear_factor_jobs below)
      const OpPart part(a16 ? "pack B into the kept [W | B], A below W" : "pack B into the kept [W | B]", Device::CUDA);
      std::vector<PackJob> jobs;
      linear_factor_jobs(p, jobs);
      for (const PackJob& j : jobs) pack_bf16(j.src, Elem::F32, j.lds, 1.f, j.rows, j.cols, j.dst, j.ldd);
    }
  } else {
    const OpPart part("pack [W | B]", Device::CUDA);
    pack_bf16(w.data(), elem_of(w), IN, 1.f, OUT, IN, bf16_ptr(wb), ldwb);
    pack_bf16(b.data(), Elem::F32, R, 1.f, OUT, R, bf16_ptr(wb) + IN, ldwb);
    if (a16) pack_bf16(a.data(), Elem::F32, IN, 1.f, R, IN, a16, IN);
  }
  {  // u (N, R) = x (N, IN) · Aᵀ,  A stored (R, IN): with `fewer_packs` the bf16 A just written below W (the
     // rounding the product would make of A), else A itself (packed by the product)
    const bool fewer = next_kernels(Next::FewerPacks);
    const OpPart part("u = x A^T, pack s u", Device::CUDA);
    GemmArgs g;
    g.M = N; g.N = R; g.K[0] = IN;
    g.a[0] = bf16_operand(bf16_ptr(px), ldx, false);
    g.b[0] = a16 && fewer ? bf16_operand(a16, IN, true) : operand(a, true);
    if (fewer && p.u_unused && IN > 0 && scales_exactly(p.scale)) {
      g.alpha = p.scale;  // s·u into px in bf16 by the product itself; u left unwritten (nobody reads it)
      g.c16 = bf16_ptr(px) + IN; g.ldc = ldx;
      gemm(g);
    } else {
      g.c = p.u->data_as<float>(); g.ldc = R;
      if (IN == 0) {
        fill_bytes(g.c, Device::CUDA, 0, p.u->nbytes());
      } else {
        gemm(g);
      }
      pack_bf16(p.u->data(), Elem::F32, R, p.scale, N, R, bf16_ptr(px) + IN, ldx);
    }
  }
  // A residual (the model's o_proj and down_proj outputs joining the residual stream): with the next kernels
  // (`residual`) and no bias, the product's C, read from the residual and written to y (cuBLASLt's C != D:
  // one pass over y fewer; the sum acc + residual as the add makes it, though a product with beta may run
  // another algorithm, so equal to f32 rounding); else the add after the product, as before.
  const bool residual_in_product = p.residual && !p.bias && next_kernels(Next::Residual);
  {  // y (N, OUT) = [x | s·u] · [W | B]ᵀ + bias (+ residual)
    const OpPart part(residual_in_product ? "y = residual + [x | s u] [W | B]^T" : "y = [x | s u] [W | B]^T", Device::CUDA);
    GemmArgs g;
    g.M = N; g.N = OUT; g.K[0] = IN + R;
    g.a[0] = bf16_operand(bf16_ptr(px), ldx, false);
    g.b[0] = bf16_operand(wbp, ldw, true);  // stored (OUT, IN+R) = (N, K)
    g.bias = p.bias ? p.bias->data_as<float>() : nullptr;
    set_c(g, *p.y, OUT);
    if (residual_in_product) {
      g.c_in = p.residual->data_as<float>();
      g.beta = 1.f;
    }
    gemm(g);
  }
  if (p.residual && !residual_in_product) {
    const OpPart part("add residual", Device::CUDA);
    cuda::add(AddArgs{p.y, p.residual, p.y});
  }
}

void lora_linear_backward(const LoraLinearBackwardArgs& p) {
  // x_packed: x in its first IN columns (read in place by dA's product)
  const Tensor &dy = *p.dy, &x = p.x ? *p.x : *p.x_packed, &w = *p.w, &a = *p.a, &b = *p.b, &u = *p.u;
  const int64_t N = x.dim(0), IN = w.dim(1), OUT = w.dim(0), R = a.dim(0);
  const float beta = p.accumulate ? 1.f : 0.f;
  if (N == 0) {  // empty sums: dA, dB unchanged (+=) or zero (=); dx has no rows
    if (!p.accumulate) {
      fill_bytes(p.da->data(), Device::CUDA, 0, p.da->nbytes());
      fill_bytes(p.db->data(), Device::CUDA, 0, p.db->nbytes());
    }
    return;
  }
  if (elem_of(w) == Elem::F32) return lora_linear_backward_f32(p);
  // [dy | s·g]: the caller's, where its dy came packed (rmsnorm_backward's dx_packed), else packed here
  const int64_t ldd = p.dy_packed ? p.dy_packed->dim(1) : round_up(OUT + R, 8);
  Tensor pd = p.dy_packed ? *p.dy_packed : Tensor::empty({N, ldd}, DType::BF16, Device::CUDA);
  // INSTILL_CUDA_NEXT `fewer_packs`: g's product writes s·g into pd in bf16 itself (no f32 g, no pack of it), and
  // dA reads it there, where that is dA's own arithmetic: x in bf16 (an f32 x keeps dA a TF32 product on f32 g)
  // and s a power of two (scales_exactly); B is read from the forward's kept [W | B] (p.wb) in bf16, not packed.
  const bool fewer = next_kernels(Next::FewerPacks);
  const bool sg16 = fewer && OUT > 0 && elem_of(x) != Elem::F32 && scales_exactly(p.scale);
  __nv_bfloat16* const sg = bf16_ptr(pd) + OUT;  // s·g's columns of pd
  Tensor gt = sg16 ? Tensor() : Tensor::empty({N, R}, DType::F32, Device::CUDA);  // g = dy·B
  if (!p.dy_packed) {
    const OpPart part("pack dy", Device::CUDA);
    pack_bf16(dy.data(), elem_of(dy), OUT, 1.f, N, OUT, bf16_ptr(pd), ldd);
  }
  {  // g (N, R) = dy (N, OUT) · B
    const OpPart part(sg16 ? "g = dy B, s g into pd" : "g = dy B", Device::CUDA);
    GemmArgs g;
    g.M = N; g.N = R; g.K[0] = OUT;
    g.a[0] = bf16_operand(bf16_ptr(pd), ldd, false);
    // B stored (OUT, R) = (K, N): f32 (packed by the product), or its bf16 copy in the kept [W | B]'s columns IN..
    g.b[0] = fewer && p.wb ? bf16_operand(bf16_ptr(*p.wb) + IN, p.wb->dim(1), false) : operand(b, false);
    if (sg16) {
      g.alpha = p.scale;
      g.c16 = sg; g.ldc = ldd;
      gemm(g);
    } else {
      g.c = gt.data_as<float>(); g.ldc = R;
      if (OUT == 0) {
        fill_bytes(g.c, Device::CUDA, 0, gt.nbytes());
      } else {
        gemm(g);
      }
    }
  }
  if (p.dx) {  // dx (N, IN) = [dy | s·g] · [W ; A],  W stored (OUT, IN), A stored (R, IN)
    if (!sg16) {
      const OpPart part("pack s g", Device::CUDA);
      pack_bf16(gt.data(), Elem::F32, R, p.scale, N, R, sg, ldd);
    }
    // [W ; A] as one (OUT+R, IN) bf16 operand: in place where the model left R spare rows after a bf16 W
    // (LlamaModel::reserve_lora_rows; A is written there, or was by this pass's forward: a_stacked), else a
    // copy of W with A below it.
    const bool in_place = a_fits_below_w(w, R);
    const int64_t ldw = in_place ? IN : round_up(IN, 8);
    Tensor wa;
    __nv_bfloat16* wap = nullptr;
    if (in_place) {
      wap = static_cast<__nv_bfloat16*>(w.data());
      if (!p.a_stacked) {
        const OpPart part("pack A below W", Device::CUDA);
        pack_bf16(a.data(), Elem::F32, IN, 1.f, R, IN, wap + OUT * ldw, ldw);
      }
    } else {
      wa = Tensor::empty({OUT + R, ldw}, DType::BF16, Device::CUDA);
      wap = bf16_ptr(wa);
      const OpPart part("pack [W ; A]", Device::CUDA);
      pack_bf16(w.data(), elem_of(w), IN, 1.f, OUT, IN, wap, ldw);
      pack_bf16(a.data(), Elem::F32, IN, 1.f, R, IN, wap + OUT * ldw, ldw);
    }
    const OpPart part("dx = [dy | s g] [W ; A]", Device::CUDA);
    GemmArgs g;
    g.M = N; g.N = IN; g.K[0] = OUT + R;
    g.a[0] = bf16_operand(bf16_ptr(pd), ldd, false);
    g.b[0] = bf16_operand(wap, ldw, false);  // stored (OUT+R, IN) = (K, N)
    set_c(g, *p.dx, IN);
    g.beta = p.accumulate_dx ? 1.f : 0.f;  // += : the model sums q, k, v's dx (gate and up's) here
    gemm(g);
  }
  // side_grads (INSTILL_CUDA_NEXT `side_grads`, the model's choice): dA and dB on the side stream, which nothing in the
  // pass waits for until the caller joins it; the blocks they read (pd, x, g, u) not reused before they have run
  const bool su16 = fewer && p.x_packed && p.su_packed && scales_exactly(p.scale);
  const SideWork side(p.side_grads);
  side.uses(pd);
  side.uses(x);
  if (!sg16) side.uses(gt);
  if (!su16) side.uses(u);
  side.uses(*p.da);  // (and what it writes)
  side.uses(*p.db);
  {  // dA (R, IN) = s·gᵀ·x: both operands f32, so TF32 on x as it lies (gemm.h) — a bf16 copy of x
     // made for this one product cost more (1.6 ms a 1B step) than the wider reads. With a bf16 x (bf16
     // activations) the product is bf16 × bf16, g rounded (the CPU keeps g f32: within bf16 tolerance)
    const OpPart part("dA = s g^T x", Device::CUDA);
    const GemmOperand xo = p.x_packed ? bf16_operand(bf16_ptr(x), x.dim(1), false) : operand(x, false);
    // (sg16: s·g from pd, rounded once as bf16(g)·s would be, and alpha 1)
    GemmArgs g = product(R, IN, N, sg16 ? bf16_operand(sg, ldd, true) : operand(gt, true), xo, p.da->data_as<float>(), IN);
    g.alpha = sg16 ? 1.f : p.scale; g.beta = beta;
    gemm(g);
  }
  {  // dB (OUT, R) = s·dyᵀ·u: with `fewer_packs` and su_packed, s·u from the forward's x_packed (alpha 1), rounded
     // once as bf16(u)·s would be (scales_exactly), else u itself (packed by the product)
    const OpPart part("dB = s dy^T u", Device::CUDA);
    GemmArgs g;
    g.M = OUT; g.N = R; g.K[0] = N;
    g.a[0] = bf16_operand(bf16_ptr(pd), ldd, true);  // dy stored (N, OUT) = (K, M)
    g.b[0] = su16 ? bf16_operand(bf16_ptr(x) + IN, x.dim(1), false) : operand(u, false);
    g.alpha = su16 ? 1.f : p.scale; g.beta = beta;
    g.c = p.db->data_as<float>(); g.ldc = R;
    gemm(g);
  }
}

}  // namespace cuda
}  // namespace instill
