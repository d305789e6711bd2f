// Every CUDA op against PyTorch (float64, bench/gpu/torch_ops_ref.py) on the same
// random inputs: a reference independent of instill's CPU backend. Runs only
// where runtime.info().devices has 'cuda' and python3 imports torch (the GPU
// machine of bench/gpu-check.sh); skipped with the reason elsewhere.
// Tolerances as in ops.test.ts: 1e-4 of the largest reference value for the
// f32 kernels, 2e-2 where the tensor-core GEMM rounds operands to bf16.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Tensor, kernels, runtime } from '../../src/index.js';
import { native, type TensorHandle } from '../../src/native.js';
import { handleOf } from '../../src/tensor.js';
import { randn, rng, roundBf16, seed } from '../../bench/kernels/reference.js';
import { relErr } from '../helpers/compare.js';

const hasCuda = runtime.info().devices.includes('cuda');
const torchOk = hasCuda && spawnSync('python3', ['-c', 'import torch, numpy'], { encoding: 'utf8' }).status === 0;
if (!hasCuda) console.warn(`skipping test/cuda/torch: ${native().deviceUnavailableReason('cuda')}`);
else if (!torchOk) console.warn('skipping test/cuda/torch: python3 cannot import torch and numpy');

const F32_TOL = 1e-4;
const BF16_TOL = 2e-2;

type Arr = Float32Array | Int32Array;
interface Case { name: string; op: string; params: Record<string, number | boolean>; inputs: Record<string, { data: Arr; shape: number[] }> }

describe.skipIf(!torchOk)('CUDA backend vs PyTorch (float64)', () => {
  const r = rng(seed + 7);
  const dir = mkdtempSync(join(tmpdir(), 'instill-torch-'));
  const cases: Case[] = [];
  const add = (c: Case) => { cases.push(c); return c; };
  // (a copy: readFileSync's Buffer may sit at an unaligned offset of a shared pool)
  const ref = (c: Case, out: string): Float32Array => new Float32Array(Uint8Array.from(readFileSync(join(dir, `${c.name}.${out}.bin`))).buffer);
  const host = (t: Tensor | TensorHandle): Arr => (t instanceof Tensor ? t.to('cpu').toArray() : native().tensorTo(t, 'cpu').toArray());
  const dev = (c: Case, k: string, dtype: 'f32' | 'bf16' | 'i32' = c.inputs[k].data instanceof Int32Array ? 'i32' : 'f32') =>
    Tensor.from(c.inputs[k].data, c.inputs[k].shape, { dtype, device: 'cuda' });
  const H = (t: Tensor) => handleOf(t);
  const check = (c: Case, out: string, got: Tensor | TensorHandle, tol: number) => {
    const e = relErr(host(got), ref(c, out));
    expect(e, `${c.name}.${out}: relative error ${e} (seed ${seed})`).toBeLessThan(tol);
  };

  const N = 45, IN = 67, OUT = 83, R = 4;
  const lora = add({ name: 'lora', op: 'lora_linear', params: { scale: 2 }, inputs: {
    x: { data: randn(r, N * IN), shape: [N, IN] }, w: { data: roundBf16(randn(r, OUT * IN, 0.2)), shape: [OUT, IN] },
    a: { data: randn(r, R * IN, 0.2), shape: [R, IN] }, b: { data: randn(r, OUT * R, 0.2), shape: [OUT, R] },
    bias: { data: randn(r, OUT), shape: [OUT] }, dy: { data: randn(r, N * OUT), shape: [N, OUT] } } });
  const mm = add({ name: 'matmul', op: 'matmul', params: { transA: true, transB: false }, inputs: {
    a: { data: randn(r, 70 * 33), shape: [70, 33] }, b: { data: randn(r, 70 * 91), shape: [70, 91] } } });
  const V = 301, C = 37;
  const ce = add({ name: 'lce', op: 'linear_ce', params: { normalizer: 40 }, inputs: {
    h: { data: randn(r, N * C), shape: [N, C] }, w: { data: roundBf16(randn(r, V * C, 0.3)), shape: [V, C] },
    targets: { data: Int32Array.from({ length: N }, (_, i) => (i % 4 === 0 ? -100 : Math.floor(r() * V))), shape: [N] } } });
  const rms = add({ name: 'rms', op: 'rmsnorm', params: { eps: 1e-5 }, inputs: {
    x: { data: randn(r, N * C, 2), shape: [N, C] }, w: { data: randn(r, C), shape: [C] }, dy: { data: randn(r, N * C), shape: [N, C] } } });
  const rope = add({ name: 'rope', op: 'rope', params: {}, inputs: {
    x: { data: randn(r, N * 3 * 16), shape: [N, 3, 16] },
    positions: { data: Int32Array.from({ length: N }, (_, i) => (i < 20 ? i : i - 20)), shape: [N] },
    inv_freq: { data: Float32Array.from({ length: 8 }, (_, i) => 10000 ** (-(2 * i) / 16)), shape: [8] } } });
  const sw = add({ name: 'swiglu', op: 'swiglu', params: {}, inputs: {
    gate: { data: randn(r, N * C, 8), shape: [N, C] }, up: { data: randn(r, N * C), shape: [N, C] }, dout: { data: randn(r, N * C), shape: [N, C] } } });
  const segs = [0, 17, 18, 60], AN = 60, AH = 4, AKV = 2, AD = 32;
  const att = add({ name: 'attn', op: 'attention', params: { scale: 1 / Math.sqrt(AD), window: 0 }, inputs: {
    q: { data: randn(r, AN * AH * AD), shape: [AN, AH, AD] }, k: { data: randn(r, AN * AKV * AD), shape: [AN, AKV, AD] },
    v: { data: randn(r, AN * AKV * AD), shape: [AN, AKV, AD] }, dout: { data: randn(r, AN * AH * AD), shape: [AN, AH, AD] },
    cu_seqlens: { data: Int32Array.from(segs), shape: [segs.length] } } });
  const attw = add({ ...att, name: 'attnw', params: { scale: 1 / Math.sqrt(AD), window: 7 } });
  const emb = add({ name: 'emb', op: 'embedding', params: {}, inputs: {
    ids: { data: Int32Array.from({ length: N }, () => Math.floor(r() * 19)), shape: [N] }, w: { data: randn(r, 19 * C), shape: [19, C] } } });
  const adam = add({ name: 'adamw', op: 'adamw', params: { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, wd: 0.1, steps: 3 }, inputs: {
    param: { data: randn(r, 333), shape: [333] }, grad0: { data: randn(r, 333), shape: [333] },
    grad1: { data: randn(r, 333), shape: [333] }, grad2: { data: randn(r, 333), shape: [333] } } });

  beforeAll(() => {
    for (const c of cases) for (const [k, t] of Object.entries(c.inputs)) writeFileSync(join(dir, `${c.name}.${k}.bin`), t.data);
    writeFileSync(join(dir, 'cases.json'), JSON.stringify(cases.map((c) => ({
      name: c.name, op: c.op, params: c.params, inputs: Object.fromEntries(Object.entries(c.inputs).map(([k, t]) => [k, t.shape])) }))));
    const p = spawnSync('python3', [join(process.cwd(), 'bench/gpu/torch_ops_ref.py'), dir], { encoding: 'utf8', timeout: 180_000 });
    if (p.status !== 0) throw new Error(`torch_ops_ref.py failed: ${p.stderr || p.error}`);
    console.log(p.stdout.trim());
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('lora_linear forward + backward (w bf16, bias)', () => {
    const c = lora;
    const f = kernels.loraLinear({ x: dev(c, 'x'), w: dev(c, 'w', 'bf16'), a: dev(c, 'a'), b: dev(c, 'b'), bias: dev(c, 'bias'), scale: 2 });
    check(c, 'y', f.y, BF16_TOL);
    check(c, 'u', f.u, BF16_TOL);
    const b = kernels.loraLinearBackward({ dy: dev(c, 'dy'), x: dev(c, 'x'), w: dev(c, 'w', 'bf16'), a: dev(c, 'a'), b: dev(c, 'b'), u: f.u, scale: 2 });
    check(c, 'dx', b.dx!, BF16_TOL);
    check(c, 'da', b.da, BF16_TOL);
    check(c, 'db', b.db, BF16_TOL);
  });

  it('matmul transA', () => {
    check(mm, 'c', kernels.matmul({ a: dev(mm, 'a'), b: dev(mm, 'b'), transA: true }), BF16_TOL);
  });

  it('linear cross-entropy (w bf16, ignored rows, normalizer)', () => {
    const got = kernels.linearCrossEntropy({ h: dev(ce, 'h'), w: dev(ce, 'w', 'bf16'), targets: dev(ce, 'targets'), normalizer: 40, chunkRows: 8 });
    const loss = ref(ce, 'loss')[0];
    expect(Math.abs(got.loss - loss) / Math.abs(loss)).toBeLessThan(BF16_TOL);
    check(ce, 'dh', got.dh!, BF16_TOL);
  });

  it('rmsnorm forward + backward', () => {
    const A = native();
    const f = A.opRmsnorm(H(dev(rms, 'x')), H(dev(rms, 'w')), 1e-5);
    check(rms, 'y', f.y, F32_TOL);
    const b = A.opRmsnormBackward(H(dev(rms, 'dy')), H(dev(rms, 'x')), H(dev(rms, 'w')), f.rstd);
    check(rms, 'dx', b.dx, F32_TOL);
    check(rms, 'dw', b.dw, F32_TOL);
  });

  it('rope forward', () => {
    check(rope, 'y', native().opRope(H(dev(rope, 'x')), H(dev(rope, 'positions')), H(dev(rope, 'inv_freq')), false), F32_TOL);
  });

  it('swiglu forward + backward', () => {
    const A = native();
    check(sw, 'out', A.opSwiglu(H(dev(sw, 'gate')), H(dev(sw, 'up'))), F32_TOL);
    const b = A.opSwigluBackward(H(dev(sw, 'dout')), H(dev(sw, 'gate')), H(dev(sw, 'up')));
    check(sw, 'dgate', b.dgate, F32_TOL);
    check(sw, 'dup', b.dup, F32_TOL);
  });

  it.each([{ c: att }, { c: attw }])('attention forward + backward ($c.name)', ({ c }) => {
    const A = native();
    const q = H(dev(c, 'q')), k = H(dev(c, 'k')), v = H(dev(c, 'v')), cu = H(dev(c, 'cu_seqlens'));
    const s = c.params.scale as number, w = c.params.window as number;
    const f = A.opAttention(q, k, v, cu, s, w);
    check(c, 'out', f.out, F32_TOL);
    check(c, 'lse', f.lse, F32_TOL);
    const b = A.opAttentionBackward(H(dev(c, 'dout')), q, k, v, f.out, f.lse, cu, s, w);
    check(c, 'dq', b.dq, F32_TOL);
    check(c, 'dk', b.dk, F32_TOL);
    check(c, 'dv', b.dv, F32_TOL);
  });

  it('embedding forward', () => {
    check(emb, 'out', native().opEmbedding(H(dev(emb, 'ids')), H(dev(emb, 'w'))), F32_TOL);
  });

  it('adamw: three steps against torch.optim.AdamW', () => {
    const A = native();
    const p = dev(adam, 'param'), m = Tensor.zeros([333], { device: 'cuda' }), v = Tensor.zeros([333], { device: 'cuda' });
    for (let t = 0; t < 3; t++) A.opAdamw(H(p), H(dev(adam, `grad${t}`)), H(m), H(v), 1e-2, 0.9, 0.95, 1e-8, 0.1, t + 1);
    check(adam, 'param', p, 1e-6);
    check(adam, 'm', m, 1e-6);
    check(adam, 'v', v, 1e-6);
  });
});
