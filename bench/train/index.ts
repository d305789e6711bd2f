// `instill bench train`: one whole LoRA training step at a real model's shapes
// (random weights), on the CPU or a GPU (--device cuda): tokens/s and peak memory
// (resident memory of the process on the CPU, device memory on a GPU), and with
// --torch the same step written plainly in PyTorch eager (bench/train/torch_step.py)
// on the same device, run after ours in a separate process.
//
// The batch is B rows of T random token ids; the first half of every row is
// masked (-100) as a prompt would be. LoRA r on all seven projections, alpha 2r,
// frozen base, AdamW on the adapters. A step = lossAndGrads + adamwStep.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ErrorCode, InstillError } from '../../src/errors.js';
import { gpuPeakTflops, loraStepFlops } from '../../src/model/flops.js';
import { LORA_TARGETS, randomModel } from '../../src/model/model.js';
import { native } from '../../src/native.js';
import { runtime, type OpProfileRow } from '../../src/runtime.js';
import { Tensor, type Device } from '../../src/tensor.js';
import { median } from '../harness.js';

export interface TrainBenchOptions {
  config: string;
  layers?: number;
  batch: number;
  seq: number;
  rank: number;
  dtype: 'f32' | 'bf16';
  /** where the model and the step run (default 'cpu') */
  device?: Device;
  steps: number;
  torch: boolean;
  /** one more step with the op profiler on (runtime.opProfile): time per op */
  profile?: boolean;
  /** the device's dense peak in TFLOP/s for the MFU (default: the GPU's, where src/model/flops.ts knows it) */
  peakTflops?: number;
  progress: (line: string) => void;
}

export interface StepResult {
  tokensPerSec: number;
  stepSeconds: number;
  /** peak resident memory of the process (CPU) or peak device memory in use (GPU) during one step */
  peakBytes: number | null;
  loss: number;
}

export interface TrainBenchReport {
  date: string;
  config: string;
  layers: number;
  batch: number;
  seq: number;
  rank: number;
  dtype: string;
  /** The dtype the step kept its norm and MLP activations in (model.activations: bf16 by default on a GPU). */
  activations: string;
  device: Device;
  /** the GPU (runtime.info().cuda) where the step ran on one: its name and what ran its products (cuBLASLt or not) */
  gpu: { name: string; gemm: string } | null;
  threads: number;
  isa: string;
  instill: StepResult;
  torch: (StepResult & { version: string }) | { unavailable: string } | null;
  /** PyTorch step time / instill step time: > 1 means instill is faster */
  ratio: number | null;
  /** with --profile: one more step's time per op (ms), and that step's wall time */
  profile: { stepMs: number; ops: OpProfileRow[] } | null;
  /** the step's arithmetic as MFU counts it (src/model/flops.ts): per token, and instill's (and PyTorch's) rate */
  flops: {
    perToken: number;
    frozenParams: number;
    loraParams: number;
    instillTflops: number;
    torchTflops: number | null;
    /** the peak the MFU is of, and where it came from (--peak-tflops, or the GPU's name); null: unknown */
    peak: { tflops: number; of: string } | null;
    instillMfu: number | null;
    torchMfu: number | null;
  };
}

const script = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const p of [join(here, 'torch_step.py'), join(here, '..', '..', '..', 'bench', 'train', 'torch_step.py')]) {
    if (existsSync(p)) return p;
  }
  return join(here, 'torch_step.py');
})();

function readConfig(path: string, layers?: number): Record<string, unknown> {
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new InstillError(ErrorCode.IO, `cannot read config ${path}: ${(err as Error).message}`);
  }
  if (layers !== undefined) cfg.num_hidden_layers = layers;
  return cfg;
}

/** Row-major (B, T) ids and labels: random ids, the first half of each row masked. */
export function benchBatch(b: number, t: number, vocab: number, seed = 1): { inputIds: number[][]; labels: number[][] } {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const inputIds: number[][] = [], labels: number[][] = [];
  for (let r = 0; r < b; r++) {
    const ids = Array.from({ length: t }, () => Math.floor(next() * vocab));
    inputIds.push(ids);
    labels.push(ids.map((id, i) => (i < t / 2 ? -100 : id)));
  }
  return { inputIds, labels };
}

export async function runTrainBench(opts: TrainBenchOptions): Promise<TrainBenchReport> {
  const cfg = readConfig(opts.config, opts.layers);
  const layers = Number(cfg.num_hidden_layers);
  const vocab = Number(cfg.vocab_size);
  const device = opts.device ?? 'cpu';
  opts.progress(`random ${opts.dtype} model on ${device}: ${layers} layers of ${opts.config}`);
  // On a GPU the model is large enough that drawing every weight takes minutes: 'tiled' copies one pool.
  const model = randomModel(cfg, { dtype: opts.dtype, seed: 1, device, init: device === 'cpu' ? 'normal' : 'tiled' });
  model.addLora({ r: opts.rank, alpha: 2 * opts.rank, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed: 1 });
  // PEFT would start B at zero; a non-zero B makes every gradient flow as in a real run.
  const weights = model.adapterWeights();
  for (const [k, v] of Object.entries(weights)) if (k.includes('lora_B')) v.fill(0.01);
  model.setAdapterWeights(weights);
  const batch = benchBatch(opts.batch, opts.seq, vocab);
  const activations = model.activations.dtype;
  const stepFlops = loraStepFlops(model.spec, { rank: opts.rank, targets: LORA_TARGETS }, opts.seq);

  let loss = 0;
  // A step ends when the device is done: on a GPU the optimizer's launches are waited for (one stream).
  const sync = device === 'cpu' ? () => {} : () => void Tensor.zeros([1], { device }).to('cpu');
  const step = async () => {
    loss = (await model.lossAndGrads(batch, { returnGrads: false })).loss;
    model.adamwStep({ lr: 1e-4 });
    sync();
  };
  opts.progress('warm-up step');
  await step();
  const times: number[] = [];
  for (let i = 0; i < opts.steps; i++) {
    opts.progress(`step ${i + 1}/${opts.steps}`);
    const t0 = process.hrtime.bigint();
    await step();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  // Peak memory during one more step (model, adapters, moments, activations): the process's resident
  // memory on the CPU, the device memory in use on a GPU.
  const peak = device === 'cpu' ? await measureAsyncPeak(step) : await measureDevicePeak(device, step);
  let profile: TrainBenchReport['profile'] = null;
  if (opts.profile) {
    opts.progress('one more step with the op profiler on');
    runtime.setOpProfile(true);
    const t0 = process.hrtime.bigint();
    await step();
    const stepMs = Number(process.hrtime.bigint() - t0) / 1e6;
    profile = { stepMs, ops: runtime.opProfile() };
    runtime.setOpProfile(false);
  }
  model.dispose();
  const stepSeconds = median(times);
  const instill: StepResult = { tokensPerSec: (opts.batch * opts.seq) / stepSeconds, stepSeconds, peakBytes: peak, loss };

  let torch: TrainBenchReport['torch'] = null;
  if (opts.torch) {
    opts.progress('PyTorch eager, same step');
    torch = runTorch(opts);
  }
  const info = runtime.info();
  const gpu = device === 'cpu' ? null : info.cuda?.name ?? null;
  const known = gpu === null ? null : gpuPeakTflops(gpu);
  const ceiling = opts.peakTflops !== undefined ? { tflops: opts.peakTflops, of: '--peak-tflops' }
    : known !== null ? { tflops: known, of: `${gpu}, dense bf16` } : null;
  const tflops = (tokensPerSec: number) => (tokensPerSec * stepFlops.perToken) / 1e12;
  const instillTflops = tflops(instill.tokensPerSec);
  const torchTflops = torch && 'stepSeconds' in torch ? tflops(torch.tokensPerSec) : null;
  const flops: TrainBenchReport['flops'] = {
    perToken: stepFlops.perToken, frozenParams: stepFlops.frozenParams, loraParams: stepFlops.loraParams,
    instillTflops, torchTflops, peak: ceiling,
    instillMfu: ceiling ? instillTflops / ceiling.tflops : null,
    torchMfu: ceiling && torchTflops !== null ? torchTflops / ceiling.tflops : null,
  };
  return {
    date: new Date().toISOString(),
    config: opts.config,
    layers,
    batch: opts.batch,
    seq: opts.seq,
    rank: opts.rank,
    dtype: opts.dtype,
    activations,
    device,
    gpu: device !== 'cpu' && info.cuda ? { name: info.cuda.name, gemm: info.cuda.gemm } : null,
    threads: info.threads,
    isa: info.isa,
    instill,
    torch,
    ratio: torch && 'stepSeconds' in torch ? torch.stepSeconds / stepSeconds : null,
    profile,
    flops,
  };
}

/** Peak device memory in use (the engine's allocator: tensors and scratch) while `fn` runs. */
async function measureDevicePeak(device: Device, fn: () => Promise<void>): Promise<number> {
  native().deviceMemoryStats(device, true);
  await fn();
  return native().deviceMemoryStats(device).peak;
}

/** Peak resident bytes of the whole process (VmHWM) while `fn` runs, after resetting the mark. */
async function measureAsyncPeak(fn: () => Promise<void>): Promise<number | null> {
  const { readFileSync: read, writeFileSync } = await import('node:fs');
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    return null;
  }
  await fn();
  const m = read('/proc/self/status', 'utf8').match(/^VmHWM:\s+(\d+) kB/m);
  return m ? Number(m[1]) * 1024 : null;
}

function runTorch(opts: TrainBenchOptions): TrainBenchReport['torch'] {
  const python = process.env.INSTILL_PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
  const args = [
    script, '--config', opts.config, '--batch', String(opts.batch), '--seq', String(opts.seq), '--rank', String(opts.rank),
    '--dtype', opts.dtype, '--steps', String(opts.steps), '--threads', String(runtime.info().threads),
    '--device', opts.device ?? 'cpu',
  ];
  if (opts.layers !== undefined) args.push('--layers', String(opts.layers));
  const r = spawnSync(python, args, { encoding: 'utf8', maxBuffer: 16 << 20 });
  if (r.status !== 0) return { unavailable: `${python} ${script} failed: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}` };
  const out = JSON.parse(r.stdout.trim().split('\n').pop() as string) as {
    tokens_per_sec: number; step_seconds: number; peak_bytes: number; loss: number; torch: string;
  };
  return { tokensPerSec: out.tokens_per_sec, stepSeconds: out.step_seconds, peakBytes: out.peak_bytes, loss: out.loss, version: out.torch };
}
