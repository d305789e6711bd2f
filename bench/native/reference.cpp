// instill_bench_ref.node: the OpenBLAS reference for `instill bench kernels`.
//
// OpenBLAS (Debian: libopenblas0-pthread) is loaded with dlopen when the
// benchmark asks for it; neither this file nor OpenBLAS is part of the instill
// addon. It exposes, on Float32Arrays:
//   available() -> string | null            the library loaded, or null
//   setThreads(n)
//   sgemm(a, b, c, M, N, K, transA, transB, alpha, beta)   row-major
//   loraComposed(x, w, a, b, dy, y, u, t, g, dx, dx2, da, db, N, IN, OUT, R, scale)
//     the LoRA linear forward+backward composed from separate sgemm calls plus the
//     element-wise passes that instill's fused kernel removes (y += s·t, dx += s·dx2).
#include <dlfcn.h>
#include <napi.h>

#include <string>

namespace {

using sgemm_fn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
using set_threads_fn = void (*)(int);

struct Blas {
  void* lib = nullptr;
  sgemm_fn sgemm = nullptr;
  set_threads_fn set_threads = nullptr;
  std::string name;
};

Blas& blas() {
  static Blas b = [] {
    Blas r;
    for (const char* name : {"libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"}) {
      r.lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (r.lib) {
        r.name = name;
        break;
      }
    }
    if (r.lib) {
      r.sgemm = reinterpret_cast<sgemm_fn>(dlsym(r.lib, "cblas_sgemm"));
      r.set_threads = reinterpret_cast<set_threads_fn>(dlsym(r.lib, "openblas_set_num_threads"));
    }
    return r;
  }();
  return b;
}

float* f32(const Napi::Value& v) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(v.Env(), "expected a Float32Array");
  }
  return v.As<Napi::Float32Array>().Data();
}

int i32(const Napi::Value& v) { return v.As<Napi::Number>().Int32Value(); }

void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, const float* b, float beta, float* c) {
  // CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
  blas().sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha, a, ta ? m : k, b, tb ? k : n, beta, c, n);
}

Napi::Value available(const Napi::CallbackInfo& info) {
  Blas& b = blas();
  if (!b.sgemm) return info.Env().Null();
  return Napi::String::New(info.Env(), b.name);
}

Napi::Value set_threads(const Napi::CallbackInfo& info) {
  if (blas().set_threads) blas().set_threads(i32(info[0]));
  return info.Env().Undefined();
}

Napi::Value sgemm(const Napi::CallbackInfo& info) {
  if (!blas().sgemm) throw Napi::Error::New(info.Env(), "OpenBLAS is not available");
  gemm(info[6].ToBoolean(), info[7].ToBoolean(), i32(info[3]), i32(info[4]), i32(info[5]),
       static_cast<float>(info[8].As<Napi::Number>().DoubleValue()), f32(info[0]), f32(info[1]),
       static_cast<float>(info[9].As<Napi::Number>().DoubleValue()), f32(info[2]));
  return info.Env().Undefined();
}

Napi::Value lora_composed(const Napi::CallbackInfo& info) {
  if (!blas().sgemm) throw Napi::Error::New(info.Env(), "OpenBLAS is not available");
  float *x = f32(info[0]), *w = f32(info[1]), *a = f32(info[2]), *b = f32(info[3]), *dy = f32(info[4]);
  float *y = f32(info[5]), *u = f32(info[6]), *t = f32(info[7]), *g = f32(info[8]), *dx = f32(info[9]);
  float *dx2 = f32(info[10]), *da = f32(info[11]), *db = f32(info[12]);
  const int n = i32(info[13]), in = i32(info[14]), out = i32(info[15]), r = i32(info[16]);
  const float s = static_cast<float>(info[17].As<Napi::Number>().DoubleValue());
  // forward
  gemm(false, true, n, r, in, 1, x, a, 0, u);      // u = x·Aᵀ
  gemm(false, true, n, out, in, 1, x, w, 0, y);    // y = x·Wᵀ
  gemm(false, true, n, out, r, 1, u, b, 0, t);     // t = u·Bᵀ
  for (long i = 0; i < long(n) * out; ++i) y[i] += s * t[i];  // the pass over y that fusion removes
  // backward
  gemm(false, false, n, r, out, 1, dy, b, 0, g);   // g = dy·B
  gemm(false, false, n, in, out, 1, dy, w, 0, dx); // dx = dy·W
  gemm(false, false, n, in, r, 1, g, a, 0, dx2);   // dx2 = g·A
  for (long i = 0; i < long(n) * in; ++i) dx[i] += s * dx2[i];  // the pass over dx that fusion removes
  gemm(true, false, r, in, n, s, g, x, 0, da);     // dA = s·gᵀ·x
  gemm(true, false, out, r, n, s, dy, u, 0, db);   // dB = s·dyᵀ·u
  return info.Env().Undefined();
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("available", Napi::Function::New(env, available));
  exports.Set("setThreads", Napi::Function::New(env, set_threads));
  exports.Set("sgemm", Napi::Function::New(env, sgemm));
  exports.Set("loraComposed", Napi::Function::New(env, lora_composed));
  return exports;
}

}  // namespace

NODE_API_MODULE(instill_bench_ref, init)
