// Hugging Face config.json -> ModelSpec: the numbers and flags the engine's one
// Llama-family block needs. Everything the engine cannot do yet is refused here,
// with a message naming what is supported, before any weight is read.
import { ErrorCode, InstillError, describe } from '../errors.js';

export const SUPPORTED_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3'] as const;
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

export type RopeScaling =
  | { type: 'none' }
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

export interface ModelSpec {
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Bias on q_proj, k_proj, v_proj (Qwen2 always; Llama when attention_bias). */
  qkvBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (Qwen3). */
  qkNorm: boolean;
  /** Mistral's sliding-window attention: each token sees itself and the W - 1 before it; null = full causal. */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** config.json's torch_dtype / dtype ('float32', 'bfloat16', ...), if stated. */
  torchDtype: string | null;
}

type Json = Record<string, unknown>;

function err(msg: string, code: (typeof ErrorCode)[keyof typeof ErrorCode] = ErrorCode.DATA): InstillError {
  return new InstillError(code, `config.json: ${msg}`);
}

function int(c: Json, key: string, min = 1): number {
  const v = c[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw err(`expected an integer >= ${min} for ${key} but received ${describe(v)}`);
  }
  return v;
}

function num(c: Json, key: string, dflt?: number): number {
  const v = c[key];
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw err(`expected a positive number for ${key} but received ${describe(v)}`);
  return v;
}

function ids(v: unknown): number[] {
  if (typeof v === 'number') return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number');
  return [];
}

function parseRopeScaling(c: Json): RopeScaling {
  // transformers >= 5 spells it rope_parameters (with rope_theta inside); 4.x uses rope_scaling.
  const raw = (c.rope_scaling ?? c.rope_parameters ?? null) as Json | null;
  if (raw === null) return { type: 'none' };
  if (typeof raw !== 'object') throw err(`rope_scaling must be an object or null, got ${describe(raw)}`);
  const type = (raw.rope_type ?? raw.type ?? 'default') as string;
  if (type === 'default') return { type: 'none' };
  if (type === 'linear') return { type: 'linear', factor: num(raw, 'factor') };
  if (type === 'llama3') {
    return {
      type: 'llama3',
      factor: num(raw, 'factor'),
      lowFreqFactor: num(raw, 'low_freq_factor'),
      highFreqFactor: num(raw, 'high_freq_factor'),
      originalMaxPositionEmbeddings: num(raw, 'original_max_position_embeddings'),
    };
  }
  throw err(`rope_scaling type '${type}' is not supported; supported: default (none), linear, llama3`, ErrorCode.UNSUPPORTED);
}

/** Parses a config.json object. Throws InstillError (E_DATA for malformed values, E_UNSUPPORTED for what the engine cannot run). */
export function specFromConfig(config: unknown): ModelSpec {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw err(`expected a JSON object, got ${describe(config)}`);
  const c = config as Json;
  const modelType = c.model_type;
  if (typeof modelType !== 'string' || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw err(
      `model_type ${describe(modelType)} is not supported; supported: ${SUPPORTED_MODEL_TYPES.join(', ')} ` +
        `(Llama 1/2/3, Mistral without sliding window, Qwen2, Qwen3)`,
      ErrorCode.UNSUPPORTED,
    );
  }
  const mt = modelType as ModelType;
  const act = c.hidden_act ?? c.hidden_activation ?? 'silu';
  if (act !== 'silu') throw err(`hidden_act '${String(act)}' is not supported; supported: silu`, ErrorCode.UNSUPPORTED);
  if (c.mlp_bias === true) throw err('mlp_bias: true is not supported (no MLP bias in the engine yet)', ErrorCode.UNSUPPORTED);
  const hiddenSize = int(c, 'hidden_size');
  const numHeads = int(c, 'num_attention_heads');
  const numKvHeads = c.num_key_value_heads === undefined || c.num_key_value_heads === null ? numHeads : int(c, 'num_key_value_heads');
  if (numHeads % numKvHeads !== 0) throw err(`num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  let headDim: number;
  if (c.head_dim !== undefined && c.head_dim !== null) headDim = int(c, 'head_dim');
  else {
    if (hiddenSize % numHeads !== 0) throw err(`hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads}); set head_dim`);
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) throw err(`head_dim must be even for RoPE, got ${headDim}`);
  const maxPositionEmbeddings = c.max_position_embeddings === undefined ? 2048 : int(c, 'max_position_embeddings');
  // Sliding-window attention: Mistral applies it in every layer (MistralConfig's default is 4096 when
  // the key is absent). Qwen2/Qwen3 apply it only above max_window_layers, which is not implemented.
  let slidingWindow: number | null = null;
  const sw = mt === 'mistral' && !('sliding_window' in c) ? 4096 : c.sliding_window;
  if (mt === 'mistral' && sw !== null && sw !== undefined) {
    if (typeof sw !== 'number' || !Number.isSafeInteger(sw) || sw < 1) throw err(`expected a positive integer or null for sliding_window but received ${describe(sw)}`);
    if (sw < maxPositionEmbeddings) slidingWindow = sw;
  } else if (mt !== 'mistral' && c.use_sliding_window === true && typeof sw === 'number' && sw < maxPositionEmbeddings) {
    throw err(
      `use_sliding_window with sliding_window ${sw} applies to some layers only (max_window_layers), which instill does not implement; ` +
        'supported: full causal attention, and Mistral\'s every-layer sliding window',
      ErrorCode.UNSUPPORTED,
    );
  }
  if (mt === 'qwen3' && Array.isArray(c.layer_types) && (c.layer_types as unknown[]).some((t) => t !== 'full_attention')) {
    throw err('layer_types other than full_attention (sliding-window layers) are not supported', ErrorCode.UNSUPPORTED);
  }
  const ropeParams = (c.rope_parameters ?? {}) as Json;
  const ropeTheta = typeof c.rope_theta === 'number' ? num(c, 'rope_theta') : typeof ropeParams.rope_theta === 'number' ? num(ropeParams, 'rope_theta') : 10000;
  const tie = c.tie_word_embeddings;
  return {
    modelType: mt,
    hiddenSize,
    intermediateSize: int(c, 'intermediate_size'),
    numLayers: int(c, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int(c, 'vocab_size'),
    rmsNormEps: num(c, 'rms_norm_eps', 1e-6),
    ropeTheta,
    ropeScaling: parseRopeScaling(c),
    maxPositionEmbeddings,
    // LlamaConfig, MistralConfig, Qwen2Config and Qwen3Config all default to untied when the key is absent.
    tieWordEmbeddings: tie === true,
    qkvBias: mt === 'qwen2' ? true : c.attention_bias === true,
    qkNorm: mt === 'qwen3',
    slidingWindow,
    bosTokenId: typeof c.bos_token_id === 'number' ? c.bos_token_id : null,
    eosTokenIds: ids(c.eos_token_id),
    torchDtype: typeof c.torch_dtype === 'string' ? c.torch_dtype : typeof c.dtype === 'string' ? c.dtype : null,
  };
}

/**
 * RoPE inverse frequencies (head_dim/2), with the config's scaling applied, as Hugging Face's
 * `_compute_default_rope_parameters` / `_compute_llama3_parameters` / linear scaling compute them
 * (linear scaling divides positions by the factor, which is the same as dividing inv_freq).
 */
export function ropeInvFreq(spec: ModelSpec): Float32Array {
  const d = spec.headDim;
  const half = d / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)) in float32.
    const expo = Math.fround((2 * i) / d);
    inv[i] = Math.fround(1 / Math.fround(Math.pow(spec.ropeTheta, expo)));
  }
  const s = spec.ropeScaling;
  if (s.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = inv[i] / s.factor;
  } else if (s.type === 'llama3') {
    const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
    const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const f = inv[i];
      const wavelen = (2 * Math.PI) / f;
      let v = wavelen > lowWavelen ? f / s.factor : f;
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      const isMedium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
      if (isMedium) v = (1 - smooth) * (v / s.factor) + smooth * v;
      inv[i] = v;
    }
  }
  return Float32Array.from(inv);
}
