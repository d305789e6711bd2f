#include "ops/lora_dropout.h"

#include "ops/backend.h"
#include "ops/check.h"
#include "ops/lora_linear.h"

namespace instill {

namespace {
void need_p(float p) {
  if (!(p >= 0.0f && p < 1.0f)) fail(ErrorCode::Arg, "dropout probability must be in [0, 1), got ", p);
}
// lora_linear takes bf16 activations beside a bf16 weight; lora_dropout does not (yet): f32 only.
void need_f32(const Tensor* t, const char* name) {
  if (t) need_dtype(*t, name, {DType::F32});
}
}  // namespace

void lora_dropout_forward(const LoraDropoutForwardArgs& p) {
  need_p(p.p);
  check_lora_linear_forward(p.linear);
  need_f32(p.linear.x, "x");
  need_f32(p.linear.y, "y");
  run_op(p.linear.x->device(), &Backend::lora_dropout_forward, "lora_dropout_forward", p);
}

void lora_dropout_backward(const LoraDropoutBackwardArgs& p) {
  need_p(p.p);
  check_lora_linear_backward(p.linear);
  need_f32(p.linear.dy, "dy");
  need_f32(p.linear.x, "x");
  need_f32(p.linear.dx, "dx");
  run_op(p.linear.x->device(), &Backend::lora_dropout_backward, "lora_dropout_backward", p);
}

}  // namespace instill
