// withOpProfile (test/helpers/profile.ts): the GPU tests read which kernels ran through it, so it is checked here,
// where CI runs, on CPU ops.
import { describe, expect, it } from 'vitest';
import { Tensor, kernels, runtime } from '../../src/index.js';
import { withOpProfile } from './profile.js';

describe('withOpProfile', () => {
  const a = Tensor.from(Float32Array.from({ length: 12 }, (_, i) => i), [3, 4]);
  const b = Tensor.from(Float32Array.from({ length: 8 }, (_, i) => i - 3), [4, 2]);
  const profileIsOff = () => {
    kernels.matmul({ a, b });  // timed only while the profile is on
    expect(runtime.opProfile()).toEqual([]);
  };

  it('returns fn\'s value and the ops that ran with their calls, then switches the profile off', () => {
    const r = withOpProfile(() => {
      kernels.matmul({ a, b });
      return kernels.matmul({ a, b }).shape;
    });
    expect(r.value).toEqual([3, 2]);
    expect(r.parts).toContain('matmul');
    expect(r.calls.matmul).toBe(2);
    profileIsOff();
  });

  it('switches it off after a throw and after a rejected promise; an async fn gives a promise of the same', async () => {
    expect(() => withOpProfile(() => { throw new Error('boom'); })).toThrow('boom');
    profileIsOff();
    await expect(withOpProfile(async () => { throw new Error('late'); })).rejects.toThrow('late');
    profileIsOff();
    const r = await withOpProfile(async () => {
      await new Promise((res) => setTimeout(res, 1));
      kernels.matmul({ a, b });
      return 7;
    });
    expect(r.value).toBe(7);
    expect(r.calls.matmul).toBe(1);
    profileIsOff();
  });
});
