#include "ops/lora_dropout.h"

#include "ops/add.h"
#include "ops/backend.h"
#include "ops/check.h"
#include "ops/lora_linear.h"

namespace instill {

namespace {
void need_p(float p) {
  if (!(p >= 0.0f && p < 1.0f)) fail(ErrorCode::Arg, "dropout probability must be in [0, 1), got ", p);
}
void need_plain_x(const void* x_packed) {  // dropout draws its mask over x itself
  if (x_packed) fail(ErrorCode::Unsupported, "lora_dropout takes x, not x_packed");
}
}  // namespace

void lora_dropout_forward(const LoraDropoutForwardArgs& p) {
  need_p(p.p);
  need_plain_x(p.linear.x_packed);
  check_lora_linear_forward(p.linear);
  if (!p.linear.residual) return run_op(p.linear.x->device(), &Backend::lora_dropout_forward, "lora_dropout_forward", p);
  // The residual (lora_linear's) is added after, by the add op: the backends' dropout kernels never see it.
  LoraDropoutForwardArgs q = p;
  q.linear.residual = nullptr;
  run_op(p.linear.x->device(), &Backend::lora_dropout_forward, "lora_dropout_forward", q);
  add(AddArgs{p.linear.y, p.linear.residual, p.linear.y});
}

void lora_dropout_backward(const LoraDropoutBackwardArgs& p) {
  need_p(p.p);
  need_plain_x(p.linear.x_packed);
  check_lora_linear_backward(p.linear);
  run_op(p.linear.x->device(), &Backend::lora_dropout_backward, "lora_dropout_backward", p);
}

}  // namespace instill
