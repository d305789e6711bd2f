// withEnv (test/helpers/env.ts): the GPU tests switch engine paths with it, so it is checked here, where CI runs.
import { describe, expect, it } from 'vitest';
import { withEnv } from './env.js';

const NAME = 'INSTILL_TEST_WITH_ENV';

describe('withEnv', () => {
  it('sets or unsets the variable for fn, then restores it: after a value, a throw, and a rejected promise', async () => {
    process.env[NAME] = 'before';
    try {
      expect(withEnv(NAME, 'x', () => process.env[NAME])).toBe('x');
      expect(process.env[NAME]).toBe('before');
      expect(withEnv(NAME, undefined, () => NAME in process.env)).toBe(false);
      expect(process.env[NAME]).toBe('before');
      expect(() => withEnv(NAME, 'y', () => { throw new Error('boom'); })).toThrow('boom');
      expect(process.env[NAME]).toBe('before');
      const p = withEnv(NAME, 'z', async () => {
        await new Promise((r) => setTimeout(r, 1));
        expect(process.env[NAME]).toBe('z');  // still set while the promise runs
        throw new Error('late');
      });
      await expect(p).rejects.toThrow('late');
      expect(process.env[NAME]).toBe('before');
      delete process.env[NAME];
      await withEnv(NAME, 'w', async () => undefined);
      expect(NAME in process.env).toBe(false);
    } finally {
      delete process.env[NAME];
    }
  });
});
