// matmul on CUDA (ops/matmul.h): one call of the backend's GEMM (gemm.h), so
// bf16 operand rounding applies even to f32 inputs (bf16 tolerance, not f32).
#include "cuda/gemm.h"
#include "ops/matmul.h"

namespace instill {
namespace cuda {

void matmul(const MatmulArgs& p) {
  GemmArgs g;
  g.M = p.c->dim(0);
  g.N = p.c->dim(1);
  g.K[0] = p.trans_a ? p.a->dim(0) : p.a->dim(1);
  // a stored (M, K) [or (K, M) when trans_a]; b stored (K, N) [or (N, K) when trans_b].
  g.a[0] = operand(*p.a, p.trans_a);
  g.b[0] = operand(*p.b, p.trans_b);
  g.c = p.c->data_as<float>();
  g.ldc = g.N;
  if (g.K[0] == 0) {
    fill_bytes(g.c, Device::CUDA, 0, p.c->nbytes());
    return;
  }
  gemm(g);
}

}  // namespace cuda
}  // namespace instill
