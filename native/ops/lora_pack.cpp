#include "ops/lora_pack.h"

#include <string>

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

namespace {

// One factor pair of an entry against its weight: w (OUT, IN) bf16/f16, a (R, IN) f32, b (OUT, R) f32; R.
int64_t check_factors(const std::string& at, const Tensor* w, const Tensor* a, const Tensor* b, Device device) {
  const std::string wn = at + " w", an = at + " a", bn = at + " b";
  const Tensor& wt = need(w, wn.c_str());
  const Tensor& at_ = need(a, an.c_str());
  const Tensor& bt = need(b, bn.c_str());
  need_dtype(wt, wn.c_str(), {DType::BF16, DType::F16});
  need_dtype(at_, an.c_str(), {DType::F32});
  need_dtype(bt, bn.c_str(), {DType::F32});
  need_ndim(wt, wn.c_str(), 2);
  need_ndim(at_, an.c_str(), 2);
  const int64_t out = wt.dim(0), in = wt.dim(1), r = at_.dim(0);
  need_shape(at_, an.c_str(), {r, in}, "(r, in) with in = w's columns");
  need_shape(bt, bn.c_str(), {out, r}, "(out, r) with out = w's rows and r = a's rows");
  need_same_device(wt, wn.c_str(), device);
  need_same_device(at_, an.c_str(), device);
  need_same_device(bt, bn.c_str(), device);
  return r;
}

Device device_of(const LoraPackFactorsArgs& p) {
  if (!p.linears.empty() && p.linears[0] && p.linears[0]->w) return p.linears[0]->w->device();
  if (!p.groups.empty() && p.groups[0] && p.groups[0]->w[0]) return p.groups[0]->w[0]->device();
  fail(ErrorCode::Arg, "lora_pack_factors: the first entry has no weight 'w'");
}

}  // namespace

void lora_pack_factors(const LoraPackFactorsArgs& p) {
  if (p.linears.empty() && p.groups.empty()) return;
  const Device device = device_of(p);
  for (size_t k = 0; k < p.linears.size(); ++k) {
    const std::string at = "linears[" + std::to_string(k) + "]";
    if (!p.linears[k]) fail(ErrorCode::Arg, "lora_pack_factors: ", at, " is null");
    const LoraLinearForwardArgs& l = *p.linears[k];
    const int64_t r = check_factors(at, l.w, l.a, l.b, device);
    if (!l.wb || !l.wb_has_w) fail(ErrorCode::Arg, "lora_pack_factors: ", at, " needs its kept 'wb' with W in it (wb_has_w)");
    const std::string wbn = at + " wb";
    need_packed(*l.wb, wbn.c_str(), l.w->dim(0), "out", l.w->dim(1) + r, "in + r", true, device);
  }
  for (size_t k = 0; k < p.groups.size(); ++k) {
    const std::string at = "groups[" + std::to_string(k) + "]";
    if (!p.groups[k]) fail(ErrorCode::Arg, "lora_pack_factors: ", at, " is null");
    const LoraGroupForwardArgs& g = *p.groups[k];
    if (g.m < 1 || g.m > kMaxLoraGroup) fail(ErrorCode::Arg, "lora_pack_factors: ", at, " has ", g.m, " members (1 to ", kMaxLoraGroup, ")");
    int64_t r = 0, sum_out = 0;
    for (int i = 0; i < g.m; ++i) {
      const std::string mi = at + " member " + std::to_string(i);
      const int64_t ri = check_factors(mi, g.w[i], g.a[i], g.b[i], device);
      if (i > 0 && (ri != r || g.w[i]->dim(1) != g.w[0]->dim(1)))
        fail(ErrorCode::Shape, "lora_pack_factors: ", mi, " has another rank or input width than member 0");
      r = ri;
      sum_out += g.w[i]->dim(0);
    }
    if (!g.kept || !g.kept_has_w) fail(ErrorCode::Arg, "lora_pack_factors: ", at, " needs its 'kept' matrix with W in it (kept_has_w)");
    const std::string kn = at + " kept";
    need_packed(*g.kept, kn.c_str(), sum_out + g.m * r, "sum of out + m·r", g.w[0]->dim(1) + g.m * r, "in + m·r", true, device);
  }
  run_op(device, &Backend::lora_pack_factors, "lora_pack_factors", p);
}

}  // namespace instill
