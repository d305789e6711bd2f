// INSTILL_CUDA_NEXT=async_upload on the GPU (native/cuda/runtime.cu's staged_upload): a host-to-device copy of up to
// 256 KiB goes through one of 16 pinned staging slots and returns without waiting for the GPU. Checked with the GPU
// kept busy by products queued first, so that the uploads come round the ring of slots many times before the GPU has
// made any of their copies: each tensor must arrive as the host had it when its upload was called, although the host
// memory it came from is given back (and reused by the next one) at once. Then the model's pass with the piece gives
// the default's bits. A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { Tensor, kernels } from '../../../src/index.js';
import { withEnv } from '../../helpers/env.js';
import { PIECE_BATCH, gradBitsDiffer, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

// (on by default since run 21: OFF is the default without it)
const ON = 'default,async_upload', OFF = 'default,-async_upload';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=async_upload', () => {
  it('400 uploads of 4 B to 256 KiB queued behind a busy GPU, then some of 1 MiB (the waiting path), arrive as they were', () => {
    withEnv('INSTILL_CUDA_NEXT', ON, () => {
      // every size from one element to a whole slot (65536 floats), then the larger ones, made before the GPU is busied
      const sizes = Array.from({ length: 400 }, (_, i) => (i >= 392 ? 262144 + i : 1 + ((i * 7919) % 65536)));
      const value = (i: number, j: number) => i * 2000 + (j % 977);  // (integers below 2^24: exact in f32)
      const data = sizes.map((n, i) => Float32Array.from({ length: n }, (_, j) => value(i, j)));
      // ~20 ms of products on an H100 (12 of 8192³ in bf16), queued first: the host queues the small uploads long
      // before the GPU reaches them, so from the 17th on each waits for the copy that used its slot last
      const z = Tensor.zeros([8192, 8192], { dtype: 'bf16', device: 'cuda' });
      const busy = Array.from({ length: 12 }, () => kernels.matmul({ a: z, b: z }));
      const sent = data.map((d, i) => Tensor.from(d, [sizes[i]], { device: 'cuda' }));  // (each host copy freed at once)
      for (let i = 0; i < sent.length; i++) {
        const got = sent[i].to('cpu').toArray() as Float32Array;
        expect(got.length).toBe(sizes[i]);
        let wrong = 0;
        for (let j = 0; j < got.length; j++) if (got[j] !== value(i, j)) wrong++;
        expect(wrong, `upload ${i} (${sizes[i]} floats): elements that are not what was sent`).toBe(0);
        sent[i].dispose();
      }
      for (const t of busy) t.dispose();
      z.dispose();
    });
  }, 60_000);

  it('the model\'s pass (its input, loss-row and table uploads through the slots) gives the default\'s bits', async () => {
    const m = pieceLoraModel(pieceModelConfig(208, 560), 29, (i) => 0.01 * Math.sin(i + 1));
    await withEnv('INSTILL_CUDA_NEXT', OFF, () => m.lossAndGrads(PIECE_BATCH));  // (W into the kept matrices)
    const plain = await withEnv('INSTILL_CUDA_NEXT', OFF, () => m.lossAndGrads(PIECE_BATCH));
    for (let k = 0; k < 3; ++k) {
      const got = await withEnv('INSTILL_CUDA_NEXT', ON, () => m.lossAndGrads(PIECE_BATCH));
      expect(got.loss).toBe(plain.loss);
      expect(gradBitsDiffer(got, plain), `pass ${k + 1}: LoRA gradient elements that differ in bits`).toBe(0);
    }
    m.dispose();
  });
});
