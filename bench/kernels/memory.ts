// Peak memory of the LM head + loss at N=4096, C=576, V=49152 (half the rows
// ignored), fused (kernels.linearCrossEntropy) or through materialised logits.
// Run in a fresh process (`node dist/bench/kernels/memory.js fused|materialised`)
// so that no memory the allocator already holds from earlier work hides growth:
// prints one JSON line { path, peakExtraBytes }.
import { fileURLToPath } from 'node:url';

import { Tensor, kernels } from '../../src/index.js';
import { peakMemoryOf } from '../harness.js';
import { randn, rng } from './reference.js';

export const MEMORY_SHAPE = { n: 4096, c: 576, v: 49152 };

function main(path: string): void {
  const { n, c, v } = MEMORY_SHAPE;
  const rand = rng(7);
  const h = Tensor.from(randn(rand, n * c), [n, c]);
  const w = Tensor.from(randn(rand, v * c, 0.05), [v, c]);
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = i % 2 ? -100 : Math.floor(rand() * v);
  const targets = Tensor.from(t, [n]);
  const peak = peakMemoryOf(() => {
    if (path === 'fused') {
      kernels.linearCrossEntropy({ h, w, targets });
    } else {
      const logits = kernels.matmul({ a: h, b: w, transB: true });
      const ce = kernels.maskedCrossEntropy({ logits, targets });
      kernels.matmul({ a: ce.dlogits!, b: w });
    }
  });
  console.log(JSON.stringify({ path, peakExtraBytes: peak?.peakBytes ?? null }));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main(process.argv[2] ?? 'fused');
