// The demo's base model and data, made reproducibly by instill itself (scripts/make-demo-model.mjs).
//
// 1. A synthetic world: 48 made-up countries, each with a made-up capital, and the numbers 0..99.
// 2. A pre-training corpus of plain sentences about it ("the capital of velmora is dustam .",
//    "after 41 comes 42 .", "17 18 19 20 ."), each ending with </s>. No questions, no "Q:/A:" format.
// 3. A WordPiece tokenizer over the corpus' words (+ single characters and ##-pieces, so any
//    lower-case word still encodes) and the compact chat template of the stories260K fixture.
// 4. A tiny Llama (hidden 64, 4 layers, 4 heads, vocab 320, tied embeddings; ~220K parameters)
//    initialised from the seed and pre-trained on the corpus with instill's full fine-tuning mode
//    (Trainer over every weight), then written to `demo/model/` in Hugging Face layout.
// 5. Instruction data (chat records): "What is the capital of X?" -> "Y", "Which country has the
//    capital Y?" -> "X", "What number comes after N?" -> "N+1". The train split covers 2/3 of the
//    countries and numbers; `heldout.jsonl` asks about the other third — facts the base model saw only
//    as plain sentences. The base model continues text and does not answer; a LoRA adapter trained on
//    train.jsonl learns the question format and answers the held-out questions from what the base knows.
//
// Everything is a pure function of the seed: the same seed gives the same files, bit for bit, on the
// same machine (same thread count and instruction set; float sums are ordered by both).
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadDataset } from '../data/dataset.js';
import { BatchLoader } from '../data/loader.js';
import { loadTokenizer } from '../data/tokenizer.js';
import { loadModel, randomModel, Rng } from '../model/model.js';
import { Trainer, type StepEvent } from '../train/trainer.js';

export const DEMO_SEED = 20261126;

export const DEMO_CONFIG = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 192,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 4,
  vocab_size: 320,
  max_position_embeddings: 128,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  hidden_act: 'silu',
  tie_word_embeddings: true,
  bos_token_id: 1,
  eos_token_id: 2,
  pad_token_id: 0,
  torch_dtype: 'float32',
} as const;

export const CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}\n{% elif message['role'] == 'user' %}Q: {{ message['content'] }}\n{% elif message['role'] == 'assistant' %}A: {{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}A:{% endif %}";

export interface DemoWorld {
  countries: string[];
  capitals: string[];
}

export interface ChatRecord {
  messages: { role: 'user' | 'assistant'; content: string }[];
}

const ONSETS = ['b', 'd', 'f', 'g', 'k', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'z'];
const VOWELS = ['a', 'e', 'i', 'o', 'u'];
const CODAS = ['', 'n', 'r', 'l', 's'];

/** 48 countries and 48 capitals: distinct made-up words of 2–3 syllables. */
export function makeWorld(seed: number): DemoWorld {
  const rng = new Rng(seed);
  const pick = <T>(a: readonly T[]) => a[Math.floor(rng.next() * a.length)];
  const seen = new Set<string>();
  const word = (syllables: number, ending: string) => {
    for (;;) {
      let w = '';
      for (let i = 0; i < syllables; i++) w += pick(ONSETS) + pick(VOWELS) + (i === syllables - 1 ? '' : pick(CODAS));
      w += ending;
      if (!seen.has(w)) {
        seen.add(w);
        return w;
      }
    }
  };
  const countries: string[] = [];
  const capitals: string[] = [];
  for (let i = 0; i < 48; i++) {
    countries.push(word(3, 'a'));
    capitals.push(word(2, pick(['m', 'k', 'th', 'x'])));
  }
  return { countries, capitals };
}

/** Which countries / numbers the instruction train split covers (the rest are held out). */
function isTrainIndex(i: number): boolean {
  return i % 3 !== 2;
}

const FUNCTION_WORDS = ['the', 'capital', 'of', 'is', 'in', 'city', 'after', 'comes', 'before', 'number', 'country', 'has', 'what', 'which', 'What', 'Which', 'Q', 'A', ':', '?', '.', ','];
const CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789'.split('');

/** tokenizer.json (WordPiece, Whitespace pre-tokenizer) of the world's words; `vocab_size` entries at most. */
export function makeTokenizerJson(world: DemoWorld, vocabSize: number): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  const add = (w: string) => {
    if (!(w in vocab)) vocab[w] = Object.keys(vocab).length;
  };
  for (const w of ['<unk>', '<s>', '</s>', ...FUNCTION_WORDS]) add(w);
  for (let n = 0; n < 100; n++) add(String(n));
  for (let i = 0; i < world.countries.length; i++) {
    add(world.countries[i]);
    add(world.capitals[i]);
  }
  for (const c of CHARS) add(c);
  for (const c of CHARS) add('##' + c);
  const n = Object.keys(vocab).length;
  if (n > vocabSize) throw new Error(`demo vocabulary has ${n} entries, more than vocab_size ${vocabSize}`);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: ['<unk>', '<s>', '</s>'].map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: false },
    model: { type: 'WordPiece', unk_token: '<unk>', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}

export function makeTokenizerConfig(): Record<string, unknown> {
  return {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: '<s>',
    eos_token: '</s>',
    unk_token: '<unk>',
    pad_token: '<unk>',
    model_max_length: DEMO_CONFIG.max_position_embeddings,
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
}

/** The pre-training corpus: plain sentences, each one record ending in </s>, shuffled by the seed. */
export function makeCorpus(world: DemoWorld, seed: number): string[] {
  const out: string[] = [];
  world.countries.forEach((c, i) => {
    const y = world.capitals[i];
    out.push(`the capital of ${c} is ${y} .`, `${y} is the capital of ${c} .`, `the city ${y} is in ${c} .`, `${c} has the capital ${y} .`);
  });
  for (let n = 0; n < 99; n++) {
    out.push(`after ${n} comes ${n + 1} .`, `${n} comes before ${n + 1} .`);
    const run = [n, n + 1, n + 2, n + 3].filter((x) => x < 100).join(' ');
    out.push(`${run} .`);
  }
  const rng = new Rng(seed ^ 0x51ed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out.map((s) => `${s} </s>`);
}

const chat = (q: string, a: string): ChatRecord => ({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }] });

/** Instruction records: train (2/3 of the countries and numbers) and held-out (the rest), in a fixed shuffled order. */
export function makeInstructions(world: DemoWorld, seed: number): { train: ChatRecord[]; heldout: ChatRecord[] } {
  const train: ChatRecord[] = [];
  const heldout: ChatRecord[] = [];
  world.countries.forEach((c, i) => {
    const dst = isTrainIndex(i) ? train : heldout;
    dst.push(chat(`What is the capital of ${c}?`, world.capitals[i]));
    dst.push(chat(`Which country has the capital ${world.capitals[i]}?`, c));
  });
  for (let n = 0; n < 99; n++) (isTrainIndex(n) ? train : heldout).push(chat(`What number comes after ${n}?`, String(n + 1)));
  const shuffle = (a: ChatRecord[], s: number) => {
    const rng = new Rng(s);
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  };
  return { train: shuffle(train, seed ^ 0x7a11), heldout: shuffle(heldout, seed ^ 0x4e1d) };
}

const jsonl = (records: unknown[]) => records.map((r) => JSON.stringify(r)).join('\n') + '\n';

export interface MakeDemoOptions {
  /** Model folder to write (replaced atomically). */
  modelDir: string;
  /** Folder for train.jsonl / heldout.jsonl (null: do not write them). */
  dataDir?: string | null;
  seed?: number;
  /** Pre-training optimizer steps (default 1500). */
  steps?: number;
  onStep?: (e: StepEvent) => void;
}

export interface MakeDemoResult {
  modelDir: string;
  parameters: number;
  corpusSentences: number;
  finalLoss: number | null;
  trainRecords: number;
  heldoutRecords: number;
}

/** Makes the demo model (and data): see the file comment. */
export async function makeDemoModel(opts: MakeDemoOptions): Promise<MakeDemoResult> {
  const seed = opts.seed ?? DEMO_SEED;
  const steps = opts.steps ?? 1500;
  const world = makeWorld(seed);
  const stage = `${opts.modelDir.replace(/[\\/]+$/, '')}.stage-${process.pid}`;
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  try {
    const cfg = { ...DEMO_CONFIG };
    writeFileSync(join(stage, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
    writeFileSync(join(stage, 'tokenizer.json'), JSON.stringify(makeTokenizerJson(world, cfg.vocab_size)) + '\n');
    writeFileSync(join(stage, 'tokenizer_config.json'), JSON.stringify(makeTokenizerConfig(), null, 2) + '\n');
    writeFileSync(join(stage, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2, pad_token_id: 0 }, null, 2) + '\n');
    const init = randomModel(cfg, { seed });
    init.writeModelFiles(stage);
    init.dispose();
    const corpusFile = join(stage, 'corpus.jsonl');
    const corpus = makeCorpus(world, seed);
    writeFileSync(corpusFile, jsonl(corpus.map((text) => ({ text }))));

    const model = await loadModel(stage, { full: true });
    const tokenizer = await loadTokenizer(stage);
    const maxSeqLen = 64;
    const ds = await loadDataset(corpusFile, { tokenizer, maxSeqLen });
    const loader = new BatchLoader(ds, null, tokenizer.padId, { batchSize: 8, maxSeqLen, packing: true, seed });
    const trainer = new Trainer({
      model,
      train: loader,
      outputDir: null,
      maxSteps: steps,
      lr: 3e-3,
      schedule: 'cosine',
      warmupSteps: Math.min(50, Math.floor(steps / 10)),
      minLrRatio: 0.1,
      weightDecay: 0.01,
      maxGradNorm: 1,
      seeds: { seed },
    });
    if (opts.onStep) trainer.on('step', opts.onStep);
    const r = await trainer.train();
    let parameters = 0;
    for (const w of Object.values(model.weights())) parameters += w.length;
    rmSync(corpusFile);
    model.saveModel(opts.modelDir);
    model.dispose();
    let trainRecords = 0, heldoutRecords = 0;
    if (opts.dataDir) {
      const { train, heldout } = makeInstructions(world, seed);
      mkdirSync(opts.dataDir, { recursive: true });
      writeFileSync(join(opts.dataDir, 'train.jsonl'), jsonl(train));
      writeFileSync(join(opts.dataDir, 'heldout.jsonl'), jsonl(heldout));
      trainRecords = train.length;
      heldoutRecords = heldout.length;
    }
    return { modelDir: opts.modelDir, parameters, corpusSentences: corpus.length, finalLoss: r.trainLoss, trainRecords, heldoutRecords };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}
