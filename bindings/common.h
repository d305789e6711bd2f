// Shared pieces of the binding: per-environment data, error conversion, and
// Tensor unwrapping. No math lives in bindings/.
#pragma once

#include <napi.h>

#include <string>

#include "runtime/error.h"
#include "runtime/tensor.h"

namespace instill {
namespace binding {

// Per Node environment (main thread or worker): no global JS state in the addon.
struct AddonData {
  Napi::FunctionReference error_ctor;   // InstillError from src/errors.ts (set by init())
  Napi::FunctionReference tensor_ctor;  // TensorHandle
  Napi::FunctionReference model_ctor;   // ModelHandle (bindings/model.cpp)
};

AddonData& data(Napi::Env env);

// A JS InstillError (or a plain Error before init()) with code and message.
Napi::Error make_error(Napi::Env env, const char* code, const std::string& message);

// Runs fn, turning C++ exceptions into JS InstillErrors: instill::Error keeps its
// code, std::bad_alloc becomes E_ALLOC, anything else E_INTERNAL.
template <typename Fn>
Napi::Value guarded(Napi::Env env, Fn&& fn) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    throw make_error(env, error_code_name(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    throw make_error(env, "E_ALLOC", "out of memory");
  } catch (const std::exception& e) {
    throw make_error(env, "E_INTERNAL", std::string("internal error: ") + e.what());
  }
}

// The Tensor held by a JS TensorHandle; E_ARG naming `name` if v is something else.
// With optional = true, undefined/null give nullptr.
const Tensor* unwrap_tensor(Napi::Env env, const Napi::Value& v, const char* name, bool optional = false);
Napi::Object wrap_tensor(Napi::Env env, Tensor t);

double need_number(const Napi::Value& v, const char* name);
bool need_bool(const Napi::Value& v, const char* name);
// An integer number in [lo, hi]; E_ARG naming `name` otherwise.
int64_t need_int(const Napi::Value& v, const char* name, int64_t lo, int64_t hi);
// E_ARG when a call of `what` has fewer than n arguments.
void need_args(const Napi::CallbackInfo& info, size_t n, const char* what);

void register_tensor(Napi::Env env, Napi::Object exports);
void register_kernels(Napi::Env env, Napi::Object exports);
void register_runtime(Napi::Env env, Napi::Object exports);
void register_model(Napi::Env env, Napi::Object exports);

}  // namespace binding
}  // namespace instill
