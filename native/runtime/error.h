// Typed errors of the engine.
//
// Rule: native code never ends the process. Anything a caller can get wrong
// (shapes, dtypes, ranges, sizes) is checked and thrown as instill::Error with a
// code; the binding turns it into a JS InstillError with the same code. The code
// names must match src/errors.ts.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace instill {

enum class ErrorCode {
  Arg,          // E_ARG: missing / wrong-typed / out-of-set argument
  Shape,        // E_SHAPE
  DType,        // E_DTYPE
  Range,        // E_RANGE: a value out of range (target id >= V, ...)
  Alloc,        // E_ALLOC: allocation failed or absurd size
  Device,       // E_DEVICE: device absent or not built in
  IO,           // E_IO
  Data,         // E_DATA
  Unsupported,  // E_UNSUPPORTED
  Internal,     // E_INTERNAL: a bug
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Concatenates anything streamable: cat("expected ", n, " rows").
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

template <typename... Parts>
[[noreturn]] void fail(ErrorCode code, const Parts&... parts) {
  throw Error(code, cat(parts...));
}

}  // namespace instill
