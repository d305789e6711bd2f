// `instill bench kernels [...]` and `instill bench train --config C.json [...]`
import { parseArgs } from 'node:util';

import { table } from '../../bench/harness.js';
import { runKernelsBench, type KernelsBenchReport } from '../../bench/kernels/index.js';
import { runTrainBench, type TrainBenchReport } from '../../bench/train/index.js';
import { ErrorCode, InstillError } from '../errors.js';
import { native } from '../native.js';
import { runtime } from '../runtime.js';
import { fmtMfu, fmtTflops } from './train.js';

const USAGE = `usage: instill bench kernels [options]
       instill bench train --config CONFIG.json [options]

Self-checks every kernel against a float64 reference on every instruction set
this CPU runs, then times them at SmolLM2-135M training shapes (GFLOP/s,
median of several repeats) beside OpenBLAS (when libopenblas is installed)
and PyTorch (--torch), alternating in one run, and measures the peak memory
of the fused LM head.

options:
  --json          print one JSON report on stdout (progress goes to stderr)
  --quick         smaller shapes (N=512), no 2048³ GEMM, no memory measurement
  --torch         also time PyTorch (CPU, eager; Debian's python3-torch) on the same shapes
  --repeats N     timed repeats per shape (default 5)
  --only TEXT     time only the rows whose kernel, shape or dtype contains TEXT
                  (e.g. loraLinear, 'N=4096 576->192', bf16); no memory measurement
  --threads N     engine threads (default: all CPUs this process may use)
  --isa NAME      portable | avx2 | avx512 | avx512bf16 (default: the best this CPU runs)

bench train: one LoRA training step (lossAndGrads + AdamW) at a Hugging Face
config's shapes with random weights; half of each row's targets masked as
prompts would be; LoRA on all seven projections.
  --config FILE   config.json of the model (required)
  --layers L      keep only the first L layers
  --batch B       rows (default 8)     --seq T    tokens per row (default 512)
  --rank R        LoRA rank (default 16)
  --dtype D       f32 | bf16 frozen weights (default bf16 with --device cuda, else f32)
  --device D      cpu | cuda (default cpu); on a GPU, --torch runs the same step there
  --steps N       timed steps after one warm-up (default 3)
  --torch         also run the same step in PyTorch eager (bench/train/torch_step.py)
  --profile       one more step with the op profiler on: time per op (runtime.opProfile())
  --peak-tflops P the device's dense peak in TFLOP/s, for the MFU (default: the GPU's,
                  for the data-center GPUs src/model/flops.ts knows)
Model TFLOP/s count the step's products as MFU does (src/model/flops.ts): 4 per frozen
weight, 6 per LoRA parameter, causal attention 6 · layers · seq · heads · headDim a token.`;

function gib(bytes: number | null): string {
  return bytes === null ? 'n/a' : `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

function printTrain(r: TrainBenchReport): void {
  const where = r.device === 'cpu' ? `${r.threads} threads, ISA ${r.isa}` : r.gpu?.name ?? r.device;
  console.log(`LoRA training step: ${r.config} (${r.layers} layers), batch ${r.batch} x ${r.seq}, r=${r.rank}, ${r.dtype} base, ${r.activations} activations, ${where}`);
  if (r.gpu) console.log(`matrix products: ${r.gpu.gemm}`);
  const ms = (seconds: number) => (seconds * 1e3).toFixed(seconds < 1 ? 1 : 0);  // a GPU step is tens of ms
  const f = r.flops;
  const mfu = (x: number | null) => (x === null ? 'n/a' : fmtMfu(x));
  const rows = [['instill', r.instill.tokensPerSec.toFixed(0), ms(r.instill.stepSeconds), fmtTflops(f.instillTflops), mfu(f.instillMfu),
    gib(r.instill.peakBytes), r.instill.loss.toFixed(4)]];
  if (r.torch && 'stepSeconds' in r.torch) {
    rows.push([`PyTorch ${r.torch.version} eager`, r.torch.tokensPerSec.toFixed(0), ms(r.torch.stepSeconds),
      f.torchTflops === null ? 'n/a' : fmtTflops(f.torchTflops), mfu(f.torchMfu), gib(r.torch.peakBytes), r.torch.loss.toFixed(4)]);
  }
  console.log(table(['', 'tokens/s', 'ms/step', 'model TFLOP/s', 'MFU', r.device === 'cpu' ? 'peak RSS' : 'peak GPU memory', 'loss'], rows));
  console.log(`model FLOPs: ${(f.perToken / 1e9).toFixed(2)} GFLOP a token (${(f.frozenParams / 1e6).toFixed(1)}M frozen weights, ` +
    `${(f.loraParams / 1e6).toFixed(2)}M LoRA parameters, and causal attention)`);
  console.log(f.peak ? `MFU: of ${f.peak.tflops} TFLOP/s (${f.peak.of})` : 'MFU: n/a (this device\'s peak is not known here: --peak-tflops P gives one)');
  if (r.torch && 'unavailable' in r.torch) console.log(`PyTorch: ${r.torch.unavailable}`);
  if (r.ratio !== null) console.log(`instill / PyTorch tokens/s: ${r.ratio.toFixed(2)}x`);
  if (r.profile) {
    const { stepMs, ops } = r.profile;
    const covered = ops.filter((o) => !o.op.includes('/')).reduce((a, o) => a + o.ms, 0);  // parts are inside their op
    const share = (ms: number) => `${((100 * ms) / stepMs).toFixed(1)}%`;
    console.log(`\nop profile of one more step (${stepMs.toFixed(0)} ms):`);
    console.log(table(['op', 'calls', 'ms', 'of the step'], [
      ...ops.map((o) => [o.op.replace(/^.*\//, '  - '), String(o.calls), o.ms.toFixed(1), share(o.ms)]),
      ['(outside ops)', '', (stepMs - covered).toFixed(1), share(stepMs - covered)],
    ]));
  }
}

function positiveInt(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InstillError(ErrorCode.ARG, `Expected a positive integer for --${name} but received '${v}'`);
  return n;
}

function positiveNumber(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InstillError(ErrorCode.ARG, `Expected a positive number for --${name} but received '${v}'`);
  return n;
}

function mb(bytes: number | null): string {
  return bytes === null ? 'n/a' : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

function printReport(r: KernelsBenchReport): void {
  const rt = r.runtime;
  console.log(`instill kernels — ${rt.threads} threads, ISA ${rt.isa} (CPU runs: ${rt.isas.join(', ')})\n`);
  console.log('self-check against float64 (normwise relative error):');
  console.log(
    table(
      ['isa', 'kernel', 'error', 'tolerance', ''],
      r.selfCheck.map((c) => [c.isa, c.kernel, c.error.toExponential(2), c.tolerance.toExponential(0), c.ok ? 'ok' : 'FAIL']),
    ),
  );
  console.log(`\nspeed (median of repeats; ratio = reference time / instill time, > 1: instill faster)`);
  console.log(`references: OpenBLAS ${r.references.openblas}; PyTorch: ${r.references.torch}`);
  const ratio = (x: number | null) => (x === null ? '' : `${x.toFixed(2)}x`);
  const gf = (row: { gflop: number }, s: number | null) => (s === null ? '' : (row.gflop / s).toFixed(1));
  console.log(
    table(
      ['kernel', 'shape', 'dtype', 'ms', 'GFLOP/s', 'OpenBLAS', 'vs OpenBLAS', 'PyTorch', 'vs PyTorch'],
      r.rows.map((row) => [
        row.kernel, row.shape, row.dtype, (row.ours * 1e3).toFixed(1), row.oursGflops.toFixed(1),
        gf(row, row.openblas), ratio(row.vsOpenblas), gf(row, row.torch), ratio(row.vsTorch),
      ]),
    ),
  );
  if (r.memory) {
    const m = r.memory;
    console.log(`\nlinearCrossEntropy peak extra memory (${m.shape}):`);
    console.log(
      table(
        ['path', 'peak extra'],
        [
          ['fused (kernels.linearCrossEntropy)', mb(m.fusedPeakBytes)],
          ['materialised logits + maskedCrossEntropy', mb(m.materialisedPeakBytes)],
          ['one (N, V) f32 logits matrix', mb(m.logitsBytes)],
        ],
      ),
    );
  }
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      torch: { type: 'boolean', default: false },
      repeats: { type: 'string' },
      only: { type: 'string' },
      threads: { type: 'string' },
      isa: { type: 'string' },
      config: { type: 'string' },
      layers: { type: 'string' },
      batch: { type: 'string' },
      seq: { type: 'string' },
      rank: { type: 'string' },
      dtype: { type: 'string' },
      device: { type: 'string' },
      steps: { type: 'string' },
      profile: { type: 'boolean', default: false },
      'peak-tflops': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals[0] === 'train') {
    if (values.threads !== undefined) runtime.setThreads(Number(values.threads));
    if (values.isa !== undefined) runtime.setIsa(values.isa);
    if (!values.config) throw new InstillError(ErrorCode.ARG, 'bench train needs --config FILE (a Hugging Face config.json)');
    const device = values.device ?? 'cpu';
    if (device !== 'cpu' && device !== 'cuda') throw new InstillError(ErrorCode.ARG, `Expected cpu or cuda for --device but received '${device}'`);
    const dtype = values.dtype ?? (device === 'cuda' ? 'bf16' : 'f32');  // as instill train
    if (dtype !== 'f32' && dtype !== 'bf16') throw new InstillError(ErrorCode.ARG, `Expected f32 or bf16 for --dtype but received '${dtype}'`);
    if (!runtime.info().devices.includes(device)) {
      throw new InstillError(ErrorCode.DEVICE, `device '${device}' is not available: ${native().deviceUnavailableReason(device)}`);
    }
    const report = await runTrainBench({
      config: values.config,
      layers: values.layers === undefined ? undefined : positiveInt('layers', values.layers, 1),
      batch: positiveInt('batch', values.batch, 8),
      seq: positiveInt('seq', values.seq, 512),
      rank: positiveInt('rank', values.rank, 16),
      dtype,
      device,
      steps: positiveInt('steps', values.steps, 3),
      torch: values.torch,
      profile: values.profile,
      peakTflops: positiveNumber('peak-tflops', values['peak-tflops']),
      progress: (line) => {
        if (!values.json) process.stderr.write(`  … ${line}\n`);
      },
    });
    if (values.json) console.log(JSON.stringify(report, null, 2));
    else printTrain(report);
    return 0;
  }
  if (positionals[0] !== 'kernels') {
    console.error(`instill bench: expected 'kernels' or 'train', got ${positionals[0] === undefined ? 'nothing' : `'${positionals[0]}'`}\n\n${USAGE}`);
    return 2;
  }
  const repeats = values.repeats === undefined ? 5 : Number(values.repeats);
  if (!Number.isInteger(repeats) || repeats < 1 || repeats > 1000) {
    throw new InstillError(ErrorCode.ARG, `Expected integer between 1 and 1000 for --repeats but received '${values.repeats}'`);
  }
  if (values.threads !== undefined) runtime.setThreads(Number(values.threads));
  if (values.isa !== undefined) runtime.setIsa(values.isa);

  const report = await runKernelsBench({
    quick: values.quick,
    torch: values.torch,
    only: values.only,
    repeats,
    progress: (line) => {
      if (!values.json) process.stderr.write(`  … ${line}\n`);
    },
  });
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else printReport(report);
  const failed = report.selfCheck.filter((c) => !c.ok);
  if (failed.length) {
    console.error(`\nself-check FAILED for ${failed.map((f) => `${f.kernel} on ${f.isa}`).join(', ')}`);
    return 1;
  }
  return 0;
}
