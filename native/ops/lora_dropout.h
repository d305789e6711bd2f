// lora_dropout: a frozen linear layer with a LoRA adapter whose low-rank branch sees
// dropout(x), as PEFT's LoRA layer computes it in training:
//
// Forward   xd = x ⊙ mask / (1 − p)                 (N, IN)  regenerated, never stored
//           u  = xd·Aᵀ                              (N, R)   kept for backward
//           y  = x·Wᵀ + bias + s·u·Bᵀ                (N, OUT)  (+ lora_linear's residual, when given)
// Backward  g  = dy·B                               (N, R)
//           dx = dy·W + s·(g·A) ⊙ mask / (1 − p)    (N, IN)  written (=), or null
//           dA = s·gᵀ·xd    dB = s·dyᵀ·u            = or += (accumulate)
//
// The mask is a pure function of (seed, element index): element i of x is kept iff
// dropout_hash(seed, i) >= p · 2³², so the backward (and a checkpointed forward)
// regenerates exactly the forward's mask. 0 <= p < 1; p = 0 is lora_linear.
// dtypes as lora_linear's: bf16 activations beside a bf16/f16 weight are computed in f32 on f32
// copies (x, dy; dx when added to), the outputs rounded once.
#pragma once

#include <cstdint>

#include "ops/lora_linear.h"
#include "runtime/tensor.h"

namespace instill {

// Host and device (native/cuda/lora_dropout.cu draws the same masks on the GPU).
#ifdef __CUDACC__
#define INSTILL_HOST_DEVICE __host__ __device__
#else
#define INSTILL_HOST_DEVICE
#endif

// murmur3's 32-bit finaliser over (seed, index); the same function is in
// src/model/dropout.ts so tests can rebuild a mask.
INSTILL_HOST_DEVICE inline uint32_t dropout_fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}
INSTILL_HOST_DEVICE inline uint32_t dropout_hash(uint32_t seed, uint64_t index) {
  const uint32_t lo = static_cast<uint32_t>(index), hi = static_cast<uint32_t>(index >> 32);
  return dropout_fmix32(dropout_fmix32(lo * 0x9e3779b1u + seed) ^ dropout_fmix32(hi + 0x7f4a7c15u) ^ seed);
}

// lora_linear's arguments (the same shapes, dtypes and checks) plus the dropout.
struct LoraDropoutForwardArgs {
  LoraLinearForwardArgs linear;
  float p;        // dropout probability
  uint32_t seed;  // of this call's masks
};

struct LoraDropoutBackwardArgs {
  LoraLinearBackwardArgs linear;  // u from the forward
  float p;
  uint32_t seed;  // the forward's
};

void lora_dropout_forward(const LoraDropoutForwardArgs& args);
void lora_dropout_backward(const LoraDropoutBackwardArgs& args);

}  // namespace instill
