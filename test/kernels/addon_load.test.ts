// native()'s fallback where build/Release has no instill.node: node-gyp-build takes any addon it finds there, the
// benchmarks' OpenBLAS reference (instill_bench_ref.node) among them. native() must say that is not instill's addon
// (E_LOAD, naming it), not fail later with a TypeError. Run in a copy of the package with only that addon built.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

import { packageRoot } from '../../src/native.js';

const ref = join(packageRoot, 'build', 'Release', 'instill_bench_ref.node');
const dist = join(packageRoot, 'dist', 'src');

describe('loading the addon', () => {
  it('another addon where instill.node should be: E_LOAD naming it', (ctx) => {
    if (!existsSync(ref) || !existsSync(join(dist, 'native.js'))) {
      if (process.env.CI === 'true') expect.fail(`missing ${ref} or ${dist}/native.js (npm ci builds both)`);
      console.warn(`skipping: no ${ref} or ${dist}/native.js (npm run build)`);
      ctx.skip();
      return;
    }
    const root = mkdtempSync(join(tmpdir(), 'instill-load-'));
    try {
      mkdirSync(join(root, 'dist', 'src'), { recursive: true });
      mkdirSync(join(root, 'build', 'Release'), { recursive: true });
      for (const f of ['native.js', 'errors.js']) copyFileSync(join(dist, f), join(root, 'dist', 'src', f));
      copyFileSync(ref, join(root, 'build', 'Release', 'instill_bench_ref.node'));
      symlinkSync(join(packageRoot, 'node_modules'), join(root, 'node_modules'));
      writeFileSync(join(root, 'package.json'), '{ "type": "module" }\n');
      const script = `import(${JSON.stringify(pathToFileURL(join(root, 'dist', 'src', 'native.js')).href)}).then((m) => {
        try { m.native(); console.log('loaded'); } catch (e) { console.log(e.code, e.message); } })`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(/^E_LOAD could not load the instill native addon/);
      expect(r.stdout).toContain('instill_bench_ref.node is not the instill addon');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
