// Tokenizer: exact ids against SentencePiece (stories260K fixture), BOS/EOS rule, and the byte-level
// BPE code path of Llama-3 / Qwen2 tokenizers on a hand-made tokenizer.json.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';
import { loadTokenizer, Tokenizer } from '../../src/data/tokenizer.js';
import { resolveChatTemplate, templateWarnings } from '../../src/data/chat_template.js';
import { maskExample } from '../../src/data/masking.js';

interface Case {
  text: string;
  ids: number[];
  decoded: string;
}

describe.skipIf(!haveFixture('stories260K/tokenizer.json'))('stories260K tokenizer', () => {
  // read in the tests, not at collection: a skipped suite's body still runs, and the file may be missing then
  let read: Case[] | undefined;
  const loadCases = (): Case[] =>
    (read ??= (JSON.parse(readFileSync(fixturePath('stories260K/tokenizer_cases.json'), 'utf8')) as { cases: Case[] }).cases);

  it('has 24 cases including the whitespace-only one', () => {
    const cases = loadCases();
    expect(cases.length).toBe(24);
    expect(cases.some((c) => c.text === ' ' && c.ids.length === 0)).toBe(true);
  });

  it('reproduces the SentencePiece ids and decode of every case', async () => {
    const tok = await loadTokenizer(fixturePath('stories260K'));
    for (const c of loadCases()) {
      expect(tok.encode(c.text), JSON.stringify(c.text)).toEqual(c.ids);
      expect(tok.decode(c.ids), JSON.stringify(c.text)).toBe(c.decoded);
    }
  });

  it('adds BOS (and no EOS) with special tokens, as add_bos_token/add_eos_token say', async () => {
    const tok = await loadTokenizer(fixturePath('stories260K'));
    expect(tok.bosId).toBe(1);
    expect(tok.eosId).toBe(2);
    expect(tok.encode('Once upon a time', { addSpecialTokens: true })).toEqual([1, 403, 407, 261, 378]);
    expect(tok.encode(' ', { addSpecialTokens: true })).toEqual([1]);
    expect(tok.vocabSize).toBe(512);
    expect([...tok.specialIds].sort()).toEqual([0, 1, 2]);
    expect(tok.chatTemplate).toContain("A: {{ message['content'] }}{{ eos_token }}");
  });

  it('splits on special tokens in text: <s> and </s> become ids 1 and 2', async () => {
    const tok = await loadTokenizer(fixturePath('stories260K'));
    const ids = tok.encode('<s>Q: hi\nA: yo</s>');
    expect(ids[0]).toBe(1);
    expect(ids[ids.length - 1]).toBe(2);
  });
});

// A byte-level BPE tokenizer.json in the style of Llama-3 and Qwen2 (ByteLevel pre-tokenizer after a
// regex Split, no normalizer, added special tokens), small enough to write by hand. Byte-level maps
// each byte to a printable char: ' ' -> 'Ġ', '\n' -> 'Ċ'.
function byteLevelTokenizerJson(): object {
  const chars = ['H', 'e', 'l', 'o', 'w', 'r', 'd', 'Ġ', 'Ċ', '!', 'i', 'Ã', '©']; // 'Ã©' = bytes C3 A9 = 'é'
  const vocab: Record<string, number> = {};
  chars.forEach((c, i) => (vocab[c] = i));
  const merges = [
    ['l', 'l'],
    ['e', 'll'],
    ['H', 'ell'],
    ['Hell', 'o'],
    ['Ġ', 'w'],
    ['o', 'r'],
    ['Ġw', 'or'],
    ['Ġwor', 'l'],
    ['Ġworl', 'd'],
  ];
  for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length;
  const n = Object.keys(vocab).length;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      { id: n, content: '<|begin_of_text|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: n + 1, content: '<|eot_id|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: n + 2, content: '<|start_header_id|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: n + 3, content: '<|end_header_id|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: n + 4, content: '<|im_start|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: n + 5, content: '<|im_end|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: {
            Regex:
              "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
          },
          behavior: 'Isolated',
          invert: false,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    // As in Llama-3's tokenizer.json: ByteLevel then TemplateProcessing adding <|begin_of_text|>.
    post_processor: {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
          special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [n], tokens: ['<|begin_of_text|>'] } },
        },
      ],
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: true,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

describe('byte-level BPE (Llama-3 / Qwen2 style)', () => {
  const json = byteLevelTokenizerJson() as { model: { vocab: Record<string, number> } };
  const v = json.model.vocab;
  const tok = new Tokenizer(json, { bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>' });

  it('splits with the regex, maps bytes, merges, and keeps special tokens whole', () => {
    expect(tok.encode('Hello world!')).toEqual([v['Hello'], v['Ġworld'], v['!']]);
    expect(tok.encode('Hello\n\nworld')).toEqual([v['Hello'], v['Ċ'], v['Ċ'], v['w'], v['or'], v['l'], v['d']]);
    expect(tok.encode('Hello<|eot_id|>\n')).toEqual([v['Hello'], tok.tokenToId('<|eot_id|>'), v['Ċ']]);
    expect(tok.decode(tok.encode('Hello world!'))).toBe('Hello world!');
  });

  it('adds BOS through the post-processor when the config has no add_bos_token (Llama-3)', () => {
    const bos = tok.tokenToId('<|begin_of_text|>')!;
    expect(tok.bosId).toBe(bos);
    expect(tok.eosId).toBe(tok.tokenToId('<|eot_id|>'));
    expect(tok.encode('Hello', { addSpecialTokens: true })).toEqual([bos, v['Hello']]);
  });

  it('adds nothing without a post-processor and without BOS in the config (Qwen2)', () => {
    // As in Qwen2's tokenizer.json: NFC normalizer, ByteLevel post-processor (adds nothing), no BOS.
    const qwen = {
      ...(byteLevelTokenizerJson() as Record<string, unknown>),
      normalizer: { type: 'NFC' },
      post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    };
    const q = new Tokenizer(qwen, { bos_token: null, eos_token: '<|eot_id|>', add_bos_token: false });
    expect(q.bosId).toBe(null);
    expect(q.encode('Hello world!', { addSpecialTokens: true })).toEqual([v['Hello'], v['Ġworld'], v['!']]);
    // A decomposed é (e + U+0301) is composed by NFC before the byte-level mapping.
    expect(q.encode('e\u0301')).toEqual([v['Ã'], v['©']]);
    expect(q.decode([v['Ã'], v['©']])).toBe('\u00e9');
  });

  it('llama3 and chatml templates: answer + end-of-turn token trained, headers and the newline after <|im_end|> not', () => {
    const id = (t: string): number => tok.tokenToId(t)!;
    const messages = [
      { role: 'user', content: 'Hello' },
      { role: 'assistant', content: 'Hello world!' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello' },
    ];
    const llama3 = resolveChatTemplate(tok, 'llama3')!;
    expect(templateWarnings(llama3, tok)).toEqual([]);
    const a = maskExample({ kind: 'chat', messages }, { tokenizer: tok, template: llama3 });
    expect(a.ids.filter((_, t) => a.mask[t] === 1)).toEqual([v['Hello'], v['Ġworld'], v['!'], id('<|eot_id|>'), v['Hello'], id('<|eot_id|>')]);
    expect(a.ids[0]).toBe(id('<|begin_of_text|>'));
    const chatml = resolveChatTemplate(tok, 'chatml')!;
    const b = maskExample({ kind: 'chat', messages }, { tokenizer: tok, template: chatml });
    expect(b.ids.filter((_, t) => b.mask[t] === 1)).toEqual([v['Hello'], v['Ġworld'], v['!'], id('<|im_end|>'), v['Hello'], id('<|im_end|>')]);
    // The "\n" after each <|im_end|> is in the input but not in the loss.
    const ends = b.ids.flatMap((x, t) => (x === id('<|im_end|>') ? [t] : []));
    expect(ends.map((t) => b.ids[t + 1])).toEqual([v['Ċ'], v['Ċ'], v['Ċ'], v['Ċ']]);
  });
});
