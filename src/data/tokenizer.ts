// A model's tokenizer, loaded from its folder (`tokenizer.json` + `tokenizer_config.json`).
//
// The encoding itself is Hugging Face's tokenizers.js (`@huggingface/tokenizers`), which reads the same
// `tokenizer.json` as the Rust `tokenizers` library: BPE with byte fallback (SentencePiece-converted
// Llama/Mistral/stories260K), byte-level BPE with a regex split (GPT-2, Llama-3, Qwen2), WordPiece, Unigram.
// This file adds what a trainer needs on top: the special tokens named by `tokenizer_config.json`
// (BOS/EOS/PAD/UNK, string or `{content}` form, `special_tokens_map.json` as a fallback), the
// `add_bos_token`/`add_eos_token` rule, the model's `chat_template`, and Int32Array ids.
//
// Rule kept here: `encode(text, { addSpecialTokens: false })` is exactly `tokenizer(text,
// add_special_tokens=False)` of Hugging Face `tokenizers`; with `addSpecialTokens: true`, BOS/EOS are
// added as the tokenizer config says (its `add_bos_token`/`add_eos_token` when present, else the
// tokenizer.json post-processor).
//
// Known divergence worked around (tokenizers.js 0.2.0): its `Prepend` normalizer prepends to an empty
// string too, so a text that normalizes to "" (e.g. " " with stories260K's strip-spaces normalizer)
// gives ["▁"] instead of []. The Rust library (and SentencePiece) prepend only to a non-empty string.
// `patchPrependOnEmpty` wraps every Prepend normalizer of the loaded pipeline so that "" stays "".
// Nothing else of the library is changed.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as hfTokenizers from '@huggingface/tokenizers';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { ErrorCode, InstillError } from '../errors.js';

/** What `tokenizer_config.json` may hold, as far as instill reads it. */
export interface TokenizerConfig {
  bos_token?: string | { content: string } | null;
  eos_token?: string | { content: string } | null;
  pad_token?: string | { content: string } | null;
  unk_token?: string | { content: string } | null;
  add_bos_token?: boolean;
  add_eos_token?: boolean;
  chat_template?: string | Array<{ name: string; template: string }> | null;
  model_max_length?: number;
  [key: string]: unknown;
}

export interface EncodeOptions {
  /** Add BOS/EOS as the tokenizer config says. Default false (chat templates write their own). */
  addSpecialTokens?: boolean;
}

/** A loaded tokenizer. Ids are plain numbers; `encode` returns a fresh array the caller may keep. */
export class Tokenizer {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;
  readonly unkToken: string | null;
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** Id used to fill padding positions: pad, else eos, else 0. Never trained on. */
  readonly padId: number;
  /** The model's own chat template (`tokenizer_config.json` `chat_template`, or `chat_template.jinja`), if any. */
  readonly chatTemplate: string | null;
  /** Largest token id + 1 (vocabulary plus added tokens). */
  readonly vocabSize: number;
  /** Ids of the added tokens marked `special` (BOS, EOS, `<|im_end|>`, ...). */
  readonly specialIds: ReadonlySet<number>;
  readonly modelMaxLength: number | null;

  private readonly hf: HfTokenizer;
  private readonly addBos: boolean | null;
  private readonly addEos: boolean | null;

  constructor(tokenizerJson: object, config: TokenizerConfig, extra: { chatTemplate?: string | null } = {}) {
    try {
      this.hf = new HfTokenizer(tokenizerJson, config);
    } catch (err) {
      throw new InstillError(ErrorCode.DATA, `tokenizer.json could not be loaded: ${(err as Error).message}`, { cause: err });
    }
    patchPrependOnEmpty(this.hf.normalizer);
    this.bosToken = tokenString(config.bos_token);
    this.eosToken = tokenString(config.eos_token);
    this.padToken = tokenString(config.pad_token);
    this.unkToken = tokenString(config.unk_token);
    this.bosId = this.bosToken === null ? null : (this.hf.token_to_id(this.bosToken) ?? null);
    this.eosId = this.eosToken === null ? null : (this.hf.token_to_id(this.eosToken) ?? null);
    const padId = this.padToken === null ? undefined : this.hf.token_to_id(this.padToken);
    this.padId = padId ?? this.eosId ?? 0;
    this.addBos = typeof config.add_bos_token === 'boolean' ? config.add_bos_token : null;
    this.addEos = typeof config.add_eos_token === 'boolean' ? config.add_eos_token : null;
    this.chatTemplate = extra.chatTemplate ?? pickChatTemplate(config.chat_template);
    this.modelMaxLength = typeof config.model_max_length === 'number' && config.model_max_length < 1e12 ? config.model_max_length : null;
    let maxId = -1;
    for (const id of this.hf.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    const special = new Set<number>();
    for (const [id, tok] of this.hf.get_added_tokens_decoder()) if (tok.special) special.add(id);
    this.specialIds = special;
  }

  /** Token ids of `text`. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const add = options.addSpecialTokens === true;
    if (!add) return this.hf.encode(text, { add_special_tokens: false }).ids;
    if (this.addBos === null && this.addEos === null) return this.hf.encode(text, { add_special_tokens: true }).ids;
    // The config states the rule (Llama-style add_bos_token/add_eos_token): apply it ourselves, so a
    // post-processor that disagrees with the config cannot add a second BOS.
    const ids = this.hf.encode(text, { add_special_tokens: false }).ids;
    if (this.addBos === true && this.bosId !== null) ids.unshift(this.bosId);
    if (this.addEos === true && this.eosId !== null) ids.push(this.eosId);
    return ids;
  }

  /** Text of `ids` (special tokens kept unless `skipSpecialTokens`). */
  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.hf.decode(Array.from(ids), {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }
}

/** Loads the tokenizer of a Hugging Face model folder. */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const tokPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokPath)) {
    throw new InstillError(
      ErrorCode.IO,
      `${tokPath} not found: instill needs the fast-tokenizer file tokenizer.json in the model folder ` +
        `(a folder with only tokenizer.model can be converted with transformers: AutoTokenizer.from_pretrained(dir).save_pretrained(dir))`,
    );
  }
  const tokenizerJson = await readJson(tokPath);
  const cfgPath = join(dir, 'tokenizer_config.json');
  let config: TokenizerConfig = existsSync(cfgPath) ? ((await readJson(cfgPath)) as TokenizerConfig) : {};
  const mapPath = join(dir, 'special_tokens_map.json');
  if (existsSync(mapPath)) {
    const map = (await readJson(mapPath)) as TokenizerConfig;
    config = { ...pickKeys(map, ['bos_token', 'eos_token', 'pad_token', 'unk_token']), ...config };
  }
  // Newer transformers save the template as its own file.
  const jinjaPath = join(dir, 'chat_template.jinja');
  const chatTemplate = existsSync(jinjaPath) ? await readFile(jinjaPath, 'utf8') : null;
  return new Tokenizer(tokenizerJson as object, config, { chatTemplate });
}

async function readJson(path: string): Promise<unknown> {
  const text = await readFile(path, 'utf8');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InstillError(ErrorCode.IO, `${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

function pickKeys(obj: TokenizerConfig, keys: string[]): TokenizerConfig {
  const out: TokenizerConfig = {};
  for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
  return out;
}

function tokenString(v: TokenizerConfig['bos_token']): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof v.content === 'string') return v.content;
  return null;
}

function pickChatTemplate(v: TokenizerConfig['chat_template']): string | null {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const def = v.find((t) => t && t.name === 'default') ?? v[0];
    return def && typeof def.template === 'string' ? def.template : null;
  }
  return null;
}

interface NormalizerNode {
  normalize(text: string): string;
  normalizers?: Array<NormalizerNode | null>;
}

// Exported at run time; the package's .d.ts re-export (extensionless `export *`) does not resolve
// under NodeNext, so it is looked up here.
const PrependNormalizer = (hfTokenizers as unknown as { PrependNormalizer: abstract new (...args: never[]) => object }).PrependNormalizer;

/** See the file comment: Prepend acts only on a non-empty string, as in HF `tokenizers` (Rust). */
function patchPrependOnEmpty(node: NormalizerNode | null): void {
  if (node === null) return;
  if (node instanceof PrependNormalizer) {
    const original = node.normalize.bind(node);
    node.normalize = (text: string) => (text.length === 0 ? text : original(text));
  }
  if (Array.isArray(node.normalizers)) for (const child of node.normalizers) patchPrependOnEmpty(child);
}
