// INSTILL_CUDA_NEXT: code waiting for a GPU run (compiled and reviewed, not yet tested or timed on a GPU;
// native/cuda/README.md lists it) runs instead of the verified path, each piece by its name. The value is
// `1` or `all` for every one, or a comma list of names (next.cpp's kAll), and `-name` leaves one out
// (`all,-rope_qk`), read left to right; `none` is no piece (the verified kernels), `default` the pieces a GPU
// run has promoted (kAll's `promoted`: on when the variable is unset). So a GPU session makes default,
// one by one, those that pass and time well, by promoting them, and the pieces' tests still compare `none`
// against each piece. An unknown name is E_ARG. Read on every call (parsed again only when the value changes), so a test can compare both
// paths in one process, and bench/gpu-check.sh A/Bs them. Backend-agnostic: the CUDA kernels ask it, and so
// does the model where what waits is its own (the kept [W | B]).
#pragma once

#include <string>
#include <vector>

namespace instill {

enum class Next {
  Residual,   // "residual": lora_linear's residual added inside the product (cuBLASLt's C != D) instead of after
  WbCache,    // "wb_cache": the model keeps each adapted linear's [W | B] on the GPU (no copy of W per forward)
  FlashLean,  // "flash_lean": the flash kernels with leaner inner loops (attention_lean.cu)
  LoraGroup,  // "lora_group": the model's q, k, v (gate, up) as one lora_group op each (lora_group.cu)
  SwigluPack,  // "swiglu_pack": with lora_group, swiglu's backward writes dgate, dup into the group's packed dy
  NormPack,    // "norm_pack": the norms write xn1, xn2 into the groups' packed x (with lora_group) and the residual
               // gradient's bf16 copy into o/down's packed dy
  FewerPacks,  // "fewer_packs": LoRA's products read the bf16 copies of B, A, s·u and s·g that exist already, and g's
               // product writes s·g in bf16 itself (lora_linear.cu, lora_group.cu): ~290 small packs a 1B step fewer
  RopeQK,      // "rope_qk": the model's q and k through one rope call, one pass on CUDA (bf16 activations, rope.cu)
  FactorPack,  // "factor_pack": the model rounds every B and A of a pass into the kept matrices in one launch
               // (ops/lora_pack.h) instead of each forward in one or two of its own (~96 launches a 1B step)
  CeWide,      // "ce_wide": linear_cross_entropy's f32 logits in sub-chunks of up to 512 MiB, not 256 (half the passes
               // over the head's W: 2 instead of 4 for the 1B model's 2047 rows; cross_entropy.cu)
  AttnPack,    // "attn_pack": the attention writes its output straight into o_proj's packed x (ops/attention.h's
               // out_packed), which o_proj's forward and backward and the attention's backward read in place
  DqkvPack,    // "dqkv_pack": the backward's rope writes dq, dk and the attention dv straight into the q/k/v group's
               // packed dy (ops/rope.h's out_packed, ops/attention.h's dv_packed) instead of lora_group packing them
  CeBf16,      // "ce_bf16": linear_cross_entropy's logits in bf16 (a bf16 head), written by the product into the rows of
               // the softmax gradient's buffer and turned into it in place: one logits product a chunk (cross_entropy.cu)
  SideGrads,   // "side_grads": the model's LoRA backwards leave dA and dB to a side stream (ops/lora_linear.h's
               // side_grads), off the pass's critical path, and the model joins it where it must (model/llama.cpp)
  FlashWgmma,  // "flash_wgmma": the attention forward on Hopper's warpgroup products (wgmma) where the GPU has compute
               // capability 9.0, in place of the lean forward (attention_wgmma.cu)
  DqWgmma,     // "dq_wgmma": the attention backward's dQ kernel on Hopper's warpgroup products likewise (D 64; with
               // flash_lean, in place of its dQ kernel; attention_wgmma.cu)
  DkvWgmma,    // "dkv_wgmma": its dK/dV kernel likewise (D 64; with flash_lean, in place of its dK/dV kernel)
  AsyncUpload,  // "async_upload": a small host-to-device copy goes through pinned staging memory and returns without
                // waiting for the GPU (runtime.cu): the pass's input, loss-row and optimizer-table uploads no longer
                // stop the host until the GPU has run everything queued before them
  Pdl,          // "pdl": on a GPU of compute capability 9.0, every kernel on the main stream is a programmatic
                // dependent launch (cuda/common.cuh's launch()): placed while the kernel ahead of it still runs its last
                // wave, it waits in pdl_enter() for that kernel's writes, so its launch overlaps the other's tail
  DeltaRows,    // "delta_rows": the attention backward's Δ = rowsum(dO ∘ O) with bf16 activations a warp a token row from
                // 16-byte loads (D 64, 128), in the other kernel's order of sums: the same bits (attention_simple.cu)
  RopeRows,     // "rope_rows": with rope_qk, the q/k pass a warp a token, each lane's four columns' angles in registers:
                // the same bits, no shared memory or barriers (rope.cu)
};

// Whether INSTILL_CUDA_NEXT turns `which` on (E_ARG on a value naming an unknown piece).
bool next_enabled(Next which);
// The names it turns on, in Next's order (runtime.nextKernels() in JS; E_ARG as above).
std::vector<std::string> next_enabled_names();

}  // namespace instill
