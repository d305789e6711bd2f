// Bindings of the model's ops, one call each, for the op tests (test/model/ops/) and for people
// who benchmark them. Synchronous like bindings/kernels.cpp: they are building blocks.
// Outputs are allocated here; the ops' front functions validate everything else.
#include <cmath>

#include "common.h"
#include "ops/adamw.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"

namespace instill {
namespace binding {
namespace {

Tensor like(const Tensor& t) { return Tensor::empty(t.shape(), DType::F32, t.device()); }
// An output of t's shape, dtype and device (the ops that take bf16 activations: bf16 in, bf16 out).
Tensor same_as(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }

// opEmbedding(ids, w) -> out
Napi::Value op_embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 2, "opEmbedding");
    const Tensor* ids = unwrap_tensor(env, info[0], "ids");
    const Tensor* w = unwrap_tensor(env, info[1], "w");
    if (ids->ndim() != 1 || w->ndim() != 2) fail(ErrorCode::Shape, "opEmbedding needs ids (N) and w (V, C)");
    Tensor out = Tensor::empty({ids->dim(0), w->dim(1)}, DType::F32, ids->device());
    embedding_forward(EmbeddingForwardArgs{ids, w, &out});
    return wrap_tensor(env, out);
  });
}

// opEmbeddingBackward(dout, ids, V) -> dw
Napi::Value op_embedding_backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 3, "opEmbeddingBackward");
    const Tensor* dout = unwrap_tensor(env, info[0], "dout");
    const Tensor* ids = unwrap_tensor(env, info[1], "ids");
    const double v = need_number(info[2], "V");
    if (dout->ndim() != 2 || !(v >= 1) || v != std::floor(v)) fail(ErrorCode::Shape, "opEmbeddingBackward needs dout (N, C) and V >= 1");
    Tensor dw = Tensor::zeros({static_cast<int64_t>(v), dout->dim(1)}, DType::F32, dout->device());
    embedding_backward(EmbeddingBackwardArgs{dout, ids, &dw});
    return wrap_tensor(env, dw);
  });
}

// opRmsnorm(x, w, eps, yDtype?) -> { y, rstd }   (y f32, or 'bf16')
Napi::Value op_rmsnorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 3, "opRmsnorm");
    const Tensor* x = unwrap_tensor(env, info[0], "x");
    const Tensor* w = unwrap_tensor(env, info[1], "w");
    const float eps = static_cast<float>(need_number(info[2], "eps"));
    if (x->ndim() != 2) fail(ErrorCode::Shape, "'x' must have 2 dimensions (N, C), got ", shape_str(x->shape()));
    DType yt = DType::F32;
    if (info.Length() > 3 && !info[3].IsUndefined()) {
      if (!info[3].IsString()) fail(ErrorCode::Arg, "'yDtype' must be a dtype name");
      yt = parse_dtype(info[3].As<Napi::String>().Utf8Value());
    }
    Tensor y = Tensor::empty(x->shape(), yt, x->device()), rstd = Tensor::empty({x->dim(0)}, DType::F32, x->device());
    rmsnorm_forward(RmsnormForwardArgs{x, w, eps, &y, &rstd});
    Napi::Object o = Napi::Object::New(env);
    o.Set("y", wrap_tensor(env, y));
    o.Set("rstd", wrap_tensor(env, rstd));
    return o;
  });
}

// opRmsnormPacked(x, w, eps, packed) -> rstd: y rounded to bf16 into the first C columns of the bf16 (N, ld) tensor
// packed, in place (ops/rmsnorm.h's y_packed: a lora_group's packed x).
Napi::Value op_rmsnorm_packed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 4, "opRmsnormPacked");
    const Tensor* x = unwrap_tensor(env, info[0], "x");
    const Tensor* w = unwrap_tensor(env, info[1], "w");
    const float eps = static_cast<float>(need_number(info[2], "eps"));
    Tensor* packed = const_cast<Tensor*>(unwrap_tensor(env, info[3], "packed"));
    if (x->ndim() != 2) fail(ErrorCode::Shape, "'x' must have 2 dimensions (N, C), got ", shape_str(x->shape()));
    Tensor rstd = Tensor::empty({x->dim(0)}, DType::F32, x->device());
    RmsnormForwardArgs args{x, w, eps, nullptr, &rstd};
    args.y_packed = packed;
    rmsnorm_forward(args);
    return wrap_tensor(env, rstd);
  });
}

// opRmsnormBackwardPacked(dy, x, w, rstd, dx, accumulate, packed): dx (f32, in place: written, or added to with
// accumulate) and its bf16 rounding into the first C columns of the bf16 (N, ld) tensor packed (ops/rmsnorm.h's
// dx_packed: o_proj's or down_proj's packed dy).
Napi::Value op_rmsnorm_backward_packed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 7, "opRmsnormBackwardPacked");
    const Tensor* dy = unwrap_tensor(env, info[0], "dy");
    const Tensor* x = unwrap_tensor(env, info[1], "x");
    const Tensor* w = unwrap_tensor(env, info[2], "w");
    const Tensor* rstd = unwrap_tensor(env, info[3], "rstd");
    Tensor* dx = const_cast<Tensor*>(unwrap_tensor(env, info[4], "dx"));
    const bool accumulate = need_bool(info[5], "accumulate");
    Tensor* packed = const_cast<Tensor*>(unwrap_tensor(env, info[6], "packed"));
    RmsnormBackwardArgs args{dy, x, w, rstd, dx, accumulate, nullptr};
    args.dx_packed = packed;
    rmsnorm_backward(args);
    return env.Undefined();
  });
}

// opRmsnormBackward(dy, x, w, rstd) -> { dx, dw }
Napi::Value op_rmsnorm_backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 4, "opRmsnormBackward");
    const Tensor* dy = unwrap_tensor(env, info[0], "dy");
    const Tensor* x = unwrap_tensor(env, info[1], "x");
    const Tensor* w = unwrap_tensor(env, info[2], "w");
    const Tensor* rstd = unwrap_tensor(env, info[3], "rstd");
    Tensor dx = like(*x), dw = Tensor::zeros(w->shape(), DType::F32, w->device());
    rmsnorm_backward(RmsnormBackwardArgs{dy, x, w, rstd, &dx, false, &dw});
    Napi::Object o = Napi::Object::New(env);
    o.Set("dx", wrap_tensor(env, dx));
    o.Set("dw", wrap_tensor(env, dw));
    return o;
  });
}

// opRope(x, positions, invFreq, backward) -> out
Napi::Value op_rope(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 4, "opRope");
    const Tensor* x = unwrap_tensor(env, info[0], "x");
    const Tensor* pos = unwrap_tensor(env, info[1], "positions");
    const Tensor* f = unwrap_tensor(env, info[2], "invFreq");
    const bool backward = need_bool(info[3], "backward");
    Tensor out = same_as(*x);
    RopeArgs a{x, pos, f, &out};
    if (backward) rope_backward(a);
    else rope_forward(a);
    return wrap_tensor(env, out);
  });
}

// opRopePair(x, x2, positions, invFreq, backward) -> { out, out2 }: both rotated in one call (ops/rope.h's x2: the
// model's q and k)
Napi::Value op_rope_pair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 5, "opRopePair");
    const Tensor* x = unwrap_tensor(env, info[0], "x");
    const Tensor* x2 = unwrap_tensor(env, info[1], "x2");
    const Tensor* pos = unwrap_tensor(env, info[2], "positions");
    const Tensor* f = unwrap_tensor(env, info[3], "invFreq");
    const bool backward = need_bool(info[4], "backward");
    Tensor out = same_as(*x), out2 = same_as(*x2);
    RopeArgs a{x, pos, f, &out};
    a.x2 = x2;
    a.out2 = &out2;
    if (backward) rope_backward(a);
    else rope_forward(a);
    Napi::Object o = Napi::Object::New(env);
    o.Set("out", wrap_tensor(env, out));
    o.Set("out2", wrap_tensor(env, out2));
    return o;
  });
}

int64_t window_arg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return 0;
  const double w = need_number(info[i], "window");
  if (w != std::floor(w) || w < 0) fail(ErrorCode::Arg, "'window' must be an integer >= 0, got ", w);
  return static_cast<int64_t>(w);
}

// opAttention(q, k, v, cuSeqlens, scale, window?) -> { out, lse }
Napi::Value op_attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 5, "opAttention");
    const Tensor* q = unwrap_tensor(env, info[0], "q");
    const Tensor* k = unwrap_tensor(env, info[1], "k");
    const Tensor* v = unwrap_tensor(env, info[2], "v");
    const Tensor* cu = unwrap_tensor(env, info[3], "cuSeqlens");
    const float scale = static_cast<float>(need_number(info[4], "scale"));
    if (q->ndim() != 3) fail(ErrorCode::Shape, "'q' must have 3 dimensions (N, H, D), got ", shape_str(q->shape()));
    Tensor out = same_as(*q), lse = Tensor::empty({q->dim(0), q->dim(1)}, DType::F32, q->device());
    attention_forward(AttentionForwardArgs{q, k, v, cu, scale, &out, &lse, window_arg(info, 5)});
    Napi::Object o = Napi::Object::New(env);
    o.Set("out", wrap_tensor(env, out));
    o.Set("lse", wrap_tensor(env, lse));
    return o;
  });
}

// opAttentionBackward(dout, q, k, v, out, lse, cuSeqlens, scale, window?) -> { dq, dk, dv }
Napi::Value op_attention_backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 8, "opAttentionBackward");
    const Tensor* dout = unwrap_tensor(env, info[0], "dout");
    const Tensor* q = unwrap_tensor(env, info[1], "q");
    const Tensor* k = unwrap_tensor(env, info[2], "k");
    const Tensor* v = unwrap_tensor(env, info[3], "v");
    const Tensor* out = unwrap_tensor(env, info[4], "out");
    const Tensor* lse = unwrap_tensor(env, info[5], "lse");
    const Tensor* cu = unwrap_tensor(env, info[6], "cuSeqlens");
    const float scale = static_cast<float>(need_number(info[7], "scale"));
    Tensor dq = same_as(*q), dk = same_as(*k), dv = same_as(*v);
    attention_backward(AttentionBackwardArgs{dout, q, k, v, out, lse, cu, scale, &dq, &dk, &dv, window_arg(info, 8)});
    Napi::Object o = Napi::Object::New(env);
    o.Set("dq", wrap_tensor(env, dq));
    o.Set("dk", wrap_tensor(env, dk));
    o.Set("dv", wrap_tensor(env, dv));
    return o;
  });
}

// opAttentionDecode(q, k, v, kCache, vCache, start, scale, window?) -> out; the caches are updated in place.
Napi::Value op_attention_decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 7, "opAttentionDecode");
    const Tensor* q = unwrap_tensor(env, info[0], "q");
    const Tensor* k = unwrap_tensor(env, info[1], "k");
    const Tensor* v = unwrap_tensor(env, info[2], "v");
    Tensor kc = *unwrap_tensor(env, info[3], "kCache");
    Tensor vc = *unwrap_tensor(env, info[4], "vCache");
    const double start = need_number(info[5], "start");
    if (start != std::floor(start)) fail(ErrorCode::Arg, "'start' must be an integer");
    const float scale = static_cast<float>(need_number(info[6], "scale"));
    Tensor out = like(*q);
    attention_decode(AttentionDecodeArgs{q, k, v, &kc, &vc, static_cast<int64_t>(start), scale, &out, window_arg(info, 7)});
    return wrap_tensor(env, out);
  });
}

// opSwiglu(gate, up) -> out
Napi::Value op_swiglu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 2, "opSwiglu");
    const Tensor* g = unwrap_tensor(env, info[0], "gate");
    const Tensor* u = unwrap_tensor(env, info[1], "up");
    Tensor out = same_as(*g);  // gate's dtype (f32 or bf16)
    swiglu_forward(SwigluForwardArgs{g, u, &out});
    return wrap_tensor(env, out);
  });
}

// opSwigluBackward(dout, gate, up) -> { dgate, dup }
Napi::Value op_swiglu_backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 3, "opSwigluBackward");
    const Tensor* d = unwrap_tensor(env, info[0], "dout");
    const Tensor* g = unwrap_tensor(env, info[1], "gate");
    const Tensor* u = unwrap_tensor(env, info[2], "up");
    Tensor dg = same_as(*g), du = same_as(*g);
    swiglu_backward(SwigluBackwardArgs{d, g, u, &dg, &du});
    Napi::Object o = Napi::Object::New(env);
    o.Set("dgate", wrap_tensor(env, dg));
    o.Set("dup", wrap_tensor(env, du));
    return o;
  });
}

// opSwigluPacked(gate, up, outPacked): out rounded into the first F columns of the bf16 (N, ld) tensor outPacked, in
// place (ops/swiglu.h's out_packed: down_proj's packed x).
Napi::Value op_swiglu_packed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 3, "opSwigluPacked");
    const Tensor* g = unwrap_tensor(env, info[0], "gate");
    const Tensor* u = unwrap_tensor(env, info[1], "up");
    Tensor* packed = const_cast<Tensor*>(unwrap_tensor(env, info[2], "outPacked"));
    swiglu_forward(SwigluForwardArgs{g, u, nullptr, packed});
    return env.Undefined();
  });
}

// opSwigluBackwardPacked(dout, gate, up, dgu): dgate and dup rounded into columns 0..F and F..2F of the bf16 (N, ld)
// tensor dgu, in place (ops/swiglu.h's dgu: the gate/up group's packed dy).
Napi::Value op_swiglu_backward_packed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 4, "opSwigluBackwardPacked");
    const Tensor* d = unwrap_tensor(env, info[0], "dout");
    const Tensor* g = unwrap_tensor(env, info[1], "gate");
    const Tensor* u = unwrap_tensor(env, info[2], "up");
    Tensor* dgu = const_cast<Tensor*>(unwrap_tensor(env, info[3], "dgu"));
    swiglu_backward(SwigluBackwardArgs{d, g, u, nullptr, nullptr, dgu});
    return env.Undefined();
  });
}

// opAdamw(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step[, gradScale]): updates param, m, v in place.
Napi::Value op_adamw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 10, "opAdamw");
    const double grad_scale = info.Length() > 10 && !info[10].IsUndefined() ? need_number(info[10], "gradScale") : 1.0;
    Tensor p = *unwrap_tensor(env, info[0], "param");
    const Tensor* g = unwrap_tensor(env, info[1], "grad");
    Tensor m = *unwrap_tensor(env, info[2], "m");
    Tensor v = *unwrap_tensor(env, info[3], "v");
    const double step = need_number(info[9], "step");
    if (step != std::floor(step)) fail(ErrorCode::Arg, "'step' must be an integer");
    const AdamwTensors one{&p, g, &m, &v};
    adamw_step(AdamwArgs{&one, 1, need_number(info[4], "lr"), need_number(info[5], "beta1"), need_number(info[6], "beta2"),
                         need_number(info[7], "eps"), need_number(info[8], "weightDecay"), static_cast<int64_t>(step),
                         grad_scale});
    return env.Undefined();
  });
}

// opSumSquares([tensor, ...]) -> number: Σ x² over every element, in double (ops/adamw.h).
Napi::Value op_sum_squares(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 1, "opSumSquares");
    if (!info[0].IsArray()) fail(ErrorCode::Arg, "opSumSquares expects an array of tensors");
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<const Tensor*> ts;
    for (uint32_t i = 0; i < arr.Length(); ++i) ts.push_back(unwrap_tensor(env, arr.Get(i), "tensors[i]"));
    return Napi::Number::New(env, sum_squares(SumSquaresArgs{ts.data(), static_cast<int64_t>(ts.size())}));
  });
}

}  // namespace

void register_model_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("opEmbedding", Napi::Function::New(env, op_embedding, "opEmbedding"));
  exports.Set("opEmbeddingBackward", Napi::Function::New(env, op_embedding_backward, "opEmbeddingBackward"));
  exports.Set("opRmsnorm", Napi::Function::New(env, op_rmsnorm, "opRmsnorm"));
  exports.Set("opRmsnormPacked", Napi::Function::New(env, op_rmsnorm_packed, "opRmsnormPacked"));
  exports.Set("opRmsnormBackwardPacked", Napi::Function::New(env, op_rmsnorm_backward_packed, "opRmsnormBackwardPacked"));
  exports.Set("opRmsnormBackward", Napi::Function::New(env, op_rmsnorm_backward, "opRmsnormBackward"));
  exports.Set("opRope", Napi::Function::New(env, op_rope, "opRope"));
  exports.Set("opRopePair", Napi::Function::New(env, op_rope_pair, "opRopePair"));
  exports.Set("opAttention", Napi::Function::New(env, op_attention, "opAttention"));
  exports.Set("opAttentionBackward", Napi::Function::New(env, op_attention_backward, "opAttentionBackward"));
  exports.Set("opAttentionDecode", Napi::Function::New(env, op_attention_decode, "opAttentionDecode"));
  exports.Set("opSwiglu", Napi::Function::New(env, op_swiglu, "opSwiglu"));
  exports.Set("opSwigluPacked", Napi::Function::New(env, op_swiglu_packed, "opSwigluPacked"));
  exports.Set("opSwigluBackwardPacked", Napi::Function::New(env, op_swiglu_backward_packed, "opSwigluBackwardPacked"));
  exports.Set("opSwigluBackward", Napi::Function::New(env, op_swiglu_backward, "opSwigluBackward"));
  exports.Set("opAdamw", Napi::Function::New(env, op_adamw, "opAdamw"));
  exports.Set("opSumSquares", Napi::Function::New(env, op_sum_squares, "opSumSquares"));
}

}  // namespace binding
}  // namespace instill
