// Timing and reporting helpers shared by the benchmarks.
//
// Every figure is a median over several repeats after warm-up runs; where two
// implementations are compared they are run alternately in the same process, so
// drift of a noisy machine hits both alike.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Timing {
  /** seconds */
  median: number;
  min: number;
  max: number;
  samples: number[];
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function summarise(samples: number[]): Timing {
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), samples };
}

/** Times fn: `warmup` untimed calls, then `repeats` timed ones. */
export function measure(fn: () => void, repeats: number, warmup = 1): Timing {
  for (let i = 0; i < warmup; i++) fn();
  const samples: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    samples.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return summarise(samples);
}

/** Times several implementations alternately (A B C A B C ...), returning one Timing each. */
export function measureAlternating(fns: (() => void)[], repeats: number, warmup = 1): Timing[] {
  for (let i = 0; i < warmup; i++) for (const f of fns) f();
  const samples: number[][] = fns.map(() => []);
  for (let i = 0; i < repeats; i++) {
    fns.forEach((f, k) => {
      const t0 = process.hrtime.bigint();
      f();
      samples[k].push(Number(process.hrtime.bigint() - t0) / 1e9);
    });
  }
  return samples.map(summarise);
}

/**
 * Peak resident memory of `fn` above what the process held when it started, in
 * bytes: the kernel's high-water mark (VmHWM) is reset through
 * /proc/self/clear_refs, then read back. Linux only; null elsewhere.
 */
export function peakMemoryOf(fn: () => void): { peakBytes: number; baseBytes: number } | null {
  const read = (key: string): number | null => {
    const m = readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) * 1024 : null;
  };
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    return null;
  }
  const base = read('VmRSS');
  fn();
  const hwm = read('VmHWM');
  if (base === null || hwm === null) return null;
  return { peakBytes: hwm - base, baseBytes: base };
}

/** Renders rows as an aligned text table. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** The repository's root (the folder with package.json above this file), from bench/ or from dist/bench/. */
export function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) {
    const up = dirname(d);
    if (up === d) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    d = up;
  }
  return d;
}
