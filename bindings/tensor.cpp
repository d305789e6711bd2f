// TensorHandle: the JS object that owns a native Tensor. src/tensor.ts wraps it
// in the public Tensor class; conversions between typed arrays and dtypes
// happen here, in one pass, off the JS heap.
#include <cmath>
#include <cstring>

#include "common.h"

namespace instill {
namespace binding {
namespace {

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "TensorHandle",
                       {
                           InstanceAccessor<&TensorHandle::shape>("shape"),
                           InstanceAccessor<&TensorHandle::dtype>("dtype"),
                           InstanceAccessor<&TensorHandle::device>("device"),
                           InstanceAccessor<&TensorHandle::nbytes>("nbytes"),
                           InstanceMethod<&TensorHandle::to_array>("toArray"),
                           InstanceMethod<&TensorHandle::dispose>("dispose"),
                       });
  }

  explicit TensorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorHandle>(info) {}
  ~TensorHandle() override {
    if (accounted_ > 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -accounted_);
  }

  void set(Napi::Env env, Tensor t) {
    tensor_ = std::move(t);
    accounted_ = static_cast<int64_t>(tensor_.nbytes());
    if (accounted_ > 0) Napi::MemoryManagement::AdjustExternalMemory(env, accounted_);
  }
  const Tensor& tensor() const { return tensor_; }
  bool disposed() const { return disposed_; }

 private:
  // dispose(): lets go of the data now (this handle's share of it: a model's weight, or an op's output still
  // being used, keeps its own), instead of when V8 collects the handle. Node runs N-API finalizers only once the
  // event loop turns (a setImmediate after the collection), so a synchronous loop of ops would otherwise hold
  // every output it made until it yields. Using the handle afterwards is an E_ARG error; disposing twice is not.
  void dispose(const Napi::CallbackInfo& info) {
    if (accounted_ > 0) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -accounted_);
    accounted_ = 0;
    tensor_ = Tensor();
    disposed_ = true;
  }
  void live(Napi::Env env) const {
    if (disposed_) throw make_error(env, "E_ARG", "the tensor was disposed (tensor.dispose())");
  }

  Napi::Value shape(const Napi::CallbackInfo& info) {
    live(info.Env());
    Napi::Array arr = Napi::Array::New(info.Env(), tensor_.shape().size());
    for (size_t i = 0; i < tensor_.shape().size(); ++i) {
      arr.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(tensor_.shape()[i])));
    }
    return arr;
  }
  Napi::Value dtype(const Napi::CallbackInfo& info) {
    live(info.Env());
    return Napi::String::New(info.Env(), dtype_name(tensor_.dtype()));
  }
  Napi::Value device(const Napi::CallbackInfo& info) {
    live(info.Env());
    return Napi::String::New(info.Env(), device_name(tensor_.device()));
  }
  Napi::Value nbytes(const Napi::CallbackInfo& info) {
    live(info.Env());
    return Napi::Number::New(info.Env(), static_cast<double>(tensor_.nbytes()));
  }

  // f32/bf16/f16 -> Float32Array (converted), i32 -> Int32Array.
  Napi::Value to_array(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    return guarded(env, [&]() -> Napi::Value {
      if (tensor_.device() != Device::CPU) {
        fail(ErrorCode::Device, "toArray() needs a CPU tensor; move it with .to('cpu') first");
      }
      const size_t n = static_cast<size_t>(tensor_.numel());
      if (tensor_.dtype() == DType::I32) {
        Napi::Int32Array out = Napi::Int32Array::New(env, n);
        if (n) std::memcpy(out.Data(), tensor_.data(), n * 4);
        return out;
      }
      Napi::Float32Array out = Napi::Float32Array::New(env, n);
      float* dst = out.Data();
      const uint16_t* half = tensor_.data_as<uint16_t>();
      switch (tensor_.dtype()) {
        case DType::F32:
          if (n) std::memcpy(dst, tensor_.data(), n * 4);
          break;
        case DType::BF16:
          for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(half[i]);
          break;
        case DType::F16:
          for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(half[i]);
          break;
        default: break;
      }
      return out;
    });
  }

  Tensor tensor_;
  int64_t accounted_ = 0;
  bool disposed_ = false;
};

Shape read_shape(Napi::Env env, const Napi::Value& v) {
  if (!v.IsArray()) throw make_error(env, "E_ARG", "'shape' must be an array of non-negative integers");
  Napi::Array arr = v.As<Napi::Array>();
  Shape shape;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value d = arr.Get(i);
    double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(x >= 0) || x != std::floor(x) || x > 9007199254740991.0) {
      throw make_error(env, "E_SHAPE", "'shape' must be an array of non-negative integers");
    }
    shape.push_back(static_cast<int64_t>(x));
  }
  return shape;
}

template <typename Src>
void convert(const Src* src, size_t n, const Tensor& t) {
  switch (t.dtype()) {
    case DType::F32: {
      float* d = t.data_as<float>();
      for (size_t i = 0; i < n; ++i) d[i] = static_cast<float>(src[i]);
      break;
    }
    case DType::BF16: {
      uint16_t* d = t.data_as<uint16_t>();
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(static_cast<float>(src[i]));
      break;
    }
    case DType::F16: {
      uint16_t* d = t.data_as<uint16_t>();
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(static_cast<float>(src[i]));
      break;
    }
    case DType::I32: {
      int32_t* d = t.data_as<int32_t>();
      for (size_t i = 0; i < n; ++i) {
        const double x = static_cast<double>(src[i]);
        if (x != std::floor(x) || x < -2147483648.0 || x > 2147483647.0) {
          fail(ErrorCode::Arg, "element ", i, " (", x, ") is not a 32-bit integer; an i32 tensor needs integers");
        }
        d[i] = static_cast<int32_t>(x);
      }
      break;
    }
  }
}

// fromArray(typedArray, shape, dtype): copies (and converts) into a new CPU tensor.
// Float32Array / Float64Array / Int32Array convert to any dtype; a Uint16Array
// holds raw bf16 or f16 bits and needs that dtype.
Napi::Value from_array(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 3 || !info[0].IsTypedArray() || !info[2].IsString()) {
      fail(ErrorCode::Arg, "fromArray(typedArray, shape, dtype) expects a typed array, a shape and a dtype name");
    }
    Napi::TypedArray arr = info[0].As<Napi::TypedArray>();
    Shape shape = read_shape(env, info[1]);
    DType dtype = parse_dtype(info[2].As<Napi::String>().Utf8Value());
    const int64_t numel = shape_numel(shape);
    const size_t n = arr.ElementLength();
    if (static_cast<int64_t>(n) != numel) {
      fail(ErrorCode::Shape, "the array has ", n, " elements but shape ", shape_str(shape), " needs ", numel);
    }
    Tensor t = Tensor::empty(shape, dtype);
    const uint8_t* base = static_cast<const uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
    switch (arr.TypedArrayType()) {
      case napi_float32_array: convert(reinterpret_cast<const float*>(base), n, t); break;
      case napi_float64_array: convert(reinterpret_cast<const double*>(base), n, t); break;
      case napi_int32_array: convert(reinterpret_cast<const int32_t*>(base), n, t); break;
      case napi_uint16_array:
        if (dtype != DType::BF16 && dtype != DType::F16) {
          fail(ErrorCode::DType, "a Uint16Array holds raw bf16 or f16 bits: pass dtype 'bf16' or 'f16', not '",
               dtype_name(dtype), "'");
        }
        if (n) std::memcpy(t.data(), base, n * 2);
        break;
      default:
        fail(ErrorCode::Arg, "unsupported typed array: use Float32Array, Float64Array, Int32Array or Uint16Array");
    }
    return wrap_tensor(env, std::move(t));
  });
}

Device read_device(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return Device::CPU;
  if (!info[i].IsString()) fail(ErrorCode::Device, "device must be 'cpu' or 'cuda'");
  return parse_device(info[i].As<Napi::String>().Utf8Value());
}

// zeros(shape, dtype, device?)
Napi::Value zeros(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 2 || !info[1].IsString()) fail(ErrorCode::Arg, "zeros(shape, dtype) expects a shape and a dtype");
    Shape shape = read_shape(env, info[0]);
    return wrap_tensor(env, Tensor::zeros(shape, parse_dtype(info[1].As<Napi::String>().Utf8Value()), read_device(info, 2)));
  });
}

// tensorTo(tensor, device): the same tensor when it is already there, else a copy on `device`.
Napi::Value tensor_to(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Tensor* t = unwrap_tensor(env, info.Length() > 0 ? info[0] : env.Undefined(), "tensor", false);
    const Device dst = read_device(info, 1);
    if (info.Length() < 2) fail(ErrorCode::Arg, "tensorTo(tensor, device) expects a device");
    if (t->device() == dst) return wrap_tensor(env, *t);
    Tensor out = Tensor::empty(t->shape(), t->dtype(), dst);
    copy_bytes(out.data(), dst, t->data(), t->device(), t->nbytes());
    return wrap_tensor(env, std::move(out));
  });
}

// deviceUnavailableReason(device): '' when tensors can live there, else why not.
Napi::Value device_unavailable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    return Napi::String::New(env, device_unavailable_reason(read_device(info, 0)));
  });
}

// deviceMemoryStats(device, resetPeak): { inUse, peak, reserved } bytes of a GPU's
// memory through instill (benchmarks' peak memory); all 0 for the CPU.
Napi::Value device_memory_stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const Device d = read_device(info, 0);
    const bool reset = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    uint64_t in_use = 0, peak = 0, reserved = 0;
    if (d != Device::CPU) {
      const DeviceMemoryHooks* h = device_memory_hooks(d);
      if (h == nullptr || !h->available()) fail(ErrorCode::Device, "device '", device_name(d), "' is not available: ", device_unavailable_reason(d));
      h->stats(&in_use, &peak, &reserved, reset);
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("inUse", static_cast<double>(in_use));
    o.Set("peak", static_cast<double>(peak));
    o.Set("reserved", static_cast<double>(reserved));
    return o;
  });
}

// releaseDeviceMemory(device) -> bytes: gives a GPU's cached idle blocks back to the driver.
Napi::Value release_device_memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    return Napi::Number::New(env, static_cast<double>(device_release_cached(read_device(info, 0))));
  });
}

// deviceLaunchCounts(device) -> { launches, programmatic, pdl }: kernels launched on a GPU so far in this process, how
// many as programmatic dependent launches (INSTILL_CUDA_NEXT `pdl`), and whether a launch now would be one ("on") or
// why not: for tests and benchmarks.
Napi::Value device_launch_counts_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    uint64_t launches = 0, programmatic = 0;
    std::string pdl;
    device_launch_counts(read_device(info, 0), &launches, &programmatic, &pdl);
    Napi::Object o = Napi::Object::New(env);
    o.Set("launches", static_cast<double>(launches));
    o.Set("programmatic", static_cast<double>(programmatic));
    o.Set("pdl", pdl);
    return o;
  });
}

}  // namespace

const Tensor* unwrap_tensor(Napi::Env env, const Napi::Value& v, const char* name, bool optional) {
  if (optional && (v.IsUndefined() || v.IsNull())) return nullptr;
  if (v.IsObject() && v.As<Napi::Object>().InstanceOf(data(env).tensor_ctor.Value())) {
    const TensorHandle* h = TensorHandle::Unwrap(v.As<Napi::Object>());
    if (h->disposed()) throw make_error(env, "E_ARG", std::string("'") + name + "' was disposed (tensor.dispose())");
    return &h->tensor();
  }
  throw make_error(env, "E_ARG", std::string("'") + name + "' must be a Tensor (make one with Tensor.from)");
}

Napi::Object wrap_tensor(Napi::Env env, Tensor t) {
  Napi::Object obj = data(env).tensor_ctor.New({});
  TensorHandle::Unwrap(obj)->set(env, std::move(t));
  return obj;
}

void register_tensor(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = TensorHandle::define(env);
  data(env).tensor_ctor = Napi::Persistent(ctor);
  exports.Set("TensorHandle", ctor);
  exports.Set("tensorFromArray", Napi::Function::New(env, from_array, "tensorFromArray"));
  exports.Set("tensorZeros", Napi::Function::New(env, zeros, "tensorZeros"));
  exports.Set("tensorTo", Napi::Function::New(env, tensor_to, "tensorTo"));
  exports.Set("deviceMemoryStats", Napi::Function::New(env, device_memory_stats, "deviceMemoryStats"));
  exports.Set("releaseDeviceMemory", Napi::Function::New(env, release_device_memory, "releaseDeviceMemory"));
  exports.Set("deviceLaunchCounts", Napi::Function::New(env, device_launch_counts_js, "deviceLaunchCounts"));
  exports.Set("deviceUnavailableReason", Napi::Function::New(env, device_unavailable, "deviceUnavailableReason"));
}

}  // namespace binding
}  // namespace instill
