// The demo: the bundled base model fails the held-out instructions, the LoRA-tuned one answers them;
// and the script that made the base model is deterministic (same seed, same bits).
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { demoRoot, run } from '../../src/cli/demo.js';
import { makeDemoModel, makeInstructions, makeTokenizerJson, makeWorld, DEMO_SEED, DEMO_CONFIG } from '../../src/demo/make_model.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'instill-demo-test-'));
  dirs.push(d);
  return d;
}

describe('demo', () => {
  it('the bundled files are there and small', () => {
    const root = demoRoot();
    for (const f of ['model/config.json', 'model/model.safetensors', 'model/tokenizer.json', 'model/tokenizer_config.json', 'data/train.jsonl', 'data/heldout.jsonl']) {
      expect(existsSync(join(root, f)), f).toBe(true);
    }
    expect(readFileSync(join(root, 'model/model.safetensors')).length).toBeLessThan(5e6);
  });

  it('held-out questions ask about facts the train split never asks about', () => {
    const world = makeWorld(DEMO_SEED);
    const { train, heldout } = makeInstructions(world, DEMO_SEED);
    const subject = (q: string) => q.replace(/\?$/, '').split(' ').at(-1)!;
    const trainSubjects = new Set(train.map((r) => subject(r.messages[0].content)));
    for (const r of heldout) expect(trainSubjects.has(subject(r.messages[0].content)), r.messages[0].content).toBe(false);
    // The bundled data is what the generator makes.
    const bundled = readFileSync(join(demoRoot(), 'data', 'heldout.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(bundled).toEqual(heldout);
    // Every word of the data is one token of the bundled tokenizer (no <unk>).
    const tj = makeTokenizerJson(world, DEMO_CONFIG.vocab_size) as { model: { vocab: Record<string, number> } };
    for (const r of [...train, ...heldout]) for (const m of r.messages) for (const w of m.content.replace('?', ' ?').split(' ')) expect(tj.model.vocab[w], w).toBeDefined();
  });

  it('the demo tokenizer round-trips questions and answers', async () => {
    const tok = await loadTokenizer(join(demoRoot(), 'model'));
    const ids = tok.encode('What number comes after 41?', { addSpecialTokens: false });
    expect(ids.every((i) => i > 2)).toBe(true);
    expect(tok.decode(tok.encode('dustam', { addSpecialTokens: false }))).toBe('dustam');
    // An unknown word still encodes (character pieces), never to undefined.
    expect(tok.encode('Hello zzq', { addSpecialTokens: false }).every((i) => Number.isInteger(i))).toBe(true);
  });

  it('regenerating the base model is deterministic (same seed -> same bits; another seed differs)', async () => {
    const a = tmp(), b = tmp(), c = tmp();
    await makeDemoModel({ modelDir: join(a, 'model'), dataDir: join(a, 'data'), steps: 4, seed: 7 });
    await makeDemoModel({ modelDir: join(b, 'model'), dataDir: join(b, 'data'), steps: 4, seed: 7 });
    await makeDemoModel({ modelDir: join(c, 'model'), dataDir: null, steps: 4, seed: 8 });
    for (const f of ['model/model.safetensors', 'model/config.json', 'model/tokenizer.json', 'data/train.jsonl', 'data/heldout.jsonl']) {
      expect(readFileSync(join(a, f)).equals(readFileSync(join(b, f))), f).toBe(true);
    }
    expect(readFileSync(join(a, 'model/model.safetensors')).equals(readFileSync(join(c, 'model/model.safetensors')))).toBe(false);
  });

  it('instill demo: the tuned model answers the held-out instructions, the base model does not', async () => {
    const out = join(tmp(), 'run');
    const code = await run(['--output', out, '--quiet']);
    expect(code).toBe(0);
    const s = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
    expect(s.reason).toBe('completed');
    expect(s.exactMatchBefore.total).toBeGreaterThanOrEqual(50);
    expect(s.exactMatchBefore.score).toBeLessThanOrEqual(0.1);
    expect(s.exactMatchAfter.score).toBeGreaterThanOrEqual(0.6);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
  }, 240_000);
});
