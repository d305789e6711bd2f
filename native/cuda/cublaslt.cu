// cuBLASLt for the frozen-weight products, loaded at run time (never linked).
//
// Not implemented yet: gemm_cublaslt() always declines and gemm.cu's WMMA kernel
// runs every product. The plan (issue 6, second half): dlopen libcublasLt.so.13
// (then .12) from the CUDA toolkit or the pip nvidia-cublas layout
// (site-packages/nvidia/cu13/lib, found through INSTILL_CUBLASLT or the loader
// path), take single-segment products with bf16 operands (f32 activations cast
// to bf16 in a scratch buffer first), and fall back to WMMA for everything else.
#include "cuda/gemm.h"

namespace instill {
namespace cuda {

bool gemm_cublaslt(const GemmArgs& g) {
  (void)g;
  return false;
}

}  // namespace cuda
}  // namespace instill
