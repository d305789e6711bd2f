// lora_dropout on CUDA (ops/lora_dropout.h): lora_linear's products with the
// low-rank branch fed by dropout(x). The mask is the CPU's, bit for bit: element
// i of x (row-major flat index) is kept iff dropout_hash(seed, i) >= p·2³², so a
// model trained on either device regenerates the same masks from the same seeds.
//
// Forward   xd = x ⊙ mask/(1−p) (scratch), u = xd·Aᵀ, y = [x | s·u]·[W | B]ᵀ + bias
// Backward  g = dy·B;  dx = dy·W, then dx += s·(g·A) ⊙ mask/(1−p);
//           dA = s·gᵀ·xd (xd regenerated), dB = s·dyᵀ·u   (= or += by accumulate)
// The products go through gemm.h (cuBLASLt or the WMMA kernel): operands rounded
// to bf16, f32 accumulation, as lora_linear on CUDA.
#include "cuda/gemm.h"
#include "ops/lora_dropout.h"

namespace instill {
namespace cuda {

namespace {

// dst = src ⊙ mask·mul/(1−p), or dst += that with add. One thread per element
// (grid-stride); the hash is a handful of integer multiplies, cheap next to the load.
__global__ void apply_mask_kernel(const float* src, float* dst, int64_t count, uint64_t threshold, float keep,
                                  uint32_t seed, bool add) {
  pdl_enter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float m = dropout_hash(seed, static_cast<uint64_t>(i)) >= threshold ? keep : 0.0f;
    dst[i] = add ? dst[i] + src[i] * m : src[i] * m;
  }
}

void apply_mask(const Tensor& src, Tensor& dst, float p, uint32_t seed, float mul, bool add) {
  const int64_t count = src.numel();
  if (count == 0) return;
  // Same threshold and keep factor as the CPU (cpu/lora_dropout.cpp), computed on the host.
  const uint64_t threshold = static_cast<uint64_t>(static_cast<double>(p) * 4294967296.0);
  const float keep = mul / (1.0f - p);
  launch("apply_mask_kernel", apply_mask_kernel, grid_1d(count, 256), 256, 0, stream(), src.data_as<float>(),
         dst.data_as<float>(), count, threshold, keep, seed, add);
}

}  // namespace

namespace {
// bf16 activations (ops/lora_dropout.h): the f32 op on f32 copies (gemm.h's widened), the outputs rounded
// back once (narrow_into).
bool bf16(const Tensor* t) { return t && t->dtype() == DType::BF16; }
}  // namespace

void lora_dropout_forward(const LoraDropoutForwardArgs& p) {
  if (bf16(p.linear.x) || bf16(p.linear.y)) {
    const OpPart part("f32 copies (bf16 activations)", Device::CUDA);
    const Tensor x = bf16(p.linear.x) ? widened(*p.linear.x) : *p.linear.x;
    Tensor y = bf16(p.linear.y) ? Tensor::empty(p.linear.y->shape(), DType::F32, Device::CUDA) : *p.linear.y;
    LoraDropoutForwardArgs q = p;
    q.linear.x = &x;
    q.linear.y = &y;
    cuda::lora_dropout_forward(q);
    if (bf16(p.linear.y)) narrow_into(y, *p.linear.y);
    return;
  }
  const auto& l = p.linear;
  const Tensor &x = *l.x, &w = *l.w, &a = *l.a, &b = *l.b;
  const int64_t N = x.dim(0), IN = x.dim(1), R = a.dim(0);
  Tensor xd = Tensor::empty({N, IN}, DType::F32, Device::CUDA);
  apply_mask(x, xd, p.p, p.seed, 1.0f, false);
  gemm(product(N, R, IN, operand(xd, false), operand(a, true), l.u->data_as<float>(), R));  // u = xd·Aᵀ
  gemm(lora_output_product(x, w, *l.u, b, l.scale, l.bias, *l.y));  // y = x·Wᵀ + s·u·Bᵀ + bias
}

void lora_dropout_backward(const LoraDropoutBackwardArgs& p) {
  const auto& pl = p.linear;
  if (bf16(pl.dy) || bf16(pl.x) || bf16(pl.dx)) {
    const OpPart part("f32 copies (bf16 activations)", Device::CUDA);
    const Tensor dy = bf16(pl.dy) ? widened(*pl.dy) : *pl.dy, x = bf16(pl.x) ? widened(*pl.x) : *pl.x;
    Tensor dx;
    if (pl.dx) {
      if (!bf16(pl.dx)) dx = *pl.dx;
      else if (pl.accumulate_dx) dx = widened(*pl.dx);
      else dx = Tensor::empty(pl.dx->shape(), DType::F32, Device::CUDA);
    }
    LoraDropoutBackwardArgs q = p;
    q.linear.dy = &dy;
    q.linear.x = &x;
    q.linear.dx = pl.dx ? &dx : nullptr;
    cuda::lora_dropout_backward(q);
    if (bf16(pl.dx)) narrow_into(dx, *pl.dx);
    return;
  }
  const auto& l = p.linear;
  const Tensor &dy = *l.dy, &x = *l.x, &w = *l.w, &a = *l.a, &b = *l.b, &u = *l.u;
  const int64_t N = x.dim(0), IN = x.dim(1), OUT = w.dim(0), R = a.dim(0);
  Tensor gt = Tensor::empty({N, R}, DType::F32, Device::CUDA);
  gemm(product(N, R, OUT, operand(dy, false), operand(b, false), gt.data_as<float>(), R));  // g = dy·B
  Tensor scratch = Tensor::empty({N, IN}, DType::F32, Device::CUDA);
  if (l.dx) {
    GemmArgs g = product(N, IN, OUT, operand(dy, false), operand(w, false), l.dx->data_as<float>(), IN);
    g.beta = l.accumulate_dx ? 1.f : 0.f;
    gemm(g);                                                                                          // dx (+)= dy·W
    gemm(product(N, IN, R, operand(gt, false), operand(a, false), scratch.data_as<float>(), IN));     // g·A
    apply_mask(scratch, *l.dx, p.p, p.seed, l.scale, true);                                           // dx += s·(g·A)⊙mask
  }
  apply_mask(x, scratch, p.p, p.seed, 1.0f, false);  // xd, regenerated
  lora_weight_grads(gt, scratch, dy, u, l.scale, l.accumulate, *l.da, *l.db);
}

}  // namespace cuda
}  // namespace instill
