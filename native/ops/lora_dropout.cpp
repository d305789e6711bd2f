#include "ops/lora_dropout.h"

#include "ops/backend.h"
#include "runtime/op_profile.h"
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
  const Backend& be = backend_for(p.linear.x->device());
  if (!be.lora_dropout_forward) fail(ErrorCode::Unsupported, "lora_dropout forward is not implemented on ", be.name);
  const OpScope scope("lora_dropout_forward", be.device);
  be.lora_dropout_forward(p);
}

void lora_dropout_backward(const LoraDropoutBackwardArgs& p) {
  need_p(p.p);
  check_lora_linear_backward(p.linear);
  const Backend& be = backend_for(p.linear.x->device());
  if (!be.lora_dropout_backward) fail(ErrorCode::Unsupported, "lora_dropout backward is not implemented on ", be.name);
  const OpScope scope("lora_dropout_backward", be.device);
  be.lora_dropout_backward(p);
}

}  // namespace instill
