// Module entry: registers every binding and takes the InstillError class from JS.
#include <cmath>

#include "common.h"

namespace instill {
namespace binding {

AddonData& data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

Napi::Error make_error(Napi::Env env, const char* code, const std::string& message) {
  AddonData& d = data(env);
  if (!d.error_ctor.IsEmpty()) {
    Napi::Object err = d.error_ctor.New({Napi::String::New(env, code), Napi::String::New(env, message)});
    return Napi::Error(env, err);
  }
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

double need_number(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) throw make_error(v.Env(), "E_ARG", std::string("'") + name + "' must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

bool need_bool(const Napi::Value& v, const char* name) {
  if (!v.IsBoolean()) throw make_error(v.Env(), "E_ARG", std::string("'") + name + "' must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

int64_t need_int(const Napi::Value& v, const char* name, int64_t lo, int64_t hi) {
  const double x = need_number(v, name);
  if (x != std::floor(x) || x < static_cast<double>(lo) || x > static_cast<double>(hi)) {
    fail(ErrorCode::Arg, "'", name, "' must be an integer in [", lo, ", ", hi, "], got ", x);
  }
  return static_cast<int64_t>(x);
}

void need_args(const Napi::CallbackInfo& info, size_t n, const char* what) {
  if (info.Length() < n) fail(ErrorCode::Arg, what, " expects ", n, " arguments, got ", info.Length());
}

namespace {

Napi::Value init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    throw Napi::TypeError::New(env, "init(InstillError) expects the InstillError class");
  }
  data(env).error_ctor = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

Napi::Object module_init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("init", Napi::Function::New(env, init, "init"));
  register_tensor(env, exports);
  register_kernels(env, exports);
  register_runtime(env, exports);
  register_model(env, exports);
  return exports;
}

}  // namespace
}  // namespace binding
}  // namespace instill

Napi::Object InstillInit(Napi::Env env, Napi::Object exports) { return instill::binding::module_init(env, exports); }
NODE_API_MODULE(instill, InstillInit)
