// The default build must run on any x86-64: only the per-ISA micro-kernel files
// (*_avx2.cpp, *_avx512.cpp, *_avx512bf16.cpp), called after a run-time CPU
// check, may contain AVX instructions. Every other object file is disassembled
// and searched for ymm/zmm registers (AVX/AVX-512) and VEX-only instructions.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { packageRoot } from '../../src/native.js';

const objDir = join(packageRoot, 'build', 'CMakeFiles');

function objects(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...objects(p));
    else if (name.endsWith('.o')) out.push(p);
  }
  return out;
}

function haveObjdump(): boolean {
  try {
    execFileSync('objdump', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const files = objects(objDir);
const isX86 = process.arch === 'x64';
const runnable = isX86 && files.length > 0 && haveObjdump();
if (!runnable) {
  console.warn(`skipping the ISA check: needs x86-64, objdump and a local build in ${objDir}`);
}

describe.skipIf(!runnable)('portable build', () => {
  it('has object files for every ISA kernel', () => {
    const names = files.map((f) => f.split('/').pop());
    for (const k of ['gemm_kernel_portable.cpp.o', 'gemm_kernel_avx2.cpp.o', 'gemm_kernel_avx512.cpp.o']) {
      expect(names).toContain(k);
    }
  });

  it('uses AVX registers only in the per-ISA kernel files', () => {
    const offenders: string[] = [];
    let avxFilesWithAvx = 0;
    for (const f of files) {
      const asm = execFileSync('objdump', ['-d', '--no-show-raw-insn', f], { maxBuffer: 256 << 20 }).toString();
      const usesAvx = /%[yz]mm\d+/.test(asm);
      if (/_avx(2|512|512bf16)\.cpp\.o$/.test(f)) {
        if (usesAvx) avxFilesWithAvx++;
      } else if (usesAvx) {
        offenders.push(f);
      }
    }
    expect(offenders).toEqual([]);
    expect(avxFilesWithAvx).toBeGreaterThanOrEqual(2); // and the ISA files really were built with their flags
  });
});
