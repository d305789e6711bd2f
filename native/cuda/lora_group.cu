// lora_group on CUDA (ops/lora_group.h): a layer's q, k, v (or gate, up) over one packed x and one kept matrix,
// INSTILL_CUDA_NEXT=lora_group in the model (compiled and reviewed, waiting for a GPU run to test and time it).
//
// With bf16/f16 weights, for m members of rank R, S = Σ OUT_i, the kept matrix K (S + m·R, ldk) bf16:
//   rows o_i..o_i+OUT_i = [W_i | 0 … B_i … 0]   (B_i in columns IN + i·R)
//   rows S + i·R..      = [A_i]                  (columns 0..IN)
// Forward   px = [x | s·u_1 | … | s·u_m]  (N, round8(IN + m·R)) bf16: x packed once (lora_linear: once per member)
//           u  = x·[A_1 ; … ; A_m]ᵀ       one product (N, m·R) from px's x and K's A rows (one per member)
//           y_i = px · K[o_i.., :IN+m·R]ᵀ  one product per member; the other members' B columns are zeros, so
//                                           each y_i is lora_linear's y_i (y's own tile holds its low-rank term)
// Backward  pd = [dy_1 | … | dy_m | s·g]   (N, round8(S + m·R)) bf16
//           g  = pd[:, :S] · K[:S, IN:IN+m·R]   one product: K's B columns are block-diagonal, so g_i = dy_i·B_i
//           dx = pd · K[:, :IN]                 one product over K = S + m·R: Σ_i dy_i·W_i + s·g_i·A_i (lora_linear:
//                                               one per member, each reading and writing dx again)
//           dA = s·gᵀ·x                         one product (m·R, IN) reading x once, each member's rows copied
//                                               out (accumulating: one product per member, beta 1)
//           dB = s·dyᵀ·u                        one product (S, m·R) reading dy and u once, each member's diagonal
//                                               block copied out (accumulating: one product per member, beta 1,
//                                               on dy_i, pd's columns, and u_i, u's)
// Every operand is rounded to bf16 exactly as lora_linear rounds it (x, dy, W, A, B, s·u, s·g once each) and the
// zero blocks add exact zeros, so the results are lora_linear's up to the order of f32 sums inside a product.
// With f32 weights (TF32 products, nothing rounded to bf16) the members run as lora_linear, one by one.
#include <string>
#include <vector>

#include "cuda/gemm.h"
#include "ops/lora_group.h"
#include "ops/lora_linear.h"

namespace instill {
namespace cuda {

void lora_linear_forward(const LoraLinearForwardArgs& p);   // lora_linear.cu
void lora_linear_backward(const LoraLinearBackwardArgs& p);

namespace {

struct Layout {
  int m = 0;
  int64_t n = 0, in = 0, r = 0, mr = 0, s = 0;
  int64_t off[kMaxLoraGroup + 1] = {};  // member i's rows of K (and columns of pd): off[i]..off[i+1]
};

Layout layout_of(const Tensor& x, int m, const Tensor* const* w, const Tensor* const* a) {
  Layout l;
  l.m = m;
  l.n = x.dim(0);
  l.in = w[0]->dim(1);  // (x may be a packed buffer, wider than IN)
  l.r = a[0]->dim(0);
  l.mr = m * l.r;
  for (int i = 0; i < m; ++i) l.off[i + 1] = l.off[i] + w[i]->dim(0);
  l.s = l.off[m];
  return l;
}

// K's B and A blocks: member i's B (OUT_i, R) at rows o_i.., columns IN + i·R; its A (R, IN) at rows S + i·R.
void factor_jobs(const Layout& l, const Tensor* const* w, const Tensor* const* a, const Tensor* const* b,
                 __nv_bfloat16* k, int64_t ldk, PackJob* jobs) {
  for (int i = 0; i < l.m; ++i) {
    jobs[2 * i] = PackJob{b[i]->data_as<float>(), l.r, w[i]->dim(0), l.r, k + l.off[i] * ldk + l.in + i * l.r, ldk};
    jobs[2 * i + 1] = PackJob{a[i]->data_as<float>(), l.in, l.r, l.in, k + (l.s + i * l.r) * ldk, ldk};
  }
}

// K's blocks: with w_too the W blocks and the zeros (the whole matrix cleared first), then every B and A block
// unless lora_pack_factors wrote them for this call (factors).
void write_kept(const Layout& l, const Tensor* const* w, const Tensor* const* a, const Tensor* const* b,
                __nv_bfloat16* k, int64_t ldk, bool w_too, bool factors = true) {
  if (w_too) {
    const OpPart part("copy W into the group's kept matrix", Device::CUDA);
    fill_bytes(k, Device::CUDA, 0, static_cast<size_t>((l.s + l.mr) * ldk) * sizeof(__nv_bfloat16));
    for (int i = 0; i < l.m; ++i)
      pack_bf16(w[i]->data(), elem_of(*w[i]), l.in, 1.f, w[i]->dim(0), l.in, k + l.off[i] * ldk, ldk);
  }
  if (!factors) return;
  const OpPart part("pack B and A into the group's kept matrix (one launch)", Device::CUDA);
  PackJob jobs[2 * kMaxLoraGroup];
  factor_jobs(l, w, a, b, k, ldk, jobs);
  static_assert(2 * kMaxLoraGroup <= kMaxPackJobs, "a group's B and A blocks in one pack_bf16_jobs launch");
  pack_bf16_jobs(jobs, 2 * l.m);
}

// gemm(), or zeros where the product's K is empty (beta 0: C is written, never read)
void gemm_or_zero(const GemmArgs& g, Tensor* c_tensor = nullptr) {
  if (g.K[0] + g.K[1] > 0) return gemm(g);
  if (g.M <= 0 || g.N <= 0) return;
  if (c_tensor && g.ldc == c_tensor->dim(1)) {
    fill_bytes(c_tensor->data(), Device::CUDA, 0, c_tensor->nbytes());
    return;
  }
  fail(ErrorCode::Internal, "lora_group: an empty product into a strided C");
}

}  // namespace

// The B and A blocks a forward given kept writes (write_kept), for lora_pack_factors (lora_pack.cu).
void group_factor_jobs(const LoraGroupForwardArgs& p, std::vector<PackJob>& jobs) {
  const Layout l = layout_of(*p.w[0], p.m, p.w, p.a);  // (the layout's N is not read here)
  PackJob mine[2 * kMaxLoraGroup];
  factor_jobs(l, p.w, p.a, p.b, bf16_ptr(*p.kept), p.kept->dim(1), mine);
  jobs.insert(jobs.end(), mine, mine + 2 * l.m);
}

void lora_group_forward(const LoraGroupForwardArgs& p) {
  const Tensor& x = p.x ? *p.x : *p.x_packed;  // x_packed: x already in px's first IN columns (the norm wrote it)
  const Layout l = layout_of(x, p.m, p.w, p.a);
  if (elem_of(*p.w[0]) == Elem::F32) {  // TF32 products: the members one by one, each u copied into its columns
    Tensor u = Tensor::empty({l.n, l.r}, DType::F32, Device::CUDA);
    for (int i = 0; i < p.m; ++i) {
      cuda::lora_linear_forward(LoraLinearForwardArgs{p.x, p.w[i], p.bias[i], p.a[i], p.b[i], p.scale, p.y[i], &u});
      pack_f32(u.data(), Elem::F32, l.r, 1.f, l.n, l.r, p.u->data_as<float>() + i * l.r, l.mr);
    }
    return;
  }
  const int64_t ldk = p.kept ? p.kept->dim(1) : round_up(l.in + l.mr, 8);
  Tensor own = p.kept ? Tensor() : Tensor::empty({l.s + l.mr, ldk}, DType::BF16, Device::CUDA);
  __nv_bfloat16* k = p.kept ? bf16_ptr(*p.kept) : bf16_ptr(own);
  // (factors_packed: lora_pack_factors wrote the B and A blocks, group_factor_jobs below; the front checked kept_has_w)
  write_kept(l, p.w, p.a, p.b, k, ldk, !(p.kept && p.kept_has_w), !p.factors_packed);
  if (l.n == 0) return;  // (the kept matrix is written all the same, as the caller was promised)
  const int64_t ldx = p.x_packed ? p.x_packed->dim(1) : round_up(l.in + l.mr, 8);
  Tensor px = p.x_packed ? *p.x_packed : Tensor::empty({l.n, ldx}, DType::BF16, Device::CUDA);  // [x | s·u_1 | … | s·u_m]
  if (!p.x_packed) {
    const OpPart part("pack x", Device::CUDA);
    pack_bf16(x.data(), elem_of(x), l.in, 1.f, l.n, l.in, bf16_ptr(px), ldx);
  }
  {  // u (N, m·R) = x · [A_1 ; … ; A_m]ᵀ, K's A rows stored (m·R, IN) = (N, K)
    const OpPart part("u = x [A_1 ; ...]^T, pack s u", Device::CUDA);
    GemmArgs g;
    g.M = l.n; g.N = l.mr; g.K[0] = l.in;
    g.a[0] = bf16_operand(bf16_ptr(px), ldx, false);
    g.b[0] = bf16_operand(k + l.s * ldk, ldk, true);
    if (next_kernels(Next::FewerPacks) && p.u_unused && l.in > 0 && scales_exactly(p.scale)) {
      g.alpha = p.scale;  // (as lora_linear.cu's: s·u into px in bf16 by the product, u left unwritten)
      g.c16 = bf16_ptr(px) + l.in; g.ldc = ldx;
      gemm(g);
    } else {
      g.c = p.u->data_as<float>(); g.ldc = l.mr;
      gemm_or_zero(g, p.u);
      pack_bf16(p.u->data(), Elem::F32, l.mr, p.scale, l.n, l.mr, bf16_ptr(px) + l.in, ldx);
    }
  }
  // y_i (N, OUT_i) = [x | s·u] · K[o_i..]ᵀ + bias_i, K's rows stored (OUT_i, IN + m·R)
  for (int i = 0; i < p.m; ++i) {
    // (the profile names each product's output width: how the narrow members' products, k and v's, fill the GPU)
    const OpPart part(op_profile_enabled() ? ("y_i = [x | s u] [W_i | B]^T, OUT " + std::to_string(p.w[i]->dim(0))).c_str()
                                           : "", Device::CUDA);
    GemmArgs g;
    g.M = l.n; g.N = p.w[i]->dim(0); g.K[0] = l.in + l.mr;
    g.a[0] = bf16_operand(bf16_ptr(px), ldx, false);
    g.b[0] = bf16_operand(k + l.off[i] * ldk, ldk, true);
    g.bias = p.bias[i] ? p.bias[i]->data_as<float>() : nullptr;
    set_c(g, *p.y[i], g.N);
    gemm(g);
  }
}

void lora_group_backward(const LoraGroupBackwardArgs& p) {
  const Tensor& x = p.x ? *p.x : *p.x_packed;  // x_packed: x in its first IN columns, read in place by dA's product
  const GemmOperand xo = p.x_packed ? bf16_operand(bf16_ptr(x), x.dim(1), false) : operand(x, false);
  const Layout l = layout_of(x, p.m, p.w, p.a);
  const float beta = p.accumulate ? 1.f : 0.f;
  if (elem_of(*p.w[0]) == Elem::F32) {  // the members one by one (each u copied out of its columns), dx summed
    Tensor u = Tensor::empty({l.n, l.r}, DType::F32, Device::CUDA);
    for (int i = 0; i < p.m; ++i) {
      pack_f32(p.u->data_as<float>() + i * l.r, Elem::F32, l.mr, 1.f, l.n, l.r, u.data_as<float>(), l.r);
      cuda::lora_linear_backward(LoraLinearBackwardArgs{p.dy[i], p.x, p.w[i], p.a[i], p.b[i], &u, p.scale, p.dx,
                                                        p.da[i], p.db[i], p.accumulate, p.dx && (i > 0 || p.accumulate_dx)});
    }
    return;
  }
  if (l.n == 0) {  // empty sums: dA, dB unchanged (+=) or zero (=); dx has no rows
    if (!p.accumulate) {
      for (int i = 0; i < p.m; ++i) {
        fill_bytes(p.da[i]->data(), Device::CUDA, 0, p.da[i]->nbytes());
        fill_bytes(p.db[i]->data(), Device::CUDA, 0, p.db[i]->nbytes());
      }
    }
    return;
  }
  const int64_t ldk = p.kept ? p.kept->dim(1) : round_up(l.in + l.mr, 8);
  Tensor own;
  const __nv_bfloat16* k = nullptr;
  if (p.kept) {
    k = bf16_ptr(*p.kept);
  } else {
    own = Tensor::empty({l.s + l.mr, ldk}, DType::BF16, Device::CUDA);
    write_kept(l, p.w, p.a, p.b, bf16_ptr(own), ldk, true);
    k = bf16_ptr(own);
  }
  // [dy_1 | … | dy_m | s·g]: the caller's, where its dy came packed (swiglu_backward's dgu), else packed here
  const int64_t ldd = p.dy_packed ? p.dy_packed->dim(1) : round_up(l.s + l.mr, 8);
  Tensor pd = p.dy_packed ? *p.dy_packed : Tensor::empty({l.n, ldd}, DType::BF16, Device::CUDA);
  if (!p.dy_packed) {
    const OpPart part("pack dy", Device::CUDA);
    for (int i = 0; i < p.m; ++i) {
      const Tensor& dy = *p.dy[i];
      pack_bf16(dy.data(), elem_of(dy), dy.dim(1), 1.f, l.n, dy.dim(1), bf16_ptr(pd) + l.off[i], ldd);
    }
  }
  // INSTILL_CUDA_NEXT `fewer_packs` (as lora_linear.cu's backward): g's product writes s·g into pd's columns S..
  // in bf16 itself, and dA reads it there, where that is dA's own arithmetic (a bf16 x, s a power of two)
  const bool fewer = next_kernels(Next::FewerPacks);
  const bool sg16 = fewer && l.s > 0 && elem_of(x) != Elem::F32 && scales_exactly(p.scale);
  __nv_bfloat16* const sg = bf16_ptr(pd) + l.s;  // s·g's columns of pd
  Tensor gt = sg16 ? Tensor() : Tensor::empty({l.n, l.mr}, DType::F32, Device::CUDA);  // g_i in columns i·R..
  {  // g (N, m·R) = dy · blockdiag(B_1, …, B_m): K's B columns, stored (S, m·R) = (K, N)
    const OpPart part(sg16 ? "g = dy [B] (block-diagonal), s g into pd" : "g = dy [B] (block-diagonal)", Device::CUDA);
    GemmArgs g;
    g.M = l.n; g.N = l.mr; g.K[0] = l.s;
    g.a[0] = bf16_operand(bf16_ptr(pd), ldd, false);
    g.b[0] = bf16_operand(k + l.in, ldk, false);
    if (sg16) {
      g.alpha = p.scale;
      g.c16 = sg; g.ldc = ldd;
      gemm(g);
    } else {
      g.c = gt.data_as<float>(); g.ldc = l.mr;
      gemm_or_zero(g, &gt);
    }
  }
  if (!sg16 && p.dx) {  // (only the dx product reads s·g from pd: dA reads g in f32)
    const OpPart part("pack s g", Device::CUDA);
    pack_bf16(gt.data(), Elem::F32, l.mr, p.scale, l.n, l.mr, sg, ldd);
  }
  // dA's gᵀ operand (columns i·R.. of it for member i): s·g in pd with alpha 1, or g in f32 with alpha s
  const auto g_cols = [&](int64_t c) {
    return sg16 ? bf16_operand(sg + c, ldd, true) : strided_operand(gt.data_as<float>() + c, Elem::F32, l.mr, true);
  };
  const float da_alpha = sg16 ? 1.f : p.scale;
  // dB's u operand (columns c.. of it): with `fewer_packs` and su_packed, s·u in the forward's x_packed with alpha 1
  // (rounded once as bf16(u)·s would be), else u in f32 with alpha s
  const bool su16 = fewer && p.x_packed && p.su_packed && scales_exactly(p.scale);
  const auto u_cols = [&](int64_t c) {
    return su16 ? bf16_operand(bf16_ptr(x) + l.in + c, x.dim(1), false)
                : strided_operand(p.u->data_as<float>() + c, Elem::F32, l.mr, false);
  };
  const float db_alpha = su16 ? 1.f : p.scale;
  if (p.dx) {  // dx (N, IN) = [dy | s·g] · [W_1 ; … ; W_m ; A_1 ; … ; A_m]: K's first IN columns, stored (S + m·R, IN) = (K, N)
    const OpPart part("dx = [dy | s g] [W ; A]", Device::CUDA);
    GemmArgs g;
    g.M = l.n; g.N = l.in; g.K[0] = l.s + l.mr;
    g.a[0] = bf16_operand(bf16_ptr(pd), ldd, false);
    g.b[0] = bf16_operand(k, ldk, false);
    set_c(g, *p.dx, l.in);
    g.beta = p.accumulate_dx ? 1.f : 0.f;
    gemm(g);
  }
  // side_grads (INSTILL_CUDA_NEXT `side_grads`, the model's choice): dA and dB on the side stream, which nothing in the
  // pass waits for until the caller joins it; the blocks they read (pd, x, g, u) not reused before they have run
  const SideWork side(p.side_grads);
  side.uses(pd);
  side.uses(x);
  if (!sg16) side.uses(gt);
  if (!su16) side.uses(*p.u);
  for (int i = 0; i < p.m; ++i) {  // (and what it writes)
    side.uses(*p.da[i]);
    side.uses(*p.db[i]);
  }
  if (!p.accumulate) {  // dA (m·R, IN) = s·gᵀ·x, one product reading x once (x as it lies: f32 TF32, or bf16, as
                        // lora_linear's), then each member's R rows copied out
    const OpPart part("dA = s g^T x (every member), copied out", Device::CUDA);
    Tensor da = Tensor::empty({l.mr, l.in}, DType::F32, Device::CUDA);
    GemmArgs g = product(l.mr, l.in, l.n, g_cols(0), xo, da.data_as<float>(), l.in);
    g.alpha = da_alpha;
    gemm(g);
    PackJobF32 jobs[kMaxLoraGroup];
    for (int i = 0; i < p.m; ++i)
      jobs[i] = PackJobF32{da.data_as<float>() + i * l.r * l.in, l.in, l.r, l.in, p.da[i]->data_as<float>(), l.in};
    pack_f32_jobs(jobs, p.m);
  } else {
    for (int i = 0; i < p.m; ++i) {  // dA_i += s·g_iᵀ·x, one product per member (beta 1 on its own tensor)
      const OpPart part("dA = s g^T x", Device::CUDA);
      GemmArgs g = product(l.r, l.in, l.n, g_cols(i * l.r), xo, p.da[i]->data_as<float>(), l.in);
      g.alpha = da_alpha; g.beta = beta;
      gemm(g);
    }
  }
  if (!p.accumulate) {  // dB (S, m·R) = s·dyᵀ·u over every member's dy (read once, as per member) and u, then
                        // each member's diagonal block (OUT_i, R) copied out: the other blocks are arithmetic the
                        // narrow product has to spare (it waits on reading dy), one launch instead of m
    const OpPart part("dB = s dy^T u (every member), copied out", Device::CUDA);
    Tensor db = Tensor::empty({l.s, l.mr}, DType::F32, Device::CUDA);
    GemmArgs g;
    g.M = l.s; g.N = l.mr; g.K[0] = l.n;
    g.a[0] = bf16_operand(bf16_ptr(pd), ldd, true);  // dy stored (N, S) = (K, M)
    g.b[0] = u_cols(0);
    g.alpha = db_alpha;
    g.c = db.data_as<float>(); g.ldc = l.mr;
    gemm(g);
    PackJobF32 jobs[kMaxLoraGroup];
    for (int i = 0; i < p.m; ++i) {
      jobs[i] = PackJobF32{db.data_as<float>() + l.off[i] * l.mr + i * l.r, l.mr, p.w[i]->dim(0), l.r,
                           p.db[i]->data_as<float>(), l.r};
    }
    pack_f32_jobs(jobs, p.m);
  } else {
    for (int i = 0; i < p.m; ++i) {  // dB_i (OUT_i, R) += s·dy_iᵀ·u_i: dy_i from pd, u_i u's columns
      const OpPart part("dB = s dy^T u", Device::CUDA);
      GemmArgs g;
      g.M = p.w[i]->dim(0); g.N = l.r; g.K[0] = l.n;
      g.a[0] = bf16_operand(bf16_ptr(pd) + l.off[i], ldd, true);  // dy_i stored (N, OUT_i) = (K, M)
      g.b[0] = u_cols(i * l.r);
      g.alpha = db_alpha; g.beta = beta;
      g.c = p.db[i]->data_as<float>(); g.ldc = l.r;
      gemm(g);
    }
  }
}

}  // namespace cuda
}  // namespace instill
