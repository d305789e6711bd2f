// The two rules native/cuda/common.cuh sets for every kernel, checked on the sources (no nvcc, no GPU):
//   - every kernel is launched through launch(), never with <<<>>>: launch() checks the launch, and with
//     INSTILL_CUDA_NEXT `pdl` on a Hopper GPU makes it a programmatic dependent launch;
//   - every kernel's first statement is pdl_enter(): a kernel launched that way may start before the kernel ahead of
//     it on the stream has finished, and only pdl_enter()'s wait keeps it from reading what that one still writes.
// A kernel that broke the second rule would race with the piece on and still pass every test without it, so the rule
// is checked here, where CI runs it, rather than left to a GPU run.
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { packageRoot } from '../../src/native.js';

const dir = join(packageRoot, 'native', 'cuda');

/** The source without comments and string literals (their text kept as spaces, so offsets stay put). */
function code(src: string): string {
  return src
    .replace(/\/\*[\s\S]*?\*\//g, (m) => m.replace(/[^\n]/g, ' '))
    .replace(/\/\/[^\n]*/g, (m) => ' '.repeat(m.length))
    .replace(/"(?:[^"\\\n]|\\.)*"/g, (m) => `"${' '.repeat(m.length - 2)}"`);
}

/** What breaks the rules in one file's source: a line for each kernel without pdl_enter() first, and each <<<. */
function launchRuleBreaks(name: string, src: string): string[] {
  const c = code(src);
  const out: string[] = [];
  const lineOf = (at: number) => c.slice(0, at).split('\n').length;
  for (let at = c.indexOf('<<<'); at >= 0; at = c.indexOf('<<<', at + 3)) {
    out.push(`${name}:${lineOf(at)}: a <<<>>> launch (launch() instead)`);
  }
  // the runtime's and the driver's own launch calls: only launch() itself (common.cuh) makes one
  if (name !== 'common.cuh') {
    for (const m of c.matchAll(/\b(cudaLaunchKernel(?:Ex(?:C)?)?|cudaLaunchCooperativeKernel\w*|cuLaunchKernel(?:Ex)?|cuLaunchCooperativeKernel\w*)\s*(?:<[^;(]*>\s*)?\(/g)) {
      out.push(`${name}:${lineOf(m.index!)}: ${m[1]} (launch() instead)`);
    }
  }
  for (const m of c.matchAll(/__global__/g)) {
    // the body: the first '{' after the parameter list (parentheses balanced: __launch_bounds__(...) comes first)
    let i = m.index! + m[0].length, depth = 0;
    for (; i < c.length; i++) {
      if (c[i] === '(') depth++;
      else if (c[i] === ')') depth--;
      else if (c[i] === '{' && depth === 0) break;
    }
    const head = c.slice(m.index!, i);
    const kernel = /([A-Za-z_]\w*)\s*\([^()]*(?:\([^()]*\)[^()]*)*\)\s*$/.exec(head)?.[1] ?? '?';
    const first = c.slice(i + 1).trimStart();
    if (!first.startsWith('pdl_enter();')) {
      out.push(`${name}:${lineOf(m.index!)}: ${kernel} does not begin with pdl_enter(); (it begins "${first.slice(0, 40).split('\n')[0]}")`);
    }
  }
  return out;
}

describe('native/cuda launch rules (common.cuh)', () => {
  it('scripts/pdl_ptx_check.py (check-cuda.sh runs it on the compiled PTX, where nvcc is) finds each kind of break', () => {
    const p = spawnSync('python3', [join(packageRoot, 'scripts', 'pdl_ptx_check.py'), '--self-test'], { encoding: 'utf8' });
    expect(p.stdout + p.stderr).toContain('pdl_ptx_check self-test: ok');
    expect(p.status).toBe(0);
  });

  it('no <<<>>> launch, and every kernel begins with pdl_enter()', () => {
    const files = (readdirSync(dir, { recursive: true }) as string[]).filter((f) => /\.(cu|cuh|h)$/.test(f));
    expect(files.length).toBeGreaterThan(20);
    let kernels = 0;
    const breaks: string[] = [];
    for (const f of files) {
      const src = readFileSync(join(dir, f), 'utf8');
      kernels += [...code(src).matchAll(/__global__/g)].length;
      breaks.push(...launchRuleBreaks(f, src));
    }
    expect(kernels).toBeGreaterThan(50);  // (the scan sees the kernels: 54 when this was written)
    expect(breaks).toEqual([]);
  });

  it('the scan finds each kind of break, and not what is only in a comment or a string', () => {
    const ok = `template <int D>\n__global__ void __launch_bounds__(128) k(const float* x, int n) {\n  pdl_enter();\n  x[0];\n}\n`;
    expect(launchRuleBreaks('ok.cu', ok)).toEqual([]);
    const late = `__global__ void k2(float* y) {  // y (N)\n  __shared__ float s[32];\n  pdl_enter();\n}\n`;
    expect(launchRuleBreaks('late.cu', late)).toEqual([
      'late.cu:1: k2 does not begin with pdl_enter(); (it begins "__shared__ float s[32];")',
    ]);
    const angle = `void f() {\n  k<<<1, 32, 0, s>>>(x);\n}\n// k<<<1, 1>>> in a comment\nconst char* t = "<<<";\n`;
    expect(launchRuleBreaks('angle.cu', angle)).toEqual(['angle.cu:2: a <<<>>> launch (launch() instead)']);
    const direct = `void g() {\n  cudaLaunchKernel((const void*)k, grid, block, args, 0, s);\n  cuLaunchKernelEx(&cfg, f, args, nullptr);\n  cudaLaunchKernelEx<float*>(&cfg, k, p);\n}\n`;
    expect(launchRuleBreaks('direct.cu', direct)).toEqual([
      'direct.cu:2: cudaLaunchKernel (launch() instead)', 'direct.cu:3: cuLaunchKernelEx (launch() instead)',
      'direct.cu:4: cudaLaunchKernelEx (launch() instead)',
    ]);
    expect(launchRuleBreaks('common.cuh', `inline void l() { cudaLaunchKernelEx(&cfg, k); }\n`)).toEqual([]);
    const commented = `/* __global__ void old(int) { } */\n__global__ void k3(int n) {\n  pdl_enter(); }\n`;
    expect(launchRuleBreaks('commented.cu', commented)).toEqual([]);
  });
});
