// Batches: packing keeps examples apart (positions restart, segments and boundaries right, no target
// crosses an example), padding groups lengths, the seeded shuffle is reproducible, the validation split
// is stable, and resuming from a cursor replays exactly the uninterrupted sequence.
import { describe, expect, it } from 'vitest';
import { assembleBatch, IGNORE_INDEX, targetsFromLabels, type Batch, type ExampleSource } from '../../src/data/batch.js';
import { BatchLoader, type DataCursor, type LoaderOptions } from '../../src/data/loader.js';
import { packRows } from '../../src/data/packing.js';
import { seededPermutation, seededRandom } from '../../src/data/shuffle.js';
import { splitIndices } from '../../src/data/split.js';

/** Synthetic examples: example e has length 3 + (e*7 % 29), ids 1000*e + t, mask 0 on the first third. */
function synthetic(n: number): ExampleSource & { size: number } {
  const ids: Int32Array[] = [];
  const masks: Uint8Array[] = [];
  for (let e = 0; e < n; e++) {
    const L = 3 + ((e * 7) % 29);
    ids.push(Int32Array.from({ length: L }, (_, t) => 1000 * e + t));
    masks.push(Uint8Array.from({ length: L }, (_, t) => (t >= Math.floor(L / 3) ? 1 : 0)));
  }
  return { size: n, ids: (i) => ids[i], mask: (i) => masks[i], length: (i) => ids[i].length };
}

/** Checks every invariant of a batch against its source, independently of assembleBatch's code. */
function checkBatch(b: Batch, src: ExampleSource, padId: number): void {
  const T = b.seqLen;
  let e = 0;
  let targets = 0;
  let tokens = 0;
  // Walk the segments given by cuSeqlens.
  for (let s = 0; s + 1 < b.cuSeqlens.length; s++) {
    const start = b.cuSeqlens[s];
    const end = b.cuSeqlens[s + 1];
    expect(end).toBeGreaterThan(start);
    expect(Math.floor(start / T)).toBe(Math.floor((end - 1) / T)); // a segment never spans rows
    const seg = b.segmentIds[start];
    for (let i = start; i < end; i++) expect(b.segmentIds[i]).toBe(seg);
    if (seg === 0) {
      for (let i = start; i < end; i++) {
        expect(b.inputIds[i]).toBe(padId);
        expect(b.targets[i]).toBe(IGNORE_INDEX);
        expect(b.labels[i]).toBe(IGNORE_INDEX);
      }
      continue;
    }
    const ex = b.exampleIds[e++];
    const ids = src.ids(ex);
    const mask = src.mask(ex);
    expect(end - start).toBe(ids.length);
    for (let j = 0; j < ids.length; j++) {
      const i = start + j;
      expect(b.inputIds[i]).toBe(ids[j]);
      expect(b.positions[i]).toBe(j);
      expect(b.labels[i]).toBe(mask[j] ? ids[j] : IGNORE_INDEX);
      // target = next token of the same example, only when that token is in the loss; the last predicts nothing
      const want = j + 1 < ids.length && mask[j + 1] ? ids[j + 1] : IGNORE_INDEX;
      expect(b.targets[i]).toBe(want);
      if (want !== IGNORE_INDEX) {
        targets++;
        expect(Math.floor(b.targets[i] / 1000)).toBe(Math.floor(b.inputIds[i] / 1000)); // never crosses examples
      }
    }
    tokens += ids.length;
  }
  expect(e).toBe(b.numExamples);
  expect(b.cuSeqlens[0]).toBe(0);
  expect(b.cuSeqlens[b.cuSeqlens.length - 1]).toBe(b.batchSize * T);
  expect(b.numTargets).toBe(targets);
  expect(b.numTokens).toBe(tokens);
  expect(targetsFromLabels(b.labels, b.segmentIds, T)).toEqual(b.targets);
}

function all(loader: BatchLoader, from: DataCursor, epochs: number): Array<{ batch: Batch; cursor: DataCursor; next: DataCursor }> {
  return [...loader.iterate(from, epochs)];
}

describe('batches', () => {
  const src = synthetic(300);
  const opts: LoaderOptions = { batchSize: 4, maxSeqLen: 64, seed: 1234 };

  it('assembleBatch: two packed examples and padding, by hand', () => {
    const tiny: ExampleSource = {
      ids: (i) => [Int32Array.of(5, 6, 7), Int32Array.of(8, 9)][i],
      mask: (i) => [Uint8Array.of(0, 1, 1), Uint8Array.of(0, 1)][i],
      length: (i) => [3, 2][i],
    };
    const b = assembleBatch(tiny, [[0, 1], [1]], 6, 0);
    expect(Array.from(b.inputIds)).toEqual([5, 6, 7, 8, 9, 0, 8, 9, 0, 0, 0, 0]);
    expect(Array.from(b.targets)).toEqual([6, 7, -100, 9, -100, -100, 9, -100, -100, -100, -100, -100]);
    expect(Array.from(b.labels)).toEqual([-100, 6, 7, -100, 9, -100, -100, 9, -100, -100, -100, -100]);
    expect(Array.from(b.positions)).toEqual([0, 1, 2, 0, 1, 0, 0, 1, 0, 0, 0, 0]);
    expect(Array.from(b.segmentIds)).toEqual([1, 1, 1, 2, 2, 0, 1, 1, 0, 0, 0, 0]);
    expect(Array.from(b.cuSeqlens)).toEqual([0, 3, 5, 6, 8, 12]);
    expect(b).toMatchObject({ numExamples: 3, numTokens: 7, numTargets: 4 });
  });

  it('packing: every example exactly once per epoch, rows within maxSeqLen, all invariants', () => {
    const loader = new BatchLoader(src, null, 0, opts);
    const seen = new Map<number, number>();
    for (const { batch } of loader.iterate()) {
      checkBatch(batch, src, 0);
      expect(batch.seqLen).toBe(64);
      for (const e of batch.exampleIds) seen.set(e, (seen.get(e) ?? 0) + 1);
    }
    expect(seen.size).toBe(300);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
  });

  it('packing fills rows well', () => {
    const order = seededPermutation(300, 7);
    const rows = packRows(order, (i) => src.length(i), 64);
    const used = rows.reduce((a, r) => a + r.reduce((x, e) => x + src.length(e), 0), 0);
    expect(used / (rows.length * 64)).toBeGreaterThan(0.95);
    for (const r of rows) expect(r.reduce((x, e) => x + src.length(e), 0)).toBeLessThanOrEqual(64);
  });

  it('padding with length grouping: one example per row, T = longest of the batch, less padding than random', () => {
    const grouped = new BatchLoader(src, null, 3, { ...opts, packing: false, padToMultipleOf: 8 });
    const plain = new BatchLoader(src, null, 3, { ...opts, packing: false, groupByLength: false });
    let padG = 0;
    let padP = 0;
    const seen = new Set<number>();
    for (const { batch } of grouped.iterate()) {
      checkBatch(batch, src, 3);
      expect(batch.seqLen % 8 === 0 || batch.seqLen === 64).toBe(true);
      const longest = Math.max(...Array.from(batch.exampleIds, (e) => src.length(e)));
      expect(batch.seqLen).toBe(Math.min(64, Math.ceil(longest / 8) * 8));
      expect(batch.numExamples).toBe(batch.batchSize);
      padG += batch.batchSize * batch.seqLen - batch.numTokens;
      batch.exampleIds.forEach((e) => seen.add(e));
    }
    for (const { batch } of plain.iterate()) padP += batch.batchSize * batch.seqLen - batch.numTokens;
    expect(seen.size).toBe(300);
    expect(padG).toBeLessThan(padP / 2);
  });

  it('seeded shuffle: same seed same order, other seed or epoch another order', () => {
    const a = new BatchLoader(src, null, 0, opts);
    const b = new BatchLoader(src, null, 0, opts);
    const c = new BatchLoader(src, null, 0, { ...opts, seed: 99 });
    expect(a.plan(0)).toEqual(b.plan(0));
    expect(a.plan(1)).toEqual(b.plan(1));
    expect(a.plan(0)).not.toEqual(a.plan(1));
    expect(a.plan(0)).not.toEqual(c.plan(0));
    expect(Array.from(seededPermutation(10, 5))).toEqual(Array.from(seededPermutation(10, 5)));
    const r = seededRandom(42);
    const xs = Array.from({ length: 1000 }, () => r());
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
  });

  it('resuming at (epoch, position) yields exactly the rest of the uninterrupted run', () => {
    for (const packing of [true, false]) {
      const o = { ...opts, packing };
      const full = all(new BatchLoader(src, null, 0, o), { epoch: 0, position: 0 }, 3);
      for (const k of [0, 1, 7, full.length - 1]) {
        // A fresh loader, as after a restart, from the cursor saved after batch k.
        const resumed = all(new BatchLoader(src, null, 0, o), full[k].next, 3);
        expect(resumed.length).toBe(full.length - k - 1);
        resumed.forEach((r, j) => {
          expect(r.cursor).toEqual(full[k + 1 + j].cursor);
          expect(r.batch).toEqual(full[k + 1 + j].batch);
        });
      }
      // Epoch boundary: the cursor after the last batch of epoch 0 is (1, 0).
      const n0 = new BatchLoader(src, null, 0, o).batchesInEpoch(0);
      expect(full[n0 - 1].next).toEqual({ epoch: 1, position: 0 });
      expect(full[n0].cursor).toEqual({ epoch: 1, position: 0 });
    }
  });

  it('validation split: reproducible, disjoint, complete; loaders over each part', () => {
    const s1 = splitIndices(300, { validation: 0.1, seed: 3 });
    const s2 = splitIndices(300, { validation: 0.1, seed: 3 });
    expect(s1).toEqual(s2);
    expect(s1.validation.length).toBe(30);
    expect(new Set([...s1.train, ...s1.validation]).size).toBe(300);
    expect(splitIndices(300, { validation: 12, seed: 3 }).validation.length).toBe(12);
    expect(() => splitIndices(10, { validation: 10 })).toThrow(/leaves none/);
    const val = new BatchLoader(src, s1.validation, 0, { ...opts, shuffle: false });
    const got = new Set<number>();
    for (const { batch } of val.iterate()) batch.exampleIds.forEach((e) => got.add(e));
    expect([...got].sort((a, b) => a - b)).toEqual(Array.from(s1.validation));
  });

  it('rejects a bad cursor and an example longer than maxSeqLen', () => {
    const loader = new BatchLoader(src, null, 0, opts);
    expect(() => [...loader.iterate({ epoch: 0, position: 10_000 })]).toThrow(/past/);
    expect(() => new BatchLoader(src, null, 0, { ...opts, maxSeqLen: 16 })).toThrow(/more than maxSeqLen/);
  });
});

describe('createDataLoaders', () => {
  it('splits once, reproducibly; validation is unshuffled and disjoint from train', async () => {
    const { createDataLoaders } = await import('../../src/data/loader.js');
    const src = synthetic(120);
    const a = createDataLoaders(src, 0, { batchSize: 2, maxSeqLen: 64, seed: 5, validation: 0.25 });
    const b = createDataLoaders(src, 0, { batchSize: 2, maxSeqLen: 64, seed: 5, validation: 0.25 });
    const ids = (l: BatchLoader, epoch: number): number[] => [...l.iterate({ epoch, position: 0 }, epoch + 1)].flatMap((x) => Array.from(x.batch.exampleIds));
    expect(ids(a.train, 0)).toEqual(ids(b.train, 0));
    expect(ids(a.validation!, 0)).toEqual(ids(a.validation!, 1 - 1));
    expect(ids(a.validation!, 1)).toEqual(ids(a.validation!, 0)); // no reshuffle per epoch
    const tr = new Set(ids(a.train, 0));
    const va = ids(a.validation!, 0);
    expect(va.length).toBe(30);
    expect(tr.size).toBe(90);
    expect(va.some((e) => tr.has(e))).toBe(false);
    expect(createDataLoaders(src, 0, { batchSize: 2, maxSeqLen: 64 }).validation).toBe(null);
  });
});
