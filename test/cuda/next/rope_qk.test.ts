// INSTILL_CUDA_NEXT=rope_qk on the GPU (native/cuda/rope.cu's rope_qk_kernel): the model's q and k through one rope
// call (ops/rope.h's x2), one pass over both with each token's angles made once and two bf16 elements a thread. The
// same θ, sincosf, rotation and rounding as the default bf16 kernel, so its bits (every element compared, each call's
// outputs fresh while the other's are alive), and the CPU's within bf16 rounding: at awkward sizes, forward and
// backward, an odd half (D = 10: the two-call path, which the part's absence shows), and the 1B model's q and k;
// then a bf16 model's pass. A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { LORA_TARGETS, randomModel } from '../../../src/model/model.js';
import { handleOf } from '../../../src/tensor.js';
import { native } from '../../../src/native.js';
import { rng, seed } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { BF16_TOL, DEFAULT_BEFORE_RUN17, close, expectBits, expectSamePass, hasCuda, host, ropePairInputs } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=rope_qk', () => {
  const r = rng(seed);

  it.each([
    { n: 29, h: 3, h2: 1, d: 12 },
    { n: 37, h: 5, h2: 5, d: 10 },     // half odd: two passes
    { n: 2048, h: 32, h2: 8, d: 64 },  // the 1B model's q and k
    { n: 300, h: 4, h2: 2, d: 256 },   // half = 128, the largest
  ])('q and k in one pass: the bits of two calls, n $n H $h H2 $h2 D $d', ({ n, h, h2, d }) => {
    const A = native();
    const { x, x2, pos, inv } = ropePairInputs(r, n, h, h2, d);
    for (const backward of [false, true]) {
      const run = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () =>
        withOpProfile(() => A.opRopePair(handleOf(x.gpu), handleOf(x2.gpu), handleOf(pos.gpu), handleOf(inv.gpu), backward)));
      const plain = run(DEFAULT_BEFORE_RUN17), one = run(`${DEFAULT_BEFORE_RUN17},rope_qk`);
      const part = `${backward ? 'rope_backward' : 'rope_forward'}/q and k in one pass (next)`;
      expect(plain.parts).not.toContain(part);
      if (d % 4 === 0) expect(one.parts).toContain(part);
      else expect(one.parts).not.toContain(part);
      expectBits(host(one.value.out), host(plain.value.out), `q, backward=${backward}`, { shape: [n, h, d] });
      expectBits(host(one.value.out2), host(plain.value.out2), `k, backward=${backward}`, { shape: [n, h2, d] });
      const cpu = A.opRopePair(handleOf(x.cpu), handleOf(x2.cpu), handleOf(pos.cpu), handleOf(inv.cpu), backward);
      close(host(one.value.out), host(cpu.out), BF16_TOL, `q against the CPU, backward=${backward}`);
      close(host(one.value.out2), host(cpu.out2), BF16_TOL, `k against the CPU, backward=${backward}`);
    }
  });

  it('a bf16 model\'s pass (bf16 activations): the default\'s bits, one rope call each way a layer', async () => {
    const config = { model_type: 'llama', hidden_size: 200, intermediate_size: 344, num_hidden_layers: 2, num_attention_heads: 4,
      num_key_value_heads: 2, head_dim: 52, vocab_size: 301, rms_norm_eps: 1e-5, tie_word_embeddings: true, max_position_embeddings: 512 };
    const m = randomModel(config, { seed: 41, device: 'cuda', dtype: 'bf16' });
    m.addLora({ r: 8, alpha: 16, targetModules: [...LORA_TARGETS], seed: 5 });
    const ids = Array.from({ length: 150 }, (_, i) => (i * 37 + 11) % 301);
    const batch = { inputIds: [ids], labels: [ids] };
    const pass = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => m.lossAndGrads(batch)));
    const plain = await pass(DEFAULT_BEFORE_RUN17), one = await pass(`${DEFAULT_BEFORE_RUN17},rope_qk`);
    const { differ, worst } = expectSamePass(one.value, plain.value);
    console.log(`rope_qk (model): ${differ} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
    expect(differ).toBe(0);
    expect(plain.calls['rope_forward']).toBe(4);
    expect(one.calls['rope_forward']).toBe(2);
    expect(one.calls['rope_backward/q and k in one pass (next)']).toBe(2);
    m.dispose();
  });
});
