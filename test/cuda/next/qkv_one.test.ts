// INSTILL_CUDA_NEXT=qkv_one on the GPU: the q/k/v group's forward as ONE product over the kept matrix's rows into one
// (N, q | k | v) bf16 buffer (ops/lora_group.h's y_all), out of which rope rotates q and k and copies v in one pass
// (ops/rope.h's in_packed: rope.cu's rope_qkv_kernel, rows `ld` apart), so that no member has a product of its own
// and nothing copies q or k. The same sums of the same bf16 operands, but cuBLASLt may pick another algorithm for the
// wider product (another order of f32 sums: a q, k or v rounded the other way now and then), so the default's loss
// and gradients to that noise, the bits that differ printed. Head dims 64 and 128 (the one-pass kernel) and 50 (half
// odd: the columns copied out first, rope as before), bf16 activations; f32 activations leave it (q, k, v in f32).
// test/cuda_host/model_check.cpp checks the model's plumbing bit for bit on the fake device, and the CPU's rope and
// lora_group on the same arguments. A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { handleOf } from '../../../src/tensor.js';
import { native } from '../../../src/native.js';
import { randn, rng, roundBf16, seed } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import {
  BF16_TOL, PIECE_BATCH, close, expectBits, expectNearPass, gradBitsDiffer, hasCuda, host, pair, pieceLoraModel, pieceModelConfig,
} from '../common.js';

const ONE = 'lora_group_forward/y = [x | s u] [W_1 | B ; ... ; W_m | B]^T, every member in one product (next)';
const ROPE = 'rope_forward/q and k rotated, v copied, out of the q/k/v product (next)';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=qkv_one', () => {
  const r = rng(seed);

  // rope's in_packed on its own (rope_qkv_kernel): q and k rotated out of columns c0.. of a bf16 (n, ld) buffer, v
  // copied, against the verified rope_qk kernel on the columns copied out (bits) and the CPU (bf16 rounding); outputs
  // NaN-filled first (opRopeQkv). Awkward sizes, the 1B model's q, k, v, the largest half, and the paths that copy
  // the columns out first (half odd, an odd column), forward and backward.
  it.each([
    { n: 29, h: 3, h2: 1, h3: 1, d: 12, c0: 2, pad: 6 },
    { n: 2048, h: 32, h2: 8, h3: 8, d: 64, c0: 0, pad: 0 },   // the 1B model's q, k, v
    { n: 300, h: 4, h2: 2, h3: 2, d: 256, c0: 0, pad: 8 },    // half = 128, the largest
    { n: 45, h: 3, h2: 0, h3: 2, d: 16, c0: 4, pad: 2 },      // no k
    { n: 37, h: 5, h2: 5, h3: 5, d: 10, c0: 0, pad: 0 },      // half odd: copied out, two calls
    { n: 31, h: 2, h2: 1, h3: 1, d: 8, c0: 1, pad: 3 },       // an odd column: copied out, rope_qk
  ])('rope out of the q/k/v product: the verified kernel\'s bits, n $n H $h H2 $h2 H3 $h3 D $d from column $c0', ({ n, h, h2, h3, d, c0, pad }) => {
    const A = native();
    const ld = c0 + (h + h2 + h3) * d + pad;
    const buf = roundBf16(randn(r, n * ld));
    const packed = pair(buf, [n, ld], 'bf16');
    const cols = (c: number, heads: number) => {
      const t = new Float32Array(n * heads * d);
      for (let i = 0; i < n; i++) t.set(buf.subarray(i * ld + c, i * ld + c + heads * d), i * heads * d);
      return pair(t, [n, heads, d], 'bf16');
    };
    const q = cols(c0, h), k = cols(c0 + h * d, Math.max(h2, 1)), v = cols(c0 + (h + h2) * d, h3);
    const pos = pair(Int32Array.from({ length: n }, (_, i) => (i < n / 2 ? i : 3 * i + 1000)), [n]);
    const inv = pair(Float32Array.from({ length: d / 2 }, (_, i) => 500000 ** (-(2 * i) / d)), [d / 2]);
    const kernel = d % 4 === 0 && c0 % 2 === 0 && ld % 2 === 0;
    for (const backward of [false, true]) {
      const got = withEnv('INSTILL_CUDA_NEXT', 'default,qkv_one', () => withOpProfile(() =>
        A.opRopeQkv(handleOf(packed.gpu), c0, h, c0 + h * d, h2, c0 + (h + h2) * d, h3, handleOf(pos.gpu), handleOf(inv.gpu), backward)));
      const part = `${backward ? 'rope_backward' : 'rope_forward'}/q and k rotated, v copied, out of the q/k/v product (next)`;
      expect(got.calls[part]).toBe(kernel ? 1 : undefined);
      const plain = A.opRopePair(handleOf(q.gpu), handleOf(k.gpu), handleOf(pos.gpu), handleOf(inv.gpu), backward);
      expectBits(host(got.value.out), host(plain.out), `q, backward=${backward}`, { shape: [n, h, d] });
      if (h2) expectBits(host(got.value.out2), host(plain.out2), `k, backward=${backward}`, { shape: [n, h2, d] });
      else expect(got.value.out2).toBeNull();
      expectBits(host(got.value.out3), host(v.gpu), `v copied, backward=${backward}`, { shape: [n, h3, d] });
      const cpu = A.opRopeQkv(handleOf(packed.cpu), c0, h, c0 + h * d, h2, c0 + (h + h2) * d, h3, handleOf(pos.cpu), handleOf(inv.cpu), backward);
      close(host(got.value.out), host(cpu.out), BF16_TOL, `q against the CPU, backward=${backward}`);
      if (h2) close(host(got.value.out2), host(cpu.out2), BF16_TOL, `k against the CPU, backward=${backward}`);
    }
  });
  it.each([
    { d: 64, acts: '1', kernel: true },
    { d: 128, acts: '1', kernel: true },
    { d: 50, acts: '1', kernel: false },
    { d: 64, acts: '1', kernel: true, base: 'default,-rope_qk' },
    { d: 64, acts: '0', kernel: false },
  ])('head dim $d, bf16 activations $acts, base $base: the default\'s pass, one product for q, k and v', async ({ d, acts, kernel, base = 'default' }) => {
    const config = { ...pieceModelConfig(4 * d, 344), head_dim: d };
    const m = pieceLoraModel(config, 61, (i, n) => 0.05 * Math.sin(0.29 * i + n.length));
    const taken = acts === '1';  // (f32 activations: q, k, v in f32, which the one product's buffer is not)
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const plain = await withEnv('INSTILL_CUDA_NEXT', base, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
      for (let k = 0; k < 2; ++k) {  // (twice: the second pass on the kept matrices the first left)
        const one = await withEnv('INSTILL_CUDA_NEXT', `${base},qkv_one`, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
        const worst = expectNearPass(one.value, plain.value, 'qkv_one', 1e-4);
        console.log(`qkv_one (head dim ${d}, bf16 activations ${acts}, ${base}), pass ${k + 1}: ${gradBitsDiffer(one.value, plain.value)} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
        // 2 layers: one product each for q, k and v, none a member; gate and up (344) keep theirs
        const widths = (r: typeof one) => r.parts.filter((p) => p.startsWith('lora_group_forward/y_i')).map((p) => Number(p.split('OUT ')[1])).sort((a, b) => a - b);
        expect(one.calls[ONE]).toBe(taken ? 2 : undefined);
        expect(widths(one)).toEqual(taken ? [344] : widths(plain));
        expect(one.calls[ROPE]).toBe(taken && kernel ? 2 : undefined);
      }
      expect(plain.calls[ONE]).toBeUndefined();
      expect(plain.calls[ROPE]).toBeUndefined();
      expect(plain.calls[`lora_group_forward/y_i = [x | s u] [W_i | B]^T, OUT ${2 * d}`]).toBe(4);  // (k and v)
    });
    m.dispose();
  });

  it('generation (f32 activations in its passes): not taken, the default\'s tokens', async () => {
    const config = { ...pieceModelConfig(256, 344), head_dim: 64 };
    const m = pieceLoraModel(config, 67, (i, n) => 0.05 * Math.cos(0.23 * i + n.length));
    const prompt = [5, 17, 29, 41, 53, 65, 77];
    const plain = await withEnv('INSTILL_CUDA_NEXT', 'default', () => m.generate(prompt, { maxNewTokens: 6 }));
    const one = await withEnv('INSTILL_CUDA_NEXT', 'default,qkv_one', () => withOpProfile(() => m.generate(prompt, { maxNewTokens: 6 })));
    expect(one.calls[ONE]).toBeUndefined();
    expect(one.calls[ROPE]).toBeUndefined();
    expect([...one.value.ids]).toEqual([...plain.ids]);
    m.dispose();
  });
});
