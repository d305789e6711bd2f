// Files and bad records: JSONL, JSON arrays and Parquet read in order with the right line/row numbers;
// bad records skipped and reported where they are, or thrown under strict; empty datasets are errors.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parquetWriteFile } from 'hyparquet-writer';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';
import { readRecords } from '../../src/data/readers.js';
import { loadTokenizer, type Tokenizer } from '../../src/data/tokenizer.js';
import { loadDataset } from '../../src/data/dataset.js';
import { InstillError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'instill-readers-'));

async function collect(file: string): Promise<Array<{ line: number; value?: unknown; error?: string }>> {
  const out = [];
  for await (const r of readRecords(file)) out.push({ line: r.line, value: r.value, error: r.error });
  return out;
}

describe('readers', () => {
  it('JSONL: line numbers, blank lines skipped, invalid JSON reported not thrown', async () => {
    const p = join(dir, 'a.jsonl');
    writeFileSync(p, '\uFEFF{"a":1}\n\n{"a":2}\r\n{"a": oops}\n{"a":"x\\ny"}');
    const recs = await collect(p);
    expect(recs.map((r) => r.line)).toEqual([1, 3, 4, 5]);
    expect(recs[0].value).toEqual({ a: 1 });
    expect(recs[1].value).toEqual({ a: 2 });
    expect(recs[2].error).toMatch(/invalid JSON/);
    expect(recs[3].value).toEqual({ a: 'x\ny' });
  });

  it('JSON array: elements streamed with the line they start on, across chunk boundaries', async () => {
    const p = join(dir, 'b.json');
    const big = 'x'.repeat(3 << 20); // longer than one 1 MiB read chunk
    writeFileSync(p, `[\n  {"a": "]}{,\\"", "b": [1, {"c": 2}]},\n  {"a": "${big}"},\n\n  {"a": bad},\n  {"a":\n "multi\\nline"}\n]\n`);
    const recs = await collect(p);
    expect(recs.map((r) => r.line)).toEqual([2, 3, 5, 6]);
    expect(recs[0].value).toEqual({ a: ']}{,"', b: [1, { c: 2 }] });
    expect((recs[1].value as { a: string }).a.length).toBe(3 << 20);
    expect(recs[2].error).toMatch(/invalid JSON/);
    expect(recs[3].value).toEqual({ a: 'multi\nline' });
  });

  it('JSON array: an unterminated array is reported', async () => {
    const p = join(dir, 'c.json');
    writeFileSync(p, '[{"a":1},\n{"a":2');
    const recs = await collect(p);
    expect(recs[0].value).toEqual({ a: 1 });
    expect(recs[1]).toMatchObject({ line: 2, error: expect.stringMatching(/unexpected end of file/) });
  });

  it('Parquet: rows across row groups, nested list<struct> columns as the Hub stores messages', async () => {
    const p = join(dir, 'd.parquet');
    const messages = Array.from({ length: 7 }, (_, i) => [
      { role: 'user', content: `q${i}` },
      { role: 'assistant', content: `a${i}` },
    ]);
    parquetWriteFile({
      filename: p,
      columnData: [{ name: 'messages', data: messages }],
      schema: [
        { name: 'root', num_children: 1 },
        { name: 'messages', repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
        { name: 'role', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
        { name: 'content', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
      ],
      rowGroupSize: 3,
    });
    const recs = await collect(p);
    expect(recs.map((r) => r.line)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(recs.map((r) => r.value)).toEqual(messages.map((m) => ({ messages: m })));
  });
});

describe.skipIf(!haveFixture('stories260K/tokenizer.json'))('bad records', () => {
  let tok: Tokenizer;
  beforeAll(async () => {
    tok = await loadTokenizer(fixturePath('stories260K'));
  });
  const good = (i: number): string => JSON.stringify({ messages: [{ role: 'user', content: `hi ${i}` }, { role: 'assistant', content: `hello ${i}` }] });
  const lines = [
    good(1), // 1
    good(2), // 2
    '{"messages": [{"role": "user", "content": "x"}', // 3 invalid JSON
    JSON.stringify({ text: 'no messages here' }), // 4 missing field
    JSON.stringify({ messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: '  ' }] }), // 5 empty answer
    JSON.stringify({ messages: [{ role: 'user', content: 42 }, { role: 'assistant', content: 'a' }] }), // 6 non-string content
    '', // 7 blank: not a record
    good(8), // 8
    JSON.stringify({ messages: [{ role: 'user', content: 'q' }, { content: 'a' }] }), // 9 no role
    JSON.stringify({ messages: [] }), // 10 empty conversation
    '[1, 2]', // 11 not an object
  ];

  it('skips and reports each with file and line; the rest is kept', async () => {
    const p = join(dir, 'bad.jsonl');
    writeFileSync(p, lines.join('\n') + '\n');
    const ds = await loadDataset(p, { tokenizer: tok, maxSeqLen: 512 });
    const r = ds.reports[0];
    expect(r).toMatchObject({ records: 10, examples: 3, errors: 7, dropped: 0 });
    expect(r.issues.map((i) => i.line)).toEqual([3, 4, 5, 6, 9, 10, 11]);
    expect(r.issues.map((i) => i.location)).toEqual([3, 4, 5, 6, 9, 10, 11].map((l) => `${p}:${l}`));
    expect(r.issues[0].message).toMatch(/invalid JSON/);
    expect(r.issues[1].message).toMatch(/missing field 'messages'/);
    expect(r.issues[2].message).toMatch(/empty assistant message/);
    expect(r.issues[3].message).toMatch(/content is a number, expected a string/);
    expect(r.issues[4].message).toMatch(/has no 'role'/);
    expect(r.issues[5].message).toMatch(/no messages/);
    expect(r.issues[6].message).toMatch(/expected a JSON object/);
    expect([0, 1, 2].map((i) => ds.source(i).line)).toEqual([1, 2, 8]);
  });

  it('strict: throws InstillError E_DATA at the first bad record, with its line', async () => {
    const p = join(dir, 'bad2.jsonl');
    writeFileSync(p, lines.join('\n'));
    const err = await loadDataset(p, { tokenizer: tok, maxSeqLen: 512, strict: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InstillError);
    expect((err as InstillError).code).toBe('E_DATA');
    expect((err as InstillError).message).toContain(`${p}:3: invalid JSON`);
  });

  it('an empty file, or one with only bad records, is an error', async () => {
    const empty = join(dir, 'empty.jsonl');
    writeFileSync(empty, '\n\n');
    await expect(loadDataset(empty, { tokenizer: tok, maxSeqLen: 512 })).rejects.toThrow(/no usable example: it has no records/);
    const allBad = join(dir, 'allbad.jsonl');
    writeFileSync(allBad, lines.slice(2, 6).join('\n'));
    await expect(loadDataset(allBad, { tokenizer: tok, maxSeqLen: 512 })).rejects.toThrow(/no usable example: 4 records, 4 bad \(first: .*:1: invalid JSON/);
    const emptyArray = join(dir, 'empty.json');
    writeFileSync(emptyArray, '[]');
    await expect(loadDataset(emptyArray, { tokenizer: tok, maxSeqLen: 512 })).rejects.toThrow(/no usable example/);
  });

  it('JSON array and Parquet bad records carry their line / row', async () => {
    const pj = join(dir, 'bad.json');
    writeFileSync(pj, '[\n' + [good(1), JSON.stringify({ messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: null }] }), good(3)].join(',\n') + '\n]');
    const dj = await loadDataset(pj, { tokenizer: tok, maxSeqLen: 512 });
    expect(dj.reports[0]).toMatchObject({ kind: 'json', records: 3, examples: 2, errors: 1 });
    expect(dj.reports[0].issues[0]).toMatchObject({ line: 3, location: `${pj}:3` });
    expect(dj.reports[0].issues[0].message).toMatch(/content is null/);

    const pq = join(dir, 'bad.parquet');
    parquetWriteFile({
      filename: pq,
      columnData: [
        { name: 'instruction', data: ['Say hi.', 'Say bye.', 'Count.'], type: 'STRING' },
        { name: 'input', data: ['', null, ''], type: 'STRING' },
        { name: 'output', data: ['Hi!', '', 'One.'], type: 'STRING' },
      ],
    });
    const dq = await loadDataset(pq, { tokenizer: tok, maxSeqLen: 512 });
    expect(dq.reports[0]).toMatchObject({ kind: 'parquet', format: 'alpaca', records: 3, examples: 2, errors: 1 });
    expect(dq.reports[0].issues[0]).toMatchObject({ line: 2, location: `${pq} row 2` });
    expect(dq.reports[0].issues[0].message).toMatch(/'output' is empty/);
  });
});
