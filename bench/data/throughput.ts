// Throughput of the data layer: read JSONL + chat template + tokenize + mask (loadDataset), then pack and
// assemble every batch of one epoch (BatchLoader), on a generated dataset with the stories260K tokenizer.
//
//   npx tsc -p tsconfig.json && node dist/bench/data/throughput.js [--examples N] [--runs R] [--json]
//
// Prints examples/s and tokens/s of each run and the median. The dataset: N conversations, 70% single-turn
// and 30% with 2-3 turns, a system prompt on 20%, story-like sentences (~100-250 tokens per example).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import { loadDataset } from '../../src/data/dataset.js';
import { BatchLoader } from '../../src/data/loader.js';
import { seededRandom } from '../../src/data/shuffle.js';
import { repoRoot } from '../harness.js';

const WORDS = (
  'once upon a time there was a little girl named Lily she loved to play outside in the park one day she saw a big red ball ' +
  'Tom and his dog went to the store the sun was warm and happy birds sang in the tree they were friends and shared toys ' +
  'mom said be careful the cat jumped over the fence and ran away what is your name why is the sky blue because light'
).split(' ');

function sentence(rand: () => number, words: number): string {
  const w: string[] = [];
  for (let i = 0; i < words; i++) w.push(WORDS[Math.floor(rand() * WORDS.length)]);
  const s = w.join(' ');
  return s[0].toUpperCase() + s.slice(1) + (rand() < 0.2 ? '?' : '.');
}

function generate(file: string, n: number): void {
  const rand = seededRandom(2026);
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const messages: Array<{ role: string; content: string }> = [];
    if (rand() < 0.2) messages.push({ role: 'system', content: sentence(rand, 8) });
    const turns = rand() < 0.7 ? 1 : 2 + Math.floor(rand() * 2);
    for (let t = 0; t < turns; t++) {
      messages.push({ role: 'user', content: sentence(rand, 6 + Math.floor(rand() * 14)) });
      const k = 1 + Math.floor(rand() * 3);
      messages.push({ role: 'assistant', content: Array.from({ length: k }, () => sentence(rand, 8 + Math.floor(rand() * 12))).join(' ') });
    }
    lines.push(JSON.stringify({ messages }));
  }
  writeFileSync(file, lines.join('\n') + '\n');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { examples: { type: 'string' }, runs: { type: 'string' }, json: { type: 'boolean' } } });
  const n = Number(values.examples ?? 20000);
  const runs = Number(values.runs ?? 5);
  const fixtures = process.env.INSTILL_FIXTURES ? resolve(process.env.INSTILL_FIXTURES) : resolve(repoRoot(), '..', 'shared', 'fixtures');
  const modelDir = join(fixtures, 'stories260K');
  const dir = mkdtempSync(join(tmpdir(), 'instill-bench-data-'));
  const file = join(dir, 'chat.jsonl');
  generate(file, n);
  const tokenizer = await loadTokenizer(modelDir);
  const results: Array<{ examplesPerS: number; tokensPerS: number; loadS: number; packS: number; tokens: number; batches: number }> = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    const ds = await loadDataset(file, { tokenizer, maxSeqLen: 512 });
    const t1 = performance.now();
    const loader = new BatchLoader(ds, null, tokenizer.padId, { batchSize: 8, maxSeqLen: 512, seed: r });
    let batches = 0;
    let packedTokens = 0;
    for (const { batch } of loader.iterate()) {
      batches++;
      packedTokens += batch.numTokens;
    }
    const t2 = performance.now();
    const tokens = ds.totals().tokens;
    if (packedTokens !== tokens) throw new Error(`packed ${packedTokens} tokens of ${tokens}`);
    const s = (t2 - t0) / 1000;
    results.push({ examplesPerS: ds.size / s, tokensPerS: tokens / s, loadS: (t1 - t0) / 1000, packS: (t2 - t1) / 1000, tokens, batches });
    if (!values.json) {
      console.log(
        `run ${r + 1}: ${ds.size} examples, ${tokens} tokens, ${batches} batches of 8x512: load ${(t1 - t0).toFixed(0)} ms, pack ${(t2 - t1).toFixed(0)} ms -> ` +
          `${(ds.size / s).toFixed(0)} examples/s, ${(tokens / s).toFixed(0)} tokens/s`,
      );
    }
  }
  rmSync(dir, { recursive: true, force: true });
  const summary = {
    examples: n,
    runs,
    cpu: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    medianExamplesPerS: Math.round(median(results.map((x) => x.examplesPerS))),
    medianTokensPerS: Math.round(median(results.map((x) => x.tokensPerS))),
    tokensPerExample: Math.round(results[0].tokens / n),
  };
  if (values.json) console.log(JSON.stringify({ ...summary, results }, null, 2));
  else console.log(`median of ${runs}: ${summary.medianExamplesPerS} examples/s, ${summary.medianTokensPerS} tokens/s (${summary.tokensPerExample} tokens/example; ${summary.cpu}, Node ${summary.node}, one thread)`);
}

await main();
