// Loss masks for every dataset format on the stories260K fixture, checked against an independent
// computation: the fixture's template written out by hand in this file (not Jinja), tokenized in prefixes,
// plus a decode check that the trained tokens are exactly each answer and its EOS.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';
import { loadTokenizer, type Tokenizer } from '../../src/data/tokenizer.js';
import { loadDataset, type TokenizedDataset } from '../../src/data/dataset.js';
import { ChatTemplate, resolveChatTemplate, NAMED_CHAT_TEMPLATES } from '../../src/data/chat_template.js';
import { maskExample } from '../../src/data/masking.js';
import type { ChatMessage } from '../../src/data/chat_template.js';

type Msg = ChatMessage;

/** The fixture's chat template, by hand: `<s>` + system "{c}\n" + user "Q: {c}\n" + assistant "A: {c}</s>". */
function render(msgs: Msg[], gen: boolean): string {
  let s = '<s>';
  for (const m of msgs) {
    if (m.role === 'system') s += m.content + '\n';
    else if (m.role === 'user') s += 'Q: ' + m.content + '\n';
    else if (m.role === 'assistant') s += 'A: ' + m.content + '</s>';
  }
  return gen ? s + 'A:' : s;
}

function expected(tok: Tokenizer, msgs: Msg[], trainOn: 'assistant' | 'last' | 'all' = 'assistant'): { ids: number[]; mask: number[] } {
  const ids = tok.encode(render(msgs, false));
  const mask = new Array<number>(ids.length).fill(trainOn === 'all' ? 1 : 0);
  if (trainOn !== 'all') {
    let turns = msgs.flatMap((m, i) => (m.role === 'assistant' ? [i] : []));
    if (trainOn === 'last') turns = turns.slice(-1);
    for (const i of turns) {
      const s = tok.encode(render(msgs.slice(0, i), true)).length;
      const e = tok.encode(render(msgs.slice(0, i + 1), false)).length;
      for (let t = s; t < e; t++) mask[t] = 1;
    }
  }
  return { ids, mask };
}

/** The trained tokens of each maximal run of mask=1, decoded. */
function trainedRuns(tok: Tokenizer, ids: ArrayLike<number>, mask: ArrayLike<number>): string[] {
  const runs: string[] = [];
  let start = -1;
  for (let t = 0; t <= ids.length; t++) {
    const on = t < ids.length && mask[t] === 1;
    if (on && start < 0) start = t;
    if (!on && start >= 0) {
      runs.push(tok.decode(Array.from(ids).slice(start, t)));
      start = -1;
    }
  }
  return runs;
}

function writeJsonl(dir: string, name: string, records: unknown[]): string {
  const p = join(dir, name);
  writeFileSync(p, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return p;
}

function examplesOf(ds: TokenizedDataset): Array<{ ids: number[]; mask: number[] }> {
  return Array.from({ length: ds.size }, (_, i) => ({ ids: Array.from(ds.ids(i)), mask: Array.from(ds.mask(i)) }));
}

const conversations: Msg[][] = [
  [
    { role: 'user', content: 'What is the cat doing?' },
    { role: 'assistant', content: 'The cat is sleeping on the mat.' },
  ],
  [
    { role: 'system', content: 'You tell short stories.' },
    { role: 'user', content: 'Tell me about Lily.' },
    { role: 'assistant', content: 'Lily liked to play in the park.' },
    { role: 'user', content: 'And then?' },
    { role: 'assistant', content: 'She saw a big red ball!' },
    { role: 'user', content: 'Thanks.' },
    { role: 'assistant', content: 'You are welcome. The end.' },
  ],
  [
    { role: 'user', content: '  spaces  around  ' },
    { role: 'assistant', content: 'naïve café 😀 x = [1, 2]' },
  ],
];

describe.skipIf(!haveFixture('stories260K/tokenizer.json'))('loss masks on stories260K', () => {
  let tok: Tokenizer;
  let dir: string;
  const maxSeqLen = 512;
  beforeAll(async () => {
    tok = await loadTokenizer(fixturePath('stories260K'));
    dir = mkdtempSync(join(tmpdir(), 'instill-mask-'));
  });

  it('messages: every assistant turn and its EOS trained, no prompt token', async () => {
    const file = writeJsonl(dir, 'messages.jsonl', conversations.map((messages) => ({ messages })));
    const ds = await loadDataset(file, { tokenizer: tok, maxSeqLen });
    expect(ds.reports[0].format).toBe('messages');
    const got = examplesOf(ds);
    expect(got.length).toBe(conversations.length);
    conversations.forEach((msgs, k) => {
      expect(got[k]).toEqual(expected(tok, msgs));
      const answers = msgs.filter((m) => m.role === 'assistant').map((m) => m.content.trim() + '</s>');
      expect(trainedRuns(tok, got[k].ids, got[k].mask).map((s) => s.trim())).toEqual(answers);
      // Every trained run ends with EOS.
      const ids = got[k].ids;
      for (let t = 0; t < ids.length; t++) if (got[k].mask[t] === 1 && (t + 1 === ids.length || got[k].mask[t + 1] === 0)) expect(ids[t]).toBe(2);
    });
    const r = ds.reports[0];
    const tokens = conversations.reduce((a, m) => a + expected(tok, m).ids.length, 0);
    const targets = conversations.reduce((a, m) => a + expected(tok, m).mask.reduce((x, y) => x + y, 0), 0);
    expect(r).toMatchObject({ records: 3, examples: 3, tokens, targetTokens: targets, truncated: 0, dropped: 0, errors: 0 });
  });

  it('trainOn last and all', async () => {
    const file = writeJsonl(dir, 'm2.jsonl', conversations.map((messages) => ({ messages })));
    const last = examplesOf(await loadDataset(file, { tokenizer: tok, maxSeqLen, trainOn: 'last' }));
    const all = examplesOf(await loadDataset(file, { tokenizer: tok, maxSeqLen, trainOn: 'all' }));
    conversations.forEach((msgs, k) => {
      expect(last[k]).toEqual(expected(tok, msgs, 'last'));
      expect(all[k]).toEqual(expected(tok, msgs, 'all'));
    });
  });

  it('sharegpt: from/value mapped to roles', async () => {
    const map: Record<string, string> = { system: 'system', user: 'human', assistant: 'gpt' };
    const file = writeJsonl(dir, 'sharegpt.jsonl', conversations.map((m) => ({ id: 'x', conversations: m.map((x) => ({ from: map[x.role], value: x.content })) })));
    const ds = await loadDataset(file, { tokenizer: tok, maxSeqLen });
    expect(ds.reports[0].format).toBe('sharegpt');
    conversations.forEach((msgs, k) => expect(examplesOf(ds)[k]).toEqual(expected(tok, msgs)));
  });

  it('alpaca: instruction (+ "\\n\\n" + input) as the user turn, output as the answer, optional system', async () => {
    const recs = [
      { instruction: 'Name a color.', input: '', output: 'Red.' },
      { instruction: 'Finish the story.', input: 'Once upon a time', output: 'there was a dog.', system: 'Be brief.' },
      { instruction: 'Say hi.', output: 'Hi!' },
    ];
    const file = writeJsonl(dir, 'alpaca.jsonl', recs);
    const ds = await loadDataset(file, { tokenizer: tok, maxSeqLen });
    expect(ds.reports[0].format).toBe('alpaca');
    const want: Msg[][] = [
      [{ role: 'user', content: 'Name a color.' }, { role: 'assistant', content: 'Red.' }],
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Finish the story.\n\nOnce upon a time' },
        { role: 'assistant', content: 'there was a dog.' },
      ],
      [{ role: 'user', content: 'Say hi.' }, { role: 'assistant', content: 'Hi!' }],
    ];
    want.forEach((msgs, k) => expect(examplesOf(ds)[k]).toEqual(expected(tok, msgs)));
  });

  it('prompt/completion: strings as one user/assistant turn; message lists as given', async () => {
    const file = writeJsonl(dir, 'pc.jsonl', [
      { prompt: 'Where is the ball?', completion: 'Under the tree.' },
      { prompt: [{ role: 'user', content: 'Hi' }], completion: [{ role: 'assistant', content: 'Hello there.' }] },
    ]);
    const ds = await loadDataset(file, { tokenizer: tok, maxSeqLen });
    expect(ds.reports[0].format).toBe('prompt_completion');
    expect(examplesOf(ds)[0]).toEqual(expected(tok, [{ role: 'user', content: 'Where is the ball?' }, { role: 'assistant', content: 'Under the tree.' }]));
    expect(examplesOf(ds)[1]).toEqual(expected(tok, [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello there.' }]));
  });

  it('text: BOS + tokens (add_bos_token), no EOS (add_eos_token false), loss on everything', async () => {
    const texts = ['Once upon a time there was a cat.', 'Tom and Lily played.\nThe end.'];
    const file = writeJsonl(dir, 'text.jsonl', texts.map((text) => ({ text })));
    const ds = await loadDataset(file, { tokenizer: tok, maxSeqLen });
    expect(ds.reports[0].format).toBe('text');
    texts.forEach((t, k) => {
      const ids = [1, ...tok.encode(t)];
      expect(examplesOf(ds)[k]).toEqual({ ids, mask: ids.map(() => 1) });
    });
    // targetTokens: every token but the first, which nothing predicts.
    expect(ds.reports[0].targetTokens).toBe(texts.reduce((a, t) => a + tok.encode(t).length, 0));
    const withEos = await loadDataset(file, { tokenizer: tok, maxSeqLen, appendEos: true });
    expect(Array.from(withEos.ids(0))).toEqual([1, ...tok.encode(texts[0]), 2]);
  });

  it('the Jinja render of the model template equals the hand-written one', () => {
    const tpl = resolveChatTemplate(tok)!;
    for (const msgs of conversations) {
      expect(tpl.render(msgs)).toBe(render(msgs, false));
      expect(tpl.render(msgs.slice(0, -1), { addGenerationPrompt: true })).toBe(render(msgs.slice(0, -1), true));
    }
  });

  it('truncation: right keeps the start, left the end, drop removes; all-masked examples dropped; counts exact', async () => {
    const long: Msg[] = [
      { role: 'user', content: 'Tell me a story.' },
      { role: 'assistant', content: 'Once upon a time there was a little girl named Lily. She loved to play outside in the park.' },
    ];
    const n = expected(tok, long).ids.length;
    const promptLen = tok.encode(render(long.slice(0, 1), true)).length;
    const records = [{ messages: long }, { messages: conversations[0] }, { messages: [{ role: 'user', content: 'no answer here' }] }];
    const file = writeJsonl(dir, 'long.jsonl', records);
    const L = n - 5;
    const right = await loadDataset(file, { tokenizer: tok, maxSeqLen: L, truncation: 'right' });
    expect(right.reports[0]).toMatchObject({ records: 3, examples: 2, truncated: 1, dropped: 1, droppedNoTargets: 1, droppedTooLong: 0, errors: 0 });
    const e = expected(tok, long);
    expect(Array.from(right.ids(0))).toEqual(e.ids.slice(0, L));
    expect(Array.from(right.mask(0))).toEqual(e.mask.slice(0, L));
    const left = await loadDataset(file, { tokenizer: tok, maxSeqLen: L, truncation: 'left' });
    expect(Array.from(left.ids(0))).toEqual(e.ids.slice(5));
    expect(left.reports[0].truncated).toBe(1);
    const drop = await loadDataset(file, { tokenizer: tok, maxSeqLen: L, truncation: 'drop' });
    expect(drop.reports[0]).toMatchObject({ examples: 1, truncated: 0, dropped: 2, droppedTooLong: 1, droppedNoTargets: 1 });
    // Cut at the end of every prompt: nothing left to train on -> all dropped -> an error, not an empty success.
    expect(promptLen).toBeLessThan(expected(tok, conversations[0]).ids.length);
    const shortPrompt = tok.encode(render(conversations[0].slice(0, 1), true)).length;
    await expect(loadDataset(file, { tokenizer: tok, maxSeqLen: Math.min(promptLen, shortPrompt), truncation: 'right' })).rejects.toThrow(
      /has no usable example: 3 records, 3 with no token to train on/,
    );
  });

  it('fails loudly when a template renders earlier turns differently once later turns exist', () => {
    const bad = new ChatTemplate(
      'bad',
      "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n{% else %}A: {{ m['content'] }}{% if loop.last %}{{ eos_token }}{% endif %}{% endif %}{% endfor %}{% if add_generation_prompt %}A:{% endif %}",
      tok,
    );
    expect(() => maskExample({ kind: 'chat', messages: conversations[1] }, { tokenizer: tok, template: bad })).toThrow(/not a prefix/);
  });

  it('named fallback templates render and mask (chatml markers learnt as text get a warning)', async () => {
    const chatml = resolveChatTemplate(tok, 'chatml')!;
    expect(chatml.source).toBe(NAMED_CHAT_TEMPLATES.chatml);
    const { ids, mask } = maskExample({ kind: 'chat', messages: conversations[0] }, { tokenizer: tok, template: chatml });
    const runs = trainedRuns(tok, ids, mask);
    expect(runs.length).toBe(1);
    expect(runs[0]).toContain('The cat is sleeping on the mat.<|im_end|>');
    const alpaca = resolveChatTemplate(tok, 'alpaca')!;
    const r2 = maskExample({ kind: 'chat', messages: conversations[1] }, { tokenizer: tok, template: alpaca });
    expect(trainedRuns(tok, r2.ids, r2.mask).map((s) => s.trim())).toEqual(['Lily liked to play in the park.</s>', 'She saw a big red ball!</s>', 'You are welcome. The end.</s>']);
  });
});
