// A float64 reference of the Llama-family forward pass (Hugging Face semantics), written
// independently of the engine: plain loops over one sequence, for tiny random models.
// Used to check the architecture flags (Qwen2 bias, Qwen3 q/k norm, untied head, GQA, RoPE
// scaling) and, by central finite differences, the LoRA gradients.
import type { ModelSpec } from '../../../src/model/config.js';

export type Weights = Record<string, Float64Array>;
export interface RefLora {
  scale: number;
  targets: string[];
  /** PEFT names -> values */
  w: Weights;
  /** LoRA dropout on the low-rank branch's input: multiplier of element (layer, target, token, i). */
  dropout?: (layer: number, target: number, flatIndex: number) => number;
}

const TARGET_INDEX: Record<string, number> = { q_proj: 0, k_proj: 1, v_proj: 2, o_proj: 3, gate_proj: 4, up_proj: 5, down_proj: 6 };

const MODS: Record<string, string> = {
  q_proj: 'self_attn', k_proj: 'self_attn', v_proj: 'self_attn', o_proj: 'self_attn',
  gate_proj: 'mlp', up_proj: 'mlp', down_proj: 'mlp',
};

function rmsnorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * r * w[i]);
}

function linear(x: Float64Array, W: Float64Array, out: number, bias?: Float64Array): Float64Array {
  const inF = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = bias ? bias[o] : 0;
    for (let i = 0; i < inF; i++) s += W[o * inF + i] * x[i];
    y[o] = s;
  }
  return y;
}

/** inv_freq per i < D/2 in float64 (caller passes the scaled frequencies). */
export function referenceLogits(spec: ModelSpec, w: Weights, ids: number[], invFreq: ArrayLike<number>, lora?: RefLora): Float64Array[] {
  const { hiddenSize: C, numHeads: H, numKvHeads: KVH, headDim: D, intermediateSize: F, vocabSize: V, rmsNormEps: eps } = spec;
  const T = ids.length;
  let x: Float64Array[] = ids.map((id) => w['model.embed_tokens.weight'].slice(id * C, (id + 1) * C));
  const lin = (l: number, mod: string, inp: Float64Array, out: number, tok: number) => {
    const p = `model.layers.${l}.${MODS[mod]}.${mod}`;
    const y = linear(inp, w[`${p}.weight`], out, w[`${p}.bias`]);
    if (lora && lora.targets.includes(mod)) {
      const A = lora.w[`base_model.model.${p}.lora_A.weight`];
      const B = lora.w[`base_model.model.${p}.lora_B.weight`];
      const r = A.length / inp.length;
      const drop = lora.dropout;
      const xin = drop ? inp.map((v, i) => v * drop(l, TARGET_INDEX[mod], tok * inp.length + i)) : inp;
      const u = linear(xin, A, r);
      const z = linear(u, B, out);
      for (let o = 0; o < out; o++) y[o] += lora.scale * z[o];
    }
    return y;
  };
  const rope = (v: Float64Array, heads: number, pos: number) => {
    const half = D / 2;
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const th = pos * invFreq[i];
        const c = Math.cos(th), s = Math.sin(th);
        const a = v[h * D + i], b = v[h * D + i + half];
        v[h * D + i] = a * c - b * s;
        v[h * D + i + half] = b * c + a * s;
      }
    }
  };
  const headNorm = (v: Float64Array, heads: number, nw: Float64Array) => {
    for (let h = 0; h < heads; h++) v.set(rmsnorm(v.subarray(h * D, (h + 1) * D), nw, eps), h * D);
  };
  for (let l = 0; l < spec.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const xn = x.map((r) => rmsnorm(r, w[p + 'input_layernorm.weight'], eps));
    const q = xn.map((r, t) => lin(l, 'q_proj', r, H * D, t));
    const k = xn.map((r, t) => lin(l, 'k_proj', r, KVH * D, t));
    const v = xn.map((r, t) => lin(l, 'v_proj', r, KVH * D, t));
    for (let t = 0; t < T; t++) {
      if (spec.qkNorm) {
        headNorm(q[t], H, w[p + 'self_attn.q_norm.weight']);
        headNorm(k[t], KVH, w[p + 'self_attn.k_norm.weight']);
      }
      rope(q[t], H, t);
      rope(k[t], KVH, t);
    }
    const att = q.map(() => new Float64Array(H * D));
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const kh = Math.floor(h / (H / KVH));
        const sc: number[] = [];
        const first = spec.slidingWindow ? Math.max(0, t - spec.slidingWindow + 1) : 0;
        for (let j = 0; j <= t; j++) {
          if (j < first) {
            sc.push(-Infinity);
            continue;
          }
          let s = 0;
          for (let d = 0; d < D; d++) s += q[t][h * D + d] * k[j][kh * D + d];
          sc.push(s / Math.sqrt(D));
        }
        const m = Math.max(...sc);
        const e = sc.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= t; j++) for (let d = 0; d < D; d++) att[t][h * D + d] += (e[j] / z) * v[j][kh * D + d];
      }
    }
    const x2 = x.map((r, t) => {
      const o = lin(l, 'o_proj', att[t], C, t);
      return r.map((a, i) => a + o[i]);
    });
    x = x2.map((r, t) => {
      const xn2 = rmsnorm(r, w[p + 'post_attention_layernorm.weight'], eps);
      const g = lin(l, 'gate_proj', xn2, F, t);
      const u = lin(l, 'up_proj', xn2, F, t);
      const hcur = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]);
      const dn = lin(l, 'down_proj', hcur, C, t);
      return r.map((a, i) => a + dn[i]);
    });
  }
  const head = spec.tieWordEmbeddings ? w['model.embed_tokens.weight'] : w['lm_head.weight'];
  return x.map((r) => linear(rmsnorm(r, w['model.norm.weight'], eps), head, V));
}

/** Mean CE of HF labels (shifted inside). */
export function referenceLoss(logits: Float64Array[], labels: number[]): number {
  let sum = 0, n = 0;
  for (let t = 0; t + 1 < labels.length; t++) {
    const y = labels[t + 1];
    if (y === -100) continue;
    const row = logits[t];
    const m = Math.max(...row);
    let z = 0;
    for (const v of row) z += Math.exp(v - m);
    sum += m + Math.log(z) - row[y];
    n++;
  }
  return sum / n;
}
