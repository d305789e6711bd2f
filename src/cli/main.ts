// `instill <command> ...`: the command-line front end over the public API.
//
// Each command lives in its own module under src/cli/ and exports
// `run(argv: string[]): Promise<number>` (the exit code). Modules are imported
// lazily so that `instill --help` does not load the native addon.
import { ErrorCode, InstillError } from '../errors.js';

interface Command {
  summary: string;
  load: () => Promise<{ run: (argv: string[]) => Promise<number> }>;
}

const commands: Record<string, Command> = {
  demo: { summary: 'instruction-tune the bundled tiny model and compare base vs tuned (offline, ~1 min): `instill demo`', load: () => import('./demo.js') },
  bench: { summary: 'benchmarks: `instill bench kernels`, `instill bench train --config C.json`', load: () => import('./bench.js') },
  generate: { summary: 'continue a prompt: `instill generate --model DIR --prompt TEXT [--adapter DIR]`', load: () => import('./generate.js') },
  data: { summary: 'instruction data: `instill data inspect --model DIR --data FILE [--json]`', load: () => import('./data.js') },
  train: { summary: 'LoRA instruction tuning: `instill train [--config FILE.yaml] --model DIR --data FILE --output DIR`', load: () => import('./train.js') },
  merge: { summary: 'merge a LoRA adapter into its base: `instill merge --model DIR --adapter DIR --out DIR`', load: () => import('./merge.js') },
  info: { summary: 'what this installation sees: version, native addon, CPU, and the GPU (or why none): `instill info`', load: () => import('./info.js') },
};

function usage(): string {
  const lines = ['usage: instill <command> [options]', '', 'commands:'];
  for (const [name, c] of Object.entries(commands)) lines.push(`  ${name.padEnd(10)} ${c.summary}`);
  lines.push('', 'Run `instill <command> --help` for the options of a command.');
  return lines.join('\n');
}

/** What to try next, for errors whose cure is an option of the command (else null). */
export function hintFor(command: string, err: InstillError): string | null {
  if (err.code !== ErrorCode.ALLOC) return null;
  if (command === 'train') {
    return 'hint: out of memory: fewer tokens per micro-batch (--batch-size, --max-seq-len; --grad-accum keeps the ' +
      'tokens per step), --gradient-checkpointing (recomputes activations), or bf16 weights (--dtype bf16). ' +
      'A run saved when it failed resumes (--resume) with the last two, not with another batch shape';
  }
  if (command === 'bench') return 'hint: out of memory: a smaller step (--batch, --seq, --layers) or bf16 weights (--dtype bf16)';
  return null;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 1;
  }
  const cmd = commands[name];
  if (!cmd) {
    console.error(`instill: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  try {
    const mod = await cmd.load();
    return await mod.run(rest);
  } catch (err) {
    if (err instanceof InstillError) {
      console.error(`instill ${name}: ${err.message} [${err.code}]`);
      const hint = hintFor(name, err);
      if (hint) console.error(hint);
      return 1;
    }
    throw err;
  }
}
