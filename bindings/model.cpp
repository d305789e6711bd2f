// ModelHandle: the JS object that owns a native LlamaModel (src/model/model.ts wraps it).
//
// lossAndGrads and logits run on a libuv worker thread (Napi::AsyncWorker) and return a
// Promise; the event loop stays free. A model runs one call at a time: a call made while
// another is in flight is rejected with E_ARG (await the first). Short calls (setWeight,
// addLora, adamwStep on LoRA-sized tensors) are synchronous; optimizerStep is adamwStep
// on the worker thread.
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>

#include "common.h"
#include "model/llama.h"

namespace instill {
namespace binding {
namespace {

// Copies a Float32Array of t's element count into t (on any device).
void copy_in(Tensor& t, const Napi::Value& v, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    fail(ErrorCode::Arg, "'values' must be a Float32Array");
  }
  Napi::Float32Array arr = v.As<Napi::Float32Array>();
  if (static_cast<int64_t>(arr.ElementLength()) != t.numel()) {
    fail(ErrorCode::Shape, "'values' has ", arr.ElementLength(), " elements, ", what, " ", shape_str(t.shape()), " has ",
         t.numel());
  }
  if (t.numel()) copy_bytes(t.data(), t.device(), arr.Data(), Device::CPU, t.nbytes());
}

// The optimizer's hyper-parameters as adamwStep / optimizerStep take them:
// (lr, beta1, beta2, eps, weightDecay, maxGradNorm, step).
struct OptimizerArgs {
  double lr, beta1, beta2, eps, weight_decay, max_grad_norm;
  int64_t step;
};

OptimizerArgs optimizer_args(const Napi::CallbackInfo& info, const char* what) {
  need_args(info, 7, what);
  return OptimizerArgs{need_number(info[0], "lr"),          need_number(info[1], "beta1"),
                       need_number(info[2], "beta2"),       need_number(info[3], "eps"),
                       need_number(info[4], "weightDecay"), need_number(info[5], "maxGradNorm"),
                       need_int(info[6], "step", 1, int64_t(1) << 52)};
}

double run_optimizer(LlamaModel& m, const OptimizerArgs& a) {
  return m.optimizer_step(a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.max_grad_norm, a.step);
}

struct Shared {
  std::shared_ptr<LlamaModel> model;
  std::atomic<bool> busy{false};
};

// Runs `work` off the JS thread; resolves with `done(env)` or rejects with an InstillError.
class ModelWorker : public Napi::AsyncWorker {
 public:
  ModelWorker(Napi::Env env, std::shared_ptr<Shared> shared, std::function<void()> work,
              std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env, "instill.model"),
        deferred_(Napi::Promise::Deferred::New(env)),
        shared_(std::move(shared)),
        work_(std::move(work)),
        done_(std::move(done)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      work_();
    } catch (const Error& e) {
      code_ = error_code_name(e.code());
      message_ = e.what();
    } catch (const std::bad_alloc&) {
      code_ = "E_ALLOC";
      message_ = "out of memory";
    } catch (const std::exception& e) {
      code_ = "E_INTERNAL";
      message_ = std::string("internal error: ") + e.what();
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    shared_->busy = false;
    Napi::HandleScope scope(env);
    if (!code_.empty()) {
      deferred_.Reject(make_error(env, code_.c_str(), message_).Value());
      return;
    }
    try {
      deferred_.Resolve(done_(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const std::exception& e) {
      deferred_.Reject(make_error(env, "E_INTERNAL", e.what()).Value());
    }
  }

  void OnError(const Napi::Error& e) override {
    shared_->busy = false;
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Shared> shared_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> done_;
  std::string code_, message_;
};

class ModelHandle : public Napi::ObjectWrap<ModelHandle> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "ModelHandle",
                       {
                           InstanceMethod<&ModelHandle::set_weight>("setWeight"),
                           InstanceMethod<&ModelHandle::check_complete>("checkComplete"),
                           InstanceMethod<&ModelHandle::add_lora>("addLora"),
                           InstanceMethod<&ModelHandle::lora_tensor>("loraTensor"),
                           InstanceMethod<&ModelHandle::set_lora_tensor>("setLoraTensor"),
                           InstanceMethod<&ModelHandle::set_checkpointing>("setCheckpointing"),
                           InstanceMethod<&ModelHandle::set_activations>("setActivations"),
                           InstanceMethod<&ModelHandle::activations>("activations"),
                           InstanceMethod<&ModelHandle::zero_grads>("zeroGrads"),
                           InstanceMethod<&ModelHandle::adamw_step>("adamwStep"),
                           InstanceMethod<&ModelHandle::optimizer_step>("optimizerStep"),
                           InstanceMethod<&ModelHandle::trainable_count>("trainableCount"),
                           InstanceMethod<&ModelHandle::moment_tensor>("momentTensor"),
                           InstanceMethod<&ModelHandle::write_moment>("writeMoment"),
                           InstanceMethod<&ModelHandle::loss_and_grads>("lossAndGrads"),
                           InstanceMethod<&ModelHandle::loss>("loss"),
                           InstanceMethod<&ModelHandle::set_full>("setFull"),
                           InstanceMethod<&ModelHandle::weight_names>("weightNames"),
                           InstanceMethod<&ModelHandle::weight_tensor>("weightTensor"),
                           InstanceMethod<&ModelHandle::write_weight>("writeWeight"),
                           InstanceMethod<&ModelHandle::logits>("logits"),
                           InstanceMethod<&ModelHandle::decode_reset>("decodeReset"),
                           InstanceMethod<&ModelHandle::decode>("decode"),
                           InstanceMethod<&ModelHandle::dispose>("dispose"),
                       });
  }

  explicit ModelHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelHandle>(info) {}
  void set(std::shared_ptr<LlamaModel> m) { shared_->model = std::move(m); }

 private:
  LlamaModel& model(Napi::Env env) {
    if (!shared_->model) throw make_error(env, "E_ARG", "the model was disposed (model.dispose()); load it again");
    if (shared_->busy) {
      fail(ErrorCode::Arg, "another call on this model is still running (lossAndGrads/logits): await it first");
    }
    return *shared_->model;
  }

  Napi::Value set_weight(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 2, "setWeight");
      if (!info[0].IsString()) fail(ErrorCode::Arg, "'name' must be a string");
      const Tensor* t = unwrap_tensor(env, info[1], "tensor");
      model(env).set_weight(info[0].As<Napi::String>().Utf8Value(), *t);
      return env.Undefined();
    });
  }

  Napi::Value check_complete(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      model(env).check_complete();
      return env.Undefined();
    });
  }

  // addLora(mask, r, scale, dropout)
  Napi::Value add_lora(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 4, "addLora");
      const int64_t mask = need_int(info[0], "mask", 1, (1 << kNumTargets) - 1);
      const int64_t r = need_int(info[1], "r", 1, 1 << 16);
      const float scale = static_cast<float>(need_number(info[2], "scale"));
      const float dropout = static_cast<float>(need_number(info[3], "dropout"));
      model(env).add_lora(static_cast<uint32_t>(mask), r, scale, dropout);
      return env.Undefined();
    });
  }

  static Tensor& pick(LoraParam& p, int64_t which) {
    switch (which) {
      case 0: return p.a;
      case 1: return p.b;
      case 2: return p.da;
      case 3: return p.db;
      default: fail(ErrorCode::Arg, "'which' must be 0 (A), 1 (B), 2 (dA) or 3 (dB), got ", which);
    }
  }

  // loraTensor(layer, target, which) -> TensorHandle (aliases the model's tensor)
  Napi::Value lora_tensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 3, "loraTensor");
      LlamaModel& m = model(env);
      LoraParam& p = m.lora(need_int(info[0], "layer", 0, m.config().L - 1), static_cast<int>(need_int(info[1], "target", 0, kNumTargets - 1)));
      return wrap_tensor(env, pick(p, need_int(info[2], "which", 0, 3)));
    });
  }

  // setLoraTensor(layer, target, which, Float32Array): copies the values in.
  Napi::Value set_lora_tensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 4, "setLoraTensor");
      LlamaModel& m = model(env);
      LoraParam& p = m.lora(need_int(info[0], "layer", 0, m.config().L - 1), static_cast<int>(need_int(info[1], "target", 0, kNumTargets - 1)));
      copy_in(pick(p, need_int(info[2], "which", 0, 3)), info[3], "the tensor");
      return env.Undefined();
    });
  }

  // setFull(on): full fine-tuning mode (every weight trainable, f32, with a gradient).
  Napi::Value set_full(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 1, "setFull");
      model(env).set_full(need_bool(info[0], "on"));
      return env.Undefined();
    });
  }

  // weightNames() -> string[] (HF names, checkpoint order)
  Napi::Value weight_names(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      const std::vector<std::string> names = model(env).weight_names();
      Napi::Array a = Napi::Array::New(env, names.size());
      for (size_t i = 0; i < names.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::String::New(env, names[i]));
      return a;
    });
  }

  // weightTensor(name, grad) -> TensorHandle (aliases the model's weight or, in full mode, its gradient)
  Napi::Value weight_tensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 2, "weightTensor");
      if (!info[0].IsString()) fail(ErrorCode::Arg, "'name' must be a string");
      return wrap_tensor(env, model(env).weight(info[0].As<Napi::String>().Utf8Value(), need_bool(info[1], "grad")));
    });
  }

  // writeWeight(name, grad, Float32Array): copies the values into an f32 weight (or, full mode, its gradient) in place.
  Napi::Value write_weight(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 3, "writeWeight");
      if (!info[0].IsString()) fail(ErrorCode::Arg, "'name' must be a string");
      const std::string name = info[0].As<Napi::String>().Utf8Value();
      Tensor& t = model(env).weight(name, need_bool(info[1], "grad"));
      if (t.dtype() != DType::F32) fail(ErrorCode::DType, "'", name, "' is ", dtype_name(t.dtype()), ", not f32: set it with setWeight");
      copy_in(t, info[2], "'" + name + "'");
      return env.Undefined();
    });
  }

  // loss(ids, positions, cuSeqlens, targets, normalizer) -> Promise<{ loss, count }>: forward only.
  Napi::Value loss(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 5, "loss");
      model(env);
      const double normalizer = need_number(info[4], "normalizer");
      return queue_loss(env, info, [=](LlamaModel& m, const ModelInputs& in) { return m.loss(in, normalizer); });
    });
  }

  Napi::Value set_checkpointing(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 1, "setCheckpointing");
      model(env).set_checkpointing(need_bool(info[0], "on"));
      return env.Undefined();
    });
  }

  Napi::Value set_activations(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 1, "setActivations");
      if (!info[0].IsString()) fail(ErrorCode::Arg, "'mode' must be a string: auto, f32, bf16 or bf16-mlp");
      model(env).set_activations(info[0].As<Napi::String>().Utf8Value());
      return env.Undefined();
    });
  }

  // { mode, dtype }: the mode set, and the dtype the next pass keeps the activations in
  Napi::Value activations(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      LlamaModel& m = model(env);
      Napi::Object o = Napi::Object::New(env);
      o.Set("mode", m.activations());
      o.Set("dtype", m.activation_dtype());
      return o;
    });
  }

  Napi::Value zero_grads(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      model(env).zero_grads();
      return env.Undefined();
    });
  }

  // adamwStep(lr, beta1, beta2, eps, weightDecay, maxGradNorm, step) -> gradient norm (before clipping)
  Napi::Value adamw_step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      const OptimizerArgs a = optimizer_args(info, "adamwStep");
      return Napi::Number::New(env, run_optimizer(model(env), a));
    });
  }

  // optimizerStep(...the same) -> Promise<gradient norm>: adamwStep off the JS thread (full fine-tuning
  // updates every weight: too long to block the event loop).
  Napi::Value optimizer_step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      const OptimizerArgs a = optimizer_args(info, "optimizerStep");
      model(env);
      auto shared = shared_;
      auto norm = std::make_shared<double>(0.0);
      auto* w = new ModelWorker(
          env, shared, [=]() { *norm = run_optimizer(*shared->model, a); },
          [=](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, *norm); });
      return queue(w);
    });
  }

  // trainableCount() -> number of trainable tensors (the optimizer's order; see LlamaModel::trainables)
  Napi::Value trainable_count(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      return Napi::Number::New(env, static_cast<double>(model(env).trainable_count()));
    });
  }

  // momentTensor(index, which) -> TensorHandle: AdamW's m (0) or v (1) of trainable `index` (aliases it)
  Napi::Value moment_tensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 2, "momentTensor");
      return wrap_tensor(env, model(env).moment(need_int(info[0], "index", 0, int64_t(1) << 40),
                                                static_cast<int>(need_int(info[1], "which", 0, 1))));
    });
  }

  // writeMoment(index, which, Float32Array): copies the values into that moment.
  Napi::Value write_moment(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 3, "writeMoment");
      Tensor& t = model(env).moment(need_int(info[0], "index", 0, int64_t(1) << 40),
                                    static_cast<int>(need_int(info[1], "which", 0, 1)));
      copy_in(t, info[2], "the moment");
      return env.Undefined();
    });
  }

  // lossAndGrads(ids, positions, cuSeqlens, targets, normalizer, accumulate, dropoutSeed) -> Promise<{ loss, count }>
  Napi::Value loss_and_grads(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 7, "lossAndGrads");
      model(env);
      const double normalizer = need_number(info[4], "normalizer");
      const bool accumulate = need_bool(info[5], "accumulate");
      const uint32_t seed = static_cast<uint32_t>(need_int(info[6], "dropoutSeed", 0, 4294967295ll));
      return queue_loss(env, info, [=](LlamaModel& m, const ModelInputs& in) {
        return m.loss_and_grads(in, normalizer, accumulate, seed);
      });
    });
  }

  // logits(ids, positions, cuSeqlens, lastOnly, rows) -> Promise<TensorHandle>
  // (N, V), or (rows, N / rows, V) when rows > 0 and not lastOnly.
  Napi::Value logits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 5, "logits");
      model(env);
      Tensor ids = *unwrap_tensor(env, info[0], "ids"), pos = *unwrap_tensor(env, info[1], "positions");
      Tensor cu = *unwrap_tensor(env, info[2], "cuSeqlens");
      const bool last_only = need_bool(info[3], "lastOnly");
      const int64_t rows = need_int(info[4], "rows", 0, int64_t(1) << 40);
      if (rows > 0 && ids.numel() % rows != 0) fail(ErrorCode::Shape, "rows (", rows, ") does not divide the ", ids.numel(), " tokens");
      auto shared = shared_;
      auto result = std::make_shared<Tensor>();
      auto* w = new ModelWorker(
          env, shared,
          [=]() {
            ModelInputs in{&ids, &pos, &cu, nullptr};
            *result = shared->model->logits(in, last_only);
          },
          [=](Napi::Env e) -> Napi::Value {
            if (rows > 0 && !last_only) {
              const int64_t n = result->dim(0), v = result->dim(1);
              return wrap_tensor(e, result->reshape({rows, n / rows, v}));
            }
            return wrap_tensor(e, *result);
          });
      return queue(w);
    });
  }

  // dispose(): drops the model (weights, adapters, caches) now instead of at garbage collection.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      if (shared_->busy) fail(ErrorCode::Arg, "cannot dispose a model while lossAndGrads/logits/decode runs: await it first");
      shared_->model.reset();
      return env.Undefined();
    });
  }

  // decodeReset(maxLen): allocates and empties the KV cache.
  Napi::Value decode_reset(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 1, "decodeReset");
      model(env).decode_reset(need_int(info[0], "maxLen", 1, int64_t(1) << 31));
      return env.Undefined();
    });
  }

  // decode(ids) -> Promise<TensorHandle (1, V)>: appends ids to the cached sequence.
  Napi::Value decode(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      need_args(info, 1, "decode");
      model(env);
      Tensor ids = *unwrap_tensor(env, info[0], "ids");
      auto shared = shared_;
      auto result = std::make_shared<Tensor>();
      auto* w = new ModelWorker(
          env, shared, [=]() { *result = shared->model->decode(ids); },
          [=](Napi::Env e) -> Napi::Value { return wrap_tensor(e, *result); });
      return queue(w);
    });
  }

  // Marks the model busy (one engine call at a time) and runs the worker off the JS thread.
  Napi::Promise queue(ModelWorker* w) {
    Napi::Promise p = w->promise();
    shared_->busy = true;
    w->Queue();
    return p;
  }

  // Queues fn(model, batch) on the worker thread, the batch being (ids, positions, cuSeqlens,
  // targets) in info[0..3]; the promise resolves with { loss, count }.
  Napi::Value queue_loss(Napi::Env env, const Napi::CallbackInfo& info,
                         std::function<CrossEntropyResult(LlamaModel&, const ModelInputs&)> fn) {
    Tensor ids = *unwrap_tensor(env, info[0], "ids"), pos = *unwrap_tensor(env, info[1], "positions");
    Tensor cu = *unwrap_tensor(env, info[2], "cuSeqlens"), tg = *unwrap_tensor(env, info[3], "targets");
    auto shared = shared_;
    auto result = std::make_shared<CrossEntropyResult>();
    auto* w = new ModelWorker(
        env, shared,
        [=]() {
          ModelInputs in{&ids, &pos, &cu, &tg};
          *result = fn(*shared->model, in);
        },
        [=](Napi::Env e) -> Napi::Value { return loss_object(e, *result); });
    return queue(w);
  }

  static Napi::Value loss_object(Napi::Env e, const CrossEntropyResult& r) {
    Napi::Object o = Napi::Object::New(e);
    o.Set("loss", Napi::Number::New(e, r.loss));
    o.Set("count", Napi::Number::New(e, static_cast<double>(r.count)));
    return o;
  }

  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
};

// modelCreate(config, invFreq) -> ModelHandle
// config: { hidden, intermediate, layers, heads, kvHeads, headDim, vocab, eps, qkvBias, qkNorm, tied, slidingWindow,
//          device? ('cpu' | 'cuda', default 'cpu') }
Napi::Value model_create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    need_args(info, 2, "modelCreate");
    if (!info[0].IsObject()) fail(ErrorCode::Arg, "'config' must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    const int64_t big = int64_t(1) << 40;
    LlamaConfig c;
    c.C = need_int(o.Get("hidden"), "hidden", 1, big);
    c.F = need_int(o.Get("intermediate"), "intermediate", 1, big);
    c.L = need_int(o.Get("layers"), "layers", 1, 1 << 16);
    c.H = need_int(o.Get("heads"), "heads", 1, 1 << 16);
    c.KVH = need_int(o.Get("kvHeads"), "kvHeads", 1, 1 << 16);
    c.D = need_int(o.Get("headDim"), "headDim", 2, 1 << 16);
    c.V = need_int(o.Get("vocab"), "vocab", 1, 1 << 30);
    c.eps = static_cast<float>(need_number(o.Get("eps"), "eps"));
    c.qkv_bias = need_bool(o.Get("qkvBias"), "qkvBias");
    c.qk_norm = need_bool(o.Get("qkNorm"), "qkNorm");
    c.tied = need_bool(o.Get("tied"), "tied");
    c.sliding_window = need_int(o.Get("slidingWindow"), "slidingWindow", 0, big);
    const Tensor* inv = unwrap_tensor(env, info[1], "invFreq");
    Device device = Device::CPU;
    const Napi::Value dv = o.Get("device");
    if (!dv.IsUndefined()) {
      if (!dv.IsString()) fail(ErrorCode::Arg, "'device' must be 'cpu' or 'cuda'");
      device = parse_device(dv.As<Napi::String>().Utf8Value());
    }
    auto m = std::make_shared<LlamaModel>(c, *inv, device);
    Napi::Object h = data(env).model_ctor.New({});
    ModelHandle::Unwrap(h)->set(std::move(m));
    return h;
  });
}

}  // namespace

void register_model_ops(Napi::Env env, Napi::Object exports);  // bindings/model_ops.cpp

void register_model(Napi::Env env, Napi::Object exports) {
  register_model_ops(env, exports);
  Napi::Function ctor = ModelHandle::define(env);
  data(env).model_ctor = Napi::Persistent(ctor);
  exports.Set("ModelHandle", ctor);
  exports.Set("modelCreate", Napi::Function::New(env, model_create, "modelCreate"));
}

}  // namespace binding
}  // namespace instill
