// embedding: gather (f32 and bf16 tables) and scatter-add backward with repeated ids.
import { describe, expect, it } from 'vitest';
import { Tensor, handleOf } from '../../../src/tensor.js';
import { addon, arr, errCode, f32, i32, randn } from './helpers.js';

describe('embedding op', () => {
  it('gathers rows and scatters gradients (+=) with repeated ids', () => {
    const V = 11, C = 7;
    const w = randn(V * C, 1);
    const ids = [3, 0, 10, 3, 3];
    const A = addon();
    const out = arr(A.opEmbedding(i32(ids), f32(w, [V, C])));
    ids.forEach((id, n) => expect(Array.from(out.subarray(n * C, (n + 1) * C))).toEqual(Array.from(w.subarray(id * C, (id + 1) * C))));
    const wb = handleOf(Tensor.from(w, [V, C], { dtype: 'bf16' }));
    const outb = arr(A.opEmbedding(i32(ids), wb));
    const wbf = wb.toArray();
    ids.forEach((id, n) => expect(Array.from(outb.subarray(n * C, (n + 1) * C))).toEqual(Array.from(wbf.subarray(id * C, (id + 1) * C))));
    const dout = randn(ids.length * C, 2);
    const dw = arr(A.opEmbeddingBackward(f32(dout, [ids.length, C]), i32(ids), V));
    for (let c = 0; c < C; c++) {
      expect(dw[3 * C + c]).toBeCloseTo(dout[0 * C + c] + dout[3 * C + c] + dout[4 * C + c], 5);
      expect(dw[1 * C + c]).toBe(0);
    }
  });

  it('an id out of range is E_RANGE', () => {
    const A = addon();
    expect(errCode(() => A.opEmbedding(i32([0, 5]), f32(new Float32Array(10), [5, 2])))).toMatch(/^E_RANGE.*5/);
    expect(errCode(() => A.opEmbedding(i32([-1]), f32(new Float32Array(10), [5, 2])))).toMatch(/^E_RANGE/);
  });
});
