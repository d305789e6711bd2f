// Runtime introspection and knobs: threads, CPU features, the active ISA.
#include "common.h"
#include "runtime/cpu_features.h"
#include "runtime/host_cache.h"
#include "runtime/next.h"
#include "runtime/op_profile.h"
#include "runtime/tensor.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace binding {
namespace {

Napi::Value runtime_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object out = Napi::Object::New(env);
    out.Set("threads", Napi::Number::New(env, num_threads()));
    out.Set("isa", Napi::String::New(env, isa_name(active_isa())));
    std::vector<Isa> isas = supported_isas();
    Napi::Array arr = Napi::Array::New(env, isas.size());
    for (size_t i = 0; i < isas.size(); ++i) arr.Set(static_cast<uint32_t>(i), Napi::String::New(env, isa_name(isas[i])));
    out.Set("isas", arr);
    const CpuFeatures& f = cpu_features();
    Napi::Object feats = Napi::Object::New(env);
    feats.Set("avx2", f.avx2);
    feats.Set("fma", f.fma);
    feats.Set("f16c", f.f16c);
    feats.Set("avx512f", f.avx512f);
    feats.Set("avx512bw", f.avx512bw);
    feats.Set("avx512dq", f.avx512dq);
    feats.Set("avx512vl", f.avx512vl);
    feats.Set("avx512bf16", f.avx512bf16);
    out.Set("features", feats);
    Napi::Array devices = Napi::Array::New(env);
    devices.Set(0u, Napi::String::New(env, "cpu"));
    if (device_available(Device::CUDA)) {
      devices.Set(1u, Napi::String::New(env, "cuda"));
      const DeviceProperties p = device_properties(Device::CUDA);
      Napi::Object gpu = Napi::Object::New(env);
      gpu.Set("name", p.name);
      gpu.Set("computeCapability", std::to_string(p.cc_major) + "." + std::to_string(p.cc_minor));
      gpu.Set("multiprocessors", p.multiprocessors);
      gpu.Set("memoryBytes", Napi::Number::New(env, static_cast<double>(p.memory_bytes)));
      gpu.Set("gemm", p.gemm);
      out.Set("cuda", gpu);
    }
    out.Set("devices", devices);
    out.Set("poison", Napi::Boolean::New(env, poison_new_tensors()));
    Napi::Object cache = Napi::Object::New(env);
    cache.Set("bytes", Napi::Number::New(env, static_cast<double>(host_cache_bytes())));
    cache.Set("limit", Napi::Number::New(env, static_cast<double>(host_cache_limit())));
    out.Set("hostCache", cache);
    return out;
  });
}

Napi::Value set_threads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    double n = info.Length() > 0 ? need_number(info[0], "threads") : 0;
    if (n != static_cast<int>(n)) fail(ErrorCode::Arg, "threads must be an integer between 1 and 1024, got ", n);
    set_num_threads(static_cast<int>(n));
    return env.Undefined();
  });
}

Napi::Value set_isa(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsString()) fail(ErrorCode::Arg, "setIsa(name) expects a string");
    set_active_isa(parse_isa(info[0].As<Napi::String>().Utf8Value()));
    return env.Undefined();
  });
}

Napi::Value set_poison(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    set_poison_new_tensors(info.Length() > 0 && need_bool(info[0], "on"));
    return env.Undefined();
  });
}

// releaseHostMemory() -> bytes: frees the host blocks the engine keeps for reuse.
Napi::Value release_host_memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value { return Napi::Number::New(env, static_cast<double>(host_cache_release())); });
}

// setOpProfile(on): starts (or stops) timing every op; either way the profile starts empty.
Napi::Value set_op_profile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1) fail(ErrorCode::Arg, "setOpProfile(on) expects a boolean");
    instill::set_op_profile(need_bool(info[0], "on"));
    return env.Undefined();
  });
}

// takeOpProfile() -> [{ op, device, calls, ms }], largest first; waits for queued device work; restarts.
Napi::Value take_op_profile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::vector<OpProfileRow> rows = instill::take_op_profile();
    Napi::Array out = Napi::Array::New(env, rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("op", rows[i].op);
      o.Set("device", device_name(rows[i].device));
      o.Set("calls", static_cast<double>(rows[i].calls));
      o.Set("ms", rows[i].ms);
      out.Set(static_cast<uint32_t>(i), o);
    }
    return out;
  });
}

// nextKernels() -> names: what INSTILL_CUDA_NEXT turns on now (runtime/next.h); E_ARG on an unknown name.
Napi::Value next_kernels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::vector<std::string> names = next_enabled_names();
    Napi::Array out = Napi::Array::New(env, names.size());
    for (size_t i = 0; i < names.size(); ++i) out.Set(static_cast<uint32_t>(i), names[i]);
    return out;
  });
}

}  // namespace

void register_runtime(Napi::Env env, Napi::Object exports) {
  exports.Set("nextKernels", Napi::Function::New(env, next_kernels, "nextKernels"));
  exports.Set("runtimeInfo", Napi::Function::New(env, runtime_info, "runtimeInfo"));
  exports.Set("setThreads", Napi::Function::New(env, set_threads, "setThreads"));
  exports.Set("setIsa", Napi::Function::New(env, set_isa, "setIsa"));
  exports.Set("setPoison", Napi::Function::New(env, set_poison, "setPoison"));
  exports.Set("releaseHostMemory", Napi::Function::New(env, release_host_memory, "releaseHostMemory"));
  exports.Set("setOpProfile", Napi::Function::New(env, set_op_profile, "setOpProfile"));
  exports.Set("takeOpProfile", Napi::Function::New(env, take_op_profile, "takeOpProfile"));
}

}  // namespace binding
}  // namespace instill
