// Bindings of the public kernels (src/kernels.ts validates options first and
// calls these positionally). Kernels run synchronously on the calling thread
// plus the engine's pool: they are building blocks for people who time them,
// and a Promise per call would only add overhead to what they measure.
#include <cmath>

#include "common.h"
#include "ops/cross_entropy.h"
#include "ops/lora_linear.h"
#include "ops/matmul.h"

namespace instill {
namespace binding {
namespace {

int32_t need_int32(const Napi::Value& v, const char* name) {
  double x = need_number(v, name);
  if (x != std::floor(x) || x < -2147483648.0 || x > 2147483647.0) {
    fail(ErrorCode::Arg, "'", name, "' must be a 32-bit integer, got ", x);
  }
  return static_cast<int32_t>(x);
}

// An output given by the caller must not share memory with an input (the kernels read
// inputs while writing outputs): E_ARG naming both.
void need_no_alias(const Tensor* out, const char* out_name, std::initializer_list<std::pair<const Tensor*, const char*>> ins) {
  if (!out) return;
  for (auto [t, name] : ins)
    if (t && t->defined() && t->data() == out->data()) fail(ErrorCode::Arg, "'", out_name, "' shares memory with input '", name, "'");
}

// matmul(a, b, transA, transB, out | null) -> c (out itself when given)
Napi::Value matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 4, "matmul");
    const Tensor* a = unwrap_tensor(env, info[0], "a");
    const Tensor* b = unwrap_tensor(env, info[1], "b");
    const bool ta = need_bool(info[2], "transA"), tb = need_bool(info[3], "transB");
    const Tensor* out = info.Length() > 4 ? unwrap_tensor(env, info[4], "out", true) : nullptr;
    if (out) {
      instill::matmul(MatmulArgs{a, b, ta, tb, const_cast<Tensor*>(out)});
      return info[4];
    }
    Tensor c = Tensor::empty(matmul_output_shape(*a, *b, ta, tb), DType::F32, a->device());
    instill::matmul(MatmulArgs{a, b, ta, tb, &c});
    return wrap_tensor(env, std::move(c));
  });
}

// loraLinear(x, w, bias | null, a, b, scale, yOut?, uOut?, residual?) -> { y, u } (the given tensors when passed)
Napi::Value lora_linear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 6, "loraLinear");
    const Tensor* x = unwrap_tensor(env, info[0], "x");
    const Tensor* w = unwrap_tensor(env, info[1], "w");
    const Tensor* bias = unwrap_tensor(env, info[2], "bias", true);
    const Tensor* a = unwrap_tensor(env, info[3], "a");
    const Tensor* b = unwrap_tensor(env, info[4], "b");
    const float scale = static_cast<float>(need_number(info[5], "scale"));
    if (x->ndim() != 2 || w->ndim() != 2 || a->ndim() != 2) {
      // Let the op's checks produce the message (they name the argument and its expected shape).
      Tensor none;
      lora_linear_forward(LoraLinearForwardArgs{x, w, bias, a, b, scale, &none, &none});
    }
    // Outputs: the given tensors (yOut, uOut: checked by the op like any output), else new ones.
    const Tensor* y_out = info.Length() > 6 ? unwrap_tensor(env, info[6], "out.y", true) : nullptr;
    const Tensor* u_out = info.Length() > 7 ? unwrap_tensor(env, info[7], "out.u", true) : nullptr;
    for (const auto& [o, on] : {std::pair{y_out, "out.y"}, {u_out, "out.u"}})
      need_no_alias(o, on, {{x, "x"}, {w, "w"}, {bias, "bias"}, {a, "a"}, {b, "b"}});
    if (y_out && u_out && y_out->data() == u_out->data()) fail(ErrorCode::Arg, "'out.y' and 'out.u' share memory");
    const Tensor* residual = info.Length() > 8 ? unwrap_tensor(env, info[8], "residual", true) : nullptr;
    if (residual && u_out && residual->data() == u_out->data()) fail(ErrorCode::Arg, "'residual' and 'out.u' share memory");
    Tensor y = y_out ? *y_out : Tensor::empty({x->dim(0), w->dim(0)}, DType::F32, x->device());
    Tensor u = u_out ? *u_out : Tensor::empty({x->dim(0), a->dim(0)}, DType::F32, x->device());
    LoraLinearForwardArgs args{x, w, bias, a, b, scale, &y, &u};
    args.residual = residual;
    lora_linear_forward(args);
    Napi::Object out = Napi::Object::New(env);
    out.Set("y", y_out ? info[6] : Napi::Value(wrap_tensor(env, std::move(y))));
    out.Set("u", u_out ? info[7] : Napi::Value(wrap_tensor(env, std::move(u))));
    return out;
  });
}

// loraLinearBackward(dy, x, w, a, b, u, scale, needDx, dxOut?, daOut?, dbOut?, accumulate?, accumulateDx?)
//   -> { dx | null, da, db }
Napi::Value lora_linear_backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 8, "loraLinearBackward");
    const Tensor* dy = unwrap_tensor(env, info[0], "dy");
    const Tensor* x = unwrap_tensor(env, info[1], "x");
    const Tensor* w = unwrap_tensor(env, info[2], "w");
    const Tensor* a = unwrap_tensor(env, info[3], "a");
    const Tensor* b = unwrap_tensor(env, info[4], "b");
    const Tensor* u = unwrap_tensor(env, info[5], "u");
    const float scale = static_cast<float>(need_number(info[6], "scale"));
    const bool need_dx = need_bool(info[7], "needDx");
    if (x->ndim() != 2 || w->ndim() != 2 || a->ndim() != 2) {
      Tensor none;
      lora_linear_backward(LoraLinearBackwardArgs{dy, x, w, a, b, u, scale, nullptr, &none, &none, false});
    }
    const Tensor* dx_out = info.Length() > 8 ? unwrap_tensor(env, info[8], "out.dx", true) : nullptr;
    const Tensor* da_out = info.Length() > 9 ? unwrap_tensor(env, info[9], "out.da", true) : nullptr;
    const Tensor* db_out = info.Length() > 10 ? unwrap_tensor(env, info[10], "out.db", true) : nullptr;
    const bool accumulate = info.Length() > 11 && need_bool(info[11], "accumulate");
    if (accumulate && (!da_out || !db_out)) fail(ErrorCode::Arg, "accumulate adds into out.da and out.db: pass both");
    const bool accumulate_dx = info.Length() > 12 && need_bool(info[12], "accumulateInputGrad");
    if (accumulate_dx && !dx_out) fail(ErrorCode::Arg, "accumulateInputGrad adds into out.dx: pass it");
    if (dx_out && !need_dx) fail(ErrorCode::Arg, "out.dx given with needInputGrad false");
    for (const auto& [o, on] : {std::pair{dx_out, "out.dx"}, {da_out, "out.da"}, {db_out, "out.db"}})
      need_no_alias(o, on, {{dy, "dy"}, {x, "x"}, {w, "w"}, {a, "a"}, {b, "b"}, {u, "u"}});
    Tensor dx = need_dx ? (dx_out ? *dx_out : Tensor::empty({x->dim(0), x->dim(1)}, DType::F32, x->device())) : Tensor();
    Tensor da = da_out ? *da_out : Tensor::empty({a->dim(0), a->dim(1)}, DType::F32, x->device());
    Tensor db = db_out ? *db_out : Tensor::empty({w->dim(0), a->dim(0)}, DType::F32, x->device());
    lora_linear_backward(
        LoraLinearBackwardArgs{dy, x, w, a, b, u, scale, need_dx ? &dx : nullptr, &da, &db, accumulate, accumulate_dx});
    Napi::Object out = Napi::Object::New(env);
    out.Set("dx", !need_dx ? env.Null() : dx_out ? info[8] : Napi::Value(wrap_tensor(env, std::move(dx))));
    out.Set("da", da_out ? info[9] : Napi::Value(wrap_tensor(env, std::move(da))));
    out.Set("db", db_out ? info[10] : Napi::Value(wrap_tensor(env, std::move(db))));
    return out;
  });
}

// maskedCrossEntropy(logits, targets, ignoreIndex, normalizer, needGrad) -> { loss, count, dlogits | null }
Napi::Value masked_cross_entropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 5, "maskedCrossEntropy");
    const Tensor* logits = unwrap_tensor(env, info[0], "logits");
    const Tensor* targets = unwrap_tensor(env, info[1], "targets");
    const int32_t ignore = need_int32(info[2], "ignoreIndex");
    const double normalizer = need_number(info[3], "normalizer");
    const bool need_grad = need_bool(info[4], "needGrad");
    Tensor dlogits;
    if (need_grad) {
      if (logits->ndim() != 2) {
        instill::masked_cross_entropy(MaskedCrossEntropyArgs{logits, targets, ignore, normalizer, nullptr});
      }
      dlogits = Tensor::empty(logits->shape(), DType::F32, logits->device());
    }
    CrossEntropyResult r = instill::masked_cross_entropy(
        MaskedCrossEntropyArgs{logits, targets, ignore, normalizer, need_grad ? &dlogits : nullptr});
    Napi::Object out = Napi::Object::New(env);
    out.Set("loss", Napi::Number::New(env, r.loss));
    out.Set("count", Napi::Number::New(env, static_cast<double>(r.count)));
    out.Set("dlogits", need_grad ? Napi::Value(wrap_tensor(env, std::move(dlogits))) : env.Null());
    return out;
  });
}

// linearCrossEntropy(h, w, targets, ignoreIndex, normalizer, needInputGrad, needWeightGrad, chunkRows)
//   -> { loss, count, dh | null, dw | null }
Napi::Value linear_cross_entropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 8, "linearCrossEntropy");
    const Tensor* h = unwrap_tensor(env, info[0], "h");
    const Tensor* w = unwrap_tensor(env, info[1], "w");
    const Tensor* targets = unwrap_tensor(env, info[2], "targets");
    const int32_t ignore = need_int32(info[3], "ignoreIndex");
    const double normalizer = need_number(info[4], "normalizer");
    const bool need_dh = need_bool(info[5], "needInputGrad");
    const bool need_dw = need_bool(info[6], "needWeightGrad");
    const double chunk_rows = need_number(info[7], "chunkRows");
    if (chunk_rows != std::floor(chunk_rows) || chunk_rows < 0 || chunk_rows > 1e15) {
      fail(ErrorCode::Arg, "'chunkRows' must be a non-negative integer (0 picks it from memory), got ", chunk_rows);
    }
    LinearCrossEntropyArgs args{h,       w,       targets, ignore, normalizer, nullptr, nullptr, false,
                                static_cast<int64_t>(chunk_rows)};
    if (h->ndim() != 2 || w->ndim() != 2) instill::linear_cross_entropy(args);  // reports the shape error
    Tensor dh = need_dh ? Tensor::empty(h->shape(), DType::F32, h->device()) : Tensor();
    Tensor dw = need_dw ? Tensor::empty(w->shape(), DType::F32, h->device()) : Tensor();
    args.dh = need_dh ? &dh : nullptr;
    args.dw = need_dw ? &dw : nullptr;
    CrossEntropyResult r = instill::linear_cross_entropy(args);
    Napi::Object out = Napi::Object::New(env);
    out.Set("loss", Napi::Number::New(env, r.loss));
    out.Set("count", Napi::Number::New(env, static_cast<double>(r.count)));
    out.Set("dh", need_dh ? Napi::Value(wrap_tensor(env, std::move(dh))) : env.Null());
    out.Set("dw", need_dw ? Napi::Value(wrap_tensor(env, std::move(dw))) : env.Null());
    return out;
  });
}

}  // namespace

void register_kernels(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New(env, matmul, "matmul"));
  exports.Set("loraLinear", Napi::Function::New(env, lora_linear, "loraLinear"));
  exports.Set("loraLinearBackward", Napi::Function::New(env, lora_linear_backward, "loraLinearBackward"));
  exports.Set("maskedCrossEntropy", Napi::Function::New(env, masked_cross_entropy, "maskedCrossEntropy"));
  exports.Set("linearCrossEntropy", Napi::Function::New(env, linear_cross_entropy, "linearCrossEntropy"));
}

}  // namespace binding
}  // namespace instill
