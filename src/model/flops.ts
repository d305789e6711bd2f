// The arithmetic of a training step, as MFU counts it, and the GPUs whose dense bf16 peak we know: for `instill bench
// train`'s model TFLOP/s and MFU, `instill train`'s progress and metrics on a GPU (the Trainer's StepEvent.flops), and
// bench/gpu's step benchmark (the same count as its PyTorch side, bench/gpu/torch_bench.py).
import type { ModelSpec } from './config.js';
import { LORA_TARGETS, type LoraTarget } from './model.js';

/** Each projection's (in, out) features. */
function projections(spec: ModelSpec): Record<LoraTarget, [number, number]> {
  const C = spec.hiddenSize, F = spec.intermediateSize;
  const qo = spec.numHeads * spec.headDim, kv = spec.numKvHeads * spec.headDim;
  return {
    q_proj: [C, qo], k_proj: [C, kv], v_proj: [C, kv], o_proj: [qo, C],
    gate_proj: [C, F], up_proj: [C, F], down_proj: [F, C],
  };
}

export interface StepFlops {
  /** the frozen weights: the projections, norms and biases of every layer, the final norm and the LM head (the
   * embedding's lookup none: a tied head counted once, as the head) */
  frozenParams: number;
  /** LoRA's A and B, every layer */
  loraParams: number;
  /** all of it, per token */
  perToken: number;
}

/** LoRA's rank and targets (all seven projections by default); null for full fine-tuning (every weight trained). */
export type FlopsLora = { rank: number; targets?: readonly LoraTarget[] } | null;

function weights(spec: ModelSpec, lora: FlopsLora): { frozenParams: number; loraParams: number } {
  const proj = projections(spec);
  const targets = lora?.targets ?? LORA_TARGETS;
  const C = spec.hiddenSize, qo = spec.numHeads * spec.headDim, kv = spec.numKvHeads * spec.headDim;
  let layer = 2 * C, adapters = 0;  // the two norms' weights
  if (spec.qkvBias) layer += qo + 2 * kv;
  if (spec.qkNorm) layer += 2 * spec.headDim;
  for (const name of LORA_TARGETS) {
    const [inF, outF] = proj[name];
    layer += inF * outF;
    if (lora && targets.includes(name)) adapters += lora.rank * (inF + outF);
  }
  const L = spec.numLayers;
  return { frozenParams: L * layer + C + spec.vocabSize * C, loraParams: L * adapters };
}

/** Causal attention's FLOPs over one sequence (segment) of `len` tokens: its two products forward (4) and backward
 * (8) over the keys each token sees, 12 · layers · (heads · headDim) · len · keys, with keys = len / 2 (the usual
 * convention: 6 · L · T · d a token) or the average within a sliding window shorter than the segment. */
export function attentionFlops(spec: ModelSpec, len: number): number {
  const W = spec.slidingWindow;
  const keys = W !== null && W < len ? (W * (W + 1) / 2 + (len - W) * W) / len : len / 2;
  return 12 * spec.numLayers * spec.numHeads * spec.headDim * len * keys;
}

/**
 * FLOPs per token of one LoRA training step on rows of `seq` tokens (forward, backward, no weight gradient for
 * frozen weights):
 *  - 4 per frozen weight (its product forward, and the input's gradient), the LM head among them; the norms' and
 *    biases' few weights counted alike, as bench/gpu/torch_bench.py counts the frozen parameters (~0.005% of a 1B);
 *  - 6 per LoRA parameter (forward, input gradient, weight gradient);
 *  - causal attention (attentionFlops) over the row.
 * Activations, the loss's softmax and the optimizer are not counted (as MFU does not).
 */
export function loraStepFlops(spec: ModelSpec, lora: { rank: number; targets?: readonly LoraTarget[] }, seq: number): StepFlops {
  const w = weights(spec, lora);
  return { ...w, perToken: 4 * w.frozenParams + 6 * w.loraParams + attentionFlops(spec, seq) / seq };
}

/**
 * The model FLOPs of training on examples (segments) of these lengths, counted as loraStepFlops counts them; each
 * example's attention over its own tokens (packed examples do not see each other). lora null: full fine-tuning, 6
 * per weight (the weights' gradients too).
 */
export function trainingFlops(spec: ModelSpec, lora: FlopsLora, segmentLengths: Iterable<number>): number {
  const w = weights(spec, lora);
  const perToken = lora ? 4 * w.frozenParams + 6 * w.loraParams : 6 * w.frozenParams;
  let total = 0;
  for (const len of segmentLengths) if (len > 0) total += len * perToken + attentionFlops(spec, len);
  return total;
}

// Dense bf16 tensor-core peaks (TFLOP/s, f32 accumulation, no sparsity), from NVIDIA's datasheets, by the name the
// driver reports. Only parts whose figure is certain for bf16 with f32 accumulation: the GeForce cards run that at
// half their headline rate, so none of them is listed (--peak-tflops names any peak).
const PEAKS: Array<[RegExp, number]> = [
  [/\bH[12]00\b.*\bNVL\b/, 835],
  [/\bH100\b.*\bPCIe\b/, 756],
  [/\bH100\b.*\b(SXM|HBM3)\b|\bG?H200\b/, 989],
  [/\bA100\b/, 312],
  [/\bL40S\b/, 362],
  [/\bB200\b/, 2250],
];

/** The dense bf16 peak of a GPU by its name (runtime.info().cuda.name), or null where it is not known here. */
export function gpuPeakTflops(name: string): number | null {
  for (const [re, tflops] of PEAKS) if (re.test(name)) return tflops;
  return null;
}
