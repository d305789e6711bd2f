// The CPU backend's implementations of the model's ops (embedding, rmsnorm, rope,
// attention, swiglu, adamw, add). Arguments arrive validated by the ops' front
// functions (native/ops/<op>.cpp).
#pragma once

#include "ops/backend.h"

namespace instill {
namespace cpu {

void embedding_forward(const EmbeddingForwardArgs& args);
void embedding_backward(const EmbeddingBackwardArgs& args);
void rmsnorm_forward(const RmsnormForwardArgs& args);
void rmsnorm_backward(const RmsnormBackwardArgs& args);
void rope_forward(const RopeArgs& args);
void rope_backward(const RopeArgs& args);
void attention_forward(const AttentionForwardArgs& args);
void attention_backward(const AttentionBackwardArgs& args);
void attention_decode(const AttentionDecodeArgs& args);
void swiglu_forward(const SwigluForwardArgs& args);
void swiglu_backward(const SwigluBackwardArgs& args);
void adamw_step(const AdamwArgs& args);
double sum_squares(const SumSquaresArgs& args);
void add(const AddArgs& args);
void bias_add(const BiasAddArgs& args);
void lora_dropout_forward(const LoraDropoutForwardArgs& args);
void lora_dropout_backward(const LoraDropoutBackwardArgs& args);

}  // namespace cpu
}  // namespace instill
