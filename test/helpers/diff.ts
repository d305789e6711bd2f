// Where two results differ, in words a failed GPU test can carry back. A GPU is lent to this project now and
// then, for minutes (bench/gpu-check.sh): a test that fails there is fixed later on a machine without one, from
// its log alone. "dq, the verified kernels' bits: expected true" says nothing of the cause; which tokens, heads
// and columns differ, and where those tokens sit in their segment and in a 64-row tile, usually does (a wrong
// mask shows at segment starts or on the diagonal tile, a wrong tile load at a fixed row of every tile, a wrong
// epilogue at fixed columns).

/** How a flat result is laid out: [tokens, heads, dims] (or [rows, cols]), and the packed rows' segment starts. */
export interface Layout {
  shape: number[];
  /** cu_seqlens: segment boundaries [0, ..., tokens] along the first dimension */
  segs?: number[];
  /** the kernels' tile height along the first dimension (default 64) */
  tile?: number;
}

/** Sorted integers as ranges: [0, 1, 2, 5, 7, 8] → "0–2, 5, 7–8"; past `max` ranges, "… (N ranges)". */
export function ranges(values: Iterable<number>, max = 6): string {
  const v = [...new Set(values)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < v.length; ) {
    let j = i;
    while (j + 1 < v.length && v[j + 1] === v[j] + 1) j++;
    out.push(i === j ? `${v[i]}` : `${v[i]}–${v[j]}`);
    i = j + 1;
  }
  return out.length <= max ? out.join(', ') : `${out.slice(0, max).join(', ')}, … (${out.length} ranges)`;
}

/**
 * A summary of the elements at `where` (flat indices into got / ref): how many, how many non-finite, the
 * largest difference and its coordinates, and which rows, heads and columns; with segs, where the rows sit in
 * their segments. `what` names the kind of difference ("differ in bits", "beyond 0.01").
 */
export function describeDiff(got: ArrayLike<number>, ref: ArrayLike<number>, where: number[], layout: Layout | undefined,
                             what: string): string {
  const shape = layout?.shape ?? [ref.length];
  const inner = shape.slice(1).reduce((a, b) => a * b, 1);
  const coords = (i: number): number[] => {
    const c: number[] = [];
    let r = i;
    for (let k = shape.length - 1; k >= 0; k--) {
      c.unshift(r % shape[k]);
      r = Math.floor(r / shape[k]);
    }
    return c;
  };
  let worst = -1, worstD = -1, nonFinite = 0;
  for (const i of where) {
    if (!Number.isFinite(got[i])) nonFinite++;
    const d = Number.isFinite(got[i]) ? Math.abs(got[i] - ref[i]) : Infinity;
    if (d > worstD) {
      worstD = d;
      worst = i;
    }
  }
  const parts = [`${where.length} of ${ref.length} elements ${what}`];
  if (nonFinite) parts.push(`${nonFinite} not finite`);
  if (worst >= 0) parts.push(`largest |got − want| ${worstD.toPrecision(3)} at [${coords(worst).join(', ')}] (got ${got[worst]}, want ${ref[worst]})`);
  if (shape.length > 1 && where.length) {
    const rows = where.map((i) => Math.floor(i / inner));
    parts.push(`rows ${ranges(rows)}`);
    const tile = layout?.tile ?? 64;
    parts.push(`row mod ${tile}: ${ranges(rows.map((t) => t % tile))}`);
    for (let k = 1; k < shape.length; k++) {
      const stride = shape.slice(k + 1).reduce((a, b) => a * b, 1);
      parts.push(`${shape.length === 3 ? ['', 'heads', 'dims'][k] : 'cols'} ${ranges(where.map((i) => Math.floor(i / stride) % shape[k]))}`);
    }
    const segs = layout?.segs;
    if (segs && segs.length > 1) {
      const seg = (t: number): number => {
        let s = 0;
        while (s + 2 < segs.length && segs[s + 1] <= t) s++;
        return s;
      };
      const segsHit = new Set<number>();
      let first = 0, last = 0;
      for (const t of new Set(rows)) {
        const s = seg(t);
        segsHit.add(s);
        if (t - segs[s] < tile) first++;
        if (segs[s + 1] - 1 - t < tile) last++;
      }
      const n = new Set(rows).size;
      parts.push(`segments ${ranges(segsHit)} of ${segs.length - 1}; of ${n} rows, ${first} in their segment's first ${tile} tokens, ${last} in its last ${tile}`);
    }
  }
  return parts.join('; ');
}

/**
 * null where got and ref hold the same bits everywhere, else describeDiff's summary. Two Float32Arrays are compared
 * as their 32-bit words (a NaN's payload counts: the allocator's 0xff poison is not a computed NaN); other arrays
 * by value, with −0 apart from +0 and NaN equal to NaN.
 */
export function bitsDiff(got: ArrayLike<number>, ref: ArrayLike<number>, layout?: Layout): string | null {
  if (got.length !== ref.length) return `lengths differ: ${got.length} against ${ref.length}`;
  const words = (a: ArrayLike<number>) => (a instanceof Float32Array ? new Uint32Array(a.buffer, a.byteOffset, a.length) : null);
  const gw = words(got), rw = words(ref);
  const same = gw && rw ? (i: number) => gw[i] === rw[i] : (i: number) => Object.is(got[i], ref[i]);
  const where: number[] = [];
  for (let i = 0; i < ref.length; i++) if (!same(i)) where.push(i);
  return where.length ? describeDiff(got, ref, where, layout, 'differ in bits') : null;
}

/** describeDiff of the elements farther than bound from ref (non-finite ones included); `why` says what the bound is. */
export function beyondDiff(got: ArrayLike<number>, ref: ArrayLike<number>, bound: number, layout: Layout | undefined, why: string): string {
  const where: number[] = [];
  for (let i = 0; i < ref.length; i++) if (!(Math.abs(got[i] - ref[i]) <= bound)) where.push(i);
  return describeDiff(got, ref, where, layout, `beyond ${bound.toPrecision(3)} (${why})`);
}

/** beyondDiff with the bound tol · max |ref|. */
export function toleranceDiff(got: ArrayLike<number>, ref: ArrayLike<number>, tol: number, layout?: Layout): string {
  let m = 0;
  for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(ref[i]));
  return beyondDiff(got, ref, tol * m, layout, `${tol} of max |want|`);
}
