#include "ops/adamw.h"

#include <cmath>

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

void adamw_step(const AdamwArgs& p) {
  if (p.count < 1 || !p.tensors) fail(ErrorCode::Arg, "adamw needs at least one parameter");
  const Device device = need(p.tensors[0].param, "param").device();
  for (int64_t i = 0; i < p.count; ++i) {
    const AdamwTensors& e = p.tensors[i];
    const Tensor& param = need(e.param, "param");
    for (auto [t, name] : {std::pair<const Tensor*, const char*>{e.param, "param"}, {e.grad, "grad"}, {e.m, "m"}, {e.v, "v"}}) {
      const Tensor& tt = need(t, name);
      need_dtype(tt, name, {DType::F32});
      need_same_device(tt, name, device);
      if (tt.numel() != param.numel()) fail(ErrorCode::Shape, "'", name, "' has ", tt.numel(), " elements, param has ", param.numel());
    }
    for (int64_t j = 0; j < i; ++j)  // a list of a model's trainables: a few hundred, checked once a step
      if (p.tensors[j].param->numel() > 0 && p.tensors[j].param->data() == param.data())
        fail(ErrorCode::Arg, "adamw: parameter ", i, " is parameter ", j, " again (each is updated once)");
  }
  if (!(p.lr >= 0) || !std::isfinite(p.lr)) fail(ErrorCode::Arg, "'lr' must be a finite number >= 0, got ", p.lr);
  if (!(p.beta1 >= 0 && p.beta1 < 1)) fail(ErrorCode::Arg, "'beta1' must be in [0, 1), got ", p.beta1);
  if (!(p.beta2 >= 0 && p.beta2 < 1)) fail(ErrorCode::Arg, "'beta2' must be in [0, 1), got ", p.beta2);
  if (!(p.eps >= 0) || !std::isfinite(p.eps)) fail(ErrorCode::Arg, "'eps' must be a finite number >= 0, got ", p.eps);
  if (!(p.weight_decay >= 0) || !std::isfinite(p.weight_decay)) fail(ErrorCode::Arg, "'weightDecay' must be a finite number >= 0");
  if (p.step < 1) fail(ErrorCode::Arg, "'step' must be >= 1, got ", p.step);
  if (!(p.grad_scale > 0) || !std::isfinite(p.grad_scale)) fail(ErrorCode::Arg, "'gradScale' must be a finite number > 0, got ", p.grad_scale);
  run_op(device, &Backend::adamw_step, "adamw_step", p);
}

double sum_squares(const SumSquaresArgs& p) {
  if (p.count < 1 || !p.tensors) fail(ErrorCode::Arg, "sum_squares needs at least one tensor");
  const Tensor& first = need(p.tensors[0], "tensors[0]");
  for (int64_t i = 0; i < p.count; ++i) {
    const Tensor& t = need(p.tensors[i], "tensors[i]");
    need_dtype(t, "tensors[i]", {DType::F32});
    need_same_device(t, "tensors[i]", first.device());
  }
  return run_op(first.device(), &Backend::sum_squares, "sum_squares", p);
}

}  // namespace instill
