// Client for bench/reference/torch_ref.py: PyTorch (CPU) timings, one run at a time,
// so the benchmark can alternate instill and PyTorch on the same cores.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const script = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  // works from bench/reference/ (sources) and from dist/bench/reference/ (compiled)
  for (const p of [join(here, 'torch_ref.py'), join(here, '..', '..', '..', 'bench', 'reference', 'torch_ref.py')]) {
    if (existsSync(p)) return p;
  }
  return join(here, 'torch_ref.py');
})();

export class TorchReference {
  readonly version: string;
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly lines: Interface;
  private readonly pending: ((line: string) => void)[] = [];
  private nextId = 0;

  private constructor(proc: ChildProcessWithoutNullStreams, lines: Interface, version: string) {
    this.proc = proc;
    this.lines = lines;
    this.version = version;
    lines.on('line', (line) => this.pending.shift()?.(line));
  }

  /** Starts the server with INSTILL_PYTHON (default /usr/bin/python3); null when PyTorch is not importable. */
  static async start(threads: number): Promise<TorchReference | { unavailable: string }> {
    const python = process.env.INSTILL_PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
    // The server's idle threads must not spin while instill's next timed run uses the cores (timings
    // alternate): PyTorch's fp32 matmul goes through OpenBLAS here, whose idle threads would spin
    // ~0.1 s after each call (see openblas.ts), and its other ops (oneDNN bf16 matmul included) run on
    // OpenMP threads that spin after each parallel region unless told to wait passively. With the
    // default policy instill's bf16 GEMM measured 0.49–0.83x PyTorch at the small shapes, 0.83–0.97x
    // with PASSIVE; PyTorch's own times did not get worse (bench/RESULTS.md, run 5). Instill's own
    // pool sleeps after a 100 µs spin.
    const proc = spawn(python, [script], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {
        ...process.env,
        OPENBLAS_THREAD_TIMEOUT: process.env.OPENBLAS_THREAD_TIMEOUT ?? '4',
        OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE',
      },
    });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: proc.stdout });
    const first = await new Promise<string | null>((resolve) => {
      lines.once('line', resolve);
      proc.once('exit', () => resolve(null));
      proc.once('error', () => resolve(null));
    });
    if (first === null) {
      return { unavailable: `${python} could not run PyTorch: ${stderr.trim().split('\n').pop() ?? 'no output'}` };
    }
    const hello = JSON.parse(first) as { torch: string };
    const ref = new TorchReference(proc, lines, hello.torch);
    await ref.request({ cmd: 'threads', n: threads });
    return ref;
  }

  private request(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.pending.push((line) => {
        const out = JSON.parse(line) as Record<string, unknown>;
        if (out.error) reject(new Error(`PyTorch reference: ${String(out.error)}`));
        else resolve(out);
      });
      this.proc.stdin.write(JSON.stringify(req) + '\n');
    });
  }

  /** Builds a workload (and runs it once to warm up); returns its id. */
  async setup(spec: Record<string, unknown>): Promise<string> {
    const id = `w${this.nextId++}`;
    await this.request({ cmd: 'setup', id, ...spec });
    return id;
  }

  /** One timed run, in seconds, as PyTorch measured it. */
  async run(id: string): Promise<number> {
    return (await this.request({ cmd: 'run', id })).seconds as number;
  }

  async free(id: string): Promise<void> {
    await this.request({ cmd: 'free', id });
  }

  close(): void {
    this.proc.stdin.end();
    this.lines.close();
  }
}
