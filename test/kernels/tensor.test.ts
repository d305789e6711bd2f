// Tensor.from / toArray and the dtype conversions.
import { describe, expect, it } from 'vitest';

import { InstillError, Tensor, kernels, runtime } from '../../src/index.js';
import { native } from '../../src/native.js';
import { roundBf16 } from '../../bench/kernels/reference.js';

/** IEEE binary16 -> number, written independently of the native code. */
function f16ToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

describe('Tensor', () => {
  it('round-trips f32 and i32 and reports shape, dtype, device', () => {
    const f = Tensor.from(new Float32Array([1.5, -2, 3.25, 0, 7, 8]), [2, 3]);
    expect(f.shape).toEqual([2, 3]);
    expect(f.dtype).toBe('f32');
    expect(f.device).toBe('cpu');
    expect(f.numel).toBe(6);
    expect(Array.from(f.toArray())).toEqual([1.5, -2, 3.25, 0, 7, 8]);
    const i = Tensor.from(new Int32Array([5, -100, 2147483647]), [3]);
    expect(i.dtype).toBe('i32');
    expect(i.toArray()).toBeInstanceOf(Int32Array);
    expect(Array.from(i.toArray())).toEqual([5, -100, 2147483647]);
    expect(Tensor.from([1, 2, 3, 4], [2, 2]).toArray()).toEqual(new Float32Array([1, 2, 3, 4]));
    expect(Tensor.zeros([0, 4]).numel).toBe(0);
  });

  it('rounds to bf16 to nearest even', () => {
    const x = new Float32Array(4096);
    for (let i = 0; i < x.length; i++) x[i] = (Math.random() - 0.5) * 10 ** ((i % 20) - 10);
    x[0] = 1 + 2 ** -8; // exact tie between 1 and 1 + 2^-7: rounds to even (1)
    x[1] = 1 + 3 * 2 ** -8; // tie, rounds up to even (1 + 2^-6)
    const t = Tensor.from(x, [x.length], { dtype: 'bf16' });
    expect(t.dtype).toBe('bf16');
    expect(t.nbytes).toBe(2 * x.length);
    const back = t.toArray();
    expect(back[0]).toBe(1);
    expect(back[1]).toBe(1 + 2 ** -6);
    expect(back).toEqual(roundBf16(x));
  });

  it('converts to f16 like IEEE round-to-nearest-even, with subnormals and overflow', () => {
    // every f16 bit pattern, given as raw bits, must decode as the reference says
    const bits = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) bits[i] = i;
    const all = Tensor.from(bits, [65536], { dtype: 'f16' }).toArray();
    for (let i = 0; i < 65536; i++) {
      const want = f16ToNumber(i);
      if (Number.isNaN(want)) expect(Number.isNaN(all[i])).toBe(true);
      else expect(all[i]).toBe(want);
    }
    // and values between representable ones round to the nearest
    const xs = new Float32Array([65504, 65519, 65520, 1e-8, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1 + 2 ** -11, -0.333333]);
    const got = Tensor.from(xs, [xs.length], { dtype: 'f16' }).toArray();
    expect(Array.from(got.slice(0, 8))).toEqual([65504, 65504, Infinity, 0, 2 ** -24, 0, 2 ** -24, 1]);
    expect(Math.abs(got[8] + 0.333333)).toBeLessThan(2 ** -12);
  });

  it('rejects data that does not fit the shape or dtype', () => {
    const cases: [() => unknown, string][] = [
      [() => Tensor.from(new Float32Array(5), [2, 3]), 'E_SHAPE'],
      [() => Tensor.from(new Float32Array(6), [2, -3]), 'E_SHAPE'],
      [() => Tensor.from(new Float32Array(6), [2, 3.5]), 'E_SHAPE'],
      [() => Tensor.from(new Float32Array(6), [2, 3], { dtype: 'f64' as never }), 'E_DTYPE'],
      [() => Tensor.from(new Uint16Array(6), [6]), 'E_DTYPE'],
      [() => Tensor.from(new Uint8Array(6) as never, [6]), 'E_ARG'],
      [() => Tensor.from(new Float32Array([1.5]), [1], { dtype: 'i32' }), 'E_ARG'],
      [() => Tensor.from(new Float32Array(1), [1], { device: 'cuda' }), 'E_DEVICE'],
      [() => Tensor.zeros([1e9, 1e9, 1e9]), 'E_ALLOC'],
    ];
    for (const [call, code] of cases) {
      let caught: unknown;
      try {
        call();
      } catch (err) {
        caught = err;
      }
      expect(caught, String(call)).toBeInstanceOf(InstillError);
      expect((caught as InstillError).code, String(call)).toBe(code);
    }
  });
});

describe('Tensor.dispose', () => {
  const hostCache = () => runtime.info().hostCache.bytes;

  it('releases the memory now, not when the event loop next turns; any later use is E_ARG', () => {
    // 4 MiB: a block the host cache keeps when it is freed (native/runtime/host_cache.h), so its size shows there
    // at once; without dispose it would stay held until Node runs the handle's finalizer after a collection
    const t = Tensor.zeros([1024, 1024]);
    const held = hostCache();
    t.dispose();
    expect(hostCache() - held).toBeGreaterThanOrEqual(4 << 20);
    t.dispose();  // twice: nothing more, no error
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return (e as InstillError).code;
      }
      return 'no error';
    };
    expect(code(() => t.shape)).toBe('E_ARG');
    expect(code(() => t.toArray())).toBe('E_ARG');
    expect(code(() => t.to('cpu'))).toBe('E_ARG');
    expect(code(() => kernels.matmul({ a: t, b: Tensor.zeros([1024, 2]) }))).toBe('E_ARG');
    expect(() => t.shape).toThrow(/disposed/);
  });

  it('lets go of its own share only: another handle on the same data (a model\'s weight, say) keeps it', () => {
    const h1 = native().tensorFromArray(new Float32Array(1 << 20).fill(3), [1 << 20], 'f32');
    const h2 = native().tensorTo(h1, 'cpu');  // already there: a second handle on the same buffer
    const held = hostCache();
    h1.dispose();
    expect(hostCache()).toBe(held);  // h2 still holds the block
    expect(h2.toArray()[12345]).toBe(3);
    h2.dispose();
    expect(hostCache() - held).toBeGreaterThanOrEqual(4 << 20);
  });
});
