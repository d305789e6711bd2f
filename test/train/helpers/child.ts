// `instill train` in a child process (test/train/cli.test.ts, test/cuda/train_cli.test.ts).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const root = resolve(import.meta.dirname, '..', '..', '..');
const bin = join(root, 'bin', 'instill.js');

export interface Child {
  code: number | null;
  events: Record<string, unknown>[];
  stderr: string;
}

/** Runs `instill train ... --jsonl`; `onEvent` may return 'SIGINT' / 'SIGKILL' to signal the child. */
export function train(args: string[], onEvent?: (e: Record<string, unknown>, pid: number) => NodeJS.Signals | void, env: NodeJS.ProcessEnv = {}): Promise<Child> {
  return new Promise((done, fail) => {
    const p = spawn(process.execPath, [bin, 'train', ...args, '--jsonl'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const events: Record<string, unknown>[] = [];
    let buf = '';
    let stderr = '';
    let signalled = false;
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const e = JSON.parse(line) as Record<string, unknown>;
        events.push(e);
        const sig = onEvent?.(e, p.pid!);
        if (sig && !signalled) {
          signalled = true;
          p.kill(sig);
        }
      }
    });
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', fail);
    p.on('close', (code) => done({ code, events, stderr }));
  });
}

/** The adapter file a run saved in dir. */
export function adapterBytes(dir: string): Buffer {
  return readFileSync(join(dir, 'adapter_model.safetensors'));
}
