#include "runtime/dtype.h"

#include "runtime/error.h"

namespace instill {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
  }
  return "?";
}

DType parse_dtype(const std::string& name) {
  if (name == "f32" || name == "float32") return DType::F32;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  if (name == "f16" || name == "float16") return DType::F16;
  if (name == "i32" || name == "int32") return DType::I32;
  fail(ErrorCode::DType, "unknown dtype '", name, "': expected one of f32, bf16, f16, i32");
}

}  // namespace instill
