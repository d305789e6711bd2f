// Loading: safetensors validation (bad files are InstillErrors, never crashes), config.json ->
// ModelSpec (every supported architecture, errors that name what is supported), model folders,
// the Hugging Face cache layout for Hub ids, and the Model API's argument checks.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { InstillError } from '../../src/errors.js';
import { runtime } from '../../src/runtime.js';
import { specFromConfig } from '../../src/model/config.js';
import { hubCacheDir, resolveModelDir, wantedHubFile } from '../../src/model/hub.js';
import { loadModel, type Model } from '../../src/model/model.js';
import { SafetensorsFile, writeSafetensors } from '../../src/model/safetensors.js';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';
import { errCode } from './ops/helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'instill-load-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function codeAsync(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(InstillError);
    return `${(e as InstillError).code}: ${(e as Error).message}`;
  }
  return 'no error';
}

function stFile(name: string, header: unknown, dataBytes = 0, rawHeader?: string, lenOverride?: bigint): string {
  const p = join(tmp, name);
  const h = Buffer.from(rawHeader ?? JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(h.length));
  writeFileSync(p, Buffer.concat([len, h, Buffer.alloc(dataBytes)]));
  return p;
}

describe('safetensors', () => {
  it('round-trips tensors and metadata', () => {
    const p = join(tmp, 'rt.safetensors');
    const a = Float32Array.from([1, -2, 3.5, 4, 5, 6]);
    writeSafetensors(p, { 'x.weight': { dtype: 'F32', shape: [2, 3], data: a }, b: { dtype: 'F32', shape: [0], data: new Float32Array(0) } }, { format: 'pt' });
    const f = SafetensorsFile.open(p);
    expect(f.metadata).toEqual({ format: 'pt' });
    expect(f.names().sort()).toEqual(['b', 'x.weight']);
    expect(Array.from(f.readArray('x.weight') as Float32Array)).toEqual(Array.from(a));
    const t = f.readTensor('x.weight', 'bf16');
    expect(t.shape).toEqual([2, 3]);
    expect(t.dtype).toBe('bf16');
    expect(Array.from(t.toArray())).toEqual(Array.from(a));
    f.close();
    // the header is 8-byte aligned
    const len = Number(readFileSync(p).readBigUInt64LE(0));
    expect(len % 8).toBe(0);
  });

  it('bad files are E_IO / E_DATA with a reason', () => {
    expect(errCode(() => SafetensorsFile.open(join(tmp, 'nope.safetensors')))).toMatch(/^E_IO/);
    writeFileSync(join(tmp, 'short.safetensors'), Buffer.from([1, 2, 3]));
    expect(errCode(() => SafetensorsFile.open(join(tmp, 'short.safetensors')))).toMatch(/^E_DATA.*fewer than the 8-byte/);
    expect(errCode(() => SafetensorsFile.open(stFile('huge.safetensors', {}, 0, undefined, 1n << 60n)))).toMatch(/^E_DATA.*header length/);
    expect(errCode(() => SafetensorsFile.open(stFile('past.safetensors', {}, 0, undefined, 1000n)))).toMatch(/^E_DATA.*past the end/);
    expect(errCode(() => SafetensorsFile.open(stFile('json.safetensors', null, 0, '{"a": [1,')))).toMatch(/^E_DATA.*not JSON/);
    expect(errCode(() => SafetensorsFile.open(stFile('arr.safetensors', [1, 2])))).toMatch(/^E_DATA.*not a JSON object/);
    expect(errCode(() => SafetensorsFile.open(stFile('dt.safetensors', { a: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }, 1)))).toMatch(/^E_DATA.*dtype/);
    expect(errCode(() => SafetensorsFile.open(stFile('shape.safetensors', { a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4)))).toMatch(/^E_DATA.*shape/);
    expect(errCode(() => SafetensorsFile.open(stFile('size.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 8)))).toMatch(/^E_DATA.*needs 8 bytes/);
    expect(errCode(() => SafetensorsFile.open(stFile('trunc.safetensors', { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8)))).toMatch(/^E_DATA.*truncated/);
    expect(errCode(() => SafetensorsFile.open(stFile('overlap.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12)))).toMatch(/^E_DATA.*overlap/);
    const ok = SafetensorsFile.open(stFile('i8.safetensors', { a: { dtype: 'I8', shape: [2], data_offsets: [0, 2] } }, 2));
    expect(errCode(() => ok.readTensor('a'))).toMatch(/^E_DTYPE/);
    expect(errCode(() => ok.readTensor('missing'))).toMatch(/^E_DATA.*not found/);
    ok.close();
  });
});

describe('config.json -> ModelSpec', () => {
  const cfg = (name: string) => JSON.parse(readFileSync(fixturePath(`configs/${name}`), 'utf8'));
  it.skipIf(!haveFixture('configs/smollm2-135m.json'))('reads the real configs', () => {
    expect(specFromConfig(cfg('smollm2-135m.json'))).toMatchObject({ modelType: 'llama', hiddenSize: 576, numLayers: 30, numHeads: 9, numKvHeads: 3, headDim: 64, vocabSize: 49152, tieWordEmbeddings: true, ropeTheta: 100000, qkvBias: false, ropeScaling: { type: 'none' } });
    expect(specFromConfig(cfg('qwen2.5-0.5b.json'))).toMatchObject({ modelType: 'qwen2', qkvBias: true, numKvHeads: 2, headDim: 64, qkNorm: false });
    expect(specFromConfig(cfg('llama-3.2-1b.json'))).toMatchObject({ ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } });
  });

  const ok = { model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100 };
  it('refuses what the engine cannot run, naming what is supported', () => {
    expect(errCode(() => specFromConfig({ ...ok, model_type: 'gpt2' }))).toMatch(/^E_UNSUPPORTED.*'gpt2'.*llama, mistral, qwen2, qwen3/);
    expect(specFromConfig({ ...ok, model_type: 'mistral', sliding_window: 4096, max_position_embeddings: 32768 }).slidingWindow).toBe(4096);
    expect(specFromConfig({ ...ok, model_type: 'mistral', sliding_window: 4096, max_position_embeddings: 4096 }).slidingWindow).toBe(null);
    expect(errCode(() => specFromConfig({ ...ok, model_type: 'qwen2', use_sliding_window: true, sliding_window: 4096, max_position_embeddings: 32768 }))).toMatch(/^E_UNSUPPORTED.*max_window_layers/);
    expect(specFromConfig({ ...ok, model_type: 'mistral', sliding_window: null }).modelType).toBe('mistral');
    expect(specFromConfig({ ...ok, model_type: 'qwen2', use_sliding_window: false, sliding_window: 4096, max_position_embeddings: 32768 }).qkvBias).toBe(true);
    expect(errCode(() => specFromConfig({ ...ok, rope_scaling: { rope_type: 'yarn', factor: 4 } }))).toMatch(/^E_UNSUPPORTED.*yarn.*linear, llama3/);
    expect(errCode(() => specFromConfig({ ...ok, hidden_act: 'gelu' }))).toMatch(/^E_UNSUPPORTED.*silu/);
    expect(errCode(() => specFromConfig({ ...ok, hidden_size: undefined }))).toMatch(/^E_DATA.*hidden_size/);
    expect(errCode(() => specFromConfig({ ...ok, num_key_value_heads: 3 }))).toMatch(/^E_DATA.*multiple/);
    expect(errCode(() => specFromConfig('x'))).toMatch(/^E_DATA/);
    expect(specFromConfig({ ...ok, num_key_value_heads: 2 })).toMatchObject({ headDim: 16, numKvHeads: 2, tieWordEmbeddings: false, qkvBias: false });
    expect(specFromConfig({ ...ok, tie_word_embeddings: true }).tieWordEmbeddings).toBe(true);
    expect(specFromConfig({ ...ok, model_type: 'mistral', max_position_embeddings: 32768 }).slidingWindow).toBe(4096); // MistralConfig's default
    expect(specFromConfig({ ...ok, rope_scaling: { type: 'linear', factor: 2 } }).ropeScaling).toEqual({ type: 'linear', factor: 2 });
  });
});

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('model folders', () => {
  const src = fixturePath('stories260K');
  function folder(name: string, files: Record<string, string | null>): string {
    const d = join(tmp, name);
    mkdirSync(d, { recursive: true });
    for (const [f, content] of Object.entries(files)) {
      if (content === null) copyFileSync(join(src, f), join(d, f));
      else writeFileSync(join(d, f), content);
    }
    return d;
  }

  it('bad folders give errors that say what is wrong', async () => {
    expect(await codeAsync(() => loadModel(join(tmp, 'does-not-exist')))).toMatch(/^E_IO.*does not exist|^E_IO.*neither a local folder/);
    expect(await codeAsync(() => loadModel(folder('empty', {})))).toMatch(/^E_IO.*config\.json/);
    expect(await codeAsync(() => loadModel(folder('noweights', { 'config.json': null })))).toMatch(/^E_IO.*model\.safetensors/);
    expect(await codeAsync(() => loadModel(folder('badjson', { 'config.json': '{ nope', 'model.safetensors': null })))).toMatch(/^E_DATA.*not valid JSON/);
    const cfg = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
    expect(await codeAsync(() => loadModel(folder('morelayers', { 'config.json': JSON.stringify({ ...cfg, num_hidden_layers: 6 }), 'model.safetensors': null })))).toMatch(/^E_DATA.*model\.layers\.5\..*missing/);
    expect(await codeAsync(() => loadModel(folder('wider', { 'config.json': JSON.stringify({ ...cfg, intermediate_size: 170 }), 'model.safetensors': null })))).toMatch(/^E_SHAPE.*mlp\.(gate|up|down)_proj\.weight' must have shape/);
    expect(await codeAsync(() => loadModel(folder('untied', { 'config.json': JSON.stringify({ ...cfg, tie_word_embeddings: false }), 'model.safetensors': null })))).toMatch(/^E_DATA.*lm_head\.weight.*missing/);
    expect(await codeAsync(() => loadModel(src, { dtype: 'f64' as never }))).toMatch(/^E_DTYPE/);
    expect(await codeAsync(() => loadModel(src, { device: 'gpu' as never }))).toMatch(/^E_DEVICE.*'cpu' or 'cuda'/);
    // Without a GPU (CI), 'cuda' is refused with the reason; the GPU side is test/cuda/lora_reference.
    if (!runtime.info().devices.includes('cuda')) {
      expect(await codeAsync(() => loadModel(src, { device: 'cuda' }))).toMatch(/^E_DEVICE.*'cuda' is not available: ./);
    }
  });
});

describe('Hub ids through the Hugging Face cache layout', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const k of ['HF_HOME', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE']) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });
  const commit = 'a'.repeat(40);
  function fakeCache(root: string): string {
    const repo = join(root, 'models--karpathy--stories260K');
    const snap = join(repo, 'snapshots', commit);
    mkdirSync(snap, { recursive: true });
    mkdirSync(join(repo, 'refs'), { recursive: true });
    writeFileSync(join(repo, 'refs', 'main'), commit + '\n');
    for (const f of ['config.json', 'model.safetensors', 'generation_config.json']) {
      if (haveFixture(`stories260K/${f}`)) symlinkSync(fixturePath(`stories260K/${f}`), join(snap, f));
    }
    return snap;
  }

  it('downloads only the files instill reads', () => {
    for (const f of ['config.json', 'model.safetensors', 'model-00001-of-00004.safetensors', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json']) {
      expect(wantedHubFile(f), f).toBe(true);
    }
    for (const f of ['pytorch_model.bin', 'onnx/model.onnx', 'README.md', 'model.gguf', 'original/consolidated.00.pth', 'x/config.json']) expect(wantedHubFile(f), f).toBe(false);
  });

  it('HF_HUB_CACHE, then HF_HOME/hub', () => {
    process.env.HF_HUB_CACHE = '/x/cache';
    expect(hubCacheDir()).toBe('/x/cache');
    delete process.env.HF_HUB_CACHE;
    process.env.HF_HOME = '/y/home';
    expect(hubCacheDir()).toBe('/y/home/hub');
  });

  // (the fake cache links the fixture's files: without them there is no model to resolve)
  it.skipIf(!haveFixture('stories260K/config.json'))('resolves an id (and id@commit) from the cache without the network', async () => {
    const root = join(tmp, 'hf-cache');
    const snap = fakeCache(root);
    process.env.HF_HUB_CACHE = root;
    process.env.HF_HUB_OFFLINE = '1';
    expect(await resolveModelDir('karpathy/stories260K')).toBe(snap);
    expect(await resolveModelDir(`karpathy/stories260K@${commit}`)).toBe(snap);
    expect(await codeAsync(() => resolveModelDir('karpathy/other-model'))).toMatch(/^E_IO.*HF_HUB_OFFLINE/);
    expect(await codeAsync(() => resolveModelDir('karpathy/stories260K@dev'))).toMatch(/^E_IO/);
    if (haveFixture('stories260K/model.safetensors')) {
      const m = await loadModel('karpathy/stories260K');
      expect(m.dir).toBe(snap);
      expect(m.spec.numLayers).toBe(5);
    }
  });

  it.skipIf(!haveFixture('stories260K/config.json'))('HF_HOME/hub is used when HF_HUB_CACHE is not set', async () => {
    const home = join(tmp, 'hf-home');
    const snap = fakeCache(join(home, 'hub'));
    delete process.env.HF_HUB_CACHE;
    process.env.HF_HOME = home;
    process.env.HF_HUB_OFFLINE = '1';
    expect(await resolveModelDir('karpathy/stories260K')).toBe(snap);
  });
});

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('Model API checks', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixturePath('stories260K'));
  });

  it('LoRA options are validated with messages that say what to fix', () => {
    expect(errCode(() => model.addLora({ r: 0 }))).toMatch(/^E_ARG: Expected integer between 1 and 65536 for r but received 0 of type number/);
    expect(errCode(() => model.addLora({ r: 4, targetModules: ['qkv'] as never }))).toMatch(/^E_ARG.*q_proj.*'qkv'/);
    expect(errCode(() => model.addLora({ r: 4, alpha: -1 }))).toMatch(/^E_ARG.*alpha/);
    expect(errCode(() => model.addLora({ r: 4, dropout: 1 }))).toMatch(/^E_ARG.*\[0, 1\) for dropout/);
    expect(errCode(() => model.adapterWeights())).toMatch(/^E_ARG.*addLora/);
  });

  it('PEFT init: A uniform in ±1/sqrt(in), B zero; rsLoRA scale; adapter names', () => {
    model.addLora({ r: 8, alpha: 16, targetModules: ['q_proj', 'down_proj'], rsLora: true, seed: 1 });
    expect(model.loraConfig).toMatchObject({ r: 8, alpha: 16, rsLora: true, scale: 16 / Math.sqrt(8), targetModules: ['q_proj', 'down_proj'] });
    const w = model.adapterWeights();
    expect(Object.keys(w).length).toBe(5 * 2 * 2);
    const a = w['base_model.model.model.layers.0.mlp.down_proj.lora_A.weight'];
    expect(a.length).toBe(8 * 172);
    const bound = 1 / Math.sqrt(172);
    expect(Math.max(...a)).toBeLessThanOrEqual(bound);
    expect(Math.min(...a)).toBeGreaterThanOrEqual(-bound);
    expect(Math.max(...a)).toBeGreaterThan(0.8 * bound);
    expect(w['base_model.model.model.layers.0.mlp.down_proj.lora_B.weight'].every((x) => x === 0)).toBe(true);
  });

  it('setAdapterWeights checks names and sizes', () => {
    model.addLora({ r: 2, targetModules: ['q_proj'] });
    expect(errCode(() => model.setAdapterWeights({ 'model.layers.0.q_proj.weight': new Float32Array(2) }))).toMatch(/^E_ARG.*not a PEFT LoRA weight name/);
    expect(errCode(() => model.setAdapterWeights({ 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': new Float32Array(3) }, { strict: false }))).toMatch(/^E_SHAPE.*3 values/);
    expect(errCode(() => model.setAdapterWeights({ 'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight': new Float32Array(128) }, { strict: false }))).toMatch(/^E_ARG.*v_proj has no adapter/);
    expect(errCode(() => model.setAdapterWeights({ 'base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight': new Float32Array(128) }, { strict: false }))).toMatch(/^E_ARG.*5 layers/);
    expect(errCode(() => model.setAdapterWeights({}))).toMatch(/^E_ARG.*missing/);
  });

  it('bad batches are refused before the engine runs', async () => {
    expect(await codeAsync(() => model.lossAndGrads({ inputIds: [[1, 2, 3]] }))).toMatch(/^E_ARG.*labels/);
    expect(await codeAsync(() => model.lossAndGrads({ inputIds: [[1, 2, 3]], labels: [[1, 2, 999]] }))).toMatch(/^E_RANGE.*999/);
    expect(await codeAsync(() => model.lossAndGrads({ inputIds: [[1, 2, 600]], labels: [[1, 2, 3]] }))).toMatch(/^E_RANGE.*600/);
    expect(await codeAsync(() => model.lossAndGrads({ inputIds: [[1, 2, 3], [1, 2]], labels: [[1, 2, 3], [1, 2]] }))).toMatch(/^E_SHAPE.*row 1/);
    expect(await codeAsync(() => model.lossAndGrads({ inputIds: [[1, 2, 3]], labels: [[1, 2]] }))).toMatch(/^E_SHAPE/);
    expect(await codeAsync(() => model.logits([[1.5, 2]]))).toMatch(/^E_ARG.*integers/);
    expect(await codeAsync(() => model.generate([1], { temperature: -1 }))).toMatch(/^E_ARG.*temperature/);
  });

  it('a second call while one runs is refused; the first still resolves', async () => {
    const ids = Array.from({ length: 256 }, (_, i) => (i * 7) % 512);
    const first = model.lossAndGrads({ inputIds: [ids], labels: [ids] });
    expect(await codeAsync(() => model.logits([[1, 2]]))).toMatch(/^E_ARG.*still running/);
    // the step runs off the JS thread: the event loop turns while it runs
    let turned = false;
    setImmediate(() => (turned = true));
    const r = await first;
    expect(turned).toBe(true);
    expect(r.tokens).toBe(255);
    expect(Number.isFinite(r.loss)).toBe(true);
  });

  it('all labels ignored: loss 0, zero gradients, no NaN', async () => {
    model.addLora({ r: 2, targetModules: ['q_proj'] });
    const r = await model.lossAndGrads({ inputIds: [[1, 2, 3]], labels: [[-100, -100, -100]] });
    expect(r.tokens).toBe(0);
    expect(r.loss).toBe(0);
    for (const g of Object.values(r.grads)) expect(g.every((x) => x === 0)).toBe(true);
  });

  it('dispose frees the model; later calls say so', async () => {
    const m = await loadModel(fixturePath('stories260K'));
    m.dispose();
    expect(await codeAsync(() => m.logits([[1, 2]]))).toMatch(/^E_ARG.*disposed/);
  });

  it('saves a PEFT adapter folder and loads it back', async () => {
    model.addLora({ r: 2, alpha: 4, targetModules: ['q_proj', 'up_proj'], seed: 9 });
    const dir = join(tmp, 'adapter');
    model.saveAdapter(dir);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj', 'up_proj'] });
    const before = model.adapterWeights();
    const other = await loadModel(fixturePath('stories260K'));
    other.loadAdapter(dir);
    expect(other.adapterWeights()).toEqual(before);
  });
});
