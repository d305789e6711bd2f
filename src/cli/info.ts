// `instill info`: what this installation sees, for "is my GPU used?" and for bug reports: the version, the native
// addon and where it was loaded from, the CPU (threads, instruction set), and the GPU: which one, what runs its matrix
// products (cuBLASLt or the slower fallback, and why), the memory instill holds on it and the kernel pieces on; or why
// no GPU is usable. `--json` prints the same as one object. Where the addon does not load, the version, Node and why
// (exit status 1).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, InstillError } from '../errors.js';
import { runtime } from '../runtime.js';
import { addonLocation, native, packageRoot } from '../native.js';
import { parseCommandArgs } from './args.js';

const USAGE = `usage: instill info [--json]

Prints the instill version, the native addon it loaded, the CPU it runs on (threads, instruction set), and the GPU:
its name, compute capability and memory, what runs its matrix products (cuBLASLt, or instill's slower fallback and
why), the GPU memory instill holds, and the INSTILL_CUDA_NEXT kernel pieces on; or why no GPU is usable.

options:
  --json    one JSON object on stdout`;

export interface InfoReport {
  version: string;
  node: string;
  addon: string;
  cpu: { threads: number; isa: string; isas: string[]; hostCacheBytes: number };
  /** the GPU in use, or null with the reason in gpuUnavailable */
  gpu: {
    name: string;
    computeCapability: string;
    multiprocessors: number;
    memoryBytes: number;
    gemm: string;
    memory: { inUse: number; peak: number; reserved: number };
    pieces: string[];
  } | null;
  gpuUnavailable: string | null;
}

const packageVersion = () => (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
const nodeVersion = () => `${process.version} (N-API ${process.versions.napi})`;

export function infoReport(): InfoReport {
  const rt = runtime.info();
  const cuda = rt.cuda;
  return {
    version: packageVersion(),
    node: nodeVersion(),
    addon: addonLocation(),
    cpu: { threads: rt.threads, isa: rt.isa, isas: rt.isas, hostCacheBytes: rt.hostCache.bytes },
    gpu: cuda ? { ...cuda, memory: runtime.deviceMemory('cuda'), pieces: runtime.nextKernels() } : null,
    gpuUnavailable: cuda ? null : native().deviceUnavailableReason('cuda'),
  };
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;

export async function run(argv: string[]): Promise<number> {
  const values = parseCommandArgs(argv, { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, USAGE);
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  let r: InfoReport;
  try {
    r = infoReport();
  } catch (err) {
    // the addon did not load: what a bug report needs most, so say what can be said without it, and why
    if (!(err instanceof InstillError) || err.code !== ErrorCode.LOAD) throw err;
    const partial = { version: packageVersion(), node: nodeVersion(), addon: null, error: err.message };
    console.log(values.json ? JSON.stringify(partial, null, 2) : `instill ${partial.version}, Node ${partial.node}\nnative addon: not loaded: ${err.message}`);
    return 1;
  }
  if (values.json) {
    console.log(JSON.stringify(r, null, 2));
    return 0;
  }
  const lines = [
    `instill ${r.version}, Node ${r.node}`,
    `native addon: ${r.addon}`,
    `CPU: ${r.cpu.threads} threads, instruction set ${r.cpu.isa} (runs ${r.cpu.isas.join(', ')})`,
  ];
  if (r.gpu) {
    const g = r.gpu;
    lines.push(
      `GPU: ${g.name}, compute capability ${g.computeCapability}, ${g.multiprocessors} multiprocessors, ${gib(g.memoryBytes)}`,
      `  matrix products: ${g.gemm}`,
      `  memory through instill: ${gib(g.memory.inUse)} in use, ${gib(g.memory.reserved)} held from the driver`,
      `  kernel pieces on (INSTILL_CUDA_NEXT): ${g.pieces.length ? g.pieces.join(', ') : 'none'}`,
    );
  } else {
    lines.push(`GPU: none usable: ${r.gpuUnavailable}`);
  }
  console.log(lines.join('\n'));
  return 0;
}
