// The CUDA backend's table (ops/backend.h), registered in ops/backend.cpp under
// INSTILL_CUDA. Filled by member assignment so entries added to Backend later
// stay null (= E_UNSUPPORTED on CUDA) until a kernel exists.
// Every entry of the table has a CUDA kernel.
#include "ops/backend.h"

namespace instill {
namespace cuda {

void matmul(const MatmulArgs&);
void lora_linear_forward(const LoraLinearForwardArgs&);
void lora_linear_backward(const LoraLinearBackwardArgs&);
CrossEntropyResult masked_cross_entropy(const MaskedCrossEntropyArgs&);
CrossEntropyResult linear_cross_entropy(const LinearCrossEntropyArgs&);
void embedding_forward(const EmbeddingForwardArgs&);
void embedding_backward(const EmbeddingBackwardArgs&);
void rmsnorm_forward(const RmsnormForwardArgs&);
void rmsnorm_backward(const RmsnormBackwardArgs&);
void rope_forward(const RopeArgs&);
void rope_backward(const RopeArgs&);
void attention_forward(const AttentionForwardArgs&);
void attention_backward(const AttentionBackwardArgs&);
void attention_decode(const AttentionDecodeArgs&);
void swiglu_forward(const SwigluForwardArgs&);
void swiglu_backward(const SwigluBackwardArgs&);
void adamw_step(const AdamwArgs&);
double sum_squares(const SumSquaresArgs&);
void add(const AddArgs&);
void bias_add(const BiasAddArgs&);
void lora_dropout_forward(const LoraDropoutForwardArgs&);
void lora_dropout_backward(const LoraDropoutBackwardArgs&);
void lora_group_forward(const LoraGroupForwardArgs&);
void lora_group_backward(const LoraGroupBackwardArgs&);
void lora_pack_factors(const LoraPackFactorsArgs&);
uint64_t side_count();  // runtime.cu (cuda/common.cuh)
void join_side(uint64_t upto);

namespace {
Backend make_backend() {
  Backend b{};
  b.name = "cuda";
  b.device = Device::CUDA;
  b.matmul = matmul;
  b.lora_linear_forward = lora_linear_forward;
  b.lora_linear_backward = lora_linear_backward;
  b.masked_cross_entropy = masked_cross_entropy;
  b.linear_cross_entropy = linear_cross_entropy;
  b.embedding_forward = embedding_forward;
  b.embedding_backward = embedding_backward;
  b.rmsnorm_forward = rmsnorm_forward;
  b.rmsnorm_backward = rmsnorm_backward;
  b.rope_forward = rope_forward;
  b.rope_backward = rope_backward;
  b.attention_forward = attention_forward;
  b.attention_backward = attention_backward;
  b.attention_decode = attention_decode;
  b.swiglu_forward = swiglu_forward;
  b.swiglu_backward = swiglu_backward;
  b.adamw_step = adamw_step;
  b.sum_squares = sum_squares;
  b.add = add;
  b.bias_add = bias_add;
  b.lora_dropout_forward = lora_dropout_forward;
  b.lora_dropout_backward = lora_dropout_backward;
  b.lora_group_forward = lora_group_forward;
  b.lora_group_backward = lora_group_backward;
  b.lora_pack_factors = lora_pack_factors;
  b.side_work_count = side_count;
  b.join_side_work = [](uint64_t upto) { join_side(upto); };
  return b;
}
}  // namespace

const Backend& backend() {
  static const Backend b = make_backend();
  return b;
}

}  // namespace cuda
}  // namespace instill
