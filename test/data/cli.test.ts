// `instill data inspect`: JSON counts equal an independent count, bad records listed with lines, the
// terminal view marks exactly the trained text, and argument errors say what to fix.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';
import { run } from '../../src/cli/data.js';
import { loadTokenizer, type Tokenizer } from '../../src/data/tokenizer.js';
import type { InspectResult } from '../../src/data/inspect.js';

async function capture(argv: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  });
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => {
    out += a.join(' ') + '\n';
  });
  try {
    const code = await run(argv);
    return { code, out };
  } finally {
    spy.mockRestore();
    log.mockRestore();
  }
}

describe.skipIf(!haveFixture('stories260K/tokenizer.json'))('instill data inspect', () => {
  const model = fixturePath('stories260K');
  const dir = mkdtempSync(join(tmpdir(), 'instill-cli-'));
  let tok: Tokenizer;
  beforeAll(async () => {
    tok = await loadTokenizer(model);
  });
  afterEach(() => vi.restoreAllMocks());

  const convs = [
    [
      ['user', 'Who is Tom?'],
      ['assistant', 'Tom is a boy.'],
    ],
    [
      ['system', 'Be kind.'],
      ['user', 'Hi'],
      ['assistant', 'Hello!'],
      ['user', 'Bye'],
      ['assistant', 'Goodbye, friend.'],
    ],
  ];

  /** Independent counts: the template by hand; prompt tokens are the prefix before each answer. */
  function count(conv: string[][]): { tokens: number; targets: number } {
    const r = (n: number, gen: boolean): string =>
      '<s>' +
      conv
        .slice(0, n)
        .map(([role, c]) => (role === 'system' ? c + '\n' : role === 'user' ? `Q: ${c}\n` : `A: ${c}</s>`))
        .join('') +
      (gen ? 'A:' : '');
    let targets = 0;
    conv.forEach(([role], i) => {
      if (role === 'assistant') targets += tok.encode(r(i + 1, false)).length - tok.encode(r(i, true)).length;
    });
    return { tokens: tok.encode(r(conv.length, false)).length, targets };
  }

  it('--json: counts per file equal the independent ones; bad record listed with its line', async () => {
    const file = join(dir, 'chat.jsonl');
    const lines = convs.map((c) => JSON.stringify({ messages: c.map(([role, content]) => ({ role, content })) }));
    lines.splice(1, 0, '{not json');
    writeFileSync(file, lines.join('\n'));
    const { code, out } = await capture(['inspect', '--model', model, '--data', file, '--json']);
    expect(code).toBe(0);
    const r = JSON.parse(out) as InspectResult;
    const want = convs.map(count);
    expect(r.datasets[0]).toMatchObject({
      file,
      format: 'messages',
      records: 3,
      examples: 2,
      tokens: want[0].tokens + want[1].tokens,
      targetTokens: want[0].targets + want[1].targets,
      truncated: 0,
      dropped: 0,
      errors: 1,
    });
    expect(r.datasets[0].issues[0]).toMatchObject({ line: 2, location: `${file}:2` });
    expect(r.total.examples).toBe(2);
    expect(r.settings).toMatchObject({ template: 'model', trainOn: 'assistant', maxSeqLen: 512, truncation: 'right' });
    expect(r.examples.length).toBe(2);
    const trained = r.examples[1].segments.filter((s) => s.trained).map((s) => s.text.trim());
    expect(trained).toEqual(['Hello!</s>', 'Goodbye, friend.</s>']);
    expect(r.examples[1].segments.map((s) => s.text).join('')).toBe(tok.decode(r.examples[1].ids));
  });

  it('terminal view: trained text marked, counts table, several files with a total', async () => {
    const a = join(dir, 'a.jsonl');
    writeFileSync(a, JSON.stringify({ instruction: 'Say hi.', output: 'Hi!' }) + '\n');
    const b = join(dir, 'b.json');
    writeFileSync(b, JSON.stringify([{ text: 'Once upon a time.' }]));
    const { code, out } = await capture(['inspect', '--model', model, '--data', a, '--data', b, '--no-color', '--max-seq-len', '64']);
    expect(code).toBe(0);
    expect(out).toContain('Q: Say hi.\nA:[[ Hi!</s>]]');
    expect(out).toContain('<s>[[ Once upon a time.]]');
    expect(out).toContain('<s> Q: Say hi.\nA:[[ Hi!</s>]]');
    expect(out).toMatch(/\ntotal\s+2\s+2\s/);
    expect(out).not.toContain('\x1b[');
    const colored = await capture(['inspect', '--model', model, '--data', a, '--color']);
    expect(colored.out).toContain('\x1b[30;42m Hi!</s>\x1b[0m');
  });

  it('warns when a fallback template overrides the model and its markers are not tokens, and when answers do not end with EOS', async () => {
    const file = join(dir, 'w.jsonl');
    writeFileSync(file, JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }] }) + '\n');
    const chatml = JSON.parse((await capture(['inspect', '--model', model, '--data', file, '--template', 'chatml', '--json'])).out) as InspectResult;
    expect(chatml.warnings.join('\n')).toMatch(/overrides the model's own chat_template/);
    expect(chatml.warnings.join('\n')).toMatch(/<\|im_start\|>, <\|im_end\|>, which are not tokens/);
    expect(chatml.warnings.join('\n')).toMatch(/not with an end-of-turn\/EOS special token/);
    const tpl = join(dir, 'noeos.jinja');
    writeFileSync(tpl, "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}");
    const noEos = JSON.parse((await capture(['inspect', '--model', model, '--data', file, '--template', tpl, '--json'])).out) as InspectResult;
    expect(noEos.settings.template).toBe(tpl);
    expect(noEos.warnings.join('\n')).toMatch(/not with an end-of-turn\/EOS special token/);
    const ok = JSON.parse((await capture(['inspect', '--model', model, '--data', file, '--json'])).out) as InspectResult;
    expect(ok.warnings).toEqual([]);
  });

  it('--strict throws at the bad record; argument errors name the flag', async () => {
    const file = join(dir, 'bad.jsonl');
    writeFileSync(file, JSON.stringify({ messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }] }) + '\n' + JSON.stringify({ messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: '' }] }));
    await expect(run(['inspect', '--model', model, '--data', file, '--strict'])).rejects.toThrow(`${file}:2: messages[1] is an empty assistant message`);
    await expect(run(['inspect', '--model', model, '--data', file, '--truncation', 'middle'])).rejects.toThrow(/Expected one of right, left, drop for --truncation but received 'middle'/);
    await expect(run(['inspect', '--model', model])).rejects.toThrow(/--data FILE is required/);
    await expect(run(['inspect', '--model', model, '--data', join(dir, 'missing.jsonl')])).rejects.toThrow(/not found/);
    expect((await capture(['--help'])).code).toBe(0);
  });
});
