// `instill generate` end to end on stories260K (in-process, through the CLI's main()).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/model/model.js';
import { runtime } from '../../src/index.js';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('instill generate', () => {
  afterEach(() => vi.restoreAllMocks());

  it('prints the greedy continuation as JSON', async () => {
    const out: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((s: string) => void out.push(s));
    const ref = JSON.parse(readFileSync(fixturePath('stories260K/reference.json'), 'utf8'));
    const code = await main(['generate', '--model', fixturePath('stories260K'), '--prompt', 'Once upon a time', '--max-new-tokens', '12', '--json']);
    expect(code).toBe(0);
    const r = JSON.parse(out[0]);
    expect(r.ids).toEqual(ref.greedy_ids.slice(0, 12));
    expect(r.text.startsWith(', there was a little girl')).toBe(true);
  });

  it('sampling is reproducible with a seed and differs across seeds', async () => {
    const run = async (seed: string) => {
      const out: string[] = [];
      const spy = vi.spyOn(console, 'log').mockImplementation((s: string) => void out.push(s));
      await main(['generate', '--model', fixturePath('stories260K'), '--prompt', 'Once upon a time', '--max-new-tokens', '30', '--temperature', '1.2', '--top-p', '0.95', '--seed', seed, '--json']);
      spy.mockRestore();
      return JSON.parse(out[0]).ids as number[];
    };
    const a = await run('1');
    expect(await run('1')).toEqual(a);
    expect(await run('2')).not.toEqual(a);
  });

  it('--adapter applies a PEFT adapter folder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'instill-cli-adapter-'));
    try {
      const m = await loadModel(fixturePath('stories260K'));
      m.addLora({ r: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], seed: 2 });
      const w = m.adapterWeights();
      for (const n of Object.keys(w)) if (n.includes('lora_B')) w[n] = w[n].map((_, i) => 0.5 * Math.sin(i + 1));
      m.setAdapterWeights(w);
      m.saveAdapter(dir);
      const expected = await m.generate('Once upon a time', { maxNewTokens: 12 });
      const out: string[] = [];
      vi.spyOn(console, 'log').mockImplementation((s: string) => void out.push(s));
      const code = await main(['generate', '--model', fixturePath('stories260K'), '--adapter', dir, '--prompt', 'Once upon a time', '--max-new-tokens', '12', '--json']);
      expect(code).toBe(0);
      const ref = JSON.parse(readFileSync(fixturePath('stories260K/reference.json'), 'utf8'));
      const ids = JSON.parse(out[0]).ids;
      expect(ids).toEqual(expected.ids);
      expect(ids).not.toEqual(ref.greedy_ids.slice(0, 12));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('bad arguments exit non-zero with a message', async () => {
    const err: string[] = [];
    vi.spyOn(console, 'error').mockImplementation((s: string) => void err.push(s));
    expect(await main(['generate', '--prompt', 'x'])).toBe(2);
    expect(err[0]).toMatch(/--model and --prompt are required/);
    expect(await main(['generate', '--model', fixturePath('stories260K'), '--prompt', 'x', '--top-p', '2'])).toBe(1);
    expect(err[1]).toMatch(/top-p/);
    expect(await main(['generate', '--model', fixturePath('stories260K'), '--prompt', 'x', '--device', 'tpu'])).toBe(1);
    expect(err[2]).toMatch(/Expected cpu or cuda for --device but received 'tpu'/);
  });

  it('--device cpu is the default; --device cuda without a GPU says why', async () => {
    const out: string[] = [], err: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((s: string) => void out.push(s));
    vi.spyOn(console, 'error').mockImplementation((s: string) => void err.push(s));
    const args = ['generate', '--model', fixturePath('stories260K'), '--prompt', 'Once upon a time', '--max-new-tokens', '5', '--json'];
    expect(await main([...args, '--device', 'cpu'])).toBe(0);
    expect(await main(args)).toBe(0);
    expect(out[0]).toBe(out[1]);
    if (!runtime.info().devices.includes('cuda')) {
      expect(await main([...args, '--device', 'cuda'])).toBe(1);
      expect(err.join('\n')).toMatch(/cuda/i);
    }
  });
});
