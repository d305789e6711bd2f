#include "runtime/error.h"

namespace instill {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::Arg: return "E_ARG";
    case ErrorCode::Shape: return "E_SHAPE";
    case ErrorCode::DType: return "E_DTYPE";
    case ErrorCode::Range: return "E_RANGE";
    case ErrorCode::Alloc: return "E_ALLOC";
    case ErrorCode::Device: return "E_DEVICE";
    case ErrorCode::IO: return "E_IO";
    case ErrorCode::Data: return "E_DATA";
    case ErrorCode::Unsupported: return "E_UNSUPPORTED";
    case ErrorCode::Internal: return "E_INTERNAL";
  }
  return "E_INTERNAL";
}

}  // namespace instill
