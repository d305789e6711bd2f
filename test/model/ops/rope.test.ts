// rope: HF rotate-half against float64 (angle = f32(p · inv_freq) as HF computes it), positions up
// to 70000, an odd head count; backward is the transpose (⟨rope(x), y⟩ = ⟨x, rope_bwd(y)⟩).
import { describe, expect, it } from 'vitest';
import { ropeInvFreq, specFromConfig } from '../../../src/model/config.js';
import { Tensor, handleOf } from '../../../src/tensor.js';
import { roundBf16 } from '../../../bench/kernels/reference.js';
import { addon, arr, errCode, f32, i32, randn, relErr } from './helpers.js';

describe('rope op vs float64', () => {
  const N = 7, H = 3, D = 12;
  const spec = specFromConfig({ model_type: 'llama', hidden_size: 36, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 3, vocab_size: 4, head_dim: D, rope_theta: 10000 });
  const inv = ropeInvFreq(spec);
  const pos = [0, 5, 1000, 3, 3, 70000, 2];

  function ref(x: Float32Array, sign: number): Float64Array {
    const y = new Float64Array(x.length);
    const half = D / 2;
    for (let n = 0; n < N; n++) for (let h = 0; h < H; h++) for (let i = 0; i < half; i++) {
      const th = Math.fround(pos[n] * inv[i]);
      const c = Math.cos(th), s = sign * Math.sin(th);
      const o = (n * H + h) * D;
      y[o + i] = x[o + i] * c - x[o + i + half] * s;
      y[o + i + half] = x[o + i + half] * c + x[o + i] * s;
    }
    return y;
  }

  it('bf16 x: the f32 rotation of the same values, rounded once', () => {
    const A = addon();
    const x16 = handleOf(Tensor.from(randn(N * H * D, 9), [N, H, D], { dtype: 'bf16' }));
    const x32 = f32(arr(x16), [N, H, D]);
    for (const backward of [false, true]) {
      const y16 = A.opRope(x16, i32(pos), f32(inv, [D / 2]), backward);
      expect(y16.dtype).toBe('bf16');
      const y32 = arr(A.opRope(x32, i32(pos), f32(inv, [D / 2]), backward));
      expect(Array.from(new Uint32Array(arr(y16).buffer))).toEqual(Array.from(new Uint32Array(roundBf16(y32).buffer)));
    }
  });

  it('forward and backward', () => {
    const x = randn(N * H * D, 1), dy = randn(N * H * D, 2);
    const A = addon();
    const y = arr(A.opRope(f32(x, [N, H, D]), i32(pos), f32(inv, [D / 2]), false));
    expect(relErr(y, ref(x, 1))).toBeLessThan(2e-6);
    const dx = arr(A.opRope(f32(dy, [N, H, D]), i32(pos), f32(inv, [D / 2]), true));
    expect(relErr(dx, ref(dy, -1))).toBeLessThan(2e-6);
    let a = 0, b = 0, mag = 0;
    for (let i = 0; i < x.length; i++) {
      a += y[i] * dy[i];
      b += x[i] * dx[i];
      mag += Math.abs(y[i] * dy[i]);
    }
    expect(Math.abs(a - b) / mag).toBeLessThan(1e-6);
    // position 0 is the identity
    expect(Array.from(y.subarray(0, H * D))).toEqual(Array.from(x.subarray(0, H * D)));
  });

  it('a second tensor (x2: the model\'s k beside its q) gives two calls\' bits, bf16 and f32', () => {
    const A = addon();
    for (const dtype of ['bf16', 'f32'] as const) {
      const x = handleOf(Tensor.from(randn(N * H * D, 4), [N, H, D], { dtype }));
      const x2 = handleOf(Tensor.from(randn(N * 1 * D, 5), [N, 1, D], { dtype }));
      for (const backward of [false, true]) {
        const { out, out2 } = A.opRopePair(x, x2, i32(pos), f32(inv, [D / 2]), backward);
        const bits = (h: Parameters<typeof arr>[0]) => Array.from(new Uint32Array(arr(h).buffer));
        expect(bits(out)).toEqual(bits(A.opRope(x, i32(pos), f32(inv, [D / 2]), backward)));
        expect(bits(out2)).toEqual(bits(A.opRope(x2, i32(pos), f32(inv, [D / 2]), backward)));
        expect(out2.shape).toEqual([N, 1, D]);
      }
    }
  });

  it('bad arguments are errors', () => {
    const A = addon();
    expect(errCode(() => A.opRope(f32(new Float32Array(6), [1, 2, 3]), i32([0]), f32([1], [1]), false))).toMatch(/^E_SHAPE.*even/);
    expect(errCode(() => A.opRope(f32(new Float32Array(4), [1, 1, 4]), i32([-1]), f32([1, 1], [2]), false))).toMatch(/^E_RANGE.*negative/);
    expect(errCode(() => A.opRope(f32(new Float32Array(4), [1, 1, 4]), i32([0]), f32([1, 1, 1], [3]), false))).toMatch(/^E_SHAPE.*inv_freq/);
    // x2 with another head dimension, or another dtype
    expect(errCode(() => A.opRopePair(f32(new Float32Array(4), [1, 1, 4]), f32(new Float32Array(6), [1, 1, 6]), i32([0]), f32([1, 1], [2]), false))).toMatch(/^E_SHAPE.*x2/);
    const x16 = handleOf(Tensor.from(new Float32Array(4), [1, 1, 4], { dtype: 'bf16' }));
    expect(errCode(() => A.opRopePair(f32(new Float32Array(4), [1, 1, 4]), x16, i32([0]), f32([1, 1], [2]), false))).toMatch(/^E_DTYPE.*x2/);
  });
});
