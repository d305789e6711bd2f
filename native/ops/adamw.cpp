#include "ops/adamw.h"

#include <cmath>

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

void adamw_step(const AdamwArgs& p) {
  const Tensor& param = need(p.param, "param");
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{p.param, "param"}, {p.grad, "grad"}, {p.m, "m"}, {p.v, "v"}}) {
    const Tensor& tt = need(t, name);
    need_dtype(tt, name, {DType::F32});
    need_same_device(tt, name, param.device());
    if (tt.numel() != param.numel()) fail(ErrorCode::Shape, "'", name, "' has ", tt.numel(), " elements, param has ", param.numel());
  }
  if (!(p.lr >= 0) || !std::isfinite(p.lr)) fail(ErrorCode::Arg, "'lr' must be a finite number >= 0, got ", p.lr);
  if (!(p.beta1 >= 0 && p.beta1 < 1)) fail(ErrorCode::Arg, "'beta1' must be in [0, 1), got ", p.beta1);
  if (!(p.beta2 >= 0 && p.beta2 < 1)) fail(ErrorCode::Arg, "'beta2' must be in [0, 1), got ", p.beta2);
  if (!(p.eps >= 0) || !std::isfinite(p.eps)) fail(ErrorCode::Arg, "'eps' must be a finite number >= 0, got ", p.eps);
  if (!(p.weight_decay >= 0) || !std::isfinite(p.weight_decay)) fail(ErrorCode::Arg, "'weightDecay' must be a finite number >= 0");
  if (p.step < 1) fail(ErrorCode::Arg, "'step' must be >= 1, got ", p.step);
  const Backend& be = backend_for(param.device());
  if (!be.adamw_step) fail(ErrorCode::Unsupported, "adamw is not implemented on ", be.name);
  be.adamw_step(p);
}

}  // namespace instill
