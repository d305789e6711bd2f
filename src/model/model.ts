// loadModel and Model: a Hugging Face Llama-family checkpoint running on the native engine,
// with LoRA adapters addressed by PEFT names, or (full fine-tuning, `loadModel(dir, { full: true })`
// or `model.setTrainable('all')`) every weight trainable, read and written by Hugging Face names.
//
// Loading reads config.json (-> ModelSpec), then the weights one tensor at a time from
// model.safetensors or the shards named by model.safetensors.index.json, handing each to the
// engine before reading the next (never two copies of the model in memory).
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, InstillError, describe } from '../errors.js';
import { native, type ModelHandle, type TensorHandle } from '../native.js';
import { Tensor, handleOf } from '../tensor.js';
import { ropeInvFreq, specFromConfig, type ModelSpec } from './config.js';
import { resolveModelDir } from './hub.js';
import { prepareInputs, type BatchInput, type EngineInputs, type TokenRows } from './inputs.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from './safetensors.js';

export const LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

export interface LoadModelOptions {
  /**
   * Where weights, adapters, gradients, optimizer moments and activations live. Default 'cpu'. 'cuda'
   * needs a build with the CUDA backend and a GPU (runtime.info().devices); its products round operands
   * to bf16 (f32 accumulation), so results agree with the CPU's within bf16 tolerance.
   */
  device?: 'cpu' | 'cuda';
  /** dtype of the frozen linear/embedding weights in memory. Default 'f32'. Norms are always f32. */
  dtype?: 'f32' | 'bf16' | 'f16';
  /** Full fine-tuning: every weight trainable (f32 only), as `model.setTrainable('all')`. Default false. */
  full?: boolean;
}

/** Files of a model folder that saveModel copies along (tokenizer, generation settings). */
const MODEL_SIDE_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model', 'generation_config.json'];

export interface LoraOptions {
  r: number;
  alpha?: number;
  targetModules?: readonly LoraTarget[];
  rsLora?: boolean;
  dropout?: number;
  /** Seed of A's Kaiming-uniform init (B starts at zero, as in PEFT). */
  seed?: number;
}

export interface LoraConfig {
  r: number;
  alpha: number;
  targetModules: LoraTarget[];
  rsLora: boolean;
  dropout: number;
  scale: number;
}

export interface GenerationConfig {
  bosTokenId: number | null;
  eosTokenIds: number[];
}

/**
 * Precision of the activations that only bf16 products read (the norm outputs, the MLP's and the attention's
 * activations, and their gradients; the residual stream stays f32): 'auto' (INSTILL_BF16_ACTIVATIONS where set,
 * else bf16 on a GPU and f32 on the CPU), 'f32', 'bf16', or 'bf16-mlp' (the attention's f32). bf16 applies where
 * every linear has a LoRA adapter over bf16/f16 weights; anywhere else the activations stay f32.
 */
export type ActivationMode = 'auto' | 'f32' | 'bf16' | 'bf16-mlp';
export const ACTIVATION_MODES: readonly ActivationMode[] = ['auto', 'f32', 'bf16', 'bf16-mlp'];

export interface LossAndGradsOptions {
  /** Divide the summed loss by this (the target count of a whole accumulation window). Default: this batch's count. */
  normalizer?: number;
  /** Add gradients to the current ones (+=) instead of replacing them. Default false. */
  accumulate?: boolean;
  /**
   * Seed of this call's LoRA dropout masks (uint32). Default: a new one per call, derived from
   * addLora's seed and a call counter, so runs are reproducible. Ignored without dropout.
   */
  dropoutSeed?: number;
  /** Copy gradients out (Float32Array per PEFT name). Default true. */
  returnGrads?: boolean;
}

export interface LossAndGradsResult {
  /** Mean cross-entropy over the target tokens (or sum / normalizer). */
  loss: number;
  /** Target tokens in this batch. */
  tokens: number;
  grads: Record<string, Float32Array>;
}

export interface GenerateOptions {
  maxNewTokens?: number;
  /** 0 (default) = greedy. */
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Stop after producing one of these ids (default: the generation config's EOS ids). Pass [] to never stop early. */
  stopTokenIds?: readonly number[];
}

export interface GenerateResult {
  /** The new token ids (the prompt is not repeated). */
  ids: number[];
  /** Decoded new tokens, when the model folder has a tokenizer. */
  text: string | null;
}

export interface AdamwOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /**
   * Clip the global L2 norm of every trainable gradient to this (torch.nn.utils.clip_grad_norm_: the
   * gradients are scaled by maxGradNorm / (norm + 1e-6) when the norm exceeds it). 0 (default): no clipping.
   */
  maxGradNorm?: number;
}

/** The optimizer's state, by trainable tensor name (PEFT names for LoRA, Hugging Face names in full mode). */
export interface AdamwState {
  /** Optimizer steps taken. */
  step: number;
  /** First and second moments (fp32); empty before the first step. */
  m: Record<string, Float32Array>;
  v: Record<string, Float32Array>;
}

function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new InstillError(ErrorCode.IO, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InstillError(ErrorCode.DATA, `${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

/** name -> file of every weight (single file or sharded index). */
function weightFiles(dir: string): Map<string, string> {
  const single = join(dir, 'model.safetensors');
  const index = join(dir, 'model.safetensors.index.json');
  const map = new Map<string, string>();
  if (existsSync(index)) {
    const j = readJson(index) as { weight_map?: Record<string, unknown> };
    if (!j || typeof j.weight_map !== 'object' || j.weight_map === null) throw new InstillError(ErrorCode.DATA, `${index} has no weight_map`);
    for (const [name, file] of Object.entries(j.weight_map)) {
      if (typeof file !== 'string' || file.includes('/') || file.includes('\\')) {
        throw new InstillError(ErrorCode.DATA, `${index}: weight_map['${name}'] must be a file name in the folder, got ${describe(file)}`);
      }
      map.set(name, join(dir, file));
    }
    return map;
  }
  if (existsSync(single)) {
    const f = SafetensorsFile.open(single);
    try {
      for (const n of f.names()) map.set(n, single);
    } finally {
      f.close();
    }
    return map;
  }
  const bin = existsSync(join(dir, 'pytorch_model.bin')) ? ' (only pytorch_model.bin was found: convert it to safetensors)' : '';
  throw new InstillError(ErrorCode.IO, `${dir} has neither model.safetensors nor model.safetensors.index.json${bin}`);
}

const IGNORED_WEIGHTS = /(^|\.)rotary_emb\.inv_freq$/;

/** Loads a model folder or Hub id. */
export async function loadModel(pathOrHubId: string, options: LoadModelOptions = {}): Promise<Model> {
  if (options === null || typeof options !== 'object') throw new InstillError(ErrorCode.ARG, `Expected an options object but received ${describe(options)}`);
  const dtype = options.dtype ?? 'f32';
  if (!['f32', 'bf16', 'f16'].includes(dtype)) throw new InstillError(ErrorCode.DTYPE, `Expected 'f32', 'bf16' or 'f16' for dtype but received ${describe(dtype)}`);
  if (options.full !== undefined && typeof options.full !== 'boolean') throw new InstillError(ErrorCode.ARG, `Expected a boolean for full but received ${describe(options.full)}`);
  if (options.full && dtype !== 'f32') throw new InstillError(ErrorCode.DTYPE, `full fine-tuning trains every weight in f32: drop dtype '${dtype}' (or train a LoRA adapter)`);
  const dir = await resolveModelDir(pathOrHubId);
  const cfgPath = join(dir, 'config.json');
  if (!existsSync(cfgPath)) throw new InstillError(ErrorCode.IO, `${dir} has no config.json: is it a Hugging Face model folder?`);
  const rawConfig = readJson(cfgPath) as Record<string, unknown>;
  const spec = specFromConfig(rawConfig);
  const gen: GenerationConfig = { bosTokenId: spec.bosTokenId, eosTokenIds: spec.eosTokenIds };
  const genPath = join(dir, 'generation_config.json');
  if (existsSync(genPath)) {
    const g = readJson(genPath) as Record<string, unknown>;
    if (typeof g.bos_token_id === 'number') gen.bosTokenId = g.bos_token_id;
    if (typeof g.eos_token_id === 'number') gen.eosTokenIds = [g.eos_token_id];
    else if (Array.isArray(g.eos_token_id)) gen.eosTokenIds = g.eos_token_id.filter((x): x is number => typeof x === 'number');
  }
  const files = weightFiles(dir);
  const handle = createHandle(spec, options.device);
  const byFile = new Map<string, string[]>();
  for (const [name, file] of files) {
    if (IGNORED_WEIGHTS.test(name)) continue;
    if (spec.tieWordEmbeddings && name === 'lm_head.weight') continue;
    if (!byFile.has(file)) byFile.set(file, []);
    byFile.get(file)!.push(name);
  }
  for (const [file, names] of byFile) {
    const f = SafetensorsFile.open(file);
    try {
      for (const name of names) {
        const isVector = f.info(name).shape.length === 1;
        const t = f.readTensor(name, isVector ? 'f32' : dtype);
        try {
          handle.setWeight(name, handleOf(t));
        } catch (err) {
          if (err instanceof InstillError) throw new InstillError(err.code, `${file}: ${err.message}`, { cause: err });
          throw err;
        }
      }
    } finally {
      f.close();
    }
  }
  handle.checkComplete();
  const model = new Model(handle, spec, dir, gen, dtype, rawConfig);
  if (options.full) model.setTrainable('all');
  return model;
}

// The engine checks the device: a name other than 'cpu' or 'cuda', or a device this build or
// machine lacks, is E_DEVICE saying why (default 'cpu').
function createHandle(spec: ModelSpec, device: string | undefined): ModelHandle {
  const inv = Tensor.from(ropeInvFreq(spec), [spec.headDim / 2]);
  return native().modelCreate(
    {
      hidden: spec.hiddenSize,
      intermediate: spec.intermediateSize,
      layers: spec.numLayers,
      heads: spec.numHeads,
      kvHeads: spec.numKvHeads,
      headDim: spec.headDim,
      vocab: spec.vocabSize,
      eps: spec.rmsNormEps,
      qkvBias: spec.qkvBias,
      qkNorm: spec.qkNorm,
      tied: spec.tieWordEmbeddings,
      slidingWindow: spec.slidingWindow ?? 0,
      device,
    },
    handleOf(inv),
  );
}

export interface RandomModelOptions extends LoadModelOptions {
  seed?: number;
  /**
   * 'normal' (default): every weight drawn from N(0, 0.02²) with the seeded generator. 'tiled': a pool of
   * 2^20 such draws copied from a random offset per 2^20 values — the same statistics at memcpy speed,
   * for benchmarks of billion-parameter shapes where drawing each value would take tens of seconds.
   */
  init?: 'normal' | 'tiled';
}

/**
 * A model with random weights of a config's shapes (normal, std 0.02; norms 1): for benchmarks
 * at real shapes without downloading weights. Weights are made one tensor at a time.
 */
export function randomModel(config: unknown, options: RandomModelOptions = {}): Model {
  const spec = specFromConfig(config);
  const dtype = options.dtype ?? 'f32';
  const init = options.init ?? 'normal';
  if (init !== 'normal' && init !== 'tiled') throw new InstillError(ErrorCode.ARG, `Expected 'normal' or 'tiled' for init but received ${describe(init)}`);
  const handle = createHandle(spec, options.device);
  const rng = new Rng(options.seed ?? 0);
  // 'tiled': one pool of seeded normals, copied from a random offset per tensor (memcpy speed).
  const POOL = 1 << 20;
  const pool = init === 'tiled' ? Float32Array.from({ length: 2 * POOL }, () => 0.02 * rng.normal()) : null;
  const set = (name: string, shape: number[], fill: 'normal' | 'ones' | 'zeros') => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (fill === 'ones') data.fill(1);
    else if (fill === 'normal' && pool) {
      for (let i = 0; i < n; i += POOL) {
        const off = Math.floor(rng.next() * POOL);
        data.set(pool.subarray(off, off + Math.min(POOL, n - i)), i);
      }
    } else if (fill === 'normal') for (let i = 0; i < n; i++) data[i] = 0.02 * rng.normal();
    handle.setWeight(name, handleOf(Tensor.from(data, shape, { dtype: shape.length === 1 ? 'f32' : dtype })));
  };
  const C = spec.hiddenSize, F = spec.intermediateSize, D = spec.headDim;
  set('model.embed_tokens.weight', [spec.vocabSize, C], 'normal');
  set('model.norm.weight', [C], 'ones');
  if (!spec.tieWordEmbeddings) set('lm_head.weight', [spec.vocabSize, C], 'normal');
  for (let l = 0; l < spec.numLayers; l++) {
    const p = `model.layers.${l}.`;
    set(p + 'input_layernorm.weight', [C], 'ones');
    set(p + 'post_attention_layernorm.weight', [C], 'ones');
    set(p + 'self_attn.q_proj.weight', [spec.numHeads * D, C], 'normal');
    set(p + 'self_attn.k_proj.weight', [spec.numKvHeads * D, C], 'normal');
    set(p + 'self_attn.v_proj.weight', [spec.numKvHeads * D, C], 'normal');
    set(p + 'self_attn.o_proj.weight', [C, spec.numHeads * D], 'normal');
    if (spec.qkvBias) {
      set(p + 'self_attn.q_proj.bias', [spec.numHeads * D], 'zeros');
      set(p + 'self_attn.k_proj.bias', [spec.numKvHeads * D], 'zeros');
      set(p + 'self_attn.v_proj.bias', [spec.numKvHeads * D], 'zeros');
    }
    if (spec.qkNorm) {
      set(p + 'self_attn.q_norm.weight', [D], 'ones');
      set(p + 'self_attn.k_norm.weight', [D], 'ones');
    }
    set(p + 'mlp.gate_proj.weight', [F, C], 'normal');
    set(p + 'mlp.up_proj.weight', [F, C], 'normal');
    set(p + 'mlp.down_proj.weight', [C, F], 'normal');
  }
  handle.checkComplete();
  const model = new Model(handle, spec, null, { bosTokenId: spec.bosTokenId, eosTokenIds: spec.eosTokenIds }, dtype, config as Record<string, unknown>);
  if (options.full) model.setTrainable('all');
  return model;
}

/** splitmix32-style seeded generator: uniform [0, 1) and standard normal (Box–Muller). */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = (seed >>> 0) ^ 0x9e3779b9;
  }
  next(): number {
    this.s = (this.s + 0x9e3779b9) | 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z ^= z >>> 16;
    return (z >>> 0) / 4294967296;
  }
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

// The model's own tensors reach JS as handles that share them (loraTensor, weightTensor, momentTensor). A handle left
// to the garbage collector keeps its tensor's memory, a GPU block, after model.dispose() or after addLora replaced the
// adapter (test/cuda/memory.test.ts), so every use of one lets go of it at once: hostArray, or peek.

/** A model tensor's values on the host (a copy from the GPU when it lives there); lets go of h. */
function hostArray(h: TensorHandle): Float32Array {
  try {
    if (h.device === 'cpu') return h.toArray() as Float32Array;
    const host = native().tensorTo(h, 'cpu');
    try {
      return host.toArray() as Float32Array;
    } finally {
      host.dispose();
    }
  } finally {
    h.dispose();
  }
}

/** What read takes from a model tensor's handle (its shape, dtype, device); lets go of h. */
function peek<T>(h: TensorHandle, read: (h: TensorHandle) => T): T {
  try {
    return read(h);
  } finally {
    h.dispose();
  }
}

function peftName(layer: number, target: number, which: 'A' | 'B'): string {
  const t = LORA_TARGETS[target];
  const block = target <= 3 ? 'self_attn' : 'mlp';
  return `base_model.model.model.layers.${layer}.${block}.${t}.lora_${which}.weight`;
}

const PEFT_RE = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_(A|B)(?:\.default)?\.weight$/;

export class Model {
  readonly spec: ModelSpec;
  /** The model folder (null for randomModel). */
  readonly dir: string | null;
  readonly generationConfig: GenerationConfig;
  readonly dtype: string;
  private readonly handle: ModelHandle;
  private lora: LoraConfig | null = null;
  private optimizerSteps = 0;
  private dropoutCalls = 0;
  private dropoutBaseSeed = 0;
  private tokenizerPromise: Promise<import('../data/tokenizer.js').Tokenizer> | null = null;
  private full = false;
  private readonly rawConfig: Record<string, unknown>;

  /** @internal use loadModel */
  constructor(handle: ModelHandle, spec: ModelSpec, dir: string | null, gen: GenerationConfig, dtype: string, rawConfig: Record<string, unknown>) {
    this.handle = handle;
    this.spec = spec;
    this.dir = dir;
    this.generationConfig = gen;
    this.dtype = dtype;
    this.rawConfig = rawConfig;
  }

  /** Where the model's weights, adapters and activations live ('cpu' or 'cuda'). */
  get device(): 'cpu' | 'cuda' {
    return peek(this.handle.weightTensor('model.norm.weight', false), (h) => h.device as 'cpu' | 'cuda');
  }

  /** True in full fine-tuning mode (every weight trainable). */
  get fullTraining(): boolean {
    return this.full;
  }

  /**
   * 'all': full fine-tuning — every weight (linears, biases, norms, embedding, LM head) gets a gradient
   * from lossAndGrads (read with grads(), by Hugging Face name). Needs f32 weights and no LoRA adapters.
   * 'none': base weights frozen again (the default; LoRA adapters, if added, are what trains).
   */
  setTrainable(which: 'all' | 'none'): void {
    if (which !== 'all' && which !== 'none') throw new InstillError(ErrorCode.ARG, `Expected 'all' or 'none' for setTrainable but received ${describe(which)}`);
    this.handle.setFull(which === 'all');
    this.full = which === 'all';
    this.optimizerSteps = 0; // the engine dropped the moments
  }

  /** Every weight's Hugging Face name (embedding, layers in order, final norm, untied head). */
  weightNames(): string[] {
    return this.handle.weightNames();
  }

  /** Every weight as f32 (bf16/f16 weights are widened), keyed by Hugging Face name. Copies. */
  weights(): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    for (const n of this.handle.weightNames()) out[n] = hostArray(this.handle.weightTensor(n, false));
    return out;
  }

  /** Full mode: the gradient of every weight from the last lossAndGrads, keyed by Hugging Face name. Copies. */
  grads(): Record<string, Float32Array> {
    if (!this.full) throw new InstillError(ErrorCode.ARG, "base weights have no gradients: call model.setTrainable('all') (or loadModel(dir, { full: true })) for full fine-tuning");
    const out: Record<string, Float32Array> = {};
    for (const n of this.handle.weightNames()) out[n] = hostArray(this.handle.weightTensor(n, true));
    return out;
  }

  /**
   * Sets weights by Hugging Face name (values as f32; stored in the model's dtype, norms f32). With `strict`
   * (default true) every weight must be given. Gradients are kept.
   */
  setWeights(record: Record<string, Float32Array | ArrayLike<number>>, options: { strict?: boolean } = {}): void {
    this.writeRecord(record, false, options.strict !== false, 'setWeights');
  }

  /** Full mode: overwrites gradients by Hugging Face name (e.g. after clipping them yourself). Same rules as setWeights. */
  setGrads(record: Record<string, Float32Array | ArrayLike<number>>, options: { strict?: boolean } = {}): void {
    if (!this.full) throw new InstillError(ErrorCode.ARG, "base weights have no gradients: call model.setTrainable('all') for full fine-tuning");
    this.writeRecord(record, true, options.strict !== false, 'setGrads');
  }

  /** Validates every entry first, then writes (f32 tensors in place; bf16/f16 weights as new tensors of their dtype). */
  private writeRecord(record: Record<string, Float32Array | ArrayLike<number>>, grad: boolean, strict: boolean, what: string): void {
    if (record === null || typeof record !== 'object') throw new InstillError(ErrorCode.ARG, `Expected a record of weight names to Float32Array but received ${describe(record)}`);
    const names = this.handle.weightNames();
    const known = new Set(names);
    const prepared: { name: string; arr: Float32Array; shape: number[]; dtype: string }[] = [];
    for (const [name, values] of Object.entries(record)) {
      if (!known.has(name)) throw new InstillError(ErrorCode.ARG, `'${name}' is not a weight of this model (e.g. ${names[0]}, ${names[1]})`);
      const cur = peek(this.handle.weightTensor(name, grad), (h) => ({ shape: h.shape, dtype: h.dtype }));
      const arr = values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>);
      const n = cur.shape.reduce((a, b) => a * b, 1);
      if (arr.length !== n) throw new InstillError(ErrorCode.SHAPE, `'${name}' has ${arr.length} values but the ${grad ? 'gradient' : 'weight'} is [${cur.shape.join(', ')}]`);
      prepared.push({ name, arr, shape: cur.shape, dtype: cur.dtype });
    }
    if (strict) {
      for (const n of names) if (!(n in record)) throw new InstillError(ErrorCode.ARG, `${what}: '${n}' is missing (pass { strict: false } to set a subset)`);
    }
    for (const p of prepared) {
      if (p.dtype === 'f32') this.handle.writeWeight(p.name, grad, p.arr);
      else this.handle.setWeight(p.name, handleOf(Tensor.from(p.arr, p.shape, { dtype: p.dtype as 'bf16' | 'f16' })));
    }
  }

  /**
   * Writes the whole model in Hugging Face layout — config.json, model.safetensors (every weight F32;
   * no lm_head.weight when tied) and the source folder's tokenizer and generation files — into a
   * temporary folder renamed to `dir` when complete (an existing `dir` is replaced only then).
   */
  saveModel(dir: string): void {
    if (typeof dir !== 'string' || dir === '') throw new InstillError(ErrorCode.ARG, `Expected a folder path for saveModel but received ${describe(dir)}`);
    const tmp = `${dir.replace(/[\/]+$/, '')}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    try {
      mkdirSync(tmp, { recursive: true });
      this.writeModelFiles(tmp);
      if (existsSync(dir)) {
        const old = `${dir.replace(/[\/]+$/, '')}.old-${process.pid}`;
        rmSync(old, { recursive: true, force: true });
        renameSync(dir, old);
        renameSync(tmp, dir);
        rmSync(old, { recursive: true, force: true });
      } else renameSync(tmp, dir);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      if (err instanceof InstillError) throw err;
      throw new InstillError(ErrorCode.IO, `saving the model to ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** @internal saveModel's files, written into an existing folder (the trainer's checkpoints use it). */
  writeModelFiles(dir: string): void {
    const tensors: Record<string, TensorToWrite> = {};
    for (const n of this.handle.weightNames()) {
      const h = this.handle.weightTensor(n, false);
      const shape = h.shape;
      tensors[n] = { dtype: 'F32', shape, data: hostArray(h) };
    }
    writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    if (this.dir) for (const f of MODEL_SIDE_FILES) if (existsSync(join(this.dir, f))) copyFileSync(join(this.dir, f), join(dir, f));
    const config: Record<string, unknown> = { ...this.rawConfig, torch_dtype: 'float32' };
    if ('dtype' in config) config.dtype = 'float32';
    const tmp = join(dir, 'config.json.tmp');
    writeFileSync(tmp, JSON.stringify(config, null, 2) + '\n');
    renameSync(tmp, join(dir, 'config.json'));
  }

  get loraConfig(): LoraConfig | null {
    return this.lora ? { ...this.lora, targetModules: [...this.lora.targetModules] } : null;
  }

  /** Adds LoRA adapters (PEFT init: A Kaiming-uniform, B zero). Replaces existing adapters. */
  addLora(opts: LoraOptions): void {
    if (opts === null || typeof opts !== 'object') throw new InstillError(ErrorCode.ARG, `Expected LoRA options { r, alpha, targetModules } but received ${describe(opts)}`);
    const r = opts.r;
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 1 || r > 65536) {
      throw new InstillError(ErrorCode.ARG, `Expected integer between 1 and 65536 for r but received ${describe(r)}`);
    }
    const alpha = opts.alpha ?? r;
    if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) throw new InstillError(ErrorCode.ARG, `Expected a positive number for alpha but received ${describe(alpha)}`);
    const targets = opts.targetModules ?? ['q_proj', 'v_proj'];
    if (!Array.isArray(targets) || targets.length === 0) throw new InstillError(ErrorCode.ARG, `Expected a non-empty array of ${LORA_TARGETS.join(', ')} for targetModules but received ${describe(targets)}`);
    let mask = 0;
    for (const t of targets) {
      const i = (LORA_TARGETS as readonly string[]).indexOf(t);
      if (i < 0) throw new InstillError(ErrorCode.ARG, `Expected one of ${LORA_TARGETS.join(', ')} in targetModules but received ${describe(t)}`);
      mask |= 1 << i;
    }
    const dropout = opts.dropout ?? 0;
    if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw new InstillError(ErrorCode.ARG, `Expected a number in [0, 1) for dropout but received ${describe(dropout)}`);
    const rsLora = opts.rsLora === true;
    const scale = rsLora ? alpha / Math.sqrt(r) : alpha / r;
    this.handle.addLora(mask, r, scale, dropout);
    const targetModules = LORA_TARGETS.filter((_, i) => (mask >> i) & 1);
    this.lora = { r, alpha, targetModules, rsLora, dropout, scale };
    this.optimizerSteps = 0;
    this.dropoutCalls = 0;
    this.dropoutBaseSeed = (opts.seed ?? 0) >>> 0;
    // PEFT default: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0.
    const rng = new Rng(opts.seed ?? 0);
    for (let l = 0; l < this.spec.numLayers; l++) {
      for (let t = 0; t < LORA_TARGETS.length; t++) {
        if (!((mask >> t) & 1)) continue;
        const [rr, inF] = peek(this.handle.loraTensor(l, t, 0), (a) => a.shape);
        const bound = 1 / Math.sqrt(inF);
        const vals = new Float32Array(rr * inF);
        for (let i = 0; i < vals.length; i++) vals[i] = (2 * rng.next() - 1) * bound;
        this.handle.setLoraTensor(l, t, 0, vals);
      }
    }
  }

  private needLora(): LoraConfig {
    if (!this.lora) throw new InstillError(ErrorCode.ARG, 'the model has no LoRA adapters: call model.addLora({ r, alpha, targetModules }) first');
    return this.lora;
  }

  private forEachAdapter(fn: (layer: number, target: number) => void): void {
    const lora = this.needLora();
    for (let l = 0; l < this.spec.numLayers; l++) {
      for (let t = 0; t < LORA_TARGETS.length; t++) if (lora.targetModules.includes(LORA_TARGETS[t])) fn(l, t);
    }
  }

  /** Current LoRA weights, keyed by PEFT names. */
  adapterWeights(): Record<string, Float32Array> {
    return this.adapterRecord(0);
  }

  /** Gradients of the last lossAndGrads, keyed by PEFT names. */
  adapterGrads(): Record<string, Float32Array> {
    return this.adapterRecord(2);
  }

  /** Host copies of every adapter's A and B (first = 0) or dA and dB (first = 2), by PEFT name. */
  private adapterRecord(first: 0 | 2): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    this.forEachAdapter((l, t) => {
      out[peftName(l, t, 'A')] = hostArray(this.handle.loraTensor(l, t, first));
      out[peftName(l, t, 'B')] = hostArray(this.handle.loraTensor(l, t, first + 1));
    });
    return out;
  }

  /**
   * Sets LoRA weights by PEFT name (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`;
   * a `.default` adapter segment is accepted). Every name must belong to an existing adapter.
   * With `strict` (default true) every adapter tensor must be given.
   */
  setAdapterWeights(record: Record<string, Float32Array | ArrayLike<number>>, options: { strict?: boolean } = {}): void {
    const lora = this.needLora();
    if (record === null || typeof record !== 'object') throw new InstillError(ErrorCode.ARG, `Expected a record of PEFT names to Float32Array but received ${describe(record)}`);
    const seen = new Set<string>();
    for (const [name, values] of Object.entries(record)) {
      const m = PEFT_RE.exec(name);
      if (!m) throw new InstillError(ErrorCode.ARG, `'${name}' is not a PEFT LoRA weight name (base_model.model.model.layers.<i>.<self_attn|mlp>.<module>.lora_<A|B>.weight)`);
      const layer = Number(m[1]);
      const target = (LORA_TARGETS as readonly string[]).indexOf(m[3]);
      if (layer >= this.spec.numLayers) throw new InstillError(ErrorCode.ARG, `'${name}': the model has ${this.spec.numLayers} layers`);
      if (!lora.targetModules.includes(m[3] as LoraTarget)) throw new InstillError(ErrorCode.ARG, `'${name}': ${m[3]} has no adapter (targets: ${lora.targetModules.join(', ')})`);
      const which = m[4] === 'A' ? 0 : 1;
      const arr = values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>);
      const shape = peek(this.handle.loraTensor(layer, target, which), (h) => h.shape);
      if (arr.length !== shape[0] * shape[1]) {
        throw new InstillError(ErrorCode.SHAPE, `'${name}' has ${arr.length} values but the adapter tensor is [${shape.join(', ')}] (r = ${lora.r})`);
      }
      this.handle.setLoraTensor(layer, target, which, arr);
      seen.add(`${layer}.${target}.${which}`);
    }
    if (options.strict !== false) {
      this.forEachAdapter((l, t) => {
        for (const w of [0, 1]) {
          if (!seen.has(`${l}.${t}.${w}`)) throw new InstillError(ErrorCode.ARG, `setAdapterWeights: '${peftName(l, t, w ? 'B' : 'A')}' is missing (pass { strict: false } to set a subset)`);
        }
      });
    }
  }

  /** Recompute each layer's activations in the backward pass instead of keeping them (less memory, ~1.3x time). */
  setGradientCheckpointing(on: boolean): void {
    this.handle.setCheckpointing(on === true);
  }

  /** The activations' precision for this model's passes (ActivationMode; a set mode wins over INSTILL_BF16_ACTIVATIONS). */
  setActivations(mode: ActivationMode): void {
    if (!ACTIVATION_MODES.includes(mode)) {
      throw new InstillError(ErrorCode.ARG, `Expected one of ${ACTIVATION_MODES.join(', ')} for activations but received ${describe(mode)}`);
    }
    this.handle.setActivations(mode);
  }

  /**
   * The mode set, and the dtype the next pass keeps the norm outputs and the MLP's activations in (the attention's
   * may stay f32: 'bf16-mlp', Qwen3's q/k norm, head dim above 256).
   */
  get activations(): { mode: ActivationMode; dtype: 'f32' | 'bf16' } {
    const a = this.handle.activations();
    return { mode: a.mode as ActivationMode, dtype: a.dtype as 'f32' | 'bf16' };
  }

  private engineTensors(inp: EngineInputs) {
    return {
      ids: handleOf(Tensor.from(inp.ids, [inp.ids.length], { dtype: 'i32' })),
      positions: handleOf(Tensor.from(inp.positions, [inp.positions.length], { dtype: 'i32' })),
      cu: handleOf(Tensor.from(inp.cuSeqlens, [inp.cuSeqlens.length], { dtype: 'i32' })),
    };
  }

  /**
   * Loss (mean CE over target tokens) and gradients of one batch: LoRA's (`grads` by PEFT name) or, in full
   * mode, every weight's (`grads` by Hugging Face name, as model.grads()). Runs off the JS thread.
   */
  async lossAndGrads(batch: BatchInput, options: LossAndGradsOptions = {}): Promise<LossAndGradsResult> {
    const { t, targets, normalizer } = this.lossInputs(batch, options.normalizer);
    let seed = options.dropoutSeed;
    if (seed === undefined) seed = (Math.imul(this.dropoutBaseSeed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(++this.dropoutCalls, 0x85ebca6b)) >>> 0;
    else if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new InstillError(ErrorCode.ARG, `Expected an integer in [0, 2^32) for dropoutSeed but received ${describe(seed)}`);
    const r = await this.handle.lossAndGrads(t.ids, t.positions, t.cu, targets, normalizer, options.accumulate === true, seed);
    const grads = options.returnGrads === false ? {} : this.full ? this.grads() : this.lora ? this.adapterGrads() : {};
    return { loss: r.loss, tokens: r.count, grads };
  }

  /**
   * Forward only: the mean cross-entropy over the batch's target tokens (or sum / normalizer), exactly
   * what lossAndGrads returns, without a backward pass, dropout, or touching any gradient.
   */
  async loss(batch: BatchInput, options: { normalizer?: number } = {}): Promise<{ loss: number; tokens: number }> {
    const { t, targets, normalizer } = this.lossInputs(batch, options.normalizer);
    const r = await this.handle.loss(t.ids, t.positions, t.cu, targets, normalizer);
    return { loss: r.loss, tokens: r.count };
  }

  /** A batch with labels as the engine's tensors, and the checked normalizer (0: the batch's target count). */
  private lossInputs(batch: BatchInput, normalizer: number | undefined = 0) {
    const inp = prepareInputs(batch, true, this.spec.vocabSize);
    if (typeof normalizer !== 'number' || !Number.isFinite(normalizer) || normalizer < 0) {
      throw new InstillError(ErrorCode.ARG, `Expected a positive number for normalizer but received ${describe(normalizer)}`);
    }
    const targets = handleOf(Tensor.from(inp.targets!, [inp.targets!.length], { dtype: 'i32' }));
    return { t: this.engineTensors(inp), targets, normalizer };
  }

  /** Logits [B, T, V] of every position (a Tensor, f32). */
  async logits(inputIds: TokenRows, extra: Omit<BatchInput, 'inputIds' | 'labels' | 'targets'> = {}): Promise<Tensor> {
    const inp = prepareInputs({ ...extra, inputIds }, false, this.spec.vocabSize);
    const t = this.engineTensors(inp);
    const h = await this.handle.logits(t.ids, t.positions, t.cu, false, inp.batchSize);
    return Tensor.fromHandle(h);
  }

  /**
   * One optimizer step over what trains (the LoRA adapters, or every weight in full mode) from the current
   * gradients, on the model's device: the global gradient norm, clipping (maxGradNorm), AdamW with fp32 moments
   * kept in the engine (optimizerState() reads them). Returns the norm before clipping. A norm that is not finite
   * updates nothing (and counts no step). Synchronous; optimizerStep is the same off the JS thread.
   */
  adamwStep(opts: AdamwOptions): number {
    const h = this.adamwArgs(opts);
    const norm = this.handle.adamwStep(h.lr, h.beta1, h.beta2, h.eps, h.weightDecay, h.maxGradNorm, this.optimizerSteps + 1);
    if (Number.isFinite(norm)) this.optimizerSteps++;
    return norm;
  }

  /** adamwStep on the engine's worker thread: the event loop stays free while a large model updates. */
  async optimizerStep(opts: AdamwOptions): Promise<{ gradNorm: number }> {
    const h = this.adamwArgs(opts);
    const norm = await this.handle.optimizerStep(h.lr, h.beta1, h.beta2, h.eps, h.weightDecay, h.maxGradNorm, this.optimizerSteps + 1);
    if (Number.isFinite(norm)) this.optimizerSteps++;
    return { gradNorm: norm };
  }

  private adamwArgs(opts: AdamwOptions): Required<AdamwOptions> {
    if (!this.full) this.needLora();
    if (opts === null || typeof opts !== 'object' || typeof opts.lr !== 'number') throw new InstillError(ErrorCode.ARG, `Expected { lr } for adamwStep but received ${describe(opts)}`);
    return { lr: opts.lr, beta1: opts.beta1 ?? 0.9, beta2: opts.beta2 ?? 0.999, eps: opts.eps ?? 1e-8, weightDecay: opts.weightDecay ?? 0, maxGradNorm: opts.maxGradNorm ?? 0 };
  }

  /** Names of the trainable tensors in the engine's order (its trainables()). */
  private trainableNames(): string[] {
    if (this.full) return this.handle.weightNames();
    const names: string[] = [];
    this.forEachAdapter((l, t) => names.push(peftName(l, t, 'A'), peftName(l, t, 'B')));
    return names;
  }

  /** The optimizer's step count and moments (host copies), e.g. for a checkpoint. */
  optimizerState(): AdamwState {
    const state: AdamwState = { step: this.optimizerSteps, m: {}, v: {} };
    if (this.optimizerSteps === 0) return state;
    this.trainableNames().forEach((name, i) => {
      state.m[name] = hostArray(this.handle.momentTensor(i, 0));
      state.v[name] = hostArray(this.handle.momentTensor(i, 1));
    });
    return state;
  }

  /** Restores optimizerState(): every trainable tensor needs its moments (E_DATA otherwise); step 0 resets them. */
  setOptimizerState(state: AdamwState): void {
    if (state === null || typeof state !== 'object' || !Number.isInteger(state.step) || state.step < 0) {
      throw new InstillError(ErrorCode.DATA, `optimizer state: step must be an integer >= 0, got ${describe(state?.step)}`);
    }
    const names = this.trainableNames();
    const values: [Float32Array, Float32Array][] = names.map((name, i) => {
      const n = peek(this.handle.momentTensor(i, 0), (h) => h.shape).reduce((a, b) => a * b, 1);
      if (state.step === 0) return [new Float32Array(n), new Float32Array(n)];
      const m = state.m?.[name], v = state.v?.[name];
      if (!m || !v) throw new InstillError(ErrorCode.DATA, `optimizer state has no moments for '${name}': the checkpoint belongs to another adapter configuration`);
      if (m.length !== n || v.length !== n) throw new InstillError(ErrorCode.DATA, `optimizer state: the moments of '${name}' have ${m.length} (m) and ${v.length} (v) values, the tensor has ${n}`);
      return [Float32Array.from(m), Float32Array.from(v)];
    });
    values.forEach(([m, v], i) => {
      this.handle.writeMoment(i, 0, m);
      this.handle.writeMoment(i, 1, v);
    });
    this.optimizerSteps = state.step;
  }

  zeroGrads(): void {
    if (!this.full) this.needLora();
    this.handle.zeroGrads();
  }

  /** The model folder's tokenizer (tokenizer.json), loaded once. */
  async tokenizer(): Promise<import('../data/tokenizer.js').Tokenizer> {
    if (!this.dir) throw new InstillError(ErrorCode.ARG, 'this model has no folder, so no tokenizer: pass token ids');
    if (!this.tokenizerPromise) {
      const dir = this.dir;
      this.tokenizerPromise = import('../data/tokenizer.js').then((m) => m.loadTokenizer(dir));
    }
    return this.tokenizerPromise;
  }

  /**
   * Continues a prompt (token ids, or text encoded with the folder's tokenizer, BOS added as its config says).
   * Greedy at temperature 0 (default); otherwise samples from softmax(logits / temperature) restricted to
   * the top-p nucleus, with a seeded generator (same seed, same text).
   * The prompt runs once through the model, then each new token alone against a KV cache.
   */
  async generate(prompt: string | readonly number[] | Int32Array, opts: GenerateOptions = {}): Promise<GenerateResult> {
    const maxNew = opts.maxNewTokens ?? 100;
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new InstillError(ErrorCode.ARG, `Expected a non-negative integer for maxNewTokens but received ${describe(maxNew)}`);
    const temperature = opts.temperature ?? 0;
    if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature)) throw new InstillError(ErrorCode.ARG, `Expected a number >= 0 for temperature but received ${describe(temperature)}`);
    const topP = opts.topP ?? 1;
    if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) throw new InstillError(ErrorCode.ARG, `Expected a number in (0, 1] for topP but received ${describe(topP)}`);
    const stop = new Set(opts.stopTokenIds ?? this.generationConfig.eosTokenIds);
    let ids: number[];
    const tok = typeof prompt === 'string' ? await this.tokenizer() : null;
    if (typeof prompt === 'string') ids = tok!.encode(prompt, { addSpecialTokens: true });
    else ids = Array.from(prompt);
    if (ids.length === 0) throw new InstillError(ErrorCode.ARG, 'generate needs a non-empty prompt');
    const rng = new Rng(opts.seed ?? 0);
    const out: number[] = [];
    const V = this.spec.vocabSize;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new InstillError(ErrorCode.RANGE, `prompt token id ${describe(id)} is outside [0, ${V})`);
    }
    // KV cache: the prompt once, then one token per step.
    this.handle.decodeReset(ids.length + maxNew);
    let next: Int32Array = Int32Array.from(ids);
    for (let step = 0; step < maxNew; step++) {
      const h = await this.handle.decode(handleOf(Tensor.from(next, [next.length], { dtype: 'i32' })));
      const logits = hostArray(h);
      const tok = temperature === 0 ? argmax(logits) : sample(logits, temperature, topP, rng);
      out.push(tok);
      ids.push(tok);
      if (stop.has(tok)) break;
      next = Int32Array.of(tok);
    }
    let text: string | null = null;
    const decoder = tok ?? (this.dir && existsSync(join(this.dir, 'tokenizer.json')) ? await this.tokenizer() : null);
    if (decoder) {
      // Decode prompt + continuation and cut the prompt's text off, so that word-boundary markers
      // (SentencePiece's leading '▁', stripped at the start of a decode) come out as spaces.
      const promptIds = ids.slice(0, ids.length - out.length);
      const opts = { skipSpecialTokens: true };
      const whole = decoder.decode([...promptIds, ...out], opts);
      const head = decoder.decode(promptIds, opts);
      text = whole.startsWith(head) ? whole.slice(head.length) : decoder.decode(out, opts);
    }
    return { ids: out, text };
  }

  /** Frees the model's native memory (weights, adapters, activations' caches) now rather than at GC. */
  dispose(): void {
    this.handle.dispose();
    this.lora = null;
    this.full = false;
  }

  /** Writes the adapter in PEFT layout: adapter_model.safetensors + adapter_config.json (tmp + rename). */
  saveAdapter(dir: string, options: { baseModelNameOrPath?: string } = {}): void {
    const lora = this.needLora();
    const tensors: Record<string, TensorToWrite> = {};
    this.forEachAdapter((l, t) => {
      for (const [w, k] of [[0, 'A'], [1, 'B']] as const) {
        const h = this.handle.loraTensor(l, t, w);
        const shape = h.shape;
        tensors[peftName(l, t, k)] = { dtype: 'F32', shape, data: hostArray(h) };
      }
    });
    writeAdapterFolder(dir, tensors, {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: options.baseModelNameOrPath ?? this.dir ?? null,
      r: lora.r,
      lora_alpha: lora.alpha,
      lora_dropout: lora.dropout,
      use_rslora: lora.rsLora,
      target_modules: lora.targetModules,
      bias: 'none',
      fan_in_fan_out: false,
      inference_mode: true,
      init_lora_weights: true,
      modules_to_save: null,
    });
  }

  /** Loads a PEFT adapter folder (adapter_config.json + adapter_model.safetensors), replacing any adapters. */
  loadAdapter(dir: string): void {
    const cfg = readJson(join(dir, 'adapter_config.json')) as Record<string, unknown>;
    const targets = cfg.target_modules;
    if (!Array.isArray(targets)) throw new InstillError(ErrorCode.DATA, `${dir}/adapter_config.json: target_modules must be a list`);
    this.addLora({
      r: cfg.r as number,
      alpha: (cfg.lora_alpha as number) ?? (cfg.r as number),
      targetModules: targets as LoraTarget[],
      rsLora: cfg.use_rslora === true,
    });
    const f = SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
    try {
      const rec: Record<string, Float32Array> = {};
      for (const n of f.names()) rec[n] = f.readArray(n) as Float32Array;
      this.setAdapterWeights(rec);
    } finally {
      f.close();
    }
  }
}

function writeAdapterFolder(dir: string, tensors: Record<string, TensorToWrite>, config: Record<string, unknown>): void {
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  const tmp = join(dir, 'adapter_config.json.tmp');
  writeFileSync(tmp, JSON.stringify(config, null, 2) + '\n');
  renameSync(tmp, join(dir, 'adapter_config.json'));
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Samples from softmax(logits / temperature) restricted to the smallest top-p nucleus. */
export function sample(logits: ArrayLike<number>, temperature: number, topP: number, rng: Rng): number {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]);
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    p[i] = Math.exp((logits[i] - max) / temperature);
    sum += p[i];
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  let keep = n;
  if (topP < 1) {
    let c = 0;
    for (let k = 0; k < n; k++) {
      c += p[order[k]] / sum;
      if (c >= topP) {
        keep = k + 1;
        break;
      }
    }
  }
  let total = 0;
  for (let k = 0; k < keep; k++) total += p[order[k]];
  let u = rng.next() * total;
  for (let k = 0; k < keep; k++) {
    u -= p[order[k]];
    if (u <= 0) return order[k];
  }
  return order[keep - 1];
}
