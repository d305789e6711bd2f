// Merging a PEFT LoRA adapter into its base model: a plain Hugging Face model folder.
//
// For every adapted linear layer W (out, in):  W' = W + s · B·A,  s = lora_alpha / r (rsLoRA: / √r),
// with B (out, r), A (r, in); the product is accumulated in double per output row and W' is stored in W's
// own dtype (F32; BF16 and F16 rounded to nearest even). Every other tensor is copied byte for byte.
// The output has the input's layout: the same single file or the same shards with the same index, the
// same safetensors metadata, and every other file of the folder (config.json, tokenizer files, ...).
// It is written into `<out>.tmp-<pid>` and renamed to `<out>` when complete.
//
// Adapter keys are PEFT's: `base_model.model.<module path>.lora_A[.default].weight` -> base `<module path>.weight`.
// This file (read adapter, map keys, compute the delta) is also the base of the later `export gguf-lora`.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { copyFile, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, InstillError } from '../errors.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../model/safetensors.js';

export interface AdapterConfig {
  r: number;
  alpha: number;
  rsLora: boolean;
  scale: number;
  targetModules: string[];
  baseModelNameOrPath: string | null;
}

export interface LoraPair {
  /** Base weight name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  base: string;
  a: Float32Array;
  b: Float32Array;
  /** A's shape [r, in]. */
  aShape: number[];
  /** B's shape [out, r]. */
  bShape: number[];
}

export interface MergeResult {
  out: string;
  merged: string[];
  files: string[];
}

const LORA_KEY = /^base_model\.model\.(.+)\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$/;

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new InstillError(ErrorCode.IO, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

export function readAdapterConfig(dir: string): AdapterConfig {
  const path = join(dir, 'adapter_config.json');
  if (!existsSync(path)) throw new InstillError(ErrorCode.IO, `${dir} has no adapter_config.json: is it a PEFT adapter folder?`);
  const c = readJson(path);
  if (c.peft_type !== undefined && c.peft_type !== 'LORA') throw new InstillError(ErrorCode.UNSUPPORTED, `${path}: peft_type ${String(c.peft_type)} is not LORA`);
  const r = c.r;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) throw new InstillError(ErrorCode.DATA, `${path}: r must be a positive integer`);
  const alpha = typeof c.lora_alpha === 'number' ? c.lora_alpha : r;
  if (c.fan_in_fan_out === true) throw new InstillError(ErrorCode.UNSUPPORTED, `${path}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported`);
  if (Array.isArray(c.modules_to_save) && c.modules_to_save.length) {
    throw new InstillError(ErrorCode.UNSUPPORTED, `${path}: modules_to_save (${c.modules_to_save.join(', ')}) is not supported by merge yet`);
  }
  const rsLora = c.use_rslora === true;
  const targets = Array.isArray(c.target_modules) ? c.target_modules.map(String) : typeof c.target_modules === 'string' ? [c.target_modules] : [];
  return { r, alpha, rsLora, scale: rsLora ? alpha / Math.sqrt(r) : alpha / r, targetModules: targets, baseModelNameOrPath: typeof c.base_model_name_or_path === 'string' ? c.base_model_name_or_path : null };
}

/** The adapter's (A, B) pairs by base weight name. */
export function readLoraPairs(dir: string): Map<string, LoraPair> {
  const path = join(dir, 'adapter_model.safetensors');
  if (!existsSync(path)) throw new InstillError(ErrorCode.IO, `${dir} has no adapter_model.safetensors`);
  const f = SafetensorsFile.open(path);
  const half = new Map<string, Partial<LoraPair>>();
  try {
    for (const name of f.names()) {
      const m = LORA_KEY.exec(name);
      if (!m) throw new InstillError(ErrorCode.UNSUPPORTED, `${path}: '${name}' is not a LoRA A/B weight (base_model.model.<module>.lora_A.weight)`);
      const base = `${m[1]}.weight`;
      const p = half.get(base) ?? { base };
      const arr = f.readArray(name);
      const info = f.info(name);
      if (!(arr instanceof Float32Array) || info.shape.length !== 2) throw new InstillError(ErrorCode.DATA, `${path}: '${name}' must be a 2-D float tensor`);
      if (m[2] === 'A') {
        p.a = arr;
        p.aShape = info.shape;
      } else {
        p.b = arr;
        p.bShape = info.shape;
      }
      half.set(base, p);
    }
  } finally {
    f.close();
  }
  const out = new Map<string, LoraPair>();
  for (const [base, p] of half) {
    if (!p.a || !p.b) throw new InstillError(ErrorCode.DATA, `${path}: ${base} has lora_${p.a ? 'A' : 'B'} but not lora_${p.a ? 'B' : 'A'}`);
    if (p.aShape![0] !== p.bShape![1]) throw new InstillError(ErrorCode.SHAPE, `${path}: ${base}: A is [${p.aShape}] and B is [${p.bShape}]; their ranks differ`);
    out.set(base, p as LoraPair);
  }
  return out;
}

/** W (out×in, f32 values) + scale·B·A, rounded to f32, in place. */
export function addLoraDelta(w: Float32Array, p: LoraPair, scale: number): void {
  const [r, inF] = p.aShape;
  const out = p.bShape[0];
  if (w.length !== out * inF) throw new InstillError(ErrorCode.SHAPE, `${p.base}: the base weight has ${w.length} values but B·A is ${out}×${inF}`);
  const acc = new Float64Array(inF);
  for (let o = 0; o < out; o++) {
    acc.fill(0);
    for (let k = 0; k < r; k++) {
      const b = p.b[o * r + k];
      if (b === 0) continue;
      const row = k * inF;
      for (let i = 0; i < inF; i++) acc[i] += b * p.a[row + i];
    }
    const base = o * inF;
    for (let i = 0; i < inF; i++) w[base + i] = w[base + i] + scale * acc[i];
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f32ToBf16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const x = u32[0];
    if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40; // NaN stays NaN
    else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

export function f32ToF16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const x = u32[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      const half = 1 << (shift - 1);
      const rest = mant & ((1 << shift) - 1);
      let h = mant >>> shift;
      if (rest > half || (rest === half && (h & 1))) h++;
      out[i] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
    out[i] = sign | h; // a carry into the exponent rounds up correctly (to inf at the top)
  }
  return out;
}

function weightFiles(dir: string): { files: string[]; index: string | null } {
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) {
    const j = readJson(index) as { weight_map?: Record<string, string> };
    if (!j.weight_map || typeof j.weight_map !== 'object') throw new InstillError(ErrorCode.DATA, `${index} has no weight_map`);
    return { files: [...new Set(Object.values(j.weight_map))].sort(), index };
  }
  if (existsSync(join(dir, 'model.safetensors'))) return { files: ['model.safetensors'], index: null };
  throw new InstillError(ErrorCode.IO, `${dir} has neither model.safetensors nor model.safetensors.index.json: is it a Hugging Face model folder?`);
}

/** Writes `base` with `adapter` merged into `out` (which must not exist or be empty). */
export async function mergeAdapter(baseDir: string, adapterDir: string, out: string): Promise<MergeResult> {
  if (!existsSync(join(baseDir, 'config.json'))) throw new InstillError(ErrorCode.IO, `${baseDir} has no config.json: --model must be the base model folder`);
  if (existsSync(out) && readdirSync(out).length > 0) throw new InstillError(ErrorCode.ARG, `${out} exists and is not empty: choose a new --out folder`);
  const cfg = readAdapterConfig(adapterDir);
  const pairs = readLoraPairs(adapterDir);
  if (pairs.size === 0) throw new InstillError(ErrorCode.DATA, `${adapterDir}/adapter_model.safetensors holds no LoRA weights`);
  const { files, index } = weightFiles(baseDir);
  const tmp = `${out}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  const merged: string[] = [];
  try {
    for (const file of files) {
      const f = SafetensorsFile.open(join(baseDir, file));
      const tensors: Record<string, TensorToWrite> = {};
      try {
        for (const name of f.names()) {
          const info = f.info(name);
          const pair = pairs.get(name);
          if (info.dtype !== 'F32' && info.dtype !== 'BF16' && info.dtype !== 'F16') {
            throw new InstillError(ErrorCode.UNSUPPORTED, `${file}: tensor '${name}' is ${info.dtype}; merge writes F32, BF16 and F16 models only`);
          }
          if (!pair) {
            const bytes = f.readBytes(name);
            const n = info.shape.reduce((a, b) => a * b, 1);
            tensors[name] = info.dtype === 'F32'
              ? { dtype: 'F32', shape: info.shape, data: new Float32Array(bytes.buffer, 0, n) }
              : { dtype: info.dtype, shape: info.shape, data: new Uint16Array(bytes.buffer, 0, n) };
            continue;
          }
          if (info.shape.length !== 2 || info.shape[0] !== pair.bShape[0] || info.shape[1] !== pair.aShape[1]) {
            throw new InstillError(ErrorCode.SHAPE, `${name} is [${info.shape}] in the base model but the adapter's B·A is [${pair.bShape[0]}, ${pair.aShape[1]}]: is the adapter for this model?`);
          }
          const w = Float32Array.from(f.readArray(name) as Float32Array);
          addLoraDelta(w, pair, cfg.scale);
          tensors[name] = info.dtype === 'F32' ? { dtype: 'F32', shape: info.shape, data: w } : { dtype: info.dtype, shape: info.shape, data: info.dtype === 'BF16' ? f32ToBf16(w) : f32ToF16(w) };
          merged.push(name);
        }
        writeSafetensors(join(tmp, file), tensors, f.metadata);
      } finally {
        f.close();
      }
    }
    const missing = [...pairs.keys()].filter((k) => !merged.includes(k));
    if (missing.length) throw new InstillError(ErrorCode.DATA, `the base model has no weight ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''} that the adapter adapts: is the adapter for this model?`);
    const weightSet = new Set(files);
    for (const name of readdirSync(baseDir)) {
      const src = join(baseDir, name);
      if (weightSet.has(name) || !statSync(src).isFile() || name.startsWith('adapter_')) continue;
      await copyFile(src, join(tmp, name)); // config.json, the index, tokenizer files, ...
    }
    if (index === null && existsSync(join(tmp, 'model.safetensors.index.json'))) await rm(join(tmp, 'model.safetensors.index.json'));
    await rm(out, { recursive: true, force: true });
    await rename(tmp, out);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
  return { out, merged, files: readdirSync(out).sort() };
}
