// embedding on CUDA (ops/embedding.h). Ids were range-checked on the host by the
// op's front function; the kernels still skip an out-of-range id (writing NaN in
// the forward) rather than touch memory outside the table.
// Backward: dw[ids[n], :] += dout[n, :] with f32 atomics, one thread per element:
// repeated ids are summed in an unspecified order (not bit-reproducible run to run).
#include "cuda/common.cuh"
#include "ops/embedding.h"

namespace instill {
namespace cuda {

namespace {
__global__ void embedding_forward_kernel(const int32_t* ids, const void* w, Elem we, int64_t V, int64_t N, int64_t C,
                                         float* out) {  // ids (N), w (V, C), out (N, C)
  pdl_enter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N * C;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / C, c = i % C;
    const int32_t id = ids[n];
    out[i] = (id >= 0 && id < V) ? load_f32(w, we, id * C + c) : NAN;
  }
}

__global__ void embedding_backward_kernel(const float* dout, const int32_t* ids, int64_t V, int64_t N, int64_t C,
                                          float* dw) {  // dout (N, C), dw (V, C) +=
  pdl_enter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N * C;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / C, c = i % C;
    const int32_t id = ids[n];
    if (id >= 0 && id < V) atomicAdd(dw + id * C + c, dout[i]);
  }
}
}  // namespace

void embedding_forward(const EmbeddingForwardArgs& p) {
  const int64_t N = p.ids->dim(0), V = p.w->dim(0), C = p.w->dim(1);
  if (N * C == 0) return;
  launch("embedding_forward_kernel", embedding_forward_kernel, grid_1d(N * C, 256), 256, 0, stream(),
         p.ids->data_as<int32_t>(), p.w->data(), elem_of(*p.w), V, N, C, p.out->data_as<float>());
}

void embedding_backward(const EmbeddingBackwardArgs& p) {
  const int64_t N = p.ids->dim(0), V = p.dw->dim(0), C = p.dw->dim(1);
  if (N * C == 0) return;
  launch("embedding_backward_kernel", embedding_backward_kernel, grid_1d(N * C, 256), 256, 0, stream(),
         p.dout->data_as<float>(), p.ids->data_as<int32_t>(), V, N, C, p.dw->data_as<float>());
}

}  // namespace cuda
}  // namespace instill
