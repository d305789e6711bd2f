// INSTILL_CUDA_NEXT=split_k on the GPU (native/cuda/cublaslt.cu's split_rule): a product whose output is a few
// tiles for the GPU's SMs, and whose heuristic pick does not split K, runs that pick with K cut into 2..16 parts
// (f32 partials summed in cuBLASLt's workspace). The products must be the CPU's, every element written (outputs
// NaN-poisoned), the same bits on a second call (the rule follows the shape: reproducible), and a bf16 model's
// loss and LoRA gradients must match the pass without the piece to f32-sum order. Sizes off every tile; the
// matmuls are LoRA's narrow shapes in the 1B step (u, dA, g, dB), where the rule splits by 8 and 4 on 132 SMs;
// the model's products split by 2 and 4 (hidden 520: 5 tiles over K 520, 1030).
import { describe, expect, it } from 'vitest';

import { LORA_TARGETS, randomModel } from '../../../src/model/model.js';
import { rng, seed } from '../../../bench/kernels/reference.js';
import { relNorm } from '../../helpers/compare.js';
import { withEnv } from '../../helpers/env.js';
import { BF16_TOL, bf16Matmul, bits, close, hasCuda, NARROW_MATMUL_CASES } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=split_k', () => {
  const r = rng(seed);

  it.each(NARROW_MATMUL_CASES)('$what: $m×$k×$n, the CPU\'s product, the same bits twice', (c) => {
    const { ref, run } = bf16Matmul(r, c);  // into NaN-poisoned outputs: every element must be written
    const [first, again] = withEnv('INSTILL_CUDA_NEXT', 'default,split_k', () => [run(), run()]);
    close(first, ref, BF16_TOL, 'split_k');
    expect(bits(again).equals(bits(first)), 'the same bits on the second call').toBe(true);
    // and the same product without the piece (its own plan: the piece is part of the plan's key). Whether the
    // piece split K at all shows in the bits (f32 sums in another order); printed, not asserted: where the
    // heuristic's own pick already splits, the piece leaves it (INSTILL_CUBLASLT_VERBOSE=1 prints each split).
    const plain = withEnv('INSTILL_CUDA_NEXT', 'default', () => run());
    close(plain, ref, BF16_TOL, 'default');
    console.log(`split_k ${c.m}x${c.k}x${c.n}: ${bits(first).equals(bits(plain)) ? 'the same bits as without it (not split by the piece)' : 'other bits than without it (split)'}`);
  });

  it('a bf16 model (hidden 520, intermediate 1030, head dim 66, 300 tokens): the pass without the piece', async () => {
    const config = { model_type: 'llama', hidden_size: 520, intermediate_size: 1030, num_hidden_layers: 2, num_attention_heads: 8,
      num_key_value_heads: 2, head_dim: 66, vocab_size: 301, rms_norm_eps: 1e-5, tie_word_embeddings: true, max_position_embeddings: 512 };
    const m = randomModel(config, { seed: 23, device: 'cuda', dtype: 'bf16' });
    m.addLora({ r: 8, alpha: 16, targetModules: [...LORA_TARGETS], seed: 5 });
    const w = m.adapterWeights();
    for (const n of Object.keys(w)) if (n.includes('lora_B')) w[n] = w[n].map((_, i) => 0.05 * Math.sin(0.29 * i + n.length));
    m.setAdapterWeights(w);
    const T = 300;
    const ids = Array.from({ length: T }, (_, i) => (i * 37 + 11) % 301);
    const batch = { inputIds: [ids], labels: [ids] };
    const off = await withEnv('INSTILL_CUDA_NEXT', 'default', () => m.lossAndGrads(batch));
    const on = await withEnv('INSTILL_CUDA_NEXT', 'default,split_k', () => m.lossAndGrads(batch));
    const again = await withEnv('INSTILL_CUDA_NEXT', 'default,split_k', () => m.lossAndGrads(batch));
    expect(Math.abs(on.loss - off.loss) / off.loss).toBeLessThan(1e-4);
    let worst = 0;
    for (const n of Object.keys(off.grads)) {
      const e = relNorm(on.grads[n], off.grads[n]);
      worst = Math.max(worst, e);
      expect(e, n).toBeLessThan(2e-2);  // (expectNearPass's bound: one flipped bf16 rounding carries ~5e-3–1.5e-2 here)
      expect(again.grads[n].every((v, i) => Object.is(v, on.grads[n][i])), `${n}: the same bits twice`).toBe(true);
    }
    console.log(`split_k: worst LoRA gradient against the pass without it ${worst.toExponential(2)}`);
    m.dispose();
  });
});
