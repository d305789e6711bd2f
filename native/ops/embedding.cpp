#include "ops/embedding.h"

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

namespace {
void need_ids_in_range(const Tensor& ids, const Tensor* ids_host, int64_t v) {
  std::vector<int32_t> host;
  if (ids_host) {
    need_dtype(*ids_host, "ids_host", {DType::I32});
    need_shape(*ids_host, "ids_host", {ids.dim(0)}, "(N,) like ids");
    need_same_device(*ids_host, "ids_host", Device::CPU);
  }
  const int32_t* p = ids_host ? ids_host->data_as<int32_t>() : host_i32(ids, host);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (p[i] < 0 || p[i] >= v) fail(ErrorCode::Range, "token id ", p[i], " at index ", i, " is outside [0, ", v, ")");
  }
}
}  // namespace

void embedding_forward(const EmbeddingForwardArgs& p) {
  const Tensor& ids = need(p.ids, "ids");
  const Tensor& w = need(p.w, "w");
  const Tensor& out = need(p.out, "out");
  need_dtype(ids, "ids", {DType::I32});
  need_dtype(w, "w", {DType::F32, DType::BF16, DType::F16});
  need_dtype(out, "out", {DType::F32});
  need_ndim(ids, "ids", 1);
  need_ndim(w, "w", 2);
  need_shape(out, "out", {ids.dim(0), w.dim(1)}, "(N, C)");
  need_same_device(w, "w", ids.device());
  need_same_device(out, "out", ids.device());
  need_ids_in_range(ids, p.ids_host, w.dim(0));
  run_op(ids.device(), &Backend::embedding_forward, "embedding_forward", p);
}

void embedding_backward(const EmbeddingBackwardArgs& p) {
  const Tensor& dout = need(p.dout, "dout");
  const Tensor& ids = need(p.ids, "ids");
  const Tensor& dw = need(p.dw, "dw");
  need_dtype(ids, "ids", {DType::I32});
  need_dtype(dout, "dout", {DType::F32});
  need_dtype(dw, "dw", {DType::F32});
  need_ndim(ids, "ids", 1);
  need_ndim(dw, "dw", 2);
  need_shape(dout, "dout", {ids.dim(0), dw.dim(1)}, "(N, C)");
  need_same_device(dw, "dw", ids.device());
  need_same_device(dout, "dout", ids.device());
  need_ids_in_range(ids, p.ids_host, dw.dim(0));
  run_op(ids.device(), &Backend::embedding_backward, "embedding_backward", p);
}

}  // namespace instill
