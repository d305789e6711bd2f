#include "ops/lora_dropout.h"

#include "ops/backend.h"
#include "ops/check.h"
#include "ops/lora_linear.h"

namespace instill {

namespace {
void need_p(float p) {
  if (!(p >= 0.0f && p < 1.0f)) fail(ErrorCode::Arg, "dropout probability must be in [0, 1), got ", p);
}
}  // namespace

void lora_dropout_forward(const LoraDropoutForwardArgs& p) {
  need_p(p.p);
  check_lora_linear_forward(p.linear);
  run_op(p.linear.x->device(), &Backend::lora_dropout_forward, "lora_dropout_forward", p);
}

void lora_dropout_backward(const LoraDropoutBackwardArgs& p) {
  need_p(p.p);
  check_lora_linear_backward(p.linear);
  run_op(p.linear.x->device(), &Backend::lora_dropout_backward, "lora_dropout_backward", p);
}

}  // namespace instill
