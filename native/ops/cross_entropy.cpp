#include "ops/cross_entropy.h"

#include <cmath>

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

namespace {

void need_normalizer(double normalizer) {
  if (std::isnan(normalizer) || std::isinf(normalizer)) {
    fail(ErrorCode::Arg, "'normalizer' must be a finite number (or <= 0 for the mean), got ", normalizer);
  }
}

// Target values can only be checked where they are readable; CPU tensors are checked here.
void need_targets_in_range(const Tensor& targets, int64_t v, int32_t ignore_index) {
  if (targets.device() != Device::CPU) return;
  const int32_t* t = targets.data_as<int32_t>();
  for (int64_t i = 0; i < targets.numel(); ++i) {
    if (t[i] == ignore_index) continue;
    if (t[i] < 0 || t[i] >= v) {
      fail(ErrorCode::Range, "targets[", i, "] = ", t[i], " is outside the vocabulary [0, ", v,
           ") and is not the ignore index ", ignore_index);
    }
  }
}

}  // namespace

CrossEntropyResult masked_cross_entropy(const MaskedCrossEntropyArgs& p) {
  const Tensor& logits = need(p.logits, "logits");
  const Tensor& targets = need(p.targets, "targets");
  need_dtype(logits, "logits", {DType::F32});
  need_dtype(targets, "targets", {DType::I32});
  need_ndim(logits, "logits", 2);
  const int64_t n = logits.dim(0), v = logits.dim(1);
  need_shape(targets, "targets", {n}, "(N,): one target per row of logits");
  if (v == 0 && n > 0) fail(ErrorCode::Shape, "'logits' has 0 columns: the vocabulary must not be empty");
  need_same_device(targets, "targets", logits.device());
  if (p.dlogits) {
    need_dtype(*p.dlogits, "dlogits", {DType::F32});
    need_shape(*p.dlogits, "dlogits", {n, v}, "(N, V), like logits");
    need_same_device(*p.dlogits, "dlogits", logits.device());
  }
  need_normalizer(p.normalizer);
  need_targets_in_range(targets, v, p.ignore_index);
  return run_op(logits.device(), &Backend::masked_cross_entropy, "masked_cross_entropy", p);
}

CrossEntropyResult linear_cross_entropy(const LinearCrossEntropyArgs& p) {
  const Tensor& h = need(p.h, "h");
  const Tensor& w = need(p.w, "w");
  const Tensor& targets = need(p.targets, "targets");
  need_dtype(h, "h", {DType::F32});
  need_dtype(w, "w", {DType::F32, DType::BF16, DType::F16});
  need_dtype(targets, "targets", {DType::I32});
  need_ndim(h, "h", 2);
  need_ndim(w, "w", 2);
  const int64_t n = h.dim(0), c = h.dim(1), v = w.dim(0);
  need_shape(w, "w", {v, c}, "(V, C) with C = h's columns");
  need_shape(targets, "targets", {n}, "(N,): one target per row of h");
  if (v == 0 && n > 0) fail(ErrorCode::Shape, "'w' has 0 rows: the vocabulary must not be empty");
  need_same_device(w, "w", h.device());
  need_same_device(targets, "targets", h.device());
  if (p.dh) {
    need_dtype(*p.dh, "dh", {DType::F32});
    need_shape(*p.dh, "dh", {n, c}, "(N, C), like h");
    need_same_device(*p.dh, "dh", h.device());
  }
  if (p.dw) {
    need_dtype(*p.dw, "dw", {DType::F32});
    need_shape(*p.dw, "dw", {v, c}, "(V, C), like w");
    need_same_device(*p.dw, "dw", h.device());
  }
  need_normalizer(p.normalizer);
  if (p.chunk_rows < 0) fail(ErrorCode::Arg, "'chunkRows' must be >= 0 (0 picks it from memory), got ", p.chunk_rows);
  if (p.targets_host) {
    need_dtype(*p.targets_host, "targets_host", {DType::I32});
    need_shape(*p.targets_host, "targets_host", {n}, "(N,) like targets");
    need_same_device(*p.targets_host, "targets_host", Device::CPU);
  }
  need_targets_in_range(p.targets_host ? *p.targets_host : targets, v, p.ignore_index);
  return run_op(h.device(), &Backend::linear_cross_entropy, "linear_cross_entropy", p);
}

}  // namespace instill
