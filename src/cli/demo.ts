// `instill demo`: the product's main job on a built-in default, offline.
//
// The base model in demo/model/ is a tiny Llama that instill itself made and pre-trained (full
// fine-tuning) on plain sentences about a made-up world (scripts/make-demo-model.mjs,
// src/demo/make_model.ts). It knows that "the capital of velmora is dustam" but has never seen a
// question. `instill demo` trains a LoRA adapter on demo/data/train.jsonl (questions about 2/3 of the
// world) with `instill train`, then answers the held-out questions (demo/data/heldout.jsonl: the other
// third, never seen as questions) greedily with the base model and with the tuned one, and prints both
// scores: exact match (the answer, then the end-of-sequence token) and answer match (the answer first,
// then a word boundary), with example generations.
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, InstillError } from '../errors.js';
import { run as runTrain } from './train.js';
import { parseCommandArgs } from './args.js';

const USAGE = `usage: instill demo [--output DIR] [--epochs N] [--threads N] [--quiet | --jsonl]

Instruction-tunes the bundled demo model (demo/model: a ~230K-parameter Llama that instill pre-trained
on plain sentences about a made-up world) with a LoRA adapter on demo/data/train.jsonl, then answers the
held-out questions of demo/data/heldout.jsonl with the base and the tuned model and prints both scores.
Offline; about a minute on 2 CPU cores.

options:
  --output DIR   where the adapter, checkpoints and metrics go (default: a new temporary folder)
  --epochs N     passes over the training data (default 60)
  --threads N    engine threads (default: all CPUs)
  --quiet        print only the output folder
  --jsonl        JSON events on stdout (as instill train --jsonl)`;

/** The package's demo/ folder: next to the nearest package.json above this file (dist/src/cli or src/cli). */
export function demoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5 && !existsSync(join(dir, 'package.json')); i++) dir = dirname(dir);
  return join(dir, 'demo');
}

/** The training settings of the demo (also used by its test). */
export const DEMO_TRAIN_FLAGS = [
  '--lora-r', '16',
  '--lora-alpha', '32',
  '--lr', '3e-3',
  '--schedule', 'cosine',
  '--warmup-steps', '10',
  '--batch-size', '8',
  '--max-seq-len', '64',
  '--seed', '1',
  '--max-new-tokens', '8',
  '--eval-every', '50',
];

export async function run(argv: string[]): Promise<number> {
  const values = parseCommandArgs(
    argv,
    {
      output: { type: 'string' },
      epochs: { type: 'string' },
      threads: { type: 'string' },
      quiet: { type: 'boolean' },
      jsonl: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    USAGE,
  );
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const root = demoRoot();
  const modelDir = join(root, 'model');
  const train = join(root, 'data', 'train.jsonl');
  const heldout = join(root, 'data', 'heldout.jsonl');
  for (const f of [join(modelDir, 'config.json'), join(modelDir, 'model.safetensors'), train, heldout]) {
    if (!existsSync(f)) throw new InstillError(ErrorCode.IO, `${f} is missing: the demo files ship in the package's demo/ folder (regenerate them with node scripts/make-demo-model.mjs)`);
  }
  const output = typeof values.output === 'string' ? resolve(values.output) : mkdtempSync(join(tmpdir(), 'instill-demo-'));
  const epochs = values.epochs ?? '60';
  const heldoutCount = readFileSync(heldout, 'utf8').split('\n').filter((l) => l.trim()).length;
  const quiet = values.quiet === true || values.jsonl === true;
  if (!quiet) {
    const mb = (statSync(join(modelDir, 'model.safetensors')).size / 1e6).toFixed(2);
    process.stderr.write(
      [
        `instill demo: instruction tuning of a tiny base model, offline.`,
        `base model  ${modelDir} (${mb} MB; pre-trained by instill on plain sentences like "the capital of X is Y ." and "after 41 comes 42 .")`,
        `train data  ${train} (questions about 2/3 of the facts)`,
        `held out    ${heldout} (${heldoutCount} questions about the other 1/3, never seen as questions)`,
        `metric      exact match of the greedy answer (answer match: the answer first, then a word boundary)`,
        '',
      ].join('\n') + '\n',
    );
  }
  const args = ['--model', modelDir, '--data', train, '--eval-data', heldout, '--output', output, '--epochs', String(epochs), '--exact-match', String(heldoutCount), ...DEMO_TRAIN_FLAGS];
  if (typeof values.threads === 'string') args.push('--threads', values.threads);
  if (values.quiet) args.push('--quiet');
  if (values.jsonl) args.push('--jsonl');
  const code = await runTrain(args);
  if (code !== 0 || quiet) return code;
  const summaryPath = join(output, 'summary.json');
  if (existsSync(summaryPath)) {
    const s = JSON.parse(readFileSync(summaryPath, 'utf8')) as {
      exactMatchBefore: { score: number; answerScore: number; total: number } | null;
      exactMatchAfter: { score: number; answerScore: number; total: number } | null;
      exactMatchItems: { prompt: string; ok: boolean }[] | null;
      elapsedSeconds: number;
    };
    if (s.exactMatchBefore && s.exactMatchAfter) {
      const p = (x: number) => `${(100 * x).toFixed(0)}%`;
      process.stderr.write(
        `\nresult: on ${s.exactMatchAfter.total} held-out instructions, exact match ${p(s.exactMatchBefore.score)} (base) -> ${p(s.exactMatchAfter.score)} (tuned with LoRA), ` +
          `answer match ${p(s.exactMatchBefore.answerScore)} -> ${p(s.exactMatchAfter.answerScore)}.\n` +
          (s.exactMatchItems ? `tuned, by task: ${perTask(s.exactMatchItems)}\n` : '') +
          `Try it: npx instill generate --model ${modelDir} --adapter ${output} --max-new-tokens 8 --prompt $'Q: ${firstQuestion(heldout)}\\nA:'\n`,
      );
    }
  }
  return code;
}

function firstQuestion(file: string): string {
  try {
    const rec = JSON.parse(readFileSync(file, 'utf8').split('\n')[0]) as { messages: { content: string }[] };
    return rec.messages[0].content.replace(/'/g, '');
  } catch {
    return 'What is the capital of ...?';
  }
}

const TASKS: [string, string][] = [
  ['What is the capital of', 'capital of a country'],
  ['Which country has the capital', 'country of a capital'],
  ['What number comes after', 'next number'],
];

/** "capital of a country 12/16, ..." over the tuned model's exact-match items. */
function perTask(items: { prompt: string; ok: boolean }[]): string {
  return TASKS.map(([prefix, label]) => {
    const mine = items.filter((i) => i.prompt.startsWith(prefix));
    return `${label} ${mine.filter((i) => i.ok).length}/${mine.length}`;
  }).join(', ');
}
