// Arranging examples into rows: packing (several examples per row) or one example per padded row.
//
// Both take the examples in a given order (the epoch's shuffle) and are deterministic functions of it,
// which is what makes a resumed run see the same batches as an uninterrupted one.
//
// packRows: best-fit decreasing inside consecutive windows of `window` examples: the longest example of
// the window goes first into the fullest row that still has room, else a new row. Rows fill to ~98-99%
// on typical chat data while the epoch order is kept at the window scale. No example is ever split.
//
// groupByLength (padding mode): the Hugging Face LengthGroupedSampler idea. The order is cut into
// mega-batches of `batchSize * megaBatchMult` examples, each sorted by length (longest first) and cut
// into batches, so a batch pads to a length close to all its examples; the batch order is then shuffled
// with `random` so long and short batches alternate through the epoch.
import { shuffleInPlace } from './shuffle.js';

export function packRows(order: ArrayLike<number>, lengthOf: (i: number) => number, seqLen: number, window = 1024): number[][] {
  const rows: number[][] = [];
  for (let w0 = 0; w0 < order.length; w0 += window) {
    const w1 = Math.min(order.length, w0 + window);
    const items: Array<{ e: number; len: number; k: number }> = [];
    for (let k = w0; k < w1; k++) items.push({ e: order[k], len: lengthOf(order[k]), k });
    items.sort((a, b) => b.len - a.len || a.k - b.k);
    const open: Array<{ row: number[]; free: number }> = [];
    for (const it of items) {
      let best = -1;
      for (let r = 0; r < open.length; r++) {
        const f = open[r].free;
        if (f >= it.len && (best < 0 || f < open[best].free)) best = r;
      }
      if (best < 0) open.push({ row: [it.e], free: seqLen - it.len });
      else {
        open[best].row.push(it.e);
        open[best].free -= it.len;
      }
    }
    for (const o of open) rows.push(o.row);
  }
  return rows;
}

export function groupByLength(
  order: ArrayLike<number>,
  lengthOf: (i: number) => number,
  batchSize: number,
  random: () => number,
  megaBatchMult = 50,
): number[][] {
  const mega = batchSize * megaBatchMult;
  const batches: number[][] = [];
  for (let m0 = 0; m0 < order.length; m0 += mega) {
    const chunk = Array.from({ length: Math.min(mega, order.length - m0) }, (_, k) => order[m0 + k]);
    const keyed = chunk.map((e, k) => ({ e, len: lengthOf(e), k }));
    keyed.sort((a, b) => b.len - a.len || a.k - b.k);
    for (let b0 = 0; b0 < keyed.length; b0 += batchSize) batches.push(keyed.slice(b0, b0 + batchSize).map((x) => x.e));
  }
  return shuffleInPlace(batches, random);
}
